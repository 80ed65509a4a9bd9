"""The history's tables, their schema version, and creating or migrating them safely.

Tables are created (or migrated) by whichever process opens the database
first; several processes may start at once on an empty database (two servers,
sixteen ``chargen sample``), so creation runs under a lock: SQLite's write lock
(BEGIN IMMEDIATE, see :mod:`chargen.history.engine`) or a PostgreSQL advisory
lock held until the transaction ends.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from chargen.history.errors import HistoryUnavailable

#: bumped by every entry added to MIGRATIONS
SCHEMA_VERSION = 2
#: MIGRATIONS[n] upgrades a database from version n - 1 to n, inside the
#: caller's write transaction. Version 1 is the baseline made by create_all;
#: a fresh database is created at SCHEMA_VERSION directly. Write migrations
#: with portable DDL/SQL only (they also run on PostgreSQL).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}  # filled in below the tables
#: pg_advisory_xact_lock key that serialises schema creation and migration
#: (any fixed 64-bit number; this one spells "chargen" in ASCII)
SCHEMA_LOCK_KEY = 0x63686172_67656E


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
    #: the weights a fine-tuned run started from: {run, checkpoint_path, checkpoint_sha256, run_id, ...};
    #: None for a run trained from scratch (schema version 2)
    parent: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ModelUse:
    """The columns of a record of using a model (a generation, a score): when, how long, with which
    chargen and checkpoint, and the training run that wrote that checkpoint (where it was logged)."""

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    created_at: Mapped[datetime]
    duration_s: Mapped[float] = mapped_column(Float)
    chargen_version: Mapped[str] = mapped_column(String(32))
    checkpoint_path: Mapped[str] = mapped_column(Text)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64), index=True)
    run_id: Mapped[str | None] = mapped_column(
        String(26), ForeignKey("training_runs.id", ondelete="SET NULL"), index=True
    )


class Generation(ModelUse, Base):
    __tablename__ = "generations"

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


class Score(ModelUse, Base):
    """One file scored by ``chargen score`` (schema version 2)."""

    __tablename__ = "scores"

    codec: Mapped[dict[str, Any]]
    file_path: Mapped[str] = mapped_column(Text)
    file_sha256: Mapped[str] = mapped_column(String(64), index=True)
    unit: Mapped[str] = mapped_column(String(16))  # "char" or "token"
    tokens: Mapped[int] = mapped_column(BigInteger)  # tokens read (unknown characters removed)
    scored: Mapped[int] = mapped_column(BigInteger)  # tokens whose prediction was scored
    nats_per_token: Mapped[float] = mapped_column(Float)
    unknown_count: Mapped[int] = mapped_column(BigInteger)
    unknown: Mapped[dict[str, Any]]  # removed character -> occurrences
    worst_lines: Mapped[list[Any]] = mapped_column(JSON)  # [{line, text, nats_per_char, chars}], worst first


_OUR_TABLES = frozenset(Base.metadata.tables)


def _lineage_and_scores(conn: Connection) -> None:
    """Version 2: training runs name their parent (fine-tuning); scored files are logged."""
    column_type = JSON().compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {TrainingRun.__tablename__} ADD COLUMN parent {column_type}")
    Score.__table__.create(conn, checkfirst=True)


MIGRATIONS[2] = _lineage_and_scores


def read_version(conn: Connection, where: str) -> int:
    """The schema version of the database behind ``conn``; 0 when it has no tables yet.

    ``where`` names the database in messages.
    """
    names = set(inspect(conn).get_table_names())
    if SchemaVersion.__tablename__ not in names:
        if names & _OUR_TABLES:
            raise HistoryUnavailable(
                f"{where} has history tables but no schema version; it is not a chargen history database"
            )
        return 0
    version = conn.scalar(select(SchemaVersion.version).where(SchemaVersion.id == 1))
    return version or 0


def ensure_schema(reader: Engine, writer: Engine, where: str) -> None:
    """Create the tables, or migrate them to :data:`SCHEMA_VERSION`, unless they are current.

    ``writer`` is an engine whose transactions take the write lock at BEGIN
    (SQLite); the caller turns SQLAlchemy errors into HistoryUnavailable.
    """
    with reader.connect() as conn:
        version = read_version(conn, where)
    _check_not_newer(version, where)
    if version == SCHEMA_VERSION:
        return
    try:
        with writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                # PostgreSQL has no BEGIN IMMEDIATE; without this, two processes
                # creating tables at once fail on the catalog's unique indexes.
                conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
            _upgrade(conn, where)
    except SQLAlchemyError:
        # A backend without such a lock: a concurrent opener may have created
        # the tables (or the version row) first. That is success, not failure.
        with reader.connect() as conn:
            if read_version(conn, where) != SCHEMA_VERSION:
                raise


def _check_not_newer(version: int, where: str) -> None:
    if version > SCHEMA_VERSION:
        raise HistoryUnavailable(
            f"history database {where} has schema version {version}, newer than this chargen "
            f"understands ({SCHEMA_VERSION}); upgrade chargen or use another database"
        )


def _upgrade(conn: Connection, where: str) -> None:
    version = read_version(conn, where)  # again, now under the lock
    _check_not_newer(version, where)
    if version == SCHEMA_VERSION:  # a concurrent opener was first
        return
    if version == 0:
        Base.metadata.create_all(conn)  # checkfirst: only the tables that are missing
        conn.execute(insert(SchemaVersion).values(id=1, version=SCHEMA_VERSION))
        return
    for target in range(version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[target](conn)
    conn.execute(update(SchemaVersion).where(SchemaVersion.id == 1).values(version=SCHEMA_VERSION))
