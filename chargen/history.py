"""History of generations and training runs, kept in a SQL database.

Every ``chargen sample`` and ``chargen train`` is logged here (SQLite by
default, any SQLAlchemy URL otherwise). The store is an optional extra: every
failure to reach or write it is raised as :class:`HistoryUnavailable`, one
line, so that callers can warn and carry on with their real work.

Callers get plain frozen dataclasses (:class:`GenerationRecord`,
:class:`TrainingRunRecord`), never live ORM objects, and no session outlives a
method call.

Logging a ``chargen sample`` run, after its output has been printed (import
this module lazily: SQLAlchemy costs ~0.3 s to import)::

    try:
        with History(database) as history:  # --database value, or None
            history.record_generation(
                checkpoint_path=loaded.path, checkpoint_sha256=loaded.sha256,
                model_config=loaded.config, codec=loaded.codec.to_metadata(),
                decoder=result.config.decoder, params=result.config,
                seed=result.config.seed, prime=result.prime,
                outputs=result.samples, duration_s=result.duration_s)
    except HistoryUnavailable as exc:
        warn(f"not logged: {exc}")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Protocol, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)
from sqlalchemy.types import TypeDecorator

import chargen
from chargen.errors import ChargenError

DATABASE_ENV = "CHARGEN_DATABASE_URL"
#: bumped by every entry added to MIGRATIONS
SCHEMA_VERSION = 1
DEFAULT_BUSY_TIMEOUT_MS = 5000
DECODERS = ("sample", "greedy", "beam")
#: shortest id prefix shown to users; longer where needed to stay unique
MIN_SHORT_ID = 8


class HistoryUnavailable(ChargenError):
    """The history database cannot be opened, read or written right now."""


class HistoryLookupError(ChargenError):
    """No record, or more than one, matches the id (prefix) the user gave."""


# --------------------------------------------------------------------------
# Sortable ids


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_id_lock = threading.Lock()
_last_id: tuple[int, int] = (-1, 0)


def new_id(at: datetime | None = None) -> str:
    """A 26-character ULID-style id: 48-bit milliseconds, then 80 random bits.

    Ids sort like their creation times (Crockford base32 keeps byte order),
    and ids made in the same millisecond by one process still sort in call
    order because the random part is incremented instead of redrawn.
    """
    global _last_id
    # Integer arithmetic: float timestamps can round a millisecond down.
    ms = (at - _EPOCH) // timedelta(milliseconds=1) if at is not None else time.time_ns() // 1_000_000
    with _id_lock:
        last_ms, last_rand = _last_id
        if ms == last_ms and last_rand < (1 << 80) - 1:
            rand = last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_id = (ms, rand)
    value = (ms << 80) | rand
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def id_time(record_id: str) -> datetime:
    """Creation time encoded in an id from :func:`new_id`."""
    value = 0
    for ch in record_id.upper():
        value = value * 32 + _CROCKFORD.index(ch)
    return _EPOCH + timedelta(milliseconds=value >> 80)


# --------------------------------------------------------------------------
# Schema


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend.

    SQLite has no time zones and hands back naive values; storing UTC and
    re-attaching it on the way out keeps records comparable and portable.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("history timestamps must be timezone-aware")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class SchemaVersion(Base):
    """One row (id 1): the schema version the tables are at."""

    __tablename__ = "schema_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class TrainingRun(Base):
    __tablename__ = "training_runs"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    created_at: Mapped[datetime]
    chargen_version: Mapped[str] = mapped_column(String(32))
    corpus_path: Mapped[str] = mapped_column(Text)
    corpus_sha256: Mapped[str] = mapped_column(String(64))
    corpus_tokens: Mapped[int] = mapped_column(BigInteger)
    codec: Mapped[dict[str, Any]]
    model_config: Mapped[dict[str, Any]]
    train_config: Mapped[dict[str, Any]]
    steps: Mapped[int] = mapped_column(BigInteger)
    #: nats per token; None when training never reached a validation pass
    best_val_loss: Mapped[float | None] = mapped_column(Float)
    checkpoint_path: Mapped[str] = mapped_column(Text)
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64), index=True)


class Generation(Base):
    __tablename__ = "generations"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    created_at: Mapped[datetime]
    duration_s: Mapped[float] = mapped_column(Float)
    chargen_version: Mapped[str] = mapped_column(String(32))
    checkpoint_path: Mapped[str] = mapped_column(Text)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64), index=True)
    run_id: Mapped[str | None] = mapped_column(
        String(26), ForeignKey("training_runs.id", ondelete="SET NULL"), index=True
    )
    model_config: Mapped[dict[str, Any]]
    codec: Mapped[dict[str, Any]]
    decoder: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]]
    seed: Mapped[int | None] = mapped_column(BigInteger)
    prime: Mapped[str] = mapped_column(Text)
    total_logprob: Mapped[float | None] = mapped_column(Float)
    chars_per_s: Mapped[float | None] = mapped_column(Float)

    outputs: Mapped[list[GenerationOutput]] = relationship(
        back_populates="generation",
        order_by="GenerationOutput.index",
        cascade="all, delete-orphan",
        passive_deletes=True,  # the database's ON DELETE CASCADE does the work
    )


class GenerationOutput(Base):
    """One of the ``--num-samples`` outputs of a generation."""

    __tablename__ = "generation_outputs"

    generation_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("generations.id", ondelete="CASCADE"), primary_key=True
    )
    # "index" is an SQL keyword; a plain column name avoids quoting surprises.
    index: Mapped[int] = mapped_column("sample_index", Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    logprob: Mapped[float | None] = mapped_column(Float)
    midi_path: Mapped[str | None] = mapped_column(Text)

    generation: Mapped[Generation] = relationship(back_populates="outputs")


_OUR_TABLES = tuple(Base.metadata.tables)

#: MIGRATIONS[n] upgrades a database from version n - 1 to n, inside the
#: caller's write transaction. Version 1 is the baseline made by create_all;
#: a fresh database is created at SCHEMA_VERSION directly. Write migrations
#: with portable DDL/SQL only (they also run on PostgreSQL).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}


# --------------------------------------------------------------------------
# Plain records handed to callers


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
class GenerationRecord:
    id: str
    short_id: str
    created_at: datetime
    duration_s: float
    chargen_version: str
    checkpoint_path: str
    checkpoint_sha256: str
    run_id: str | None
    model_config: dict[str, Any]
    codec: dict[str, Any]
    decoder: str
    params: dict[str, Any]
    seed: int | None
    prime: str
    outputs: tuple[SampleRecord, ...]
    total_logprob: float | None
    chars_per_s: float | None

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

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["created_at"] = self.created_at.isoformat()
        return data


# --------------------------------------------------------------------------
# Locating the database


def resolve_database_url(explicit: str | None = None) -> str:
    """``--database`` > ``$CHARGEN_DATABASE_URL`` > ``$CHARGEN_HOME/history.db``.

    A value without ``://`` is taken as a filesystem path to a SQLite file.
    """
    value = explicit or os.environ.get(DATABASE_ENV)
    if value:
        if "://" in value or value.startswith("sqlite:"):
            return value
        return "sqlite:///" + os.path.abspath(os.path.expanduser(value))
    from chargen.paths import chargen_home

    try:
        home = chargen_home().resolve()
    except ChargenError as exc:
        raise HistoryUnavailable(str(exc)) from None
    return f"sqlite:///{home / 'history.db'}"


def sqlite_file(url: str) -> str | None:
    """Filesystem path of a SQLite database URL; None for in-memory or other backends."""
    try:
        parsed = make_url(url)
    except SQLAlchemyError:
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):  # sqlite:///file:path?mode=ro&uri=true
        if parsed.query.get("mode") == "memory":
            return None
        database = database[len("file:") :]
    return database


def display_url(url: str) -> str:
    """The file path of a SQLite URL, else the URL with its password hidden."""
    path = sqlite_file(url)
    if path is not None:
        return path
    try:
        parsed = make_url(url)
    except SQLAlchemyError:
        return url
    return url if parsed.get_backend_name() == "sqlite" else parsed.render_as_string(hide_password=True)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------
# SQLite connection set-up (the only SQLite-specific code in this module)


def _sqlite_on_connect(busy_timeout_ms: int, dbapi_conn: Any, _record: Any) -> None:
    # Hand BEGIN to _sqlite_on_begin: pysqlite's own transaction handling
    # would neither make DDL transactional nor allow BEGIN IMMEDIATE.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except dbapi_conn.OperationalError as exc:
            # A read-only connection may still read; writes fail later, clearly.
            if "readonly" not in str(exc):
                raise
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # Writers take the write lock up front so that busy_timeout applies; a
    # deferred transaction that upgrades from read to write can fail at once.
    # This also serialises schema creation among processes opening a fresh file.
    if conn.get_execution_options().get("chargen_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


# --------------------------------------------------------------------------
# The store


_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_R = TypeVar("_R")


class History:
    """A connection to the history database at ``url``.

    ``History(None)`` uses :func:`resolve_database_url`, and plain paths are
    taken as SQLite files. Opening creates the tables or migrates an older
    schema. Every method (and the constructor) raises
    :class:`HistoryUnavailable` when the database cannot be used, and
    :class:`HistoryLookupError` for an unknown or ambiguous id.
    """

    def __init__(self, url: str | None = None, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self.url = resolve_database_url(url)
        self.busy_timeout_ms = busy_timeout_ms
        self._engine = self._create_engine()
        self._writer = self._engine.execution_options(chargen_write=True)
        try:
            self._open()
        except BaseException:
            self._engine.dispose()
            raise

    # -- plumbing --------------------------------------------------------

    def _create_engine(self) -> Engine:
        try:
            parsed = make_url(self.url)
            connect_args: dict[str, Any] = {}
            if parsed.get_backend_name() == "postgresql":
                connect_args["connect_timeout"] = max(1, math.ceil(self.busy_timeout_ms / 1000))
            engine = create_engine(parsed, connect_args=connect_args)
        except ImportError as exc:
            raise HistoryUnavailable(
                f"cannot use history database {display_url(self.url)}: "
                f"its database driver is not installed ({exc.name or exc})"
            ) from None
        except SQLAlchemyError as exc:
            raise HistoryUnavailable(self._describe(exc)) from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", lambda c, r: _sqlite_on_connect(self.busy_timeout_ms, c, r))
            event.listen(engine, "begin", _sqlite_on_begin)
        return engine

    def _describe(self, exc: BaseException) -> str:
        reason = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
        reason = reason.split("(Background on this error")[0].strip().splitlines()
        text = reason[0].strip() if reason else type(exc).__name__
        if "database is locked" in text:
            text += f" (another process is writing; gave up after {self.busy_timeout_ms / 1000:g} s)"
        return f"history database {display_url(self.url)} is unavailable: {text}"

    @contextmanager
    def _guard(self) -> Iterator[None]:
        dbapi_error = getattr(self._engine.dialect.loaded_dbapi, "Error", SQLAlchemyError)
        try:
            yield
        except (SQLAlchemyError, dbapi_error) as exc:
            raise HistoryUnavailable(self._describe(exc)) from None

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        with self._guard(), Session(self._writer if write else self._engine) as session, session.begin():
            yield session

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------

    def _schema_version(self, conn: Connection) -> int:
        names = set(inspect(conn).get_table_names())
        if SchemaVersion.__tablename__ not in names:
            if names & set(_OUR_TABLES):
                raise HistoryUnavailable(
                    f"{display_url(self.url)} has history tables but no schema version; "
                    "it is not a chargen history database"
                )
            return 0
        version = conn.scalar(select(SchemaVersion.version).where(SchemaVersion.id == 1))
        return version or 0

    def _check_not_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise HistoryUnavailable(
                f"history database {display_url(self.url)} has schema version {version}, "
                f"newer than this chargen understands ({SCHEMA_VERSION}); upgrade chargen "
                "or give another --database"
            )

    def _open(self) -> None:
        with self._guard():
            with self._engine.connect() as conn:
                version = self._schema_version(conn)
            self._check_not_newer(version)
            if version == SCHEMA_VERSION:
                return
            try:
                with self._writer.begin() as conn:
                    self._upgrade(conn)
            except SQLAlchemyError:
                # PostgreSQL has no BEGIN IMMEDIATE: a concurrent opener may
                # have created the tables first. That is success, not failure.
                with self._engine.connect() as conn:
                    if self._schema_version(conn) != SCHEMA_VERSION:
                        raise

    def _upgrade(self, conn: Connection) -> None:
        version = self._schema_version(conn)  # again, now under the write lock
        self._check_not_newer(version)
        if version == 0:
            Base.metadata.create_all(conn)
            conn.execute(insert(SchemaVersion).values(id=1, version=SCHEMA_VERSION))
            return
        for target in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[target](conn)
        conn.execute(update(SchemaVersion).where(SchemaVersion.id == 1).values(version=SCHEMA_VERSION))

    def schema_version(self) -> int:
        with self._guard(), self._engine.connect() as conn:
            return self._schema_version(conn)

    # -- writing -----------------------------------------------------------

    def record_generation(
        self,
        *,
        checkpoint_path: str | os.PathLike[str],
        checkpoint_sha256: str,
        model_config: ConfigLike,
        codec: Mapping[str, Any],
        decoder: str,
        params: ConfigLike,
        prime: str,
        outputs: Sequence[SampleRecord | SampleLike | str],
        duration_s: float,
        seed: int | None = None,
        run_id: str | None = None,
        chargen_version: str = chargen.__version__,
        created_at: datetime | None = None,
    ) -> str:
        """Store one generation and its outputs; returns its id.

        ``outputs`` holds one entry per ``--num-samples`` output, without the
        prime: anything with ``.text`` and optionally ``.logprob`` (nats) and
        ``.midi_path`` (so ``chargen.sampling.Sample`` objects as they are),
        or plain strings. ``run_id`` defaults to
        the newest training run that produced a checkpoint with this sha256.
        Total logprob (when every sample has one) and chars/s are derived.
        """
        return self.record_generations([dict(
            checkpoint_path=checkpoint_path, checkpoint_sha256=checkpoint_sha256, model_config=model_config,
            codec=codec, decoder=decoder, params=params, prime=prime, outputs=outputs, duration_s=duration_s,
            seed=seed, run_id=run_id, chargen_version=chargen_version, created_at=created_at)])[0]

    def record_generations(self, generations: Sequence[Mapping[str, Any]]) -> list[str]:
        """Store several generations in one transaction: all or none. Returns their ids, in order.

        Each mapping holds :meth:`record_generation`'s keyword arguments. One commit
        (and one training-run lookup per checkpoint) for many rows: a server logging
        many concurrent requests groups them this way.
        """
        rows = [_generation_row(**fields) for fields in generations]  # validates all before writing any
        ids = [row.id for row in rows]  # read now: the commit expires the rows
        with self._session(write=True) as session:
            runs: dict[str, str | None] = {}
            for row, fields in zip(rows, generations):
                if fields.get("run_id") is not None:
                    row.run_id = self._resolve(session, TrainingRun, fields["run_id"]).id
                else:
                    if row.checkpoint_sha256 not in runs:
                        runs[row.checkpoint_sha256] = self._find_run(session, row.checkpoint_sha256)
                    row.run_id = runs[row.checkpoint_sha256]
            session.add_all(rows)
        return ids

    def record_training_run(
        self,
        *,
        corpus_path: str | os.PathLike[str],
        corpus_sha256: str,
        corpus_tokens: int,
        codec: Mapping[str, Any],
        model_config: ConfigLike,
        train_config: ConfigLike,
        steps: int,
        best_val_loss: float | None,
        checkpoint_path: str | os.PathLike[str],
        checkpoint_sha256: str | None = None,
        chargen_version: str = chargen.__version__,
        created_at: datetime | None = None,
    ) -> str:
        """Store one training run; returns its id. ``best_val_loss`` is in nats."""
        record_id, created = _new_record_id(created_at)
        row = TrainingRun(
            id=record_id,
            created_at=created,
            chargen_version=chargen_version,
            corpus_path=_abspath(corpus_path),
            corpus_sha256=corpus_sha256.lower(),
            corpus_tokens=int(corpus_tokens),
            codec=_json_object(codec, "codec"),
            model_config=_json_object(model_config, "model_config"),
            train_config=_json_object(train_config, "train_config"),
            steps=int(steps),
            best_val_loss=_finite(best_val_loss),
            checkpoint_path=_abspath(checkpoint_path),
            checkpoint_sha256=None if checkpoint_sha256 is None else checkpoint_sha256.lower(),
        )
        with self._session(write=True) as session:
            session.add(row)
        return record_id

    def delete_generation(self, id_or_prefix: str) -> str:
        """Delete a generation (its outputs go with it); returns the full id."""
        with self._session(write=True) as session:
            found = self._resolve(session, Generation, id_or_prefix).id
            session.execute(delete(Generation).where(Generation.id == found))
        return found

    def delete_run(self, id_or_prefix: str) -> str:
        """Delete a training run; its generations stay, unlinked. Returns the full id."""
        with self._session(write=True) as session:
            found = self._resolve(session, TrainingRun, id_or_prefix).id
            session.execute(delete(TrainingRun).where(TrainingRun.id == found))
        return found

    # -- reading -----------------------------------------------------------

    def find_run_by_checkpoint(self, checkpoint: str | os.PathLike[str]) -> str | None:
        """Id of the newest run that wrote this checkpoint (sha256 hex, or a path)."""
        with self._session() as session:
            return session.scalar(
                select(TrainingRun.id)
                .where(_checkpoint_clause(TrainingRun, checkpoint))
                .order_by(TrainingRun.id.desc())
                .limit(1)
            )

    def list_generations(
        self,
        limit: int | None = 20,
        query: str | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> list[GenerationRecord]:
        """Newest first. ``query`` matches prime or any output, ignoring case;
        ``checkpoint`` is a sha256 or a path (matching the path or the file's
        current sha256). ``limit=None`` lists everything."""
        stmt = select(Generation).options(selectinload(Generation.outputs)).order_by(Generation.id.desc())
        if query:
            stmt = stmt.where(
                or_(
                    Generation.prime.icontains(query, autoescape=True),
                    Generation.outputs.any(GenerationOutput.text.icontains(query, autoescape=True)),
                )
            )
        if checkpoint is not None:
            stmt = stmt.where(_checkpoint_clause(Generation, checkpoint))
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._session() as session:
            rows = session.scalars(stmt).all()
            return [_generation_record(row, self._short_id(session, Generation, row.id)) for row in rows]

    def get_generation(self, id_or_prefix: str) -> GenerationRecord:
        with self._session() as session:
            row = self._resolve(session, Generation, id_or_prefix)
            return _generation_record(row, self._short_id(session, Generation, row.id))

    def list_runs(self, limit: int | None = 20) -> list[TrainingRunRecord]:
        stmt = select(TrainingRun).order_by(TrainingRun.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._session() as session:
            rows = session.scalars(stmt).all()
            return [_run_record(row, self._short_id(session, TrainingRun, row.id)) for row in rows]

    def get_run(self, id_or_prefix: str) -> TrainingRunRecord:
        with self._session() as session:
            row = self._resolve(session, TrainingRun, id_or_prefix)
            return _run_record(row, self._short_id(session, TrainingRun, row.id))

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _find_run(session: Session, sha256: str) -> str | None:
        return session.scalar(
            select(TrainingRun.id)
            .where(TrainingRun.checkpoint_sha256 == sha256)
            .order_by(TrainingRun.id.desc())
            .limit(1)
        )

    @staticmethod
    def _resolve(session: Session, model: type[_R], id_or_prefix: str) -> _R:
        kind = "generation" if model is Generation else "training run"
        wanted = id_or_prefix.strip().upper()
        if not wanted:
            raise HistoryLookupError(f"give a {kind} id")
        column = model.id  # type: ignore[attr-defined]
        exact = session.get(model, wanted)
        if exact is not None:
            return exact
        found = session.scalars(select(model).where(column.startswith(wanted, autoescape=True)).limit(3)).all()
        if not found:
            raise HistoryLookupError(f"no {kind} with id {id_or_prefix!r}")
        if len(found) > 1:
            shown = ", ".join(row.id for row in found[:2])  # type: ignore[attr-defined]
            more = ", ..." if len(found) > 2 else ""
            raise HistoryLookupError(
                f"id prefix {id_or_prefix!r} matches more than one {kind} ({shown}{more}); give more characters"
            )
        return found[0]

    @staticmethod
    def _short_id(session: Session, model: type[Base], record_id: str) -> str:
        # Shortest prefix unique in the whole table: one character past the
        # longest prefix shared with either sorted neighbour (like git).
        column = model.id  # type: ignore[attr-defined]
        before = session.scalar(select(func.max(column)).where(column < record_id))
        after = session.scalar(select(func.min(column)).where(column > record_id))
        shared = max(_common_prefix(record_id, other) for other in (before or "", after or ""))
        return record_id[: max(MIN_SHORT_ID, shared + 1)]


# --------------------------------------------------------------------------
# Module helpers


def _checkpoint_clause(
    model: type[Generation | TrainingRun], checkpoint: str | os.PathLike[str]
) -> ColumnElement[bool]:
    value = os.fspath(checkpoint)
    if _SHA256.fullmatch(value):
        return model.checkpoint_sha256 == value.lower()
    path = _abspath(value)
    clauses = [model.checkpoint_path == path]
    if os.path.isfile(path):
        # The same checkpoint may have been recorded under another path.
        try:
            clauses.append(model.checkpoint_sha256 == file_sha256(path))
        except OSError:
            pass
    return or_(*clauses)


def _common_prefix(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def _generation_row(
    *,
    checkpoint_path: str | os.PathLike[str],
    checkpoint_sha256: str,
    model_config: ConfigLike,
    codec: Mapping[str, Any],
    decoder: str,
    params: ConfigLike,
    prime: str,
    outputs: Sequence[SampleRecord | SampleLike | str],
    duration_s: float,
    seed: int | None = None,
    run_id: str | None = None,  # resolved by the caller, inside its transaction
    chargen_version: str = chargen.__version__,
    created_at: datetime | None = None,
) -> Generation:
    """A validated, unsaved Generation row with its outputs (see History.record_generation)."""
    del run_id
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, not {decoder!r}")
    if "name" not in codec:
        raise ValueError("codec metadata needs a 'name'")
    if seed is not None and not -(1 << 63) <= seed < (1 << 63):
        raise ValueError("seed must fit in a signed 64-bit integer")
    samples = [_sample_record(s) for s in outputs]
    logprobs = [s.logprob for s in samples]
    total = math.fsum(lp for lp in logprobs if lp is not None) if samples and None not in logprobs else None
    chars = sum(len(s.text) for s in samples)
    record_id, created = _new_record_id(created_at)
    return Generation(
        id=record_id,
        created_at=created,
        duration_s=float(duration_s),
        chargen_version=chargen_version,
        checkpoint_path=_abspath(checkpoint_path),
        checkpoint_sha256=checkpoint_sha256.lower(),
        model_config=_json_object(model_config, "model_config"),
        codec=_json_object(codec, "codec"),
        decoder=decoder,
        params=_json_object(params, "params"),
        seed=seed,
        prime=prime,
        total_logprob=_finite(total),
        chars_per_s=_finite(chars / duration_s) if duration_s > 0 else None,
        outputs=[
            GenerationOutput(
                index=i,
                text=s.text,
                logprob=_finite(s.logprob),
                midi_path=None if s.midi_path is None else _abspath(s.midi_path),
            )
            for i, s in enumerate(samples)
        ],
    )


def _abspath(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _new_record_id(created_at: datetime | None) -> tuple[str, datetime]:
    """A fresh id and the creation time it encodes (now, unless given)."""
    if created_at is None:
        created_at = datetime.now(timezone.utc)
    elif created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    return new_id(created_at), created_at


def _sample_record(item: SampleRecord | SampleLike | str) -> SampleRecord:
    if isinstance(item, str):
        return SampleRecord(item)
    midi_path = getattr(item, "midi_path", None)
    return SampleRecord(item.text, getattr(item, "logprob", None), None if midi_path is None else os.fspath(midi_path))


def _finite(value: float | None) -> float | None:
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
        return _finite(value)
    if value is None or isinstance(value, (str, int)):
        return value
    if hasattr(value, "item"):  # numpy / torch scalar
        return _jsonable(value.item())
    try:
        json.dumps(value)
    except TypeError:
        raise TypeError(f"cannot store {type(value).__name__} value {value!r} in the history") from None
    return value


def _json_object(value: ConfigLike, name: str) -> dict[str, Any]:
    result = _jsonable(value)
    if not isinstance(result, dict):
        raise TypeError(f"{name} must be a mapping or a dataclass, not {type(value).__name__}")
    return result


def _generation_record(row: Generation, short_id: str) -> GenerationRecord:
    return GenerationRecord(
        id=row.id,
        short_id=short_id,
        created_at=row.created_at,
        duration_s=row.duration_s,
        chargen_version=row.chargen_version,
        checkpoint_path=row.checkpoint_path,
        checkpoint_sha256=row.checkpoint_sha256,
        run_id=row.run_id,
        model_config=row.model_config,
        codec=row.codec,
        decoder=row.decoder,
        params=row.params,
        seed=row.seed,
        prime=row.prime,
        outputs=tuple(SampleRecord(o.text, o.logprob, o.midi_path) for o in row.outputs),
        total_logprob=row.total_logprob,
        chars_per_s=row.chars_per_s,
    )


def _run_record(row: TrainingRun, short_id: str) -> TrainingRunRecord:
    return TrainingRunRecord(
        id=row.id,
        short_id=short_id,
        created_at=row.created_at,
        chargen_version=row.chargen_version,
        corpus_path=row.corpus_path,
        corpus_sha256=row.corpus_sha256,
        corpus_tokens=row.corpus_tokens,
        codec=row.codec,
        model_config=row.model_config,
        train_config=row.train_config,
        steps=row.steps,
        best_val_loss=row.best_val_loss,
        checkpoint_path=row.checkpoint_path,
        checkpoint_sha256=row.checkpoint_sha256,
    )


__all__ = [
    "DATABASE_ENV",
    "DECODERS",
    "SCHEMA_VERSION",
    "GenerationRecord",
    "History",
    "HistoryLookupError",
    "HistoryUnavailable",
    "SampleLike",
    "SampleRecord",
    "TrainingRunRecord",
    "display_url",
    "file_sha256",
    "id_time",
    "new_id",
    "resolve_database_url",
    "sqlite_file",
]
