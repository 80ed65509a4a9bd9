"""``train()``: one training session of a run folder, as ``chargen train`` runs it.

It prepares the folder (``run.json`` with the run's status, stale temp files),
restores a resumed run and applies a new limit given on resume, builds the
``Trainer``, and wires its progress callback to the progress bar, the log lines
and ``metrics.jsonl``; Ctrl-C/SIGTERM become a save-and-stop.
"""

from __future__ import annotations

import math
import signal
import sys
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from chargen.codecs.base import Codec
from chargen.errors import ChargenError, CheckpointError
from chargen.files.atomic import sha256_file
from chargen.machine.calibrate import choose_precision
from chargen.machine.device import resolve_device
from chargen.machine.threads import ThreadTuner
from chargen.model import ModelConfig
from chargen.runs import checks
from chargen.runs.checkpoint import load_state
from chargen.runs.layout import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    LABELS,
    RUN_JSON,
    RUNNING,
    STATE,
    TOKENS,
    read_run_json,
    update_run_json,
    write_json,
)
from chargen.runs.metrics import MetricsLog
from chargen.terminal import printable
from chargen.training import distributed
from chargen.training.budget import StepBudget
from chargen.training.config import Reporter, TrainConfig, TrainResult
from chargen.training.data import CorpusInfo, load_tokens, split_tokens
from chargen.training.finetune import Initialisation
from chargen.training.trainer import Progress, Trainer, planned_steps
from chargen.version import __version__

LN2 = math.log(2)
#: Between evaluations, a progress point goes to metrics.jsonl at most this often (seconds).
METRICS_EVERY_S = 10.0


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag so the loop can save before leaving."""

    def __init__(self) -> None:
        self.stop = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
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


def resume_config(saved: TrainConfig, given: TrainConfig | None, planned_total: int) -> tuple[TrainConfig, bool]:
    """The configuration a resumed run goes on with, and whether ``given`` set a new limit.

    Only how long to go on, the device and the threads may change on resume. A limit
    given on resume (--max-steps, --epochs, --minutes) replaces the saved ones and wins,
    also over a finished run's end. Without one, the run goes on to its planned end; a
    --minutes budget that never fitted its schedule starts afresh.
    """
    if given is None:
        return saved, False
    config = replace(saved, device=given.device, threads=given.threads)
    if given.has_stop:
        return replace(config, max_steps=given.max_steps, epochs=given.epochs, minutes=given.minutes), True
    return replace(config, minutes=saved.minutes if planned_total == 0 else None), False


def _limit_text(config: TrainConfig) -> str:
    parts = [f"{config.max_steps} steps" if config.max_steps else "",
             f"{config.epochs:g} epochs" if config.epochs else "",
             f"{config.minutes:g} minutes" if config.minutes else ""]
    return " and ".join(p for p in parts if p)


class ProgressOutput:
    """Where a session's progress goes: the progress bar, a line per evaluation, ``metrics.jsonl``."""

    def __init__(self, trainer: Trainer, metrics: MetricsLog, show_bar: bool):
        self.trainer, self.metrics = trainer, metrics
        self.bar = tqdm(total=trainer.state.total_steps or None, initial=trainer.state.step, file=sys.stderr,
                        disable=None if show_bar else True, unit="step", dynamic_ncols=True, leave=True)
        self.last_point, self.last_step = time.monotonic(), -1

    def __call__(self, p: Progress) -> None:
        if p.kind == "schedule":
            self.bar.reset(total=p.total_steps)
            self.bar.update(p.step)
            return
        if p.kind == "step":
            val = self.trainer.last_val
            self.bar.update(1)
            self.bar.set_postfix_str(f"loss {p.train_loss:.3f}" + (f" val {val:.3f}" if val else "")
                                     + f" {p.chars_per_s:,.0f} chars/s")
            if time.monotonic() - self.last_point < METRICS_EVERY_S or p.step % self.trainer.config.eval_every == 0:
                return  # not yet; or an evaluation of this very step is about to be written
        elif p.kind == "eval":
            self.bar.write(_eval_line(p.step, p.train_loss, p.val_loss or math.nan, p.chars_per_s,
                                      sample=p.val_tokens if p.val_sampled else None), file=sys.stderr)
        elif p.step == self.last_step:
            return  # the final evaluation of a step just evaluated: one line per step
        self.last_point, self.last_step = time.monotonic(), p.step
        self.metrics.append(step=p.step, elapsed_s=round(p.elapsed_s, 3), train_loss=p.train_loss,
                            val_loss=p.val_loss, lr=p.lr, chars_per_s=round(p.chars_per_s, 1), precision=p.precision,
                            val_tokens=p.val_tokens, val_sample=p.val_sampled if p.val_loss is not None else None,
                            whole_val_loss=p.whole_val_loss)

    def close(self) -> None:
        self.bar.close()
        self.metrics.close()


