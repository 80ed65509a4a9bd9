"""The history store as a library: records, search, ids, foreign keys, schema versions."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
import numpy as np
import pytest
from history_helpers import MIGRATION_RUNS, SHA_A, SHA_B, record, sql, start_together
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, inspect

import chargen.history as hist
import chargen.history.schema as hist_schema
from chargen.errors import ChargenError
from chargen.files.home import chargen_home
from chargen.history import (
    History,
    HistoryLookupError,
    HistoryUnavailable,
    SampleRecord,
    id_time,
    new_id,
    resolve_database_url,
)
from tests.conftest import DATABASES


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """An SQLite file, for the tests of what is SQLite's own (pragmas, its default location)."""
    return tmp_path / "history.db"


@pytest.fixture
def history(database_url: str):
    """A store on a fresh database: each test that takes it runs on SQLite and on PostgreSQL (conftest)."""
    with History(database_url) as h:
        yield h


def _run(history: History, **overrides) -> str:
    fields = {
        "corpus_path": "corpora/fables.txt",
        "corpus_sha256": "c" * 64,
        "corpus_tokens": 123_456,
        "codec": {"name": "text", "alphabet": "ab"},
        "model_config": {"cell": "lstm", "layers": 2},
        "train_config": {"lr": 0.003, "batch_size": 32},
        "steps": 2000,
        "best_val_loss": 1.25,
        "checkpoint_path": "/ckpt/fables/best.safetensors",
        "checkpoint_sha256": SHA_A,
    }
    fields.update(overrides)
    return history.record_training_run(**fields)


def test_generation_round_trip_keeps_every_field(history: History) -> None:
    outputs = [SampleRecord("first\nsample", -10.0, None), SampleRecord("second", -2.5, "/tmp/out-2.mid")]
    before = datetime.now(timezone.utc)
    gid = record(history, outputs=outputs, decoder="beam", params={"beam_width": 4, "num_samples": 2}, seed=None)
    got = history.get_generation(gid)
    assert len(gid) == 26 and got.id == gid
    assert got.created_at.tzinfo is not None and before - timedelta(seconds=1) <= got.created_at
    assert got.decoder == "beam" and got.params == {"beam_width": 4, "num_samples": 2} and got.seed is None
    assert got.prime == "The " and got.codec["name"] == "text" and got.model_config["hidden"] == 64
    assert got.outputs == tuple(outputs)
    assert got.total_logprob == pytest.approx(-12.5)
    assert got.chars_per_s == pytest.approx(len("first\nsample" + "second") / 0.25)
    assert got.checkpoint_path == "/ckpt/fables/best.safetensors" and got.checkpoint_sha256 == SHA_A
    data = json.loads(json.dumps(got.to_dict()))
    assert data["id"] == gid and data["outputs"][1] == {
        "index": 1, "text": "second", "logprob": -2.5, "midi_path": "/tmp/out-2.mid"}
    assert datetime.fromisoformat(data["created_at"]) == got.created_at


def test_accepts_sampler_objects_dataclasses_and_numpy(history: History) -> None:
    @dataclasses.dataclass
    class EngineSample:  # shaped like chargen.sampling.Sample
        ids: list[int]
        text: str
        logprob: float

    @dataclasses.dataclass
    class DecodeConfig:
        temperature: float = 0.7
        sizes: tuple[int, ...] = (1, 2)

    gid = record(
        history,
        outputs=[EngineSample([1, 2], "ab", -1.0), "plain text"],
        params=DecodeConfig(temperature=np.float32(0.5)),  # type: ignore[arg-type]
        model_config={"dropout": float("nan"), "path": Path("/x/y")},
    )
    got = history.get_generation(gid)
    assert [s.text for s in got.outputs] == ["ab", "plain text"]
    assert got.total_logprob is None  # one sample has no logprob: no misleading partial sum
    assert got.params == {"temperature": 0.5, "sizes": [1, 2]}
    assert got.model_config == {"dropout": None, "path": "/x/y"}


def test_bad_arguments_are_programming_errors(history: History) -> None:
    with pytest.raises(ValueError, match="decoder"):
        record(history, decoder="nucleus")
    with pytest.raises(ValueError, match="seed"):
        record(history, seed=2**64)
    with pytest.raises(TypeError, match="cannot store"):
        record(history, params={"fn": object()})
    with pytest.raises(ValueError, match="timezone-aware"):
        record(history, created_at=datetime(2024, 1, 1))


