"""The history under stress: concurrent processes, locks, read-only files, dead URLs."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from history_helpers import record, start_together

from chargen.history import History, HistoryUnavailable
from chargen.history.location import engine_url

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _assert_one_line(exc: pytest.ExceptionInfo[HistoryUnavailable]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    assert "Traceback" not in message and "Background on this error" not in message
    return message


@pytest.mark.slow
def test_eight_processes_open_a_fresh_database_and_write_at_once(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"

    def not_yet_created() -> None:
        assert not db.exists()

    assert start_together("concurrent_worker", str(db), 8, not_yet_created) == [(0, "done\n", "")] * 8
    with History(str(db)) as h:
        rows = h.list_generations(limit=None)
    assert sorted(g.params["worker"] for g in rows) == [str(i) for i in range(8)]
    assert len({g.id for g in rows}) == 8


def test_locked_database_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    with History(str(db)) as h:
        first = record(h)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with History(str(db), busy_timeout_ms=150) as h:
            assert [g.id for g in h.list_generations()] == [first]  # WAL: readers are not blocked
            start = time.monotonic()
            with pytest.raises(HistoryUnavailable) as err:
                record(h)
            waited = time.monotonic() - start
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    message = _assert_one_line(err)
    assert "database is locked" in message and "0.15 s" in message
    assert 0.1 <= waited < 3
    with History(str(db)) as h:  # the lock is gone: writing works again
        record(h)
        assert len(h.list_generations()) == 2


def _writes_are_blocked_by_chmod(path: Path) -> bool:
    # root (and CAP_DAC_OVERRIDE) ignore permission bits
    return not os.access(path, os.W_OK)


@pytest.mark.parametrize("how", ["chmod", "uri-mode-ro"])
def test_read_only_database(tmp_path: Path, how: str) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "history.db"
    with History(str(db)) as h:
        first = record(h)
    if how == "chmod":
        db.chmod(0o444)
        folder.chmod(0o555)
        try:
            if not _writes_are_blocked_by_chmod(db):
                pytest.skip("running as root: permission bits do not stop writes (uri-mode-ro covers this)")
            with pytest.raises(HistoryUnavailable) as err:
                with History(str(db)) as h:
                    record(h)
        finally:
            folder.chmod(0o755)
            db.chmod(0o644)
    else:
        with History(f"sqlite:///file:{db}?mode=ro&uri=true") as h:
            assert [g.id for g in h.list_generations()] == [first]  # reading still works
            with pytest.raises(HistoryUnavailable) as err:
                record(h)
    assert "readonly" in _assert_one_line(err) or "unable to open" in str(err.value)


@pytest.mark.parametrize("url", ["sqlite:////nonexistent/dir/x.db", "{tmp}/missing/folder/x.db"])
def test_unreachable_sqlite_path(tmp_path: Path, url: str) -> None:
    with pytest.raises(HistoryUnavailable) as err:
        History(url.format(tmp=tmp_path))
    assert "unable to open database file" in _assert_one_line(err)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_postgresql() -> None:
    pytest.importorskip("psycopg", reason="psycopg (PostgreSQL driver) is not installed")
    start = time.monotonic()
    with pytest.raises(HistoryUnavailable) as err:
        History(f"postgresql+psycopg://chargen:secret@127.0.0.1:{_closed_port()}/chargen")
    message = _assert_one_line(err)
    assert "127.0.0.1" in message and "secret" not in message
    assert time.monotonic() - start < 10


def test_postgresql_urls_run_on_psycopg_3() -> None:
    """A bare postgresql:// would be psycopg2 to SQLAlchemy; chargen's extra installs psycopg 3."""
    assert engine_url("postgresql://u:pw@db:5433/chargen").drivername == "postgresql+psycopg"
    assert engine_url("postgres://u@db/chargen").drivername == "postgresql+psycopg"
    assert engine_url("postgresql+psycopg2://u@db/chargen").drivername == "postgresql+psycopg2"
    assert engine_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(HistoryUnavailable) as err:  # reaches psycopg 3, which finds no server
        History(f"postgresql://chargen:secret@127.0.0.1:{_closed_port()}/chargen")
    message = _assert_one_line(err)
    assert "127.0.0.1" in message and "not installed" not in message and "secret" not in message


def test_postgresql_without_psycopg_names_the_extra(tmp_path: Path) -> None:
    """As on a machine without chargen[postgres]: `import psycopg` fails (None in sys.modules)."""
    probe = ("import sys\nsys.modules['psycopg'] = None\nfrom chargen.history import History, HistoryUnavailable\n"
             "try:\n    History('postgresql://u@127.0.0.1/db')\nexcept HistoryUnavailable as exc:\n    print(exc)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.stdout == ("history database postgresql://u@127.0.0.1/db needs the PostgreSQL driver psycopg 3: "
                             "pip install 'chargen[postgres]'\n"), result.stderr
    cli = ("import sys\nsys.modules['psycopg'] = None\nfrom chargen.cli import main\n"
           "sys.argv = ['chargen', 'history', 'list', '--database', 'postgresql://u@127.0.0.1/db']\nmain()")
    through_cli = subprocess.run([sys.executable, "-c", cli], capture_output=True, text=True, timeout=120,
                                 env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert through_cli.returncode == 1 and through_cli.stdout == ""
    assert through_cli.stderr == f"chargen: error: {result.stdout}"


def test_missing_driver_and_bad_urls() -> None:
    with pytest.raises(HistoryUnavailable) as err:
        History("nosuchdialect://host/db")
    _assert_one_line(err)
    with pytest.raises(HistoryUnavailable) as err:
        History("postgresql+pg8000://u@127.0.0.1/db")  # a driver nobody installed here
    if "driver is not installed" not in str(err.value):
        pytest.skip("pg8000 happens to be installed")
    _assert_one_line(err)


def test_corrupt_file(tmp_path: Path) -> None:
    db = tmp_path / "corrupt.db"
    db.write_bytes(os.urandom(4096))
    with pytest.raises(HistoryUnavailable) as err:
        History(str(db))
    assert "file is not a database" in _assert_one_line(err)


def test_postgresql_round_trip(postgres_url: str) -> None:
    """Portability check against the real server the suite starts (tests/conftest.py): non-ASCII search,
    prefix ids, UTC timestamps and deletes as on SQLite."""
    with History(postgres_url) as h:
        run_id = h.record_training_run(
            corpus_path="c.txt", corpus_sha256="c" * 64, corpus_tokens=5, codec={"name": "text"},
            model_config={}, train_config={}, steps=1, best_val_loss=None, checkpoint_path="/pg/ck",
            checkpoint_sha256="d" * 64)
        gid = record(h, checkpoint_sha256="d" * 64, prime="PG prime", outputs=["Über 100% sure_ly", "b"])
        assert h.get_generation(gid[:12]).run_id == run_id
        assert gid in {g.id for g in h.list_generations(query="über 100% SURE_")}
        assert h.get_generation(gid).created_at.utcoffset().total_seconds() == 0
        h.delete_run(run_id)
        assert h.get_generation(gid).run_id is None
        h.delete_generation(gid)
        assert gid not in {g.id for g in h.list_generations(limit=None)}
