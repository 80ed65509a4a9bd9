"""Plain records handed to callers, the fields of new generation and score rows, and JSON conversion.

Callers get frozen dataclasses, never live ORM objects: :class:`GenerationRecord`,
:class:`TrainingRunRecord` and :class:`ScoreRecord` come out of the store;
:class:`GenerationFields` and :class:`ScoreFields` go in (validated when they are
made, so a bad entry fails before any write).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Protocol

from chargen.history.ids import new_record_id
from chargen.history.schema import Generation, GenerationOutput, Score, TrainingRun
from chargen.version import __version__

DECODERS = ("sample", "greedy", "beam")


@dataclasses.dataclass(frozen=True)
class SampleRecord:
    """One generated output: the continuation after the prime, not the prime."""

    text: str
    logprob: float | None = None
    midi_path: str | None = None


class SampleLike(Protocol):
    text: str


class _Dataclass(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Any]]


#: a JSON object, or a dataclass (ModelConfig, DecodeConfig) stored as its fields
ConfigLike = Mapping[str, Any] | _Dataclass


@dataclasses.dataclass(frozen=True)
class GenerationFields:
    """Everything a new generation row holds, as given by the caller; validated on creation.

    ``outputs`` holds one entry per ``--num-samples`` output, without the
    prime: anything with ``.text`` and optionally ``.logprob`` (nats) and
    ``.midi_path`` (so ``chargen.sampling.Sample`` objects as they are), or
    plain strings. ``run_id`` (an id or prefix) defaults to the newest training
    run that produced a checkpoint with this sha256. Total logprob (when every
    sample has one) and chars/s are derived when the row is made.
    """

    checkpoint_path: str | os.PathLike[str]
    checkpoint_sha256: str
    model_config: ConfigLike
    codec: Mapping[str, Any]
    decoder: str
    params: ConfigLike
    prime: str
    outputs: Sequence[SampleRecord | SampleLike | str]
    duration_s: float
    seed: int | None = None
    run_id: str | None = None
    chargen_version: str = __version__
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, not {self.decoder!r}")
        if "name" not in self.codec:
            raise ValueError("codec metadata needs a 'name'")
        if self.seed is not None and not -(1 << 63) <= self.seed < (1 << 63):
            raise ValueError("seed must fit in a signed 64-bit integer")
        if self.created_at is not None and self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")

    @classmethod
    def of(cls, fields: GenerationFields | Mapping[str, Any]) -> GenerationFields:
        """``fields`` itself, or a mapping of this class's field names made into one."""
        return fields if isinstance(fields, GenerationFields) else cls(**fields)

    def to_row(self) -> Generation:
        """A new, unsaved Generation row with its outputs; ``run_id`` is left for the store to resolve."""
        samples = [_sample_record(s) for s in self.outputs]
        logprobs = [s.logprob for s in samples]
        total = math.fsum(lp for lp in logprobs if lp is not None) if samples and None not in logprobs else None
        chars = sum(len(s.text) for s in samples)
        return Generation(
            **_model_use(self),
            model_config=json_object(self.model_config, "model_config"),
            decoder=self.decoder,
            params=json_object(self.params, "params"),
            seed=self.seed,
            prime=self.prime,
            total_logprob=finite(total),
            chars_per_s=finite(chars / self.duration_s) if self.duration_s > 0 else None,
            outputs=[
                GenerationOutput(
                    index=i,
                    text=s.text,
                    logprob=finite(s.logprob),
                    midi_path=None if s.midi_path is None else abspath(s.midi_path),
                )
                for i, s in enumerate(samples)
            ],
        )


@dataclasses.dataclass(frozen=True)
class ModelUseRecord:
    """The fields every record of using a model has (``schema.ModelUse``): generations and scores."""

    id: str
    short_id: str
    created_at: datetime
    duration_s: float
    chargen_version: str
    checkpoint_path: str
    checkpoint_sha256: str
    run_id: str | None


@dataclasses.dataclass(frozen=True)
class GenerationRecord(ModelUseRecord):
    model_config: dict[str, Any]
    codec: dict[str, Any]
    decoder: str
    params: dict[str, Any]
    seed: int | None
    prime: str
    outputs: tuple[SampleRecord, ...]
    total_logprob: float | None
    chars_per_s: float | None

    @classmethod
    def from_row(cls, row: Generation, short_id: str) -> GenerationRecord:
        outputs = tuple(SampleRecord(o.text, o.logprob, o.midi_path) for o in row.outputs)
        return cls(**_columns(row, cls, short_id=short_id, outputs=outputs))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``--json``); times are ISO 8601 UTC."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["created_at"] = self.created_at.isoformat()
        data["outputs"] = [
            {"index": i, "text": s.text, "logprob": s.logprob, "midi_path": s.midi_path}
            for i, s in enumerate(self.outputs)
        ]
        return data


