"""History of generations and training runs, kept in a SQL database.

Every ``chargen sample``, ``chargen train`` and ``chargen score`` is logged here (SQLite by
default, any SQLAlchemy URL otherwise; ``postgresql://`` runs on psycopg 3).
The store is an optional extra: every failure to reach or write it is raised
as :class:`HistoryUnavailable`, one line, so that callers can warn and carry
on with their real work.

One module per part:

- :mod:`~chargen.history.ids`: sortable record ids and the short prefixes users see;
- :mod:`~chargen.history.location`: which database (``--database``, ``$CHARGEN_DATABASE_URL``,
  ``$CHARGEN_HOME``);
- :mod:`~chargen.history.engine`: drivers, SQLite pragmas and busy timeout, one-line errors;
- :mod:`~chargen.history.schema`: the tables, the schema version, creation and migrations;
- :mod:`~chargen.history.convert`: the records callers get and the fields they give, JSON;
- :mod:`~chargen.history.store`: :class:`History`, the store itself.

The ``chargen history`` commands are in :mod:`chargen.cli.history`.

Names are loaded on first use, so that ``import chargen.history`` (and the
CLI, which imports :mod:`~chargen.history.location` for its help text) costs
no SQLAlchemy import (~0.3 s) until a database is really used::

    try:
        with History(database) as history:  # --database value, or None
            history.record_generation(GenerationFields(...))
    except HistoryUnavailable as exc:
        warn(f"not logged: {exc}")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chargen.lazy import homes, lazy_exports

if TYPE_CHECKING:
    from chargen.history.convert import (
        DECODERS,
        GenerationFields,
        GenerationRecord,
        SampleLike,
        SampleRecord,
        ScoreFields,
        ScoreRecord,
        TrainingRunRecord,
    )
    from chargen.history.engine import DEFAULT_BUSY_TIMEOUT_MS
    from chargen.history.errors import HistoryLookupError, HistoryUnavailable
    from chargen.history.ids import MIN_SHORT_ID, id_time, new_id
    from chargen.history.location import DATABASE_ENV, display_url, resolve_database_url, sqlite_file
    from chargen.history.schema import MIGRATIONS, SCHEMA_VERSION
    from chargen.history.store import History, file_sha256

__getattr__, __dir__ = lazy_exports(__name__, {
    **homes("chargen.history.convert", "DECODERS", "GenerationFields", "GenerationRecord", "SampleLike",
            "SampleRecord", "ScoreFields", "ScoreRecord", "TrainingRunRecord"),
    **homes("chargen.history.engine", "DEFAULT_BUSY_TIMEOUT_MS"),
    **homes("chargen.history.errors", "HistoryLookupError", "HistoryUnavailable"),
    **homes("chargen.history.ids", "MIN_SHORT_ID", "id_time", "new_id"),
    **homes("chargen.history.location", "DATABASE_ENV", "display_url", "resolve_database_url", "sqlite_file"),
    **homes("chargen.history.schema", "MIGRATIONS", "SCHEMA_VERSION"),
    **homes("chargen.history.store", "History", "file_sha256"),
})

__all__ = [
    "DATABASE_ENV",
    "DECODERS",
    "DEFAULT_BUSY_TIMEOUT_MS",
    "GenerationFields",
    "GenerationRecord",
    "History",
    "HistoryLookupError",
    "HistoryUnavailable",
    "MIGRATIONS",
    "MIN_SHORT_ID",
    "SCHEMA_VERSION",
    "SampleLike",
    "SampleRecord",
    "ScoreFields",
    "ScoreRecord",
    "TrainingRunRecord",
    "display_url",
    "file_sha256",
    "id_time",
    "new_id",
    "resolve_database_url",
    "sqlite_file",
]

