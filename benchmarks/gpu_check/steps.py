"""The check's steps run in this process: matmul peak, training at fixed steps, ``--minutes``, sampling parity."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu_check.table import FAILED, FIGURE, OK, Env, PeakMemory, Row
from chargen.model import flops_per_token
from chargen.runs.checkpoint import load_checkpoint
from chargen.runs.layout import BEST, LAST
from chargen.runs.start import model_config_for, start_run
from chargen.sampling import DecodeConfig, Generator
from chargen.training import TrainConfig, TrainResult

#: Validation losses of auto and fp32 after the same steps closer than this (nats/char) hold.
LOSS_TOLERANCE = 0.05


@dataclass(frozen=True)
class Sizes:
    """How big each step is: the real thing on a GPU, or ``--tiny`` (a test on the CPU)."""

    tiny: bool
    matmul_n: int
    matmul_s: float
    train_steps: int
    batch: int
    seq: int
    models: dict[str, dict[str, Any]]  # preset -> overrides (tiny: narrower layers, same names)
    minutes: float
    ddp_steps: int
    sample_rows: int
    sample_len: int
    streams: tuple[int, ...] = (1, 16, 64, 256)
    stream_len: int = 200

    @classmethod
    def for_run(cls, tiny: bool) -> Sizes:
        if tiny:
            return cls(True, 256, 0.05, 8, 8, 32, {"medium": {"hidden": 48, "embedding": 16},
                                                  "large": {"layers": 3, "hidden": 64, "embedding": 16}},
                       0.05, 6, 4, 40, stream_len=8)
        return cls(False, 8192, 1.0, 300, 32, 100, {"medium": {}, "large": {}}, 2.0, 50, 16, 300)


@dataclass
class Context:
    """What the steps share: the device, the sizes, the corpus, the folders, and what earlier steps made."""

    device: torch.device
    sizes: Sizes
    corpus: Path
    corpus_note: str
    work: Path  # run folders, server files
    peaks: dict[str, float] = field(default_factory=dict)  # matmul GFLOP/s by precision (step 1)
    trained: dict[str, TrainResult] = field(default_factory=dict)  # step 2's auto runs by preset

    @property
    def env(self) -> Env:
        return Env.of(self.device)

    def memory(self) -> PeakMemory:
        return PeakMemory(self.device)

    def checkpoint_run(self) -> Path:
        """The device-trained run steps 5 and 6 use: step 2's medium run, else a short one trained now."""
        if "medium" in self.trained:
            return self.trained["medium"].run_dir
        result = train(self, "fallback", "medium", "auto", self.sizes.train_steps)
        self.trained["medium"] = result
        return result.run_dir


def train(ctx: Context, name: str, preset: str, precision: str, steps: int, **config: Any) -> TrainResult:
    settings: dict[str, Any] = dict(batch_size=ctx.sizes.batch, seq_len=ctx.sizes.seq, max_steps=steps,
                                    eval_every=max(1, steps // 2), seed=11, device=ctx.device.type,
                                    precision=precision)
    settings.update(config)
    return start_run([ctx.corpus], TrainConfig(**settings), preset, dict(ctx.sizes.models.get(preset, {})), name,
                     ctx.work / "runs", progress=False, warn=lambda message: None)


# ----------------------------------------------------------------------------- 1: matmul peak


def matmul_peak(ctx: Context) -> list[Row]:
    """GFLOP/s of an n x n matmul in fp32, tf32 (CUDA only) and bf16, best of repeated timings."""
    rows = []
    n, device = ctx.sizes.matmul_n, ctx.device
    for name in ("fp32", "tf32", "bf16"):
        if name == "tf32" and device.type != "cuda":
            rows.append(Row("1 matmul peak", name, "n/a", FIGURE, ctx.env, note="TF32 is a GPU format"))
            continue
        memory = ctx.memory()
        saved = torch.backends.cuda.matmul.allow_tf32
        try:
            torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
            with memory.measure():
                seconds = _time_matmul(n, torch.bfloat16 if name == "bf16" else torch.float32, device,
                                       ctx.sizes.matmul_s)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved  # later steps: torch's default, exact fp32
        gflops = 2 * n**3 / seconds / 1e9
        ctx.peaks[name] = gflops
        rows.append(Row("1 matmul peak", name, f"{gflops:,.0f} GFLOP/s", FIGURE, ctx.env, memory.text(),
                        f"{n}x{n}", {"gflops": gflops, "n": n}))
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_matmul(n: int, dtype: torch.dtype, device: torch.device, seconds: float) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    _sync(device)
    best, deadline = math.inf, time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == math.inf:
        began = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - began) / 4)
    return best


# ----------------------------------------------------------------------------- 2: training at fixed steps


