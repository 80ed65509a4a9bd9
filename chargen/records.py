"""Between the engine and the history: log generations, training runs and scores, replay generations.

The CLI and the service both log through these functions, so a generation is
recorded the same way whoever asked for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from chargen.codecs.base import Codec
from chargen.codecs.midi.grammar import ALL_RULES
from chargen.errors import ChargenError
from chargen.files.atomic import sha256_file
from chargen.runs.checkpoint import Checkpoint, load_checkpoint
from chargen.runs.layout import BEST, LAST
from chargen.sampling import DecodeConfig, GenerationResult, Generator
from chargen.training import TrainResult

if TYPE_CHECKING:
    from chargen.history import GenerationFields, ScoreFields
    from chargen.scoring.files import FileScore


def generation_fields(result: GenerationResult) -> GenerationFields:
    """The one mapping from a finished generation (its ``model`` set) to a history row's fields.

    The API, the CLI and the service all record through this, so every row carries what
    replay and export need: decoder, all resolved parameters (seed included), prime, the
    MIDI export settings and files of music models, and the device its steps ran on
    ("cpu", "cuda:0"). Pass the result to ``History.record_generations``.
    """
    from chargen.history import GenerationFields  # SQLAlchemy only when logging

    if result.model is None:
        raise ValueError("a generation is logged with the model it came from (GenerationResult.model)")
    config = result.config
    return GenerationFields(
        checkpoint_path=result.model.path,
        checkpoint_sha256=result.model.sha256,
        model_config=result.model.model_config,
        codec=result.model.codec,
        decoder=config.decoder,
        params=dict(asdict(config), **(result.export or {}), device=result.device),
        seed=config.seed,
        prime=result.prime,
        outputs=result.samples,  # text, logprob and midi_path each
        duration_s=result.duration_s,
    )


def log_generation(database: str | None, result: GenerationResult) -> str:
    """Record one generation; raises HistoryUnavailable when the database cannot be written."""
    from chargen.history import History  # SQLAlchemy only when logging

    with History(database) as history:
        return history.record_generations([generation_fields(result)])[0]


def score_fields(checkpoint: Checkpoint, checkpoint_sha256: str, score: FileScore) -> ScoreFields:
    """The one mapping from a scored file (``chargen.scoring.FileScore``) to a history row's fields."""
    from chargen.history import ScoreFields  # SQLAlchemy only when logging

    return ScoreFields(
        checkpoint_path=str(checkpoint.path.resolve()),
        checkpoint_sha256=checkpoint_sha256,
        codec=checkpoint.codec.to_metadata(),
        file_path=str(Path(score.path).resolve()),
        file_sha256=score.sha256,
        unit=score.unit,
        tokens=score.tokens,
        scored=score.scored,
        nats_per_token=score.nats_per_token,
        unknown=dict(score.unknown),
        worst_lines=[asdict(line) for line in score.worst_lines],
        duration_s=score.duration_s,
    )


def log_scores(database: str | None, checkpoint: Checkpoint, checkpoint_sha256: str,
               scores: Sequence[FileScore]) -> list[str]:
    """Record scored files: one row per file, all or none.

    Raises HistoryUnavailable when the database cannot be written.
    """
    from chargen.history import History

    rows = [score_fields(checkpoint, checkpoint_sha256, score) for score in scores]
    with History(database) as history:
        return history.record_scores(rows)


def log_training_run(database: str | None, result: TrainResult, codec: Codec) -> str:
    from chargen.history import History

    weights = result.run_dir / (BEST if (result.run_dir / BEST).exists() else LAST)
    loaded_meta = load_checkpoint(weights)
    training = loaded_meta.training
    with History(database) as history:
        return history.record_training_run(
            corpus_path=", ".join(training.get("corpus_paths", [])),
            corpus_sha256=training.get("corpus_sha256", ""),
            corpus_tokens=int(training.get("corpus_tokens", 0)),
            codec=codec.to_metadata(),
            model_config=loaded_meta.config.to_dict(),
            train_config=training.get("train_config", {}),
            steps=result.step,
            best_val_loss=result.best_val_loss if math.isfinite(result.best_val_loss) else None,
            checkpoint_path=str(weights.resolve()),
            checkpoint_sha256=sha256_file(weights),
            parent=training.get("parent") if isinstance(training.get("parent"), dict) else None,
        )


@dataclass
class ReplayOutcome:
    generation_id: str
    identical: bool
    recorded: list[str]
    replayed: list[str]

    def first_difference(self) -> str | None:
        for index, (old, new) in enumerate(zip(self.recorded, self.replayed)):
            if old != new:
                at = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
                return f"sample {index + 1} differs from character {at}"
        if len(self.recorded) != len(self.replayed):
            return f"{len(self.recorded)} samples recorded, {len(self.replayed)} replayed"
        return None


def replay(database: str | None, generation_id: str) -> ReplayOutcome:
    """Re-run a logged generation with its checkpoint, seed and parameters.

    Raises ChargenError saying exactly why when it cannot: the checkpoint file
    is gone, or it is no longer the file that made the generation.
    """
    from chargen.history import History

    with History(database) as history:
        record = history.get_generation(generation_id)
    path = Path(record.checkpoint_path)
    if not path.is_file():
        raise ChargenError(f"cannot replay {record.short_id}: checkpoint {path} no longer exists")
    if sha256_file(path) != record.checkpoint_sha256:
        raise ChargenError(
            f"cannot replay {record.short_id}: checkpoint {path} has changed since "
            f"(sha256 {record.checkpoint_sha256[:12]}... was logged)"
        )
    loaded = load_checkpoint(path)
    known = {f.name for f in fields(DecodeConfig)}
    # Rows from before the MIDI grammar existed were decoded without it; rows from before its rules could be
    # chosen were decoded with all of them.
    params = {k: v for k, v in record.params.items() if k in known}
    if params.get("grammar") and "grammar_rules" not in params:
        params["grammar_rules"] = sorted(ALL_RULES)
    config = DecodeConfig(**{"grammar": False, **params})
    result = Generator.from_checkpoint(loaded).generate(record.prime or None, config)
    recorded = [o.text for o in record.outputs]
    replayed = [s.text for s in result.samples]
    return ReplayOutcome(record.id, recorded == replayed, recorded, replayed)
