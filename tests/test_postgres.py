"""The history on a real PostgreSQL server: concurrent writers and concurrent first opens.

The server is the private one from tests/pg_support.py (``postgres_server`` in conftest).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pg_support import connect

from chargen.history import History
from tests.conftest import REPO

TESTS = REPO / "tests"


def test_each_test_gets_a_fresh_empty_database(postgres_url: str) -> None:
    with connect(postgres_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        version = conn.execute("SHOW server_version_num").fetchone()
        owner_is_us = conn.execute("SELECT current_database() LIKE 'chargen_test_%'").fetchone()
    assert tables == (0,) and owner_is_us == (True,)
    assert int(version[0]) >= 130000  # the fixture drops databases WITH (FORCE): PostgreSQL 13 or later


def test_sixteen_concurrent_sample_processes_lose_no_row(run: Path, postgres_url: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), CHARGEN_DATABASE_URL=postgres_url, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([sys.executable, "-m", "chargen", "sample", "--len", "30", "--seed", str(i), "-n", "2",
                          "--require-log", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for i in range(16)
    ]
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [p.returncode for p in procs] == [0] * 16, [err for _, err in results]
    with History(postgres_url) as history:
        rows = history.list_generations(limit=None)
    assert sorted(r.seed for r in rows) == list(range(16))
    assert all(len(r.outputs) == 2 for r in rows)
    printed = [json.loads(out) for out, _ in results]
    assert {r.seed: [o.text for o in r.outputs] for r in rows} == {
        i: [s["text"] for s in p["samples"]] for i, p in enumerate(printed)}
    with connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM generation_outputs").fetchone() == (32,)


def _start_together(url: str, count: int) -> list[tuple[int, str, str]]:
    """``count`` processes that each open the history at ``url`` and write one row, released together."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]))
    code = "from history_helpers import concurrent_worker; concurrent_worker()"
    procs = [subprocess.Popen([sys.executable, "-c", code, url, str(i)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(count)]
    try:
        for proc in procs:  # every interpreter is up and imported before any touches the database
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
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


@pytest.mark.parametrize("count", [2, 8])
def test_processes_opening_an_empty_database_together_all_succeed(postgres_url: str, count: int) -> None:
    assert _start_together(postgres_url, count) == [(0, "done\n", "")] * count
    with connect(postgres_url) as conn:
        assert conn.execute("SELECT id, version FROM schema_version").fetchall() == [(1, 1)]
    with History(postgres_url) as history:
        rows = history.list_generations(limit=None)
    assert sorted(g.params["worker"] for g in rows) == sorted(str(i) for i in range(count))


_MIGRATING_WORKER = """
import os, sys
import chargen.history.schema as schema
from chargen.history import History

def add_rating(conn):  # safe to run twice on its own: only the lock keeps it to once
    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS migration_runs (pid INTEGER)")
    conn.exec_driver_sql("ALTER TABLE generations ADD COLUMN IF NOT EXISTS rating INTEGER")
    conn.exec_driver_sql(f"INSERT INTO migration_runs VALUES ({os.getpid()})")

schema.SCHEMA_VERSION, schema.MIGRATIONS = 2, {2: add_rating}
print("ready", flush=True)
sys.stdin.readline()
with History(sys.argv[1]) as history:
    print(history.schema_version(), flush=True)
"""


def test_processes_opening_an_older_database_together_migrate_it_once(postgres_url: str) -> None:
    with History(postgres_url):  # version 1
        pass
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", _MIGRATING_WORKER, postgres_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(4)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [(proc.returncode, out, err) for proc, (out, err) in zip(procs, results)] == [(0, "2\n", "")] * 4
    with connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM migration_runs").fetchone() == (1,)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