def test_record_generations_writes_a_group_in_one_transaction_all_or_none(history: History) -> None:
    run_id = _run(history)
    base = {
        "checkpoint_path": "/ckpt/fables/best.safetensors", "checkpoint_sha256": SHA_A,
        "model_config": {"cell": "lstm"}, "codec": {"name": "text"}, "decoder": "sample",
        "params": {"temperature": 1.0}, "outputs": ["x"], "duration_s": 0.1,
    }
    ids = history.record_generations([{**base, "prime": f"p{i}"} for i in range(3)]
                                     + [{**base, "prime": "other", "checkpoint_sha256": SHA_B}])
    assert len(set(ids)) == 4
    got = [history.get_generation(i) for i in ids]
    assert [g.prime for g in got] == ["p0", "p1", "p2", "other"]
    assert [g.run_id for g in got] == [run_id] * 3 + [None]  # each row linked to its own checkpoint's run
    before = len(history.list_generations(limit=None))
    with pytest.raises(ValueError, match="decoder"):  # one bad entry: nothing of the group is written
        history.record_generations([{**base, "prime": "fine"}, {**base, "prime": "", "decoder": "nucleus"}])
    assert len(history.list_generations(limit=None)) == before


def test_explicit_creation_time_is_kept_and_encoded_in_the_id(history: History) -> None:
    when = datetime(2021, 5, 4, 3, 2, 1, 500000, tzinfo=timezone(timedelta(hours=2)))
    gid = record(history, created_at=when)
    got = history.get_generation(gid)
    assert got.created_at == when and got.created_at.utcoffset() == timedelta(0)
    assert id_time(gid) == when


def test_list_is_newest_first_with_limit(history: History) -> None:
    ids = [record(history, prime=f"p{i}") for i in range(5)]
    assert [g.id for g in history.list_generations()] == ids[::-1]
    assert [g.id for g in history.list_generations(limit=2)] == ids[:-3:-1]
    assert len(history.list_generations(limit=None)) == 5


def test_search_matches_prime_or_any_output_ignoring_case(history: History) -> None:
    in_prime = record(history, prime="Once upon", outputs=["x"])
    in_second = record(history, prime="", outputs=["nothing", "the Quick fox"])
    record(history, prime="", outputs=["100% pure_water"])
    assert [g.id for g in history.list_generations(query="UPON")] == [in_prime]
    assert [g.id for g in history.list_generations(query="quick FOX")] == [in_second]
    # LIKE wildcards in the query are literal characters
    assert len(history.list_generations(query="0% p")) == 1
    assert len(history.list_generations(query="e_w")) == 1
    assert history.list_generations(query="u_e") == [] and history.list_generations(query="%%") == []


