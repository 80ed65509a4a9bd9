"""Engine set-up: drivers, connect timeouts, SQLite pragmas, and one-line error messages.

This is the only module that knows SQLite's or PostgreSQL's connection quirks;
the store and the schema speak plain SQLAlchemy.
"""

from __future__ import annotations

import math
import os
import shutil
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from chargen.history.errors import HistoryUnavailable
from chargen.history.location import POSTGRES_DRIVER, POSTGRES_EXTRA, display_url, engine_url, sqlite_file

DEFAULT_BUSY_TIMEOUT_MS = 5000
#: execution option of the writer engine: its transactions take the write lock at BEGIN
WRITE_OPTION = "chargen_write"


def create_history_engine(url: str, busy_timeout_ms: int) -> Engine:
    """An engine for ``url``; raises HistoryUnavailable (one line) when it cannot be made."""
    try:
        parsed = engine_url(url)
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql":
            connect_args["connect_timeout"] = max(1, math.ceil(busy_timeout_ms / 1000))
        engine = create_engine(parsed, connect_args=connect_args)
    except ImportError as exc:
        missing = exc.name or str(exc)
        if missing.split(".")[0] == POSTGRES_DRIVER:
            raise HistoryUnavailable(
                f"history database {display_url(url)} needs the PostgreSQL driver psycopg 3: {POSTGRES_EXTRA}"
            ) from None
        raise HistoryUnavailable(
            f"cannot use history database {display_url(url)}: its database driver is not installed ({missing})"
        ) from None
    except (SQLAlchemyError, ValueError) as exc:  # ValueError: a URL make_url cannot read (a bad port)
        raise HistoryUnavailable(describe(exc, url, busy_timeout_ms)) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", lambda c, r: _sqlite_on_connect(busy_timeout_ms, c, r))
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def describe(exc: BaseException, url: str, busy_timeout_ms: int) -> str:
    """One line saying why the database at ``url`` cannot be used."""
    reason = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
    lines = reason.split("(Background on this error")[0].strip().splitlines()
    text = lines[0].strip() if lines else type(exc).__name__
    if "database is locked" in text:
        text += f" (another process is writing; gave up after {busy_timeout_ms / 1000:g} s)"
    elif (why := _sqlite_folder_problem(url, text)) is not None:
        text += f" ({why})"
    return f"history database {display_url(url)} is unavailable: {text}"


#: Below this many free bytes a SQLite write (journal, WAL, pages) is likely to fail for want of space.
LOW_SPACE_BYTES = 1 << 20


def _sqlite_folder_problem(url: str, text: str) -> str | None:
    """Why a SQLite file's folder cannot take writes (read-only, full), in words; None when neither.

    SQLite says only "unable to open database file", "attempt to write a readonly database" or
    "disk I/O error" for these."""
    path = sqlite_file(url)
    if path is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(folder) and not os.access(folder, os.W_OK):  # also true of a read-only file system
        return f"{folder} is read-only: make it writable or set --database elsewhere"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path} is read-only: make it writable or set --database elsewhere"
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if free < LOW_SPACE_BYTES and ("disk I/O error" in text or "full" in text):
        return f"the disk holding {folder} is full: free some space or set --database elsewhere"
    return None


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
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")
