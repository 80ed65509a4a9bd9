"""``chargen.train``: a training run from Python, exactly as ``chargen train`` runs it (the CLI calls this)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chargen.api.report import Report, report_to_stderr
from chargen.errors import ArgumentError, TrainingInterrupted
from chargen.history.errors import HistoryUnavailable
from chargen.options import unknown_keywords
from chargen.training.config import DEFAULT_MINUTES, TrainConfig

if TYPE_CHECKING:
    from chargen.api.model import Model
    from chargen.training import TrainResult

#: Keywords that override the size preset's model shape and regularisation.
MODEL_OPTIONS = ("cell", "layers", "hidden", "embedding", "dropout", "weight_drop")
#: What may change when a run is resumed: how long it goes on, and where and how fast it runs.
RESUME_OPTIONS = ("max_steps", "epochs", "minutes", "device", "threads")


@dataclass
class Run:
    """A training run's folder and how its last session ended. ``load()`` gives its model."""

    dir: Path
    step: int
    total_steps: int
    best_val_loss: float | None
    last_val_loss: float | None
    interrupted: bool
    elapsed_s: float
    chars_per_s: float
    history_id: str | None = None  # the run's row in the history (None: not logged)
    rank: int = 0  # under torchrun: this process's rank (only rank 0 logs and writes)

    @property
    def name(self) -> str:
        return self.dir.name

    def load(self, **options: Any) -> Model:
        """The run's model (best weights, else last); ``options`` as :func:`chargen.load`'s."""
        from chargen.api.model import load

        return load(self.dir, **options)

    def to_dict(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), dir=str(self.dir), name=self.name)

    @classmethod
    def of(cls, result: TrainResult, rank: int = 0) -> Run:
        best = result.best_val_loss if math.isfinite(result.best_val_loss) else None
        return cls(dir=result.run_dir, step=result.step, total_steps=result.total_steps, best_val_loss=best,
                   last_val_loss=result.last_val_loss, interrupted=result.interrupted, elapsed_s=result.elapsed_s,
                   chars_per_s=result.chars_per_s, rank=rank)


def train(corpus: str | Path | Sequence[str | Path] | None = None, *, resume: str | Path | None = None,
          init_from: str | Path | None = None, size: str | None = None, run_name: str | None = None,
          out: str | Path | None = None, codec: str = "auto", encoding: str = "utf-8",
          labels_from: str | None = None, label: str | None = None, max_vocab: int | None = None,
          progress: bool = True, log: bool = True,
          database: str | None = None, report: Report | None = report_to_stderr, **options: Any) -> Run:
    """Train a model on ``corpus`` (a text file, several, or a folder of .txt or .mid files), or go on with the
    run ``resume`` names, and return the :class:`Run`.

    ``options`` are :class:`chargen.TrainConfig`'s fields (``minutes``, ``max_steps``, ``epochs``,
    ``batch_size``, ``lr``, ``seed``, ``device``, ``threads``, ``transpose``, ...) and the model's shape
    (``cell``, ``layers``, ``hidden``, ``embedding``, ``dropout``, ``weight_drop``; ``size`` picks a preset:
    tiny, small, medium, large). Their defaults are TrainConfig's; a run given no limit trains for
    10 minutes, and a ``minutes`` budget without a size picks the size it buys here. ``init_from``
    fine-tunes a trained run's weights; ``labels_from="folders"`` or ``label`` condition on labels;
    ``max_vocab`` allows a corpus of more distinct symbols than ``chargen.training.data.DEFAULT_MAX_VOCAB``.

    A progress bar (``tqdm.auto``: a widget in notebooks) shows while ``progress``; notes go to ``report``
    (stderr by default; None: nowhere). The run is logged to the history unless ``log=False``. Ctrl-C saves
    and raises :class:`chargen.TrainingInterrupted` (a KeyboardInterrupt carrying the saved ``run``);
    ``train(resume=run.dir)`` then goes on exactly where it stopped.
    """
    from chargen.runs.start import resume_run, start_run
    from chargen.training import distributed

    known = {f.name for f in dataclasses.fields(TrainConfig)} | set(MODEL_OPTIONS)
    unknown_keywords(options, known, "training")
    given = {k: v for k, v in options.items() if v is not None}
    warn = report or (lambda message: None)
    ranks = distributed.start(str(given.get("device", "auto")))  # under torchrun: join the job
    try:
        if resume is not None:
            extra = sorted(set(given) - set(RESUME_OPTIONS)) + [
                name for name, value in (("corpus", corpus), ("init_from", init_from), ("size", size),
                                         ("labels_from", labels_from), ("label", label), ("run_name", run_name),
                                         ("max_vocab", max_vocab))
                if value is not None]
            if extra:
                raise ArgumentError(f"a resumed run keeps its settings; only {', '.join(RESUME_OPTIONS)} may be "
                                    f"given with resume (got {', '.join(extra)})")
            result = resume_run(resume, TrainConfig(**given), progress=progress, warn=warn)
        else:
            if corpus is None:
                raise ArgumentError("no corpus given: name a text file, several files, or a folder")
            paths = [corpus] if isinstance(corpus, str | Path) else list(corpus)
            config_options = {k: v for k, v in given.items() if k not in MODEL_OPTIONS}
            if not any(k in config_options for k in ("minutes", "max_steps", "epochs")):
                config_options["minutes"] = DEFAULT_MINUTES
            config = TrainConfig(**config_options)
            overrides = {k: given.get(k) for k in MODEL_OPTIONS}
            result = start_run(paths, config, size, overrides, run_name, Path(out) if out is not None else None,
                               codec, encoding, progress=progress, warn=warn, labels_from=labels_from, label=label,
                               init_from=str(init_from) if init_from is not None else None,
                               **({"max_vocab": max_vocab} if max_vocab is not None else {}))
    finally:
        distributed.stop()
    run = Run.of(result, ranks.rank)
    if log and ranks.is_main:
        run.history_id = _log(database, result, warn)
    if result.interrupted:
        raise TrainingInterrupted(f"stopped at step {run.step}; saved {run.dir}", run)
    return run


def _log(database: str | None, result: TrainResult, warn: Report) -> str | None:
    from chargen.records import log_training_run
    from chargen.runs.checkpoint import checkpoint_codec
    from chargen.runs.layout import LAST

    try:
        return log_training_run(database, result, checkpoint_codec(result.run_dir / LAST))
    except HistoryUnavailable as exc:
        warn(f"warning: training run not logged: {exc}")
        return None
