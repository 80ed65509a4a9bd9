"""What a training run is asked to do (``TrainConfig``), what it did (``TrainResult``), the lr schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from chargen.errors import ArgumentError
from chargen.options import check_fields, option

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

#: AdamW's decoupled weight decay on the weight matrices (chargen/training/optim.py): better than none at both a
#: 2- and a 10-minute schedule, and than 0.1 or 1.0 (benchmarks/quality_probes.jsonl).
WEIGHT_DECAY = 0.3
#: The budget of a run given no limit at all (no minutes, max_steps or epochs).
DEFAULT_MINUTES = 10.0


#: A cap for counts a user could mistype by orders of magnitude (steps, epochs).
HUGE = 10**9
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """How to train: the one definition of the training options, their defaults and bounds (the API's
    ``chargen.train`` keywords and the CLI's options derive from it)."""

    batch_size: int = option(32, "Parallel streams per batch (per process under torchrun).", low=1, high=65536)
    seq_len: int = option(100, "Tokens per stream per step (truncated BPTT length).", low=1, high=1_000_000)
    lr: float = option(3e-3, "Peak learning rate (linear warmup, cosine decay to 10%).", low=0, low_open=True,
                       high=10, default_text="3e-3; a size chosen for minutes takes 5e-3 x sqrt(512/width)")
    min_lr_ratio: float = option(0.1, "Where the cosine decay ends, as a share of lr.", low=0, high=1, cli=False)
    warmup_steps: int = option(100, "Linear warmup steps (at most a tenth of the run).", low=0, high=HUGE, cli=False)
    weight_decay: float = option(WEIGHT_DECAY, "AdamW's decoupled weight decay on the weight matrices (not biases "
                                 "or embeddings); 0: none.", low=0, high=10)
    grad_clip: float = option(1.0, "Gradient norm clip.", low=0, low_open=True, high=HUGE, cli=False)
    ema: float = option(0.99, "Evaluate and save a moving average of the weights over about 1/(1-ema) steps; "
                        "0: the raw weights.", low=0, high=1, high_open=True)
    epochs: float | None = option(None, "Stop after this many passes over the corpus.", low=0, low_open=True,
                                  high=HUGE)
    max_steps: int | None = option(None, "Stop after this many steps (on resume: go on to this step, also past a "
                                   "finished run's end).", low=1, high=HUGE)
    minutes: float | None = option(None, "Wall-clock budget; the schedule (and, without a size, the model) is "
                                   "fitted to it.", low=0, low_open=True, high=366 * 24 * 60,
                                   default_text=f"{DEFAULT_MINUTES:g} when no other limit is given")
    eval_every: int = option(200, "Validate and checkpoint every N steps (a corpus of fewer steps per pass: once "
                             "per pass, at least every 20 steps).", low=1, high=HUGE, metavar="N")
    eval_tokens: int | None = option(None, "Validation tokens an evaluation during training scores (a fixed "
                                     "sample of a larger split; the whole split at the end); 0: the whole split "
                                     "every time.", low=0, high=HUGE, metavar="N",
                                     default_text="sized by the training between evaluations, at least 131072")
    val_fraction: float = option(0.1, "Last fraction of the corpus held out for validation.", low=0, low_open=True,
                                 high=1, high_open=True)
    seed: int = option(1337, "Seed for weights, dropout and augmentation.", low=0, high=2**63 - 1)
    device: str = option("auto", "Device to train on (auto: CUDA when present).", choices=DEVICES)
    precision: str = option("auto", "auto: the fastest that holds the loss, measured (cached) per machine and "
                            "model.", choices=PRECISIONS)
    threads: int | None = option(None, "CPU threads.", low=1, high=1024,
                                 default_text="the free cores, re-measured at each evaluation")
    # MIDI: random per-stream transposition range, semitones
    transpose: tuple[int, int] | None = option(None, "MIDI only: transpose each training stream by a random shift "
                                               "in LOW..HIGH semitones, e.g. -5..6.", low=-MAX_TRANSPOSE,
                                               high=MAX_TRANSPOSE, metavar="LOW..HIGH")

    def __post_init__(self) -> None:
        if isinstance(self.transpose, list):
            self.transpose = tuple(self.transpose)  # type: ignore[assignment]  (from JSON)
        self.validate()

    def validate(self) -> None:
        """Refuse values that would train forever, crash later, or diverge silently (NaN, inf, negative)."""
        check_fields(self)
        if self.transpose is not None and self.transpose[0] > self.transpose[1]:
            raise ArgumentError(f"transpose {self.transpose}: need LOW <= HIGH")

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
