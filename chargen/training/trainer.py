"""``Trainer``: one model, its optimizer and data, advanced by ``step()``, scored by ``evaluate()``,
saved by ``checkpoint()``; ``fit()`` is the loop that ``chargen train`` runs, reporting through a callback.

Everything random (initial weights, dropout) draws from torch's global generator,
seeded once here, and the data position is a function of the step number; so a
run is a pure function of its configuration, and a resumed one continues it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from chargen.codecs.base import Codec
from chargen.errors import ChargenError
from chargen.machine.device import autocast_context, resolve_device, resolve_precision
from chargen.machine.threads import ThreadTuner
from chargen.model import CharRNN, ModelConfig, detach_state
from chargen.runs.checkpoint import save_state, save_weights
from chargen.runs.layout import BEST, LAST, STATE, TOKENS
from chargen.sampling.music_defaults import is_music_codec, music_training_info
from chargen.scoring.evaluate import mean_loss, scored_tokens
from chargen.training.averaging import WeightAverage
from chargen.training.budget import WHOLE_SHARE, StepBudget
from chargen.training.config import TrainConfig, lr_at
from chargen.training.data import CorpusInfo, Split, release_pages
from chargen.training.distributed import current as current_distributed
from chargen.training.optim import build_optimizer, grad_scaler
from chargen.training.state import TrainingState
from chargen.version import __version__


@dataclass
class Progress:
    """What the progress callback is told: ``kind`` is "step", "eval", "final" or "schedule"."""

    kind: str
    step: int
    total_steps: int  # 0 while a --minutes budget has not fitted the schedule yet
    train_loss: float | None
    val_loss: float | None
    lr: float
    chars_per_s: float  # of this session (since start or resume)
    elapsed_s: float  # of the whole run, all sessions together
    precision: str
    val_tokens: int | None = None  # validation tokens val_loss scored
    val_sampled: bool = False  # val_loss is on the evaluation sample, not the whole split
    whole_val_loss: float | None = None  # "final" of a sampled run: the whole split's loss


ProgressCallback = Callable[[Progress], None]


def planned_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """The schedule's length from --max-steps or --epochs; 0 leaves it to a --minutes budget."""
    if config.max_steps:
        return config.max_steps
    if config.epochs:
        return max(1, int(config.epochs * steps_per_epoch))
    return 0


#: Share of a labelled run's (stream, window) pairs trained with "no label": unlabelled sampling
#: from a labelled model stays in the distribution it learnt.
LABEL_DROPOUT = 0.1


@torch.no_grad()
def evaluate(model: CharRNN, val: np.ndarray, seq_len: int, device: torch.device, precision: str,
             labels: np.ndarray | None = None, max_tokens: int | None = None) -> float:
    """Mean validation loss in nats per token over the validation split (what `chargen score` computes),
    or over its sample of ``max_tokens`` (``chargen.training.data.validation_layout``)."""
    return mean_loss(model, val, seq_len, device, precision, labels=labels, max_tokens=max_tokens)


