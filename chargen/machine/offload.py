"""Batched generation steps on an accelerator (a CUDA GPU), from the batch size at which they pay.

On the CPU a step's cost grows with its rows; on a GPU a step of 256 rows costs about
what one row's does, but every step pays a launch and two small copies. ``Offload``
measures both once per machine and model shape (cached: ``chargen.machine.cache``)
and says from how many rows the device is faster;
below that, generation keeps the CPU steppers (batch 1: ``chargen.machine.kernels``' fastest).

Only the steps move. Each step's logits come back to the CPU, where
``chargen.sampling.choose_tokens`` picks the tokens with the noise of the same CPU
``torch.Generator`` streams, so a seed gives the same text on any device. What may
differ is the last bits of the logits, and so of the log-probabilities: the device
sums the products of its matrix multiplications in another order (TF32 stays off,
as torch's default for float32 matmuls). A sampled token changes only where two
candidates' perturbed scores tie within those bits, as between the CPU kernels.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence

import torch

from chargen.errors import ChargenError
from chargen.machine.cache import Measurements, measuring
from chargen.machine.device import machine_key, resolve_device
from chargen.model import CharRNN, State
from chargen.sampling.steppers import Stepper, generation_threads

GENERATION_DEVICES = ("auto", "cpu", "cuda")
#: Forces the batch size from which steps go to the device (tests, the GPU check): no measurement.
ROWS_ENV = "CHARGEN_DEVICE_ROWS"
SECTION = "device_rows"
#: Batch sizes measured, and steps per measurement round (the best of ROUNDS rounds counts).
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STEPS, ROUNDS = 20, 3


def generation_device(name: str | torch.device = "auto") -> torch.device:
    """``--device`` of ``chargen sample`` and ``serve``: auto is CUDA where present, else the CPU."""
    if isinstance(name, torch.device):
        return name
    if name not in GENERATION_DEVICES:
        raise ChargenError(f"unknown device {name!r} for generation; choose one of {', '.join(GENERATION_DEVICES)}")
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    return resolve_device(name)


class DeviceStepper(Stepper):
    """A ``Stepper`` whose weights and state live on ``device``: tokens go in and logits come out on the CPU."""

    def __init__(self, model: CharRNN, device: torch.device):
        super().__init__(model)  # fused on the CPU, then moved
        self.device = device
        for name in ("w_ih", "w_hh", "bias", "b_hh"):
            setattr(self, name, [t.to(device) for t in getattr(self, name)])
        for name in ("input_table", "label_table", "head_w", "head_b"):
            value = getattr(self, name)
            setattr(self, name, None if value is None else value.to(device))

    def to_device(self, state: State) -> State:
        return tuple(s.to(self.device) for s in state)

    def step(self, tokens: torch.Tensor, state: State,
             bias: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """tokens [B] (CPU) -> logits [B, V] (CPU), new state (on the device)."""
        logits, state = super().step(tokens.to(self.device, non_blocking=True), state, bias)
        return logits.cpu(), state


def step_seconds(stepper: Stepper, rows: int, steps: int) -> float:
    """Seconds per step of ``rows`` rows (what a decoder waits for: the logits back on the CPU)."""
    tokens = torch.zeros(rows, dtype=torch.long)
    state = stepper.initial_state(rows)
    with torch.inference_mode():
        began = time.perf_counter()
        for _ in range(steps):
            logits, state = stepper.step(tokens, state)
        float(logits[0, 0])  # the last step has finished
        return (time.perf_counter() - began) / steps


def threshold(cpu_s: Callable[[int], float], device_s: Callable[[int], float],
              sizes: Sequence[int] = SIZES) -> int | None:
    """The smallest batch size from which the device is faster at every larger size measured (None: never).

    Sizes are measured largest first, and measuring stops at the first size where the CPU is at
    least as fast: the device's advantage grows with the rows.
    """
    found = None
    for rows in sorted(sizes, reverse=True):
        if device_s(rows) >= cpu_s(rows):
            break
        found = rows
    return found


class Offload:
    """Where a generator's batched steps run: the CPU below ``rows`` rows, ``stepper`` on ``device`` from there.

    ``rows`` None: measured on first use (``threshold``) and cached per machine and model.
    """

    def __init__(self, model: CharRNN, device: torch.device, cpu_stepper: Stepper, rows: int | None = None):
        self.model, self.device, self.cpu_stepper = model, device, cpu_stepper
        self._rows = rows
        self._measured = rows is not None
        self._stepper: DeviceStepper | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_generator(cls, model: CharRNN, device: torch.device, cpu_stepper: Stepper,
                      rows: int | None = None) -> Offload | None:
        """The offload of a generator on ``device``; None on the CPU (nothing to decide per step), unless
        ``rows`` (or ``$CHARGEN_DEVICE_ROWS``) forces the device path there too (tests)."""
        if rows is None and os.environ.get(ROWS_ENV):
            given = os.environ[ROWS_ENV]
            try:
                rows = max(1, int(given))
            except ValueError:
                raise ChargenError(f"${ROWS_ENV} must be a whole number of rows, not {given!r}") from None
        if device.type == "cpu" and rows is None:
            return None
        return cls(model, device, cpu_stepper, rows)

    @property
    def stepper(self) -> DeviceStepper:
        """The device's stepper, its weights moved there on first use."""
        if self._stepper is None:
            with self._lock:
                if self._stepper is None:
                    self._stepper = DeviceStepper(self.model, self.device)
        return self._stepper

    def rows(self) -> int | None:
        """The batch size from which steps go to the device (None: never); measured on the first call."""
        if not self._measured:
            stepper = self.stepper
            with self._lock:
                if not self._measured:
                    self._rows = cached_threshold(self.model, self.device, self.cpu_stepper, stepper)
                    self._measured = True
        return self._rows

    def pays(self, rows: int) -> bool:
        threshold_rows = self.rows()
        return threshold_rows is not None and rows >= threshold_rows


