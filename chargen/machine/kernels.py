"""Batch-1 generation on the fastest kernel of this machine: torch's (MKL), numpy's (OpenBLAS) or fused C.

A batch-1 step is a few mat-vecs that read every weight once; which BLAS reads
them faster depends on the CPU (on some, OpenBLAS's mat-vec is twice MKL's). Around
them an LSTM step runs ~30 small torch ops of a few microseconds each;
the ``fused`` kernel (``chargen.machine.native``, compiled for this CPU on first use) does
the products and the gate arithmetic of a whole LSTM step in one C call.
``batch1_stepper`` times a few hundred steps of each (alternating rounds, best
round each) the first time a model shape is used on a machine and caches the
winner in the machine's cache (``chargen.machine.cache``).

The kernels compute the same sums in the same order of operations around the
products; only the order of the additions inside one dot product (and, fused,
the last bit of exp) differs, which moves a logit by a few units in its last
place. A sampled token changes only where two candidates' perturbed scores tie
to within that: the tests check that seeded samples are the same text with every
kernel. ``CHARGEN_MATVEC=torch|numpy|fused`` forces one (fused falls back to torch
where it cannot run: no C compiler, or not an LSTM).
"""

from __future__ import annotations

import ctypes
import functools
import os
import time

import numpy as np
import torch

from chargen.machine.cache import Measurements, measuring
from chargen.machine.device import machine_key
from chargen.machine.native import lstm_library
from chargen.model import CharRNN, State
from chargen.sampling.steppers import Stepper, generation_threads

SECTION = "kernels"
KERNEL_ENV = "CHARGEN_MATVEC"
KERNELS = ("torch", "numpy", "fused")
#: Rounds of up to STEPS steps (or ROUND_S seconds) per kernel, alternating; the best round of each counts.
ROUNDS, STEPS, ROUND_S = 3, 100, 0.02
#: numpy must be at least this much faster to replace torch (the engine's own path): below, noise decides.
MARGIN = 1.05


@functools.cache
def single_thread_openblas() -> bool:
    """Limit numpy's OpenBLAS to one thread (as torch's generation threads are): a 1-row product gains
    nothing from a second thread, and beside a busy neighbour each of its barriers waits out a time slice.
    False where numpy's BLAS is not OpenBLAS (threadpoolctl finds the loaded libraries)."""
    from threadpoolctl import ThreadpoolController

    openblas = ThreadpoolController().select(internal_api="openblas")
    if not openblas.lib_controllers:
        return False
    openblas.limit(limits=1)
    return True


