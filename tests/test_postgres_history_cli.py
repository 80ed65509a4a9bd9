"""tests/test_history_cli.py again, with ``--database`` a fresh PostgreSQL database.

Its tests are collected a second time here with the ``db`` fixture a PostgreSQL URL;
those about SQLite files, or about no database at all, run once, in test_history_cli.
"""

from __future__ import annotations

import pytest
from test_history_cli import *  # noqa: F403  (the tests to run again)
from test_history_cli import _isolated_env  # noqa: F401  (autouse: its environment, here too)

ONCE_ELSEWHERE = {
    "test_help",
    "test_reading_commands_never_create_a_database",  # a missing SQLite file
    "test_unusable_database_is_a_clean_error",  # a corrupt SQLite file
}
for _name in ONCE_ELSEWHERE:
    globals().pop(_name, None)


@pytest.fixture
def db(postgres_url: str) -> str:
    return postgres_url