def training(ctx: Context, preset: str) -> list[Row]:
    """``--precision auto`` and fp32 for the same steps: auto's choice, its speed, the two losses."""
    step = f"2 train {preset}"
    steps = ctx.sizes.train_steps
    memory = ctx.memory()
    with memory.measure():
        auto = train(ctx, f"{preset}-auto", preset, "auto", steps)
    fp32 = train(ctx, f"{preset}-fp32", preset, "fp32", steps)
    ctx.trained[preset] = auto
    chosen = load_checkpoint(auto.run_dir / LAST).training["train_config"].get("precision_used", "?")
    model_config = model_config_for(1, preset, **ctx.sizes.models.get(preset, {}))
    shape = f"{model_config.layers}x{model_config.hidden}" + (" (tiny sizes)" if ctx.sizes.tiny else "")
    flops = 3 * flops_per_token(load_checkpoint(auto.run_dir / LAST).config)  # forward and backward per char
    peak_name = {"bf16": "bf16", "fp16": "bf16"}.get(chosen, "fp32")
    peak = ctx.peaks.get(peak_name)
    fraction = auto.chars_per_s * flops / (peak * 1e9) if peak else None
    losses = (auto.last_val_loss, fp32.last_val_loss)
    held = all(v is not None and math.isfinite(v) for v in losses) and abs(losses[0] - losses[1]) <= LOSS_TOLERANCE
    common = {"steps": steps, "batch": ctx.sizes.batch, "seq_len": ctx.sizes.seq, "model": shape}
    return [
        Row(step, "precision auto chose", chosen, FIGURE, ctx.env, memory.text(), shape, dict(common)),
        Row(step, "training chars/s (auto)", f"{auto.chars_per_s:,.0f}", FIGURE, ctx.env, memory.text(),
            f"{steps} steps of {ctx.sizes.batch}x{ctx.sizes.seq}, evaluations and saves included",
            dict(common, chars_per_s=auto.chars_per_s, fp32_chars_per_s=fp32.chars_per_s)),
        Row(step, f"fraction of the {peak_name} matmul peak", "n/a" if fraction is None else f"{fraction:.2%}",
            FIGURE, ctx.env, memory.text(), f"{flops:,} FLOPs per char",
            dict(common, fraction=fraction, flops_per_char=flops)),
        Row(step, "validation loss auto / fp32", f"{losses[0]:.4f} / {losses[1]:.4f}", OK if held else FAILED,
            ctx.env, memory.text(), f"finite and within {LOSS_TOLERANCE} nats after {steps} steps",
            dict(common, auto=losses[0], fp32=losses[1])),
    ]


# ----------------------------------------------------------------------------- 3: --minutes


def minutes(ctx: Context) -> list[Row]:
    """A ``--minutes`` run without a size: the size the budget bought, the best validation loss."""
    memory = ctx.memory()
    settings: dict[str, Any] = dict(minutes=ctx.sizes.minutes, seed=11, device=ctx.device.type, eval_every=200)
    if ctx.sizes.tiny:
        settings.update(batch_size=ctx.sizes.batch, seq_len=ctx.sizes.seq)
    with memory.measure():
        result = start_run([ctx.corpus], TrainConfig(**settings), None, {}, "minutes", ctx.work / "runs",
                           progress=False, warn=lambda message: None)
    import json

    sizing = json.loads((result.run_dir / "run.json").read_text()).get("sizing", {})
    best = result.best_val_loss
    label = f"3 --minutes {ctx.sizes.minutes:g}"
    note = f"{result.step} steps, {result.elapsed_s:.0f} s; {ctx.corpus_note}"
    return [Row(label, "size chosen", str(sizing.get("preset", "?")), FIGURE, ctx.env, memory.text(),
                str(sizing.get("reason", "")), {"sizing": sizing}),
            Row(label, "best validation loss", f"{best:.4f} nats/char", OK if math.isfinite(best) else FAILED,
                ctx.env, memory.text(), note, {"best_val_loss": best, "steps": result.step})]


# ----------------------------------------------------------------------------- 5: sampling parity


def sampling(ctx: Context) -> list[Row]:
    """The device-trained checkpoint sampled on the CPU and through the device path with the same seed."""
    run_dir = ctx.checkpoint_run()
    checkpoint = load_checkpoint(run_dir / BEST)
    cpu = Generator.from_checkpoint(checkpoint, "cpu")
    memory = ctx.memory()
    rows = []
    with memory.measure():  # every step on the device: the batch size from which it pays is forced to 1
        forced = Generator(checkpoint.model, checkpoint.codec, device=ctx.device, device_rows=1)
        for count in (1, ctx.sizes.sample_rows):
            config = DecodeConfig(length=ctx.sizes.sample_len, num_samples=count, seed=7, temperature=0.8)
            want, got = cpu.generate("\n", config), forced.generate("\n", config)
            same = [s.text for s in want.samples] == [s.text for s in got.samples]
            drift = max(abs(a.logprob - b.logprob) for a, b in zip(want.samples, got.samples))
            first = next((i for i, (a, b) in enumerate(zip(want.samples, got.samples)) if a.text != b.text), None)
            note = f"max |log-prob difference| {drift:.2e}" + ("" if same else f"; sample {first} differs")
            rows.append(Row("5 sample CPU vs device", f"-n {count} --len {ctx.sizes.sample_len}, seed 7",
                            "same text" if same else "different text", OK if same else FAILED, ctx.env,
                            memory.text(), note, {"same": same, "logprob_drift": drift, "device": got.device}))
    return rows

