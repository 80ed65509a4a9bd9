"""``--precision auto``: the fastest precision that holds the loss, measured on this machine for this model.

Whether bf16 pays depends on the CPU (native bf16 or emulated), the model's shape
and the threads: it can be much faster on a CPU with native bf16 and several times
*slower* where bf16 is emulated. So auto times a few real training steps of
each candidate from the same initial weights on the same batches, drops one that
fails or whose loss drifts from fp32's, and keeps the fastest. The result is cached
per machine and model shape (``chargen.machine.cache``): later runs
reuse it. Where only fp32 is a candidate (a CPU without native bf16) nothing is
measured at all, so auto costs nothing over a plain fp32 run there.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from chargen.errors import ChargenError
from chargen.machine.cache import MEASURE_ENV, Measurements, measuring
from chargen.machine.device import BF16_MATH, bf16_math_available, cpu_has_native_bf16, machine_key, resolve_precision
from chargen.model import ModelConfig
from chargen.training.config import TrainConfig
from chargen.training.data import Split
from chargen.training.trainer import Trainer

SECTION = "precision"
#: A comma-separated list that replaces the candidates (benchmarks: simulate a CPU without bf16 with "fp32").
CANDIDATES_ENV = "CHARGEN_PRECISION_CANDIDATES"
#: Untimed steps first (allocator growth, oneDNN kernel selection), then ROUNDS rounds of STEPS_PER_ROUND
#: timed steps, candidates taking turns: a neighbour's burst then slows one round of each, not one
#: candidate, and the best step of each candidate is its speed for the comparison (the median is kept
#: too: the rate a run sustains, which sizing uses).
WARMUP_STEPS = 2
ROUNDS = 3
STEPS_PER_ROUND = 2
#: A candidate holds the loss if its loss after the same steps is within this of fp32's (nats/token):
#: the acceptance's 0.02 nats for validation loss at equal steps.
LOSS_TOLERANCE = 0.02
#: Another precision replaces fp32 only when it is at least this much faster: below it, noise decides.
MARGIN = 1.05
BASELINE = "fp32"


@dataclass
class Calibration:
    """The precision a run uses, and how it was chosen."""

    precision: str
    requested: str
    speeds: dict[str, float] = field(default_factory=dict)  # chars/s per candidate measured (best step)
    steady: dict[str, float] = field(default_factory=dict)  # chars/s at the median step: what a run sustains
    losses: dict[str, float] = field(default_factory=dict)  # loss after the calibration steps
    dropped: dict[str, str] = field(default_factory=dict)  # candidate -> why
    cached: bool = False
    reason: str | None = None  # why nothing was measured, where that is not the device's lack of candidates
    seconds: float = 0.0  # spent measuring in this session
    notes: list[str] = field(default_factory=list)  # warnings (a corrupt cache)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["notes"]
        return data

    def message(self) -> str | None:
        """The one line a run prints about its precision; None when it was simply asked for."""
        if self.requested != "auto":
            return None
        if self.reason:
            return f"precision {self.precision} ({self.reason})"
        if not self.speeds:
            return f"precision {self.precision} (the only candidate on this device)"
        speeds = ", ".join(f"{name} {value:,.0f}" for name, value in self.speeds.items())
        dropped = "".join(f"; dropped {name}: {why}" for name, why in self.dropped.items())
        source = "cached calibration" if self.cached else f"calibrated in {self.seconds:.1f} s"
        return f"precision {self.precision} ({source}: chars/s {speeds}{dropped})"


def candidates(device: torch.device) -> list[str]:
    """The precisions auto tries on ``device``, fp32 first."""
    forced = os.environ.get(CANDIDATES_ENV)
    if forced:
        return [name.strip() for name in forced.split(",") if name.strip()]
    if device.type == "cuda":
        return [BASELINE, "bf16" if torch.cuda.is_bf16_supported() else "fp16"]
    if device.type == "cpu" and cpu_has_native_bf16():
        return [BASELINE, "bf16"] + ([BF16_MATH] if bf16_math_available() else [])
    return [BASELINE]


def shape_key(model_config: ModelConfig, config: TrainConfig) -> str:
    m = model_config
    return (f"{m.cell} {m.layers}x{m.hidden} emb {m.embedding} vocab {m.vocab_size} "
            f"batch {config.batch_size} seq {config.seq_len}")


def choose_precision(model_config: ModelConfig, config: TrainConfig, data: Split, device: torch.device,
                     world_size: int = 1) -> Calibration:
    """The precision to train with: the one asked for, or for auto the fastest that holds the loss.

    Under torchrun (``world_size`` > 1) every rank must use the same precision, and separate
    measurements could disagree, so there auto is the device's default; so it is with measuring off.
    """
    if config.precision != "auto" or world_size > 1:
        return Calibration(precision=resolve_precision(config.precision, device), requested=config.precision)
    if not measuring():
        return Calibration(precision=resolve_precision("auto", device), requested="auto",
                           reason=f"measuring is off ({MEASURE_ENV}=0): the device's default")
    names = candidates(device)
    if len(names) <= 1:
        return Calibration(precision=names[0] if names else BASELINE, requested="auto")
    cache = Measurements(SECTION)
    key = f"{machine_key(device, torch.get_num_threads())} | {shape_key(model_config, config)}"
    entry = cache.get(key)
    if entry is not None and entry.get("precision") in names:
        try:
            return Calibration(precision=entry["precision"], requested="auto", speeds=dict(entry["speeds"]),
                               steady=dict(entry.get("steady", {})), losses=dict(entry.get("losses", {})),
                               dropped=dict(entry.get("dropped", {})), cached=True, notes=cache.notes)
        except (KeyError, TypeError, ValueError):
            cache.notes.append(f"warning: ignoring a damaged {SECTION} entry in the cache")
    result = measure(names, model_config, config, data)
    if result.speeds:  # every candidate failed: nothing worth keeping, fp32 it is
        cache.put(key, {k: v for k, v in result.to_dict().items() if k not in ("cached", "requested")})
    result.notes = cache.notes
    return result


def measure(names: list[str], model_config: ModelConfig, config: TrainConfig, data: Split) -> Calibration:
    """Time real training steps of each candidate, from the same weights on the same batches."""
    began = time.monotonic()
    steps = WARMUP_STEPS + ROUNDS * STEPS_PER_ROUND
    # No warmup: the full lr from the first step, so the few steps move the loss and drift would show.
    # No augmentation: it needs the codec, and costs the same at every precision.
    probe = replace(config, warmup_steps=0, max_steps=steps * 10, epochs=None, minutes=None,
                    threads=torch.get_num_threads(), transpose=None)
    result = Calibration(precision=BASELINE, requested="auto")
    trainers: dict[str, Trainer] = {}
    times: dict[str, list[float]] = {}
    for name in names:
        try:
            trainers[name] = Trainer(model_config, probe, data, precision=name)
        except (ChargenError, RuntimeError, ValueError, TypeError) as exc:
            result.dropped[name] = _reason(exc)
    for round_index in range(1 + ROUNDS):
        count = WARMUP_STEPS if round_index == 0 else STEPS_PER_ROUND
        for name in list(trainers):
            trainer = trainers[name]
            try:
                for _ in range(count):
                    start = time.perf_counter()
                    trainer.step()
                    seconds = time.perf_counter() - start
                    if round_index:
                        times.setdefault(name, []).append(seconds)
            except (ChargenError, RuntimeError, ValueError, TypeError) as exc:
                result.dropped[name] = _reason(exc)
                del trainers[name]
    tokens = config.batch_size * config.seq_len
    result.losses = {name: t.last_train for name, t in trainers.items() if t.last_train is not None}
    result.speeds = {name: tokens / min(times[name]) for name in trainers if name in times}
    result.steady = {name: tokens / statistics.median(times[name]) for name in trainers if name in times}
    reference = result.losses.get(BASELINE)
    for name, loss in result.losses.items():
        if reference is not None and name != BASELINE and abs(loss - reference) > LOSS_TOLERANCE:
            result.dropped[name] = f"loss {loss:.4f} against fp32's {reference:.4f}"
    kept = {name: speed for name, speed in result.speeds.items() if name not in result.dropped}
    if kept:
        fastest = max(kept, key=kept.__getitem__)
        if BASELINE not in kept or kept[fastest] >= MARGIN * kept[BASELINE]:
            result.precision = fastest
    result.seconds = time.monotonic() - began
    return result


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def measured_speed(model_config: ModelConfig, config: TrainConfig, data: Split, device: torch.device) -> float:
    """Training chars/s of ``model_config`` here at the precision auto (or the config) picks for it, at the
    median step: the rate a run sustains, where the best step is a burst. A calibration cached before medians
    were kept gives its best step."""
    calibration = choose_precision(model_config, config, data, device)
    precision = calibration.precision
    speed = calibration.steady.get(precision, calibration.speeds.get(precision))
    if speed is None:  # nothing was calibrated (one candidate): time that one
        speed = measure([precision], model_config, config, data).steady.get(precision)
    return speed or 0.0