@dataclasses.dataclass(frozen=True)
class TrainingRunRecord:
    id: str
    short_id: str
    created_at: datetime
    chargen_version: str
    corpus_path: str
    corpus_sha256: str
    corpus_tokens: int
    codec: dict[str, Any]
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    steps: int
    best_val_loss: float | None
    checkpoint_path: str
    checkpoint_sha256: str | None
    parent: dict[str, Any] | None = None  # the run a fine-tuned run started from

    @classmethod
    def from_row(cls, row: TrainingRun, short_id: str) -> TrainingRunRecord:
        return cls(**_columns(row, cls, short_id=short_id))

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["created_at"] = self.created_at.isoformat()
        return data


@dataclasses.dataclass(frozen=True)
class ScoreFields:
    """Everything a new score row holds (one scored file), as given by the caller; validated on creation.

    ``unknown`` maps each removed character to its occurrences; ``worst_lines`` is a
    list of JSON objects (line, text, nats_per_char, chars). ``run_id`` defaults to
    the newest training run that produced a checkpoint with this sha256.
    """

    checkpoint_path: str | os.PathLike[str]
    checkpoint_sha256: str
    codec: Mapping[str, Any]
    file_path: str | os.PathLike[str]
    file_sha256: str
    unit: str
    tokens: int
    scored: int
    nats_per_token: float
    duration_s: float
    unknown: Mapping[str, int] = dataclasses.field(default_factory=dict)
    worst_lines: Sequence[Mapping[str, Any]] = ()
    run_id: str | None = None
    chargen_version: str = __version__
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if "name" not in self.codec:
            raise ValueError("codec metadata needs a 'name'")
        if not math.isfinite(self.nats_per_token):
            raise ValueError(f"nats_per_token must be finite, not {self.nats_per_token}")
        if self.created_at is not None and self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")

    def to_row(self) -> Score:
        """A new, unsaved Score row; ``run_id`` is left for the store to resolve."""
        unknown = json_object(self.unknown, "unknown")
        return Score(
            **_model_use(self),
            file_path=abspath(self.file_path),
            file_sha256=self.file_sha256.lower(),
            unit=self.unit,
            tokens=int(self.tokens),
            scored=int(self.scored),
            nats_per_token=float(self.nats_per_token),
            unknown_count=sum(int(n) for n in unknown.values()),
            unknown=unknown,
            worst_lines=[json_object(line, "worst_lines") for line in self.worst_lines],
        )


@dataclasses.dataclass(frozen=True)
class ScoreRecord(ModelUseRecord):
    codec: dict[str, Any]
    file_path: str
    file_sha256: str
    unit: str
    tokens: int
    scored: int
    nats_per_token: float
    unknown_count: int
    unknown: dict[str, int]
    worst_lines: list[dict[str, Any]]

    @classmethod
    def from_row(cls, row: Score, short_id: str) -> ScoreRecord:
        return cls(**_columns(row, cls, short_id=short_id))

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / math.log(2)

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["created_at"] = self.created_at.isoformat()
        data["bits_per_token"] = self.bits_per_token
        data["perplexity"] = math.exp(self.nats_per_token)
        return data


def _model_use(fields: GenerationFields | ScoreFields) -> dict[str, Any]:
    """The columns every record of using a model has (``schema.ModelUse``, less ``run_id``), and its codec."""
    record_id, created = new_record_id(fields.created_at)
    return {
        "id": record_id,
        "created_at": created,
        "duration_s": float(fields.duration_s),
        "chargen_version": fields.chargen_version,
        "checkpoint_path": abspath(fields.checkpoint_path),
        "checkpoint_sha256": fields.checkpoint_sha256.lower(),
        "codec": json_object(fields.codec, "codec"),
    }


def _columns(row: Generation | TrainingRun | Score, record: type, **given: Any) -> dict[str, Any]:
    """The record's fields: ``given`` ones, the rest read from the row's same-named attributes."""
    return {f.name: given[f.name] if f.name in given else getattr(row, f.name)
            for f in dataclasses.fields(record)}


def abspath(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _sample_record(item: SampleRecord | SampleLike | str) -> SampleRecord:
    if isinstance(item, str):
        return SampleRecord(item)
    midi_path = getattr(item, "midi_path", None)
    return SampleRecord(item.text, getattr(item, "logprob", None), None if midi_path is None else os.fspath(midi_path))


def finite(value: float | None) -> float | None:
    # SQLite turns NaN into NULL and PostgreSQL's JSON rejects it: be explicit.
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    """Plain JSON types: dataclasses, numpy scalars, tuples, paths and NaN appear in configs."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float):
        return finite(value)
    if value is None or isinstance(value, (str, int)):
        return value
    if hasattr(value, "item"):  # numpy / torch scalar
        return _jsonable(value.item())
    try:
        json.dumps(value)
    except TypeError:
        raise TypeError(f"cannot store {type(value).__name__} value {value!r} in the history") from None
    return value


def json_object(value: ConfigLike, name: str) -> dict[str, Any]:
    result = _jsonable(value)
    if not isinstance(result, dict):
        raise TypeError(f"{name} must be a mapping or a dataclass, not {type(value).__name__}")
    return result
