"""Shared helpers for the history tests (plain module: subprocess workers import it too)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, create_engine, text

from chargen.history import History, SampleRecord

SHA_A = "a" * 64
SHA_B = "b" * 64


@contextmanager
def raw_database(url: str) -> Iterator[Connection]:
    """The database behind ``History(url)``, reached around chargen (one transaction): what another program, or
    an older chargen, would do to it."""
    from chargen.history.location import engine_url, resolve_database_url

    engine = create_engine(engine_url(resolve_database_url(url)))
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def sql(url: str, *statements: str, **params: Any) -> Any:
    """Run ``statements`` on ``url``'s database in one transaction; the last one's first column, first row."""
    with raw_database(url) as conn:
        for statement in statements:
            result = conn.execute(text(statement), params)
        return result.scalar() if result.returns_rows else None


def record(history: History, **overrides: Any) -> str:
    """Record a small, fully specified text generation; keyword arguments override fields."""
    fields: dict[str, Any] = {
        "checkpoint_path": "/ckpt/fables/best.safetensors",
        "checkpoint_sha256": SHA_A,
        "model_config": {"cell": "lstm", "layers": 2, "hidden": 64, "vocab_size": 40},
        "codec": {"name": "text", "alphabet": "\n abcdefghij", "encoding": "utf-8"},
        "decoder": "sample",
        "params": {"temperature": 0.8, "top_k": None, "top_p": None, "length": 20, "num_samples": 1},
        "seed": 42,
        "prime": "The ",
        "outputs": [SampleRecord("fox ran\naway", -12.5)],
        "duration_s": 0.25,
    }
    fields.update(overrides)
    return history.record_generation(**fields)


def concurrent_worker() -> None:
    """Subprocess body: say ready, wait for 'go' on stdin, then open and write at once."""
    url, label = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    sys.stdin.readline()
    with History(url) as history:
        record(history, prime=f"worker {label}", params={"temperature": 1.0, "worker": label})
    print("done", flush=True)


#: the table migrating_worker's migration writes one row into per run
MIGRATION_RUNS = "migration_runs_probe"


def migrating_worker() -> None:
    """Subprocess body: like concurrent_worker, but this chargen knows one schema version more.

    Its migration is not idempotent on purpose (one row per run, then a pause that
    keeps the transaction open), so a migration run twice shows as two rows.
    """
    import chargen.history.schema as schema

    def migrate(conn: Any) -> None:
        conn.exec_driver_sql(f"INSERT INTO {MIGRATION_RUNS} (pid) VALUES ({os.getpid()})")
        time.sleep(0.5)

    schema.MIGRATIONS = {**schema.MIGRATIONS, schema.SCHEMA_VERSION + 1: migrate}
    schema.SCHEMA_VERSION += 1
    url = sys.argv[1]
    print("ready", flush=True)
    sys.stdin.readline()
    History(url).close()
    print("done", flush=True)


def start_together(worker: str, url: str, count: int, before_go: Callable[[], None] = lambda: None
                   ) -> list[tuple[int, str, str]]:
    """``count`` processes running ``worker`` (a function here) on ``url``, released together.

    ``before_go`` runs once all are ready. Returns each one's (exit code, stdout, stderr).
    """
    import subprocess
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tests.parent), str(tests)]))
    code = f"from history_helpers import {worker}; {worker}()"
    procs = [subprocess.Popen([sys.executable, "-c", code, url, str(i)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(count)]
    try:
        for proc in procs:  # every interpreter is up and imported before any touches the database
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        before_go()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return [(proc.returncode, out, err) for proc, (out, err) in zip(procs, results)]
