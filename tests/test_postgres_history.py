"""tests/test_history.py again, on a real PostgreSQL server (a fresh database per test).

The test functions are test_history's own, collected a second time here with the
``history`` fixtures opened on PostgreSQL (conftest's ``postgres_url``). Tests that look
inside an SQLite file are replaced by their PostgreSQL counterparts below; those that use
no database at all run once, in test_history.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from history_helpers import record
from pg_support import connect
from test_history import *  # noqa: F403  (the tests to run again)
from test_history_robustness import test_postgresql_round_trip  # noqa: F401  (runs given a URL: below)

import chargen.history.schema as history_schema
from chargen.history import History, HistoryLookupError, HistoryUnavailable

SQLITE_ONLY = {
    "test_sqlite_pragmas_are_on",
    "test_default_location_is_used_and_reopened_without_loss",  # the default is an SQLite file
    # replaced below: they read or change the tables directly
    "test_delete_generation_cascades_to_outputs",
    "test_newer_schema_is_refused_clearly",
    "test_tables_without_a_version_are_not_adopted",
    "test_failed_migration_leaves_the_database_untouched",
    "test_a_version_1_database_is_migrated_to_lineage_and_scores",
}
NO_DATABASE = {
    "test_resolve_database_url_precedence",
    "test_chargen_home_defaults_to_the_app_dir",
    "test_uncreatable_home_is_history_unavailable",
    "test_ids_sort_like_their_times",
    "test_ids_from_one_process_are_strictly_increasing",
}
for _name in SQLITE_ONLY | NO_DATABASE:
    globals().pop(_name, None)


@pytest.fixture
def db(request: pytest.FixtureRequest) -> None:
    pytest.fail(f"{request.node.name} opens test_history's SQLite file: list it in SQLITE_ONLY in "
                f"{__name__}.py and give it a PostgreSQL counterpart there", pytrace=False)


@pytest.fixture(autouse=True)
def _round_trip_url(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """test_history_robustness's PostgreSQL test runs where this names a database."""
    monkeypatch.setenv("CHARGEN_TEST_POSTGRES_URL", postgres_url)


@pytest.fixture
def db_url(postgres_url: str) -> str:
    return postgres_url


@pytest.fixture
def history(postgres_url: str) -> Iterator[History]:
    with History(postgres_url) as h:
        yield h


@pytest.fixture(scope="module")
def search_history(postgres_server) -> Iterator[History]:
    with postgres_server.database() as url, History(url) as h:
        yield h


def test_delete_generation_cascades_to_outputs_on_postgresql(history: History, postgres_url: str) -> None:
    gid = record(history, outputs=["a", "b", "c"])
    keep = record(history)
    assert history.delete_generation(gid[:20]) == gid
    with connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM generation_outputs WHERE generation_id = %s",
                            (gid,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM generation_outputs").fetchone() == (1,)
    assert [g.id for g in history.list_generations()] == [keep]
    with pytest.raises(HistoryLookupError):
        history.delete_generation(gid)


def test_newer_schema_is_refused_clearly_on_postgresql(postgres_url: str) -> None:
    with History(postgres_url) as h:
        record(h)
    with connect(postgres_url) as conn:
        conn.execute("UPDATE schema_version SET version = 7")
    with pytest.raises(HistoryUnavailable, match="schema version 7, newer than this chargen understands") as err:
        History(postgres_url)
    assert "\n" not in str(err.value)


def test_tables_without_a_version_are_not_adopted_on_postgresql(postgres_url: str) -> None:
    with connect(postgres_url) as conn:
        conn.execute("CREATE TABLE generations (id TEXT PRIMARY KEY, other TEXT)")
    with pytest.raises(HistoryUnavailable, match="not a chargen history database"):
        History(postgres_url)


def test_failed_migration_leaves_the_database_untouched_on_postgresql(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with History(postgres_url) as h:
        gid = record(h)

    def broken(conn) -> None:
        conn.exec_driver_sql("ALTER TABLE generations ADD COLUMN rating INTEGER")
        conn.exec_driver_sql("SELECT no_such_function()")

    now = history_schema.SCHEMA_VERSION
    monkeypatch.setattr(history_schema, "SCHEMA_VERSION", now + 1)
    monkeypatch.setattr(history_schema, "MIGRATIONS", {**history_schema.MIGRATIONS, now + 1: broken})
    with pytest.raises(HistoryUnavailable):
        History(postgres_url)
    monkeypatch.undo()
    with History(postgres_url) as h:  # DDL is transactional here too: still a clean database of this version
        assert h.schema_version() == now and h.get_generation(gid).id == gid
    with connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.columns "
                            "WHERE table_name = 'generations' AND column_name = 'rating'").fetchone() == (0,)


def test_a_version_1_database_is_migrated_to_lineage_and_scores_on_postgresql(postgres_url: str) -> None:
    from test_history import _run, _score

    with History(postgres_url) as h:
        run_id = _run(h)
        gid = record(h)
    with connect(postgres_url) as conn:  # back to what a version-1 chargen made
        conn.execute("DROP TABLE scores")
        conn.execute("ALTER TABLE training_runs DROP COLUMN parent")
        conn.execute("UPDATE schema_version SET version = 1")
    with History(postgres_url) as h:
        assert h.schema_version() == history_schema.SCHEMA_VERSION == 2
        assert h.get_run(run_id).parent is None and h.get_generation(gid).id == gid
        child = _run(h, checkpoint_sha256="b" * 64, parent={"run": "fables", "checkpoint_sha256": "a" * 64})
        assert h.get_run(child).parent["run_id"] == run_id
        (score_id,) = h.record_scores([_score()])
        assert h.get_score(score_id).run_id == run_id
