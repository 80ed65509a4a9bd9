"""tests/test_history_sampling.py again: `chargen sample`, `train` and `history replay` on PostgreSQL.

Its tests take their database URL from its ``db_url(tmp_path)``; here that helper hands
out a fresh PostgreSQL database instead of an SQLite file. The tests about SQLite
locks and files, and its concurrency test (tests/test_postgres.py has the PostgreSQL
one, with 16 processes), run once, in test_history_sampling.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import test_history_sampling as sqlite_suite
from test_history_sampling import *  # noqa: F403  (the tests to run again)

ONCE_ELSEWHERE = {
    "test_eight_concurrent_sample_processes_all_log",
    "test_locked_database_still_prints_output_and_warns_once",
    "test_read_only_and_unreachable_databases",
}
for _name in ONCE_ELSEWHERE:
    globals().pop(_name, None)


@pytest.fixture(autouse=True)
def _database_on_postgresql(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def db_url(tmp_path: Path) -> str:
        return postgres_url

    monkeypatch.setattr(sqlite_suite, "db_url", db_url)
