"""Training loop: AdamW, clipping, warmup + cosine decay, validation, checkpoints.

``train()`` is a library call; the CLI and tests drive it the same way.
Everything a resumed run needs (model, optimizer, RNG, step, schedule, hidden
state) is in ``state.pt``, so ``--resume`` continues the exact same run.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from chargen import __version__
from chargen.checkpoint import BEST, LAST, RUN_JSON, STATE, TOKENS, load_state, save_state, save_weights, write_json
from chargen.codec import Codec
from chargen.data import CorpusInfo, Split, StreamBatcher, load_tokens, split_tokens
from chargen.device import autocast_context, resolve_device, resolve_precision
from chargen.errors import ChargenError
from chargen.evaluation import mean_loss
from chargen.model import CharRNN, ModelConfig, State, detach_state

LN2 = math.log(2)


@dataclass
class TrainConfig:
    batch_size: int = 32
    seq_len: int = 100
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    epochs: float | None = None
    max_steps: int | None = None
    minutes: float | None = None
    eval_every: int = 200
    val_fraction: float = 0.1
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    transpose: tuple[int, int] | None = None  # MIDI: random per-stream transposition range, semitones

    def __post_init__(self) -> None:
        if self.transpose is not None:
            self.transpose = (int(self.transpose[0]), int(self.transpose[1]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    total_steps: int
    best_val_loss: float
    last_val_loss: float | None
    last_train_loss: float | None
    interrupted: bool
    elapsed_s: float
    chars_per_s: float
    evals: list[dict[str, float]] = field(default_factory=list)


Reporter = Callable[[str], None]


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio * lr``."""
    warmup = min(cfg.warmup_steps, max(1, total_steps // 10))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def evaluate(model: CharRNN, val: np.ndarray, seq_len: int, device: torch.device, precision: str) -> float:
    """Mean validation loss in nats per token over the whole validation split."""
    return mean_loss(model, val, seq_len, device, precision)  # the same computation as `chargen score`


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag so the loop can save before leaving."""

    def __init__(self) -> None:
        self.stop = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: keep default handling
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(
    run_dir: Path,
    codec: Codec,
    corpus: CorpusInfo,
    model_config: ModelConfig | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    report: Reporter | None = None,
    pause_at_step: int | None = None,
) -> TrainResult:
    """Train (or resume) the run in ``run_dir``, whose ``tokens.npy`` is already built."""
    report = report or (lambda message: print(message, file=sys.stderr))
    state: dict[str, Any] | None = None
    if resume:
        state = load_state(run_dir / STATE)
        model_config = ModelConfig.from_dict(state["model_config"])
        saved = TrainConfig.from_dict(state["train_config"])
        if config is not None:  # only how long to go on may change on resume
            saved.minutes, saved.device, saved.threads = config.minutes, config.device, config.threads
        config = saved
    assert model_config is not None and config is not None
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)

    split: Split = split_tokens(load_tokens(run_dir / TOKENS), config.val_fraction, config.batch_size, config.seq_len)
    augment = None
    if config.transpose is not None and config.transpose != (0, 0):
        if not codec.supports_transpose:
            raise ChargenError(f"--transpose applies to MIDI corpora; the {codec.name} codec cannot transpose")
        low, high = config.transpose

        def augment(window: np.ndarray, step: int) -> np.ndarray:
            rng = np.random.default_rng((config.seed, step))  # a function of the step: resumes exactly
            return codec.augment_window(window, rng, low, high)

    batcher = StreamBatcher(split.train, config.batch_size, config.seq_len, augment)
    model = CharRNN(model_config).to(device)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.dim() >= 2 and "embed" not in name else no_decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.99),
        **({"fused": True} if device.type == "cuda" else {}),
    )
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    step, best_val, elapsed_before, evals = 0, math.inf, 0.0, []
    hidden: State | None = None
    if config.max_steps:
        total_steps = config.max_steps
    elif config.epochs:
        total_steps = max(1, int(config.epochs * batcher.steps_per_epoch))
    else:
        total_steps = 0  # set from measured speed when --minutes is the budget
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"])
        step, total_steps = int(state["step"]), int(state["total_steps"])
        best_val, elapsed_before = float(state["best_val"]), float(state["elapsed_s"])
        evals = list(state.get("evals", []))
        if state.get("hidden"):
            hidden = tuple(h.to(device) for h in state["hidden"])

    training_info = {
        "chargen_version": __version__,
        "corpus_sha256": corpus.sha256,
        "corpus_tokens": corpus.tokens,
        "corpus_paths": corpus.paths,
        "train_config": config.to_dict(),
    }

    def checkpoint(val_loss: float | None) -> None:
        nonlocal best_val
        info = dict(training_info, step=step, best_val_loss=best_val if math.isfinite(best_val) else None)
        if val_loss is not None and val_loss < best_val:
            best_val = val_loss
            info["best_val_loss"] = best_val
            save_weights(run_dir / BEST, model, codec, info)
        save_weights(run_dir / LAST, model, codec, info)
        save_state(
            run_dir / STATE,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                **({"rng_cuda": torch.cuda.get_rng_state()} if device.type == "cuda" else {}),
                "step": step,
                "total_steps": total_steps,
                "best_val": best_val,
                "elapsed_s": elapsed_before + (time.monotonic() - start),
                "evals": evals,
                "hidden": [h.detach().cpu() for h in hidden] if hidden is not None else [],
                "model_config": model_config.to_dict(),
                "train_config": config.to_dict(),
                "chargen_version": __version__,
            },
        )

    if state is None:
        write_json(
            run_dir / RUN_JSON,
            {"corpus": asdict(corpus), "codec": codec.name, "model_config": model_config.to_dict(),
             "train_config": config.to_dict(), "chargen_version": __version__},
        )
    for stale in run_dir.glob(".*.tmp"):  # left by a write that was killed half-way
        stale.unlink(missing_ok=True)
    start = time.monotonic()
    deadline = start + config.minutes * 60 if config.minutes else math.inf
    if state is None:
        checkpoint(None)  # from the first moment on, the run folder is resumable

    tokens_per_step = config.batch_size * config.seq_len
    bar = tqdm(total=total_steps or None, initial=step, file=sys.stderr, disable=None if progress else True,
               unit="step", dynamic_ncols=True, leave=True)
    last_train = last_val = None
    interrupted = False
    # --minutes: the schedule's length is fitted to the measured speed, first after a
    # few warm-up steps, then again at every evaluation (which then counts too).
    fit_budget = not total_steps and math.isfinite(deadline)
    first_step = step
    mark: tuple[int, float] | None = None
    model.train()
    with _StopFlag() as flag:
        while True:
            if total_steps and step >= total_steps:
                break
            if pause_at_step is not None and step >= pause_at_step:
                interrupted = True
                break
            if flag.stop or time.monotonic() >= deadline:
                interrupted = flag.stop
                break
            if fit_budget and step == first_step + 5:
                mark = (step, time.monotonic())
            refit = not total_steps or (step % 25 == 0 and time.monotonic() - start < 0.6 * (deadline - start))
            if fit_budget and mark and refit and step >= mark[0] + 20:
                per_step = (time.monotonic() - mark[1]) / (step - mark[0])  # includes evals so far
                eval_cost = per_step * len(split.val) / tokens_per_step / 3  # forward only
                total_steps = _fit_steps(step, deadline, per_step + eval_cost / config.eval_every)
                bar.reset(total=total_steps)
                bar.update(step)
            if batcher.starts_epoch(step):
                hidden = None
            x, y = batcher.batch(step)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            lr = lr_at(step, total_steps or 10**9, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast_context(device, precision):
                logits, hidden = model(x, hidden)  # [B, T, V]
                loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
            hidden = detach_state(hidden)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
            step += 1
            last_train = loss.item()
            if not math.isfinite(last_train):
                raise ChargenError(f"training diverged at step {step} (loss is {last_train}); lower --lr")
            elapsed = time.monotonic() - start
            chars_per_s = (step - (int(state["step"]) if state else 0)) * tokens_per_step / max(elapsed, 1e-9)
            bar.update(1)
            bar.set_postfix_str(
                f"loss {last_train:.3f}" + (f" val {last_val:.3f}" if last_val else "") + f" {chars_per_s:,.0f} chars/s"
            )
            if step % config.eval_every == 0 and not (total_steps and step >= total_steps):
                last_val = evaluate(model, split.val, config.seq_len, device, precision)
                evals.append({"step": step, "minutes": (elapsed_before + elapsed) / 60, "val_loss": last_val,
                              "train_loss": last_train})
                bar.write(_eval_line(step, last_train, last_val, chars_per_s), file=sys.stderr)
                checkpoint(last_val)
        # Final evaluation and save, also when stopped early by Ctrl-C, deadline or pause.
        if step > (int(state["step"]) if state else 0) or state is None:
            last_val = evaluate(model, split.val, config.seq_len, device, precision)
            elapsed = time.monotonic() - start
            evals.append({"step": step, "minutes": (elapsed_before + elapsed) / 60, "val_loss": last_val,
                          "train_loss": last_train if last_train is not None else math.nan})
            checkpoint(last_val)
    bar.close()
    elapsed = time.monotonic() - start
    done = step - (int(state["step"]) if state else 0)
    result = TrainResult(
        run_dir=run_dir, step=step, total_steps=total_steps, best_val_loss=best_val, last_val_loss=last_val,
        last_train_loss=last_train, interrupted=interrupted, elapsed_s=elapsed_before + elapsed,
        chars_per_s=done * tokens_per_step / max(elapsed, 1e-9), evals=evals,
    )
    if last_val is not None:
        report(_eval_line(step, last_train, last_val, result.chars_per_s, final=True))
    return result


def _fit_steps(step: int, deadline: float, seconds_per_step: float) -> int:
    """Total steps that fit before ``deadline`` at the measured pace."""
    return step + max(1, int((deadline - time.monotonic()) / seconds_per_step))


def _eval_line(step: int, train_loss: float | None, val_loss: float, chars_per_s: float, final: bool = False) -> str:
    train_part = f" train {train_loss:.4f} |" if train_loss is not None else ""
    label = "final" if final else "step"
    return (f"{label} {step}:{train_part} val {val_loss:.4f} nats/char ({val_loss / LN2:.3f} bpc)"
            f" | {chars_per_s:,.0f} chars/s")