class Trainer:
    """Trains ``model_config`` on ``data`` as ``config`` says; resumes from a ``state.pt`` payload.

    ``run_dir`` and ``codec`` are needed only to checkpoint; without them (benchmarks)
    the Trainer just steps and evaluates.
    """

    def __init__(self, model_config: ModelConfig, config: TrainConfig, data: Split, codec: Codec | None = None,
                 run_dir: Path | None = None, corpus: CorpusInfo | None = None,
                 resume_from: dict[str, Any] | None = None, on_progress: ProgressCallback | None = None,
                 precision: str | None = None, threads: ThreadTuner | None = None,
                 calibration: dict[str, Any] | None = None):
        """``precision``: a concrete one (``auto`` is resolved by whoever builds the Trainer, e.g. by
        measuring: :func:`chargen.machine.calibrate.choose_precision`); None: the device's default.
        ``calibration``: how it was chosen, recorded with the run."""
        self.threads = threads or ThreadTuner(config.threads)  # threads N, else the cores free, re-measured
        self.model_config, self.config, self.data = model_config, config, data
        self.codec, self.run_dir, self.corpus = codec, run_dir, corpus
        self.parent: dict[str, Any] | None = None  # the run a fine-tuned run started from
        self.on_progress = on_progress or (lambda progress: None)
        self.device = resolve_device(config.device)
        self.dist = current_distributed()  # torchrun: this rank's place; else a no-op
        self.precision = precision or resolve_precision(config.precision, self.device)
        self.calibration = calibration or {"precision": self.precision, "requested": config.precision}
        torch.manual_seed(config.seed)
        self.batcher = self.dist.batcher(data.train, config.batch_size, config.seq_len, self._augmentation(),
                                         labels=data.train_labels)
        if (data.train_labels is not None) != bool(model_config.labels):
            raise ChargenError("a labelled model needs a labelled corpus, and an unlabelled one an unlabelled corpus")
        self.model = CharRNN(model_config).to(self.device)
        self.forward = self.dist.wrap(self.model, self.device)  # DDP under torchrun; saved: self.model
        self.optimizer = build_optimizer(self.model, config, self.device)
        self.scaler = grad_scaler(self.device, self.precision)
        self.tokens_per_step = config.batch_size * config.seq_len
        # The weight average (config.ema): made at the first step, from the weights training starts from
        # (a fine-tuned run's parent's, loaded after this constructor); restored on resume.
        self.average: WeightAverage | None = None
        if resume_from is None:
            self.state = TrainingState(total_steps=planned_steps(config, self.batcher.steps_per_epoch))
        else:
            self.state = TrainingState.restore(resume_from, self.model, self.optimizer, self.device)
            self.state.hidden = self.dist.shard_hidden(self.state.hidden)
            if config.ema and "average" in resume_from:
                self.average = WeightAverage.restore(resume_from["average"], self.model, config.ema)
        self.resumed = resume_from is not None
        self.session_start_step = self.state.step
        self.last_train: float | None = None
        self.last_val: float | None = None
        self.whole_val: float | None = None  # the whole split's loss, evaluated at the end of a sampled run
        self.lr = lr_at(self.state.step, self.state.total_steps or 10**9, config)
        self.overhead_s = 0.0  # time in evaluations and saves this session (the budget's pace excludes it)
        self.evals_done = 0
        self.eval_s = 0.0  # of overhead_s: in the evaluations during training (what the whole split's is told from)
        self.whole_skipped_s: float | None = None  # the whole split's estimated cost, when the end skipped it
        self.started = time.monotonic()
        # Music runs: the corpus's polyphony cap, longest hold and texture, and the codec's default grammar,
        # stored with the weights for decoding (chargen.sampling.music_defaults) and `chargen info`.
        tokens = run_dir / TOKENS if run_dir is not None else None
        self.music_info = music_training_info(codec, tokens) \
            if codec is not None and is_music_codec(codec) and tokens is not None and tokens.is_file() else {}

    def _augmentation(self) -> Callable[[np.ndarray, int], np.ndarray] | None:
        config, codec = self.config, self.codec
        if config.transpose is None or config.transpose == (0, 0):
            return None
        if codec is None or not codec.supports_transpose:
            name = codec.name if codec is not None else "given"
            raise ChargenError(f"transpose applies to MIDI corpora; the {name} codec cannot transpose")
        low, high = config.transpose

        def augment(window: np.ndarray, step: int) -> np.ndarray:
            rng = np.random.default_rng((config.seed, step))  # a function of the step: resumes exactly
            return codec.augment_window(window, rng, low, high)

        return augment

    # ------------------------------------------------------------------ the three operations

    def step(self) -> float:
        """One optimisation step on the next batch; returns its training loss."""
        state, config = self.state, self.config
        if config.ema and self.average is None:  # from the weights training starts from
            self.average = WeightAverage(self.model, config.ema)
        if self.batcher.starts_epoch(state.step):
            state.hidden = None
        x, y = self.batcher.batch(state.step)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        self.dist.seed_dropout(config.seed, state.step)  # ranks > 0: their masks, a function of the step
        labels = self._labels(state.step)
        self.lr = lr_at(state.step, state.total_steps or 10**9, config)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        with autocast_context(self.device, self.precision):
            logits, hidden = self.forward(x, state.hidden, labels)  # [B, T, V]
            loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        state.hidden = detach_state(hidden)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.optimizer.step()
        if self.average is not None:
            self.average.update(self.model)
        state.step += 1
        self.last_train = self.dist.mean(loss.item())  # of the global batch
        if not math.isfinite(self.last_train):
            raise ChargenError(f"training diverged at step {state.step} (loss is {self.last_train}); "
                               "lower lr or weight_decay")
        return self.last_train

    def _labels(self, step: int) -> torch.Tensor | None:
        """A labelled run's input labels [B, T], LABEL_DROPOUT of the streams set to "no label" this step."""
        labels = self.batcher.batch_labels(step)
        if labels is None:
            return None
        rng = np.random.default_rng((self.config.seed, step, 1))  # a function of the step: resumes exactly
        dropped = torch.from_numpy(rng.random(labels.shape[0]) < LABEL_DROPOUT)
        labels[dropped] = self.model_config.no_label
        return labels.to(self.device, non_blocking=True)

    @property
    def evaluated_model(self) -> CharRNN:
        """What evaluations score and checkpoints save: the weight average, else the raw weights."""
        return self.average.module if self.average is not None else self.model

    @property
    def val_tokens(self) -> int:
        """Validation tokens an evaluation during training scores (the sample, or the whole split)."""
        return scored_tokens(len(self.data.val), self.config.seq_len, max_tokens=self.config.evaluation_tokens())

    @property
    def whole_val_tokens(self) -> int:
        return scored_tokens(len(self.data.val), self.config.seq_len)

    @property
    def sampled(self) -> bool:
        """Whether evaluations during training score a sample: the split holds more than the cap."""
        return self.val_tokens < self.whole_val_tokens

    def evaluate(self, whole: bool = False) -> float:
        """Validation loss (nats per token) over the evaluation sample (the whole split when it is under
        the cap), recorded in the state; ``whole``: over the whole split, kept apart (``whole_val``)."""
        began = time.monotonic()
        loss = evaluate(self.evaluated_model, self.data.val, self.config.seq_len, self.device, self.precision,
                        self.data.val_labels, None if whole else self.config.evaluation_tokens())
        for part in (self.data.train, self.data.val, self.data.train_labels, self.data.val_labels):
            if part is not None:
                release_pages(part)  # the corpus read so far leaves this process's memory (it stays cached)
        seconds = time.monotonic() - began
        self.overhead_s += seconds
        if whole:
            self.whole_val = loss
            return loss
        self.eval_s += seconds
        self.last_val = loss
        self.state.evals.append({"step": self.state.step, "minutes": self.elapsed_s / 60, "val_loss": self.last_val,
                                 "train_loss": self.last_train if self.last_train is not None else math.nan})
        self.evals_done += 1
        return self.last_val

    def checkpoint(self, val_loss: float | None = None) -> None:
        """Save last weights, best weights when ``val_loss`` is the best so far, and the resume state."""
        if self.run_dir is None or self.codec is None:
            raise ValueError("this Trainer has no run folder and codec to checkpoint into")
        began = time.monotonic()
        state = self.state
        hidden = self.dist.gather_hidden(state.hidden)  # every rank takes part; rank 0 alone writes
        is_best = val_loss is not None and val_loss < state.best_val
        if is_best:
            state.best_val = val_loss
        if not self.dist.is_main:
            return
        info = dict(self.training_info(), step=state.step,
                    best_val_loss=state.best_val if math.isfinite(state.best_val) else None)
        if is_best:
            save_weights(self.run_dir / BEST, self.evaluated_model, self.codec, info)
        save_weights(self.run_dir / LAST, self.evaluated_model, self.codec, info)
        save_state(self.run_dir / STATE, replace(state, hidden=hidden).to_state_dict(
            self.model, self.optimizer, self.device, self.model_config, self.config, self.elapsed_s, self.average))
        self.overhead_s += time.monotonic() - began

    # ------------------------------------------------------------------ the loop

    def fit(self, stop: Callable[[], bool] = lambda: False, budget: StepBudget | None = None,
            pause_at_step: int | None = None) -> bool:
        """Train until the schedule ends, ``stop()`` says so, the budget runs out or ``pause_at_step``;
        evaluate and checkpoint every ``eval_every`` steps and at the end. Returns whether it was
        interrupted (stopped or paused before the schedule's end)."""
        state, config = self.state, self.config
        interrupted = False
        self.model.train()
        self.threads.revisit(state.step)
        while True:
            if state.total_steps and state.step >= state.total_steps:
                break
            if pause_at_step is not None and state.step >= pause_at_step:
                interrupted = True
                break
            if stop():
                interrupted = True
                break
            if budget is not None and budget.expired():
                break
            if budget is not None:
                fitted = budget.observe(state.step, self.overhead_s, self.evals_done)
                if fitted is not None:
                    state.total_steps = fitted
                    self._report("schedule")
            self.threads.before_step()
            began = time.perf_counter()
            self.step()
            self.threads.after_step(time.perf_counter() - began, state.step)
            self._report("step")
            if state.step % config.eval_every == 0 and not (state.total_steps and state.step >= state.total_steps):
                self.evaluate()
                self._report("eval")
                self._save(self.last_val)
                self.threads.revisit(state.step)  # the neighbours may have come or gone
        # Final evaluation and save, also when stopped early by Ctrl-C, deadline or pause; a run that
        # reached its end also scores the whole split, where it was sampled and that costs a share of the run.
        if state.step > self.session_start_step or not self.resumed:
            self.evaluate()
            if not interrupted and self.sampled:
                if self._whole_fits(budget):
                    self.evaluate(whole=True)
                else:
                    self.whole_skipped_s = self.whole_estimate_s()
            self._report("final")
            self._save(self.last_val)
        return interrupted

    def whole_estimate_s(self) -> float:
        """What scoring the whole split would take, from this session's evaluations of the sample."""
        per_token = self.eval_s / max(1, self.evals_done * self.val_tokens)
        return per_token * self.whole_val_tokens

    def _whole_fits(self, budget: StepBudget | None) -> bool:
        """Whether the end scores the whole split: within a --minutes budget's room for it (``StepBudget``), else
        when it costs at most WHOLE_SHARE of the run so far (a run of a few steps on a huge corpus skips it)."""
        if budget is not None:
            return budget.whole_evaluation_fits(self.eval_s, self.evals_done)
        return self.whole_estimate_s() <= WHOLE_SHARE * self.elapsed_s

    def _save(self, val_loss: float | None) -> None:
        if self.run_dir is not None:
            self.checkpoint(val_loss)

    def _report(self, kind: str) -> None:
        self.on_progress(Progress(
            kind=kind, step=self.state.step, total_steps=self.state.total_steps, train_loss=self.last_train,
            val_loss=self.last_val if kind in ("eval", "final") else None, lr=self.lr,
            chars_per_s=self.chars_per_s, elapsed_s=self.elapsed_s, precision=self.precision,
            val_tokens=self.val_tokens if kind in ("eval", "final") else None, val_sampled=self.sampled,
            whole_val_loss=self.whole_val if kind == "final" else None))

    # ------------------------------------------------------------------ facts

    @property
    def session_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def elapsed_s(self) -> float:
        """Wall-clock of the whole run: earlier sessions plus this one."""
        return self.state.elapsed_s + self.session_s

    @property
    def chars_per_s(self) -> float:
        return (self.state.step - self.session_start_step) * self.tokens_per_step / max(self.session_s, 1e-9)

    def training_info(self) -> dict[str, Any]:
        """What the weights' metadata says about how they were trained."""
        corpus = self.corpus
        return {
            "chargen_version": __version__,
            "corpus_sha256": corpus.sha256 if corpus else None,
            "corpus_tokens": corpus.tokens if corpus else None,
            "corpus_paths": corpus.paths if corpus else None,
            "train_config": dict(self.config.to_dict(), **self.speed_info()),
            "world_size": self.dist.world_size,  # processes that trained together (torchrun)
            **self.music_info,
            **({"parent": self.parent} if self.parent else {}),
        }

    def speed_info(self) -> dict[str, Any]:
        """How the precision and threads were chosen (run.json, the weights' metadata, the history's row)."""
        return {"precision_used": self.precision, "calibration": self.calibration,
                "threads_used": self.threads.threads, "threads_history": self.threads.history}
