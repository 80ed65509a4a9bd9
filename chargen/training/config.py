"""What a training run is asked to do (``TrainConfig``), what it did (``TrainResult``), the lr schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from chargen.device import check_device_name, check_precision_name
from chargen.errors import ChargenError

#: Transposition is limited to two octaves either way: beyond, notes leave the piano's range.
MAX_TRANSPOSE = 24
#: ``--eval-every``'s default is lowered to one evaluation per pass over a small corpus, but not below
#: this many steps: each evaluation also writes a checkpoint.
MIN_EVAL_EVERY = 20

#: An evaluation during training scores a sample of the validation split sized so that it costs at most
#: about this share of the training between two evaluations (a forward pass costs about a third of a
#: training step per token: the sample is EVAL_SHARE * 3 tokens per token trained between evaluations)...
EVAL_SHARE = 0.1
#: ...and never fewer tokens than this: a split of up to EVAL_TOKENS_FLOOR tokens (tiny-shakespeare's
#: 111,540) is always evaluated whole, as before there was a sample.
EVAL_TOKENS_FLOOR = 1 << 17

Reporter = Callable[[str], None]

#: AdamW's decoupled weight decay on the weight matrices (chargen/training/optim.py). Measured at equal steps on
#: tiny-shakespeare (benchmarks/quality_probes.jsonl, averaged weights): medium over a 10-minute schedule 1.3894
#: with 0.3, 1.4020 with 0.1, 1.4133 without (1.0 fell behind early); small over a 2-minute one 1.4746 with 0.3,
#: 1.4737 with 0.1, 1.4845 without.
WEIGHT_DECAY = 0.3


@dataclass
class TrainConfig:
    batch_size: int = 32
    seq_len: int = 100
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = WEIGHT_DECAY
    grad_clip: float = 1.0
    ema: float = 0.99  # evaluate and save an average of the weights over ~1/(1 - ema) steps; 0: the raw weights
    epochs: float | None = None
    max_steps: int | None = None
    minutes: float | None = None
    eval_every: int = 200
    eval_tokens: int | None = None  # validation tokens per evaluation while training; None: auto; 0: the whole split
    val_fraction: float = 0.1
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    transpose: tuple[int, int] | None = None  # MIDI: random per-stream transposition range, semitones

    def __post_init__(self) -> None:
        if self.transpose is not None:
            self.transpose = (int(self.transpose[0]), int(self.transpose[1]))
        self.validate()

    def validate(self) -> None:
        """Refuse values that would train forever, crash later, or diverge silently (NaN, inf, negative)."""
        _positive_int("--batch-size", self.batch_size)
        _positive_int("--seq-len", self.seq_len)
        _positive_int("--eval-every", self.eval_every)
        _positive_int("--warmup-steps", self.warmup_steps, minimum=0)
        _positive_int("--seed", self.seed, minimum=None)
        if self.eval_tokens is not None:
            _positive_int("--eval-tokens", self.eval_tokens, minimum=0)
        for name, value in (("--max-steps", self.max_steps), ("--threads", self.threads)):
            if value is not None:
                _positive_int(name, value)
        _finite("--lr", self.lr, low=0.0, low_open=True)
        _finite("--weight-decay", self.weight_decay, low=0.0)
        _finite("--grad-clip", self.grad_clip, low=0.0, low_open=True)
        _finite("--ema", self.ema, low=0.0, high=1.0, high_open=True)
        _finite("--min-lr-ratio", self.min_lr_ratio, low=0.0, high=1.0)
        _finite("--val-fraction", self.val_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
        for name, value in (("--epochs", self.epochs), ("--minutes", self.minutes)):
            if value is not None:
                _finite(name, value, low=0.0, low_open=True)
        check_device_name(self.device)
        check_precision_name(self.precision)
        if self.transpose is not None and not -MAX_TRANSPOSE <= self.transpose[0] <= self.transpose[1] <= MAX_TRANSPOSE:
            raise ChargenError(f"--transpose {self.transpose}: need -{MAX_TRANSPOSE} <= LOW <= HIGH <= {MAX_TRANSPOSE}")

    @property
    def has_stop(self) -> bool:
        """Whether any limit (steps, epochs, minutes) ends the run."""
        return self.max_steps is not None or self.epochs is not None or self.minutes is not None

    def evaluation_tokens(self) -> int | None:
        """Validation tokens an evaluation during training scores (None: the whole split): ``eval_tokens``,
        else sized by the training between two evaluations (EVAL_SHARE), at least EVAL_TOKENS_FLOOR."""
        if self.eval_tokens is not None:
            return self.eval_tokens or None
        trained = self.eval_every * self.batch_size * self.seq_len
        return max(EVAL_TOKENS_FLOOR, round(EVAL_SHARE * 3 * trained))

    def with_eval_interval(self, steps_per_pass: int) -> TrainConfig:
        """The config evaluating at least once per pass over the corpus (``steps_per_pass`` steps), where
        ``--eval-every`` was left at its default: on a corpus of a few dozen steps per pass, 200 steps
        between evaluations spans passes in which the model can overfit, and the best checkpoint falls
        between two evaluations. Not below MIN_EVAL_EVERY steps."""
        default = TrainConfig.__dataclass_fields__["eval_every"].default
        if self.eval_every != default or steps_per_pass >= default:
            return self
        return replace(self, eval_every=max(MIN_EVAL_EVERY, steps_per_pass))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("ema", 0.0)  # saved before weight averaging existed: resumes as it ran
        values.setdefault("weight_decay", 0.0)  # likewise a run saved before decay was a default
        return cls(**values)


def _positive_int(name: str, value: object, minimum: int | None = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ChargenError(f"{name} must be a whole number, not {value!r}")
    if minimum is not None and value < minimum:
        raise ChargenError(f"{name} must be at least {minimum}, not {value}")


def _finite(name: str, value: object, low: float, high: float | None = None, low_open: bool = False,
            high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ChargenError(f"{name} must be a finite number, not {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lower = f"{'>' if low_open else '>='} {low:g}"
        upper = f" and {'<' if high_open else '<='} {high:g}" if high is not None else ""
        raise ChargenError(f"{name} must be {lower}{upper}, not {value:g}")


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
    val_sampled: bool = False  # the evaluations during the run scored a sample of the validation split
    whole_val_loss: float | None = None  # the whole split's loss at the end of a sampled run


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio * lr``."""
    warmup = min(cfg.warmup_steps, max(1, total_steps // 10))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