def cached_threshold(model: CharRNN, device: torch.device, cpu_stepper: Stepper, stepper: DeviceStepper) -> int | None:
    """``threshold`` for this machine and model: cached, else measured now; None (never) with measuring off."""
    from chargen.machine.kernels import model_key

    if not measuring():
        return None
    cache = Measurements(SECTION)
    key = f"{machine_key(device, 1)} | {model_key(model)}"
    entry = cache.get(key)
    if entry is not None and "rows" in entry and (entry["rows"] is None or isinstance(entry["rows"], int)):
        return entry["rows"]
    cpu, dev = measure(cpu_stepper, stepper)
    rows = threshold(lambda r: cpu[r], lambda r: dev[r], sorted(cpu))
    cache.put(key, {"rows": rows, "us_per_step": {"cpu": {r: round(s * 1e6, 1) for r, s in cpu.items()},
                                                  str(device): {r: round(s * 1e6, 1) for r, s in dev.items()}}})
    return rows


def measure(cpu_stepper: Stepper, device_stepper: Stepper,
            sizes: Sequence[int] | None = None) -> tuple[dict[int, float], dict[int, float]]:
    """Seconds per step at each batch size on the CPU and on the device, largest first, stopping where the CPU
    wins (as ``threshold`` reads them); the best of ROUNDS alternating rounds each."""
    cpu: dict[int, float] = {}
    dev: dict[int, float] = {}
    with generation_threads():
        step_seconds(device_stepper, 1, 3)  # first calls: kernels loaded, allocator warm
        for rows in sorted(SIZES if sizes is None else sizes, reverse=True):
            step_seconds(cpu_stepper, rows, 2)
            cpu[rows] = dev[rows] = float("inf")
            for _ in range(ROUNDS):
                cpu[rows] = min(cpu[rows], step_seconds(cpu_stepper, rows, STEPS))
                dev[rows] = min(dev[rows], step_seconds(device_stepper, rows, STEPS))
            if dev[rows] >= cpu[rows]:
                break
    return cpu, dev
