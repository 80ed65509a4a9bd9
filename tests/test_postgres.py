"""The history on a real PostgreSQL server: concurrent writers and concurrent first opens.

The server is the private one from tests/pg_support.py (``postgres_server`` in conftest).
Concurrent migrations and the history suites run on both engines through conftest's ``database_url``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from forked import run_forked
from history_helpers import start_together
from pg_support import connect

from chargen.history import SCHEMA_VERSION, History

pytestmark = pytest.mark.slow  # real processes or servers: `make test-fast` leaves them out


def test_each_test_gets_a_fresh_empty_database(postgres_url: str) -> None:
    with connect(postgres_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        version = conn.execute("SHOW server_version_num").fetchone()
        owner_is_us = conn.execute("SELECT current_database() LIKE 'chargen_test_%'").fetchone()
    assert tables == (0,) and owner_is_us == (True,)
    assert int(version[0]) >= 130000  # the fixture drops databases WITH (FORCE): PostgreSQL 13 or later


def test_sixteen_concurrent_sample_processes_lose_no_row(run: Path, postgres_url: str, tmp_path: Path) -> None:
    env = dict(os.environ, CHARGEN_DATABASE_URL=postgres_url, OMP_NUM_THREADS="1")
    results = run_forked([["sample", "--len", "30", "--seed", str(i), "-n", "2", "--require-log", "--json"]
                          for i in range(16)], tmp_path / "processes", env)
    assert [r.returncode for r in results] == [0] * 16, [r.stderr for r in results]
    with History(postgres_url) as history:
        rows = history.list_generations(limit=None)
    assert sorted(r.seed for r in rows) == list(range(16))
    assert all(len(r.outputs) == 2 for r in rows)
    printed = [json.loads(r.stdout) for r in results]
    assert {r.seed: [o.text for o in r.outputs] for r in rows} == {
        i: [s["text"] for s in p["samples"]] for i, p in enumerate(printed)}
    with connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM generation_outputs").fetchone() == (32,)


@pytest.mark.parametrize("count", [2, 8])
def test_processes_opening_an_empty_database_together_all_succeed(postgres_url: str, count: int) -> None:
    assert start_together("concurrent_worker", postgres_url, count) == [(0, "done\n", "")] * count
    with connect(postgres_url) as conn:
        assert conn.execute("SELECT id, version FROM schema_version").fetchall() == [(1, SCHEMA_VERSION)]
    with History(postgres_url) as history:
        rows = history.list_generations(limit=None)
    assert sorted(g.params["worker"] for g in rows) == sorted(str(i) for i in range(count))