class NumpyStepper(Stepper):
    """A ``Stepper`` whose batch-1 products go through numpy's BLAS; several rows use torch's as before."""

    def __init__(self, model: CharRNN):
        super().__init__(model)
        single_thread_openblas()
        self.np_w_ih = [w.numpy() for w in self.w_ih]
        self.np_w_hh = [w.numpy() for w in self.w_hh]
        self.np_head_w = self.head_w.numpy()

    @staticmethod
    def _mv(vector: torch.Tensor, weight: np.ndarray) -> torch.Tensor:
        """[1, K] @ [K, N] -> [1, N] as numpy's 1-D dot (a gemv)."""
        return torch.from_numpy(np.dot(vector.numpy()[0], weight)).unsqueeze(0)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 1:
            return super()._head(x)
        return self._mv(x, self.np_head_w).add_(self.head_b)

    def _gates(self, layer: int, tokens: torch.Tensor, x: torch.Tensor, h: torch.Tensor,
               bias: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        if h.shape[0] != 1:
            return super()._gates(layer, tokens, x, h, bias, out)
        if layer == 0:
            return self._mv(h, self.np_w_hh[0]).add_(self._layer0_input(tokens, bias))
        return self._mv(h, self.np_w_hh[layer]).add_(self.bias[layer]).add_(self._mv(x, self.np_w_ih[layer]))

    def _gru_products(self, layer: int, tokens: torch.Tensor, x: torch.Tensor, h: torch.Tensor,
                      bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if h.shape[0] != 1:
            return super()._gru_products(layer, tokens, x, h, bias)
        gi = (self._layer0_input(tokens, bias) if layer == 0
              else self._mv(x, self.np_w_ih[layer]).add_(self.bias[layer]))
        return gi, self._mv(h, self.np_w_hh[layer]).add_(self.b_hh[layer])


class FusedStepper(Stepper):
    """A ``Stepper`` whose batch-1 LSTM steps are one call into the C kernel (mat-vecs and gate arithmetic
    fused); several rows use torch's as before. Only for LSTMs in float32 (``fused_library``)."""

    def __init__(self, model: CharRNN, library: ctypes.CDLL):
        super().__init__(model)
        self._kernel = library.chargen_lstm_step
        pointer = ctypes.c_void_p
        self._kernel.argtypes = [ctypes.c_int] * 3 + [pointer] * 13
        self._kernel.restype = None

        def pointers(tensors: list[torch.Tensor]) -> ctypes.Array[ctypes.c_void_p]:
            return (pointer * self.layers)(*[t.data_ptr() for t in tensors])

        self._w_hh, self._w_ih, self._bias = pointers(self.w_hh), pointers(self.w_ih), pointers(self.bias)
        self._table = self.input_table.data_ptr()
        self._row_bytes = self.input_table.stride(0) * self.input_table.element_size()
        self._vocab = self.head_w.shape[1]
        self._rows = self.input_table.shape[0]

    def _step(self, tokens: torch.Tensor, state: State, bias: torch.Tensor | None) -> tuple[torch.Tensor, State]:
        if tokens.shape[0] != 1:
            return super()._step(tokens, state, bias)
        token = int(tokens.item())
        if not 0 <= token < self._rows:  # the C side reads the table row unchecked
            raise IndexError(f"token {token} is outside the vocabulary of {self._rows}")
        h, c = state[0].contiguous(), state[1].contiguous()  # [L, 1, H]
        hs, cs, logits = torch.empty_like(h), torch.empty_like(c), torch.empty(1, self._vocab)
        gates = self._lstm_scratch(1)[0]  # this thread's [1, 4H]
        self._kernel(self.layers, self.hidden, self._vocab, self._table + token * self._row_bytes,
                     None if bias is None else bias.contiguous().data_ptr(), self._w_hh, self._w_ih, self._bias,
                     h.data_ptr(), c.data_ptr(), hs.data_ptr(), cs.data_ptr(), self.head_w.data_ptr(),
                     self.head_b.data_ptr(), logits.data_ptr(), gates.data_ptr())
        return logits, (hs, cs)


def fused_library(model: CharRNN) -> ctypes.CDLL | None:
    """The fused kernel's library where it can step this model here (an LSTM in float32, and a C compiler)."""
    if model.config.cell != "lstm" or model.head.weight.dtype != torch.float32:
        return None
    return lstm_library()


def stepper_for(kernel: str, model: CharRNN) -> Stepper:
    if kernel == "numpy":
        return NumpyStepper(model)
    library = fused_library(model) if kernel == "fused" else None
    return FusedStepper(model, library) if library is not None else Stepper(model)


def candidate_kernels(model: CharRNN) -> tuple[str, ...]:
    """The kernels that can step this model here (fused only where ``fused_library`` has it)."""
    return KERNELS if fused_library(model) is not None else tuple(k for k in KERNELS if k != "fused")


def step_time(stepper: Stepper, steps: int = STEPS, seconds: float = ROUND_S) -> float:
    """Seconds per batch-1 step over ``steps`` steps, or fewer when ``seconds`` have passed."""
    token = torch.tensor([0])
    state: State = stepper.initial_state(1)
    with torch.inference_mode():
        began, done = time.perf_counter(), 0
        while done < steps and (done == 0 or time.perf_counter() - began <= seconds):
            _, state = stepper.step(token, state)
            done += 1
        return (time.perf_counter() - began) / done


def measure_kernels(model: CharRNN, rounds: int = ROUNDS) -> dict[str, float]:
    """Best seconds per batch-1 step of each kernel that can run it, alternating rounds."""
    steppers = {kernel: stepper_for(kernel, model) for kernel in candidate_kernels(model)}
    best = dict.fromkeys(steppers, float("inf"))
    with generation_threads():
        for stepper in steppers.values():
            step_time(stepper, 5)  # first calls: allocations, BLAS initialisation
        for _ in range(rounds):
            for kernel, stepper in steppers.items():
                best[kernel] = min(best[kernel], step_time(stepper))
    return best


def model_key(model: CharRNN) -> str:
    c = model.config
    # The candidates are part of the key: a kernel added later (or a compiler installed) is measured anew.
    return f"{machine_key(torch.device('cpu'), 1)} | {c.cell} {c.layers}x{c.hidden} emb {c.embedding} " \
           f"vocab {c.vocab_size} | {'/'.join(candidate_kernels(model))}"


def choose_kernel(model: CharRNN) -> str:
    """``torch``, ``numpy`` or ``fused`` for this model here: forced, torch's with measuring off, cached, or
    measured now (and cached)."""
    forced = os.environ.get(KERNEL_ENV)
    if forced in KERNELS:
        return forced
    if not measuring():
        return "torch"
    cache = Measurements(SECTION)
    key = model_key(model)
    entry = cache.get(key)
    if entry is not None and entry.get("kernel") in KERNELS:
        return str(entry["kernel"])
    seconds = measure_kernels(model)
    fastest = min(seconds, key=seconds.__getitem__)
    kernel = fastest if seconds[fastest] * MARGIN < seconds["torch"] else "torch"
    cache.put(key, {"kernel": kernel, "us_per_step": {k: round(v * 1e6, 2) for k, v in seconds.items()}})
    return kernel


def batch1_stepper(model: CharRNN) -> Stepper:
    """The stepper for batch-1 generation, on this machine's faster mat-vec kernel."""
    return stepper_for(choose_kernel(model), model)