def _restore(run_dir: Path, given: TrainConfig | None) -> tuple[dict[str, Any], ModelConfig, TrainConfig, bool]:
    """A resumed run's saved state, model and training configuration, and whether a new limit was given.

    The state is checked against the run before anything of it is used: its run id against ``run.json``'s
    (a ``state.pt`` copied from another run is refused), its model weights against the run's config.
    """
    path = run_dir / STATE
    saved = load_state(path)
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: resume state is damaged (not a chargen state)")
    recorded = read_run_json(run_dir) or {}
    run_id = recorded.get("run_id")
    if run_id is not None and saved.get("run_id") != run_id:
        raise CheckpointError(f"{path}: belongs to another run (run id {printable(saved.get('run_id'))}, this run "
                              f"is {printable(run_id)}); cannot resume from it")
    try:
        model_config = checks.model_config(path, saved["model_config"])
        saved_config = TrainConfig.from_dict(saved["train_config"])
        planned_total = int(saved["total_steps"])
        int(saved["step"]), float(saved["best_val"]), float(saved["elapsed_s"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: resume state is damaged ({exc!r})") from None
    recorded_config = _config_or_none(recorded.get("model_config"))
    if recorded_config is not None and recorded_config != model_config:
        raise CheckpointError(f"{path}: its model is not the one run.json records; cannot resume from it")
    checks.check_state_model(path, model_config, saved.get("model"))
    config, new_limit = resume_config(saved_config, given, planned_total)
    return saved, model_config, config, new_limit


def _config_or_none(data: Any) -> ModelConfig | None:
    try:
        return ModelConfig.from_dict(data) if isinstance(data, dict) else None
    except (ChargenError, TypeError, ValueError):
        return None


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
    init: Initialisation | None = None,
    started: float | None = None,
) -> TrainResult:
    """Train (or resume) the run in ``run_dir``, whose ``tokens.npy`` is already built.

    ``init``: a new run starts from these weights (fine-tuning) and records their parent.
    ``started`` (``time.monotonic()``): when the caller began setting the run up; a --minutes
    budget counts from it (default: now), so sizing and calibration spend the user's minutes too.
    """
    started = time.monotonic() if started is None else started
    report = report or (lambda message: print(message, file=sys.stderr))
    saved, new_limit = None, False
    if resume:
        saved, model_config, config, new_limit = _restore(run_dir, config)
    if model_config is None or config is None:
        raise ValueError("a new run needs a model_config and a config")
    if model_config.vocab_size != codec.vocab_size:
        raise CheckpointError(f"{run_dir}: the model's vocabulary ({model_config.vocab_size}) is not the codec's "
                              f"({codec.vocab_size}); cannot train it")
    ranks = distributed.current()  # torchrun: the global batch; rank 0 alone writes and reports
    if not ranks.is_main:
        report, progress = (lambda message: None), False
    if saved is None:
        config = replace(config, batch_size=ranks.global_batch(config.batch_size))

    labels = load_tokens(run_dir / LABELS) if corpus.labels else None
    data = split_tokens(load_tokens(run_dir / TOKENS), config.val_fraction, config.batch_size, config.seq_len,
                        corpus.train_tokens, labels)
    # Threads first: the precision's calibration is measured (and cached) at the count the run starts with.
    threads = ThreadTuner(config.threads)
    calibration = choose_precision(model_config, config, data, resolve_device(config.device),
                                   world_size=ranks.world_size)
    trainer = Trainer(model_config, config, data, codec, run_dir, corpus, resume_from=saved,
                      precision=calibration.precision, threads=threads, calibration=calibration.to_dict())
    interval_note = ""
    if saved is None:  # a resumed run keeps the interval it was saved with
        steps_per_pass = trainer.batcher.steps_per_epoch
        if (interval := config.with_eval_interval(steps_per_pass)) is not config:
            config = trainer.config = interval
            interval_note = (f"evaluating every {config.eval_every} steps ({steps_per_pass} steps make one pass "
                             f"over the corpus; eval_every sets it)")
    state = trainer.state
    if init is not None:
        init.apply(trainer.model)
    trainer.parent = init.parent if init is not None else (read_run_json(run_dir) or {}).get("parent")
    for line in [interval_note, *calibration.notes, calibration.message()]:
        if line:
            report(line)
    if new_limit:
        before = state.total_steps
        state.total_steps = planned_steps(config, trainer.batcher.steps_per_epoch)
        report(f"resuming at step {state.step} with a new limit: {_limit_text(config)}"
               + (f" (the run had planned {before} steps)" if before else ""))

    for stale in run_dir.glob(".*.tmp") if ranks.is_main else ():  # left by a write killed half-way
        stale.unlink(missing_ok=True)
    metrics = MetricsLog(run_dir)
    if saved is None:
        state.run_id = uuid.uuid4().hex  # in run.json and every state.pt: a resume checks they agree
        if ranks.is_main:
            write_json(run_dir / RUN_JSON, {
                "run_id": state.run_id,
                "corpus": asdict(corpus), "codec": codec.name, "model_config": model_config.to_dict(),
                "train_config": config.to_dict(), "chargen_version": __version__, "status": RUNNING,
                "tokens_sha256": sha256_file(run_dir / TOKENS),  # resume checks the file against it
                **({"labels_sha256": sha256_file(run_dir / LABELS)} if corpus.labels else {}),
                "world_size": ranks.world_size,
                **({"parent": init.parent} if init is not None else {}),
                "speed": trainer.speed_info(),
            })
        trainer.checkpoint(None)  # from the first moment on, the run folder is resumable
    elif ranks.is_main:
        metrics.keep_until(state.step)  # lines written after the checkpoint we resume from
        update_run_json(run_dir, status=RUNNING, train_config=config.to_dict(), world_size=ranks.world_size)

    output = ProgressOutput(trainer, metrics, progress)
    if ranks.is_main:
        trainer.on_progress = output
    budget = None
    if config.minutes:
        budget = StepBudget(config.minutes, state.step, config.eval_every, trainer.val_tokens, trainer.tokens_per_step,
                            fit=not state.total_steps, started=started,
                            whole_tokens=trainer.whole_val_tokens if trainer.sampled else 0)
    budget = ranks.agree_budget(budget)  # torchrun: rank 0's clock decides for all
    status = FAILED
    try:
        with StopFlag() as flag, ranks.failures():
            distributed.install_signal_dedup(flag)
            interrupted = trainer.fit(lambda: ranks.any(flag.stop), budget, pause_at_step)
        status = INTERRUPTED if interrupted else FINISHED
    except KeyboardInterrupt:
        status = INTERRUPTED
        raise
    finally:
        output.close()
        try:
            if ranks.is_main:
                update_run_json(run_dir, status=status, speed=trainer.speed_info())
        except ChargenError:
            pass  # the folder became unwritable: the error that stopped the run says so
    result = TrainResult(
        run_dir=run_dir, step=state.step, total_steps=state.total_steps, best_val_loss=state.best_val,
        last_val_loss=trainer.last_val, last_train_loss=trainer.last_train, interrupted=interrupted,
        elapsed_s=trainer.elapsed_s, chars_per_s=trainer.chars_per_s, evals=state.evals,
        val_sampled=trainer.sampled, whole_val_loss=trainer.whole_val,
    )
    if trainer.last_val is not None:
        report(_eval_line(state.step, trainer.last_train, trainer.last_val, result.chars_per_s, final=True,
                          sample=trainer.val_tokens if trainer.sampled else None,
                          whole=(trainer.whole_val, trainer.whole_val_tokens) if trainer.whole_val is not None
                          else None, skipped_s=trainer.whole_skipped_s))
    return result


def _eval_line(step: int, train_loss: float | None, val_loss: float, chars_per_s: float, final: bool = False,
               sample: int | None = None, whole: tuple[float, int] | None = None,
               skipped_s: float | None = None) -> str:
    """A progress or final line; ``sample``: val_loss is on a sample of that many tokens; ``whole``: the
    whole split's loss and tokens too (``skipped_s``: not scored, it would have taken that long). A split
    under the cap prints as it always did."""
    train_part = f" train {train_loss:.4f} |" if train_loss is not None else ""
    label = "final" if final else "step"
    sample_part = f", on a {sample:,}-token sample" if sample is not None else ""
    whole_part = (f"; whole split {whole[0]:.4f} nats/char ({whole[0] / LN2:.3f} bpc, {whole[1]:,} tokens)"
                  if whole is not None else "")
    if skipped_s is not None:
        whole_part = (f"; the whole split not scored (~{skipped_s:,.0f} s, more than a quarter of the run: "
                      "chargen score, or eval_tokens=0)")
    return (f"{label} {step}:{train_part} val {val_loss:.4f} nats/char ({val_loss / LN2:.3f} bpc{sample_part})"
            f"{whole_part} | {chars_per_s:,.0f} chars/s")