def test_checkpoint_filter_by_sha_path_or_file_content(history: History, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights")
    sha = hist.file_sha256(ckpt)
    by_path = record(history, checkpoint_path=str(ckpt), checkpoint_sha256=SHA_B)
    moved = record(history, checkpoint_path="/elsewhere/copy.safetensors", checkpoint_sha256=sha)
    record(history)
    assert {g.id for g in history.list_generations(checkpoint=ckpt)} == {by_path, moved}
    assert [g.id for g in history.list_generations(checkpoint=SHA_B.upper())] == [by_path]


def test_prefix_lookup_short_ids_and_errors(history: History) -> None:
    ids = [record(history) for _ in range(6)]
    listed = history.list_generations()
    assert len({g.short_id for g in listed}) == 6
    for g in listed:
        assert len(g.short_id) >= hist.MIN_SHORT_ID and g.id.startswith(g.short_id)
        assert history.get_generation(g.short_id).id == g.id
        assert history.get_generation(g.short_id.lower()).id == g.id
    with pytest.raises(HistoryLookupError, match="more than one"):
        history.get_generation(ids[0][:3])
    with pytest.raises(HistoryLookupError, match="no generation"):
        history.get_generation("ZZZZ")
    assert issubclass(HistoryLookupError, ChargenError)


def test_short_ids_are_unique_in_the_whole_table_and_cost_no_query_per_row(history: History) -> None:
    ids = [record(history, prime="match" if i % 3 == 0 else "other") for i in range(40)]
    ids.sort()
    expected = {}  # brute force: one past the longest prefix shared with any other id
    for i in ids:
        shared = max(len(os.path.commonprefix([i, other])) for other in ids if other != i)
        expected[i] = i[: max(hist.MIN_SHORT_ID, shared + 1)]
    statements: list[str] = []
    event.listen(history._engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: statements.append(sql))
    few = history.list_generations(limit=2)
    read_two, statements[:] = len(statements), []
    every = history.list_generations(limit=None)
    assert len(statements) == read_two  # forty rows cost the queries that two do
    assert {g.id: g.short_id for g in every} == expected
    matching = history.list_generations(limit=None, query="match")  # a filter does not shorten them
    assert len(matching) == 14 and all(g.short_id == expected[g.id] for g in matching)
    assert all(g.short_id == expected[g.id] for g in few)
    assert history.get_generation(ids[7]).short_id == expected[ids[7]]
    runs = [_run(history) for _ in range(12)]
    statements[:] = []
    history.list_runs(limit=1)
    read_one, statements[:] = len(statements), []
    listed = history.list_runs(limit=None)
    assert len(statements) == read_one and {r.id for r in listed} == set(runs)
    assert all(history.get_run(r.short_id).id == r.id for r in listed)


@pytest.mark.slow
def test_processes_migrating_at_once_run_the_migration_once(history: History) -> None:
    """Several processes of a newer chargen open an older database together: one migrates."""
    gid = record(history)
    with history._writer.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {MIGRATION_RUNS} (pid INTEGER)")
    assert start_together("migrating_worker", history.url, 4) == [(0, "done\n", "")] * 4
    with history._engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {MIGRATION_RUNS}").scalar() == 1
        assert conn.exec_driver_sql("SELECT version FROM schema_version").scalar() == hist_schema.SCHEMA_VERSION + 1
    assert history.get_generation(gid).id == gid


def test_delete_generation_cascades_to_outputs(history: History, database_url: str) -> None:
    gid = record(history, outputs=["a", "b", "c"])
    keep = record(history)
    assert history.delete_generation(gid[:20]) == gid
    assert sql(database_url, "SELECT count(*) FROM generation_outputs WHERE generation_id = :gid", gid=gid) == 0
    assert sql(database_url, "SELECT count(*) FROM generation_outputs") == 1
    assert [g.id for g in history.list_generations()] == [keep]
    with pytest.raises(HistoryLookupError):
        history.delete_generation(gid)


def test_runs_link_by_checkpoint_and_deleting_a_run_unlinks(history: History) -> None:
    run = _run(history)
    assert history.find_run_by_checkpoint(SHA_A) == run
    assert history.find_run_by_checkpoint("/ckpt/fables/best.safetensors") == run
    assert history.find_run_by_checkpoint(SHA_B) is None
    linked = record(history)  # same checkpoint sha: linked automatically
    explicit = record(history, checkpoint_sha256=SHA_B, run_id=run[:20])
    unlinked = record(history, checkpoint_sha256=SHA_B)
    assert history.get_generation(linked).run_id == run
    assert history.get_generation(explicit).run_id == run
    assert history.get_generation(unlinked).run_id is None
    runs = history.list_runs()
    assert [r.id for r in runs] == [run] and runs[0].best_val_loss == 1.25 and runs[0].corpus_tokens == 123_456
    json.dumps(runs[0].to_dict())
    assert history.get_run(run[:15]).train_config == {"lr": 0.003, "batch_size": 32}
    history.delete_run(run)  # ON DELETE SET NULL, enforced only with foreign keys on
    assert history.get_generation(linked).run_id is None
    assert history.get_generation(explicit).run_id is None
    assert history.list_runs() == []


def test_sqlite_pragmas_are_on(db: Path) -> None:
    with History(str(db)) as history:
        record(history)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    con.close()
    with History(str(db)) as history, history._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == hist.DEFAULT_BUSY_TIMEOUT_MS


def test_resolve_database_url_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home" / "chargen"
    monkeypatch.setenv("CHARGEN_HOME", str(home))
    monkeypatch.delenv("CHARGEN_DATABASE_URL", raising=False)
    assert resolve_database_url(None) == f"sqlite:///{home.resolve() / 'history.db'}"
    assert home.is_dir()
    monkeypatch.setenv("CHARGEN_DATABASE_URL", "postgresql://u@db/chargen")
    assert resolve_database_url(None) == "postgresql://u@db/chargen"
    assert resolve_database_url("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.chdir(tmp_path)
    assert resolve_database_url("plain/file.db") == f"sqlite:///{tmp_path / 'plain' / 'file.db'}"


def test_chargen_home_defaults_to_the_app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARGEN_HOME", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # keeps click.get_app_dir in tmp on Linux
    assert chargen_home(create=False) == Path(click.get_app_dir("chargen"))
    assert chargen_home().is_dir()


def test_uncreatable_home_is_history_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("CHARGEN_HOME", str(tmp_path / "file" / "home"))
    monkeypatch.delenv("CHARGEN_DATABASE_URL", raising=False)
    with pytest.raises(HistoryUnavailable, match="cannot create chargen home folder"):
        History()


def test_default_location_is_used_and_reopened_without_loss(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CHARGEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CHARGEN_DATABASE_URL", raising=False)
    with History() as h:
        gid = record(h)
        assert h.schema_version() == hist.SCHEMA_VERSION == 2
    assert (tmp_path / "home" / "history.db").is_file()
    with History() as h:
        assert [g.id for g in h.list_generations()] == [gid]
        assert h.get_generation(gid).outputs[0].text == "fox ran\naway"


def test_newer_schema_is_refused_clearly(database_url: str) -> None:
    with History(database_url) as h:
        record(h)
    sql(database_url, "UPDATE schema_version SET version = 7")
    with pytest.raises(HistoryUnavailable, match="schema version 7, newer than this chargen understands") as err:
        History(database_url)
    assert "\n" not in str(err.value)


def test_tables_without_a_version_are_not_adopted(database_url: str) -> None:
    sql(database_url, "CREATE TABLE generations (id TEXT PRIMARY KEY, other TEXT)")
    with pytest.raises(HistoryUnavailable, match="not a chargen history database"):
        History(database_url)


def test_older_schema_is_migrated_forward_in_order(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with History(database_url) as h:  # a database of this version with data in it
        gid = record(h, outputs=["a", "b"])
    calls: list[int] = []
    now = hist_schema.SCHEMA_VERSION

    def add_rating(conn) -> None:
        calls.append(now + 1)
        conn.exec_driver_sql("ALTER TABLE generations ADD COLUMN rating INTEGER")

    def add_index(conn) -> None:
        calls.append(now + 2)
        conn.exec_driver_sql("CREATE INDEX ix_generations_rating ON generations (rating)")

    monkeypatch.setattr(hist_schema, "SCHEMA_VERSION", now + 2)
    monkeypatch.setattr(hist_schema, "MIGRATIONS", {**hist_schema.MIGRATIONS, now + 1: add_rating, now + 2: add_index})
    with History(database_url) as h:
        assert h.schema_version() == now + 2
        assert h.get_generation(gid).outputs == (SampleRecord("a"), SampleRecord("b"))
    with History(database_url) as h:  # already current: nothing runs twice
        pass
    assert calls == [now + 1, now + 2]
    with History(database_url) as h:  # the store's own engine: SQLite or PostgreSQL alike
        assert "rating" in [column["name"] for column in inspect(h._engine).get_columns("generations")]


def test_failed_migration_leaves_the_database_untouched(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with History(database_url) as h:
        gid = record(h)

    def broken(conn) -> None:
        conn.exec_driver_sql("ALTER TABLE generations ADD COLUMN rating INTEGER")
        conn.exec_driver_sql("SELECT no_such_function()")

    now = hist_schema.SCHEMA_VERSION
    monkeypatch.setattr(hist_schema, "SCHEMA_VERSION", now + 1)
    monkeypatch.setattr(hist_schema, "MIGRATIONS", {**hist_schema.MIGRATIONS, now + 1: broken})
    with pytest.raises(HistoryUnavailable):
        History(database_url)
    monkeypatch.undo()
    with History(database_url) as h:  # DDL rolled back as one transaction: a clean database of this version
        assert h.schema_version() == now and h.get_generation(gid).id == gid
        assert "rating" not in [column["name"] for column in inspect(h._engine).get_columns("generations")]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 253_402_300_799_999), min_size=2, max_size=5, unique=True))  # to year 9999
def test_ids_sort_like_their_times(stamps: list[int]) -> None:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    times = [epoch + timedelta(milliseconds=ms) for ms in sorted(stamps)]
    ids = [new_id(t) for t in times]
    assert ids == sorted(ids) and all(len(i) == 26 for i in ids)
    assert [id_time(i) for i in ids] == times


def test_ids_from_one_process_are_strictly_increasing() -> None:
    ids = [new_id() for _ in range(2000)]  # many share a millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


@pytest.fixture(scope="module", params=DATABASES)
def search_history(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """One store for all of a property test's examples, on each engine."""
    if request.param == "sqlite":
        with History(str(tmp_path_factory.mktemp("search") / "search.db")) as h:
            yield h
    else:
        with request.getfixturevalue("postgres_server").database() as url, History(url) as h:
            yield h


# NUL is left out: corpora with NUL bytes are refused, and PostgreSQL text cannot hold it; lone
# surrogates too: no decoded text holds one, and no database encodes it.
@settings(max_examples=30, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=30),
       data=st.data())
def test_any_substring_of_an_output_finds_it(search_history: History, text: str, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(text) - 1))
    end = data.draw(st.integers(start + 1, len(text)))
    gid = record(search_history, prime="", outputs=[text])
    assert gid in {g.id for g in search_history.list_generations(limit=None, query=text[start:end])}


# -- lineage (fine-tuning) and scores: schema version 2 -------------------------------------


def _score(**overrides) -> dict:
    fields = {
        "checkpoint_path": "/ckpt/fables/best.safetensors",
        "checkpoint_sha256": SHA_A,
        "codec": {"name": "text", "alphabet": "\n abc", "encoding": "utf-8"},
        "file_path": "/texts/notes.txt",
        "file_sha256": "d" * 64,
        "unit": "char",
        "tokens": 1200,
        "scored": 1199,
        "nats_per_token": 1.5,
        "duration_s": 0.125,
        "unknown": {"é": 3, "ß": 1},
        "worst_lines": [{"line": 7, "text": "zzz", "nats_per_char": 4.5, "chars": 4}],
    }
    fields.update(overrides)
    return fields


def test_fine_tuned_run_names_its_parent_and_links_the_parent_run(history: History) -> None:
    parent_id = _run(history)
    child_id = _run(history, checkpoint_sha256=SHA_B, checkpoint_path="/ckpt/ft/best.safetensors",
                    parent={"run": "fables", "checkpoint_path": "/ckpt/fables/best.safetensors",
                            "checkpoint_sha256": SHA_A.upper(), "new_symbols": "é"})
    orphan_id = _run(history, checkpoint_sha256="e" * 64,
                     parent={"run": "gone", "checkpoint_path": "/x/best.safetensors", "checkpoint_sha256": "f" * 64})
    child = history.get_run(child_id)
    assert child.parent == {"run": "fables", "checkpoint_path": "/ckpt/fables/best.safetensors",
                            "checkpoint_sha256": SHA_A.upper(), "new_symbols": "é", "run_id": parent_id}
    assert history.get_run(orphan_id).parent["run_id"] is None  # a parent never logged here
    assert history.get_run(parent_id).parent is None
    listed = {r["id"]: r for r in (run.to_dict() for run in history.list_runs())}
    assert listed[child_id]["parent"]["run_id"] == parent_id and listed[parent_id]["parent"] is None


def test_scores_are_recorded_one_row_per_file_and_listed_newest_first(history: History) -> None:
    run_id = _run(history)
    first, second = history.record_scores([_score(), _score(file_path="/texts/b.mid", unit="token", unknown={},
                                                            worst_lines=[], checkpoint_sha256=SHA_B)])
    assert [s.id for s in history.list_scores()] == [second, first]
    got = history.get_score(first)
    assert (got.file_path, got.file_sha256, got.unit, got.tokens, got.scored) == (
        os.path.abspath("/texts/notes.txt"), "d" * 64, "char", 1200, 1199)
    assert got.nats_per_token == 1.5 and got.unknown == {"é": 3, "ß": 1} and got.unknown_count == 4
    assert got.worst_lines == [{"line": 7, "text": "zzz", "nats_per_char": 4.5, "chars": 4}]
    assert got.run_id == run_id and history.get_score(second).run_id is None  # linked by checkpoint sha256
    assert [s.id for s in history.list_scores(checkpoint=SHA_B)] == [second]
    data = got.to_dict()
    assert data["bits_per_token"] == pytest.approx(1.5 / np.log(2)) and data["perplexity"] == pytest.approx(np.exp(1.5))
    json.dumps(data)
    with pytest.raises(ValueError, match="finite"):
        history.record_scores([_score(), _score(nats_per_token=float("nan"))])
    assert len(history.list_scores()) == 2  # all or none
    with pytest.raises(HistoryLookupError, match="no score"):
        history.get_score("ZZZZ")


def test_a_version_1_database_is_migrated_to_lineage_and_scores(database_url: str) -> None:
    with History(database_url) as h:
        run_id = _run(h)
        gid = record(h)
    sql(database_url, "DROP TABLE scores", "ALTER TABLE training_runs DROP COLUMN parent",  # what version 1 made
        "UPDATE schema_version SET version = 1")
    with History(database_url) as h:
        assert h.schema_version() == hist_schema.SCHEMA_VERSION == 2
        assert h.get_run(run_id).parent is None and h.get_generation(gid).id == gid
        child = _run(h, checkpoint_sha256=SHA_B, parent={"run": "fables", "checkpoint_sha256": SHA_A})
        assert h.get_run(child).parent["run_id"] == run_id
        (score_id,) = h.record_scores([_score()])
        assert h.get_score(score_id).run_id == run_id
