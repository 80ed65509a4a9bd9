"""`chargen sample` writes the history; replay; and sampling survives a database that is not there."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from forked import run_forked

from chargen.history import History
from tests.conftest import REPO, assert_one_line_error, run_cli


def db_url(tmp_path: Path) -> str:
    """An SQLite file, for the tests of SQLite's own locking and files; the others take ``database_url`` (both
    engines)."""
    return f"sqlite:///{tmp_path / 'shared.db'}"


@pytest.mark.slow
def test_eight_concurrent_sample_processes_all_log(run: Path, tmp_path: Path) -> None:
    url = db_url(tmp_path)
    env = dict(os.environ, CHARGEN_DATABASE_URL=url, OMP_NUM_THREADS="1")
    results = run_forked([["sample", "--len", "40", "--seed", str(i), "--require-log", "--quiet"] for i in range(8)],
                         tmp_path / "processes", env)
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
    with History(url) as history:
        rows = history.list_generations(limit=None)
    assert len(rows) == 8
    assert sorted(r.seed for r in rows) == list(range(8))
    assert {r.outputs[0].text for r in rows} == {r.stdout.rstrip("\n") for r in results}


@pytest.mark.parametrize("options", [
    ["--seed", "9", "--temperature", "0.8", "--top-k", "20"],
    ["--greedy"],
    ["--beam-width", "4", "-n", "2"],
    ["--beam-width", "3", "--beam-sample", "--seed", "4"],
    ["-n", "3", "--top-p", "0.9"],  # no seed given: the drawn seed is logged and replayed
])
def test_replay_reproduces_every_decoder_byte_for_byte(run: Path, tmp_path: Path, database_url: str,
                                                      options: list[str]) -> None:
    url = database_url
    result = run_cli("sample", "--len", "80", "--prime", "The ", "--database", url, "--json", *options)
    assert result.returncode == 0, result.stderr
    with History(url) as history:
        record = history.list_generations(limit=1)[0]
    assert [o.text for o in record.outputs] == [s["text"] for s in json.loads(result.stdout)["samples"]]
    replay = run_cli("history", "replay", record.id, "--database", url, "--json")
    assert replay.returncode == 0, replay.stderr
    data = json.loads(replay.stdout)
    assert data["identical"] and data["replayed"] == data["recorded"]


def test_replay_says_why_it_cannot(run: Path, tmp_path: Path, database_url: str) -> None:
    url = database_url
    assert run_cli("sample", "--len", "20", "--database", url).returncode == 0
    with History(url) as history:
        record = history.list_generations(limit=1)[0]
    weights = Path(record.checkpoint_path)
    weights.write_bytes(weights.read_bytes() + b" ")  # same path, different file
    assert_one_line_error(run_cli("history", "replay", record.id, "--database", url), "has changed")
    weights.unlink()
    assert_one_line_error(run_cli("history", "replay", record.id, "--database", url), "no longer exists")


@pytest.mark.slow
def test_training_runs_are_logged_and_generations_link_to_them(tmp_path: Path, database_url: str) -> None:
    url = database_url
    corpus = tmp_path / "c.txt"
    corpus.write_text((REPO / "corpora" / "fables.txt").read_text()[:20000])
    trained = run_cli("train", str(corpus), "--size", "tiny", "--max-steps", "5", "--batch-size", "8",
                      "--seq-len", "32", "--database", url, "--run-name", "logged", "--quiet")
    assert trained.returncode == 0, trained.stderr
    assert run_cli("sample", "-c", "logged", "--len", "10", "--database", url).returncode == 0
    with History(url) as history:
        runs = history.list_runs()
        generation = history.list_generations(limit=1)[0]
    assert len(runs) == 1 and runs[0].steps == 5 and runs[0].corpus_tokens == 20000
    assert generation.run_id == runs[0].id


def _assert_output_but_not_logged(result: subprocess.CompletedProcess) -> None:
    assert len(result.stdout.strip()) > 0  # the output is printed regardless
    warnings = [line for line in result.stderr.splitlines() if "not logged" in line]
    assert len(warnings) == 1 and "Traceback" not in result.stderr


@pytest.mark.slow
def test_locked_database_still_prints_output_and_warns_once(run: Path, tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    assert run_cli("sample", "--len", "5", "--database", f"sqlite:///{path}").returncode == 0  # create it
    holder = sqlite3.connect(path, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        start = time.time()
        result = run_cli("sample", "--len", "30", "--seed", "1", "--database", f"sqlite:///{path}")
        assert result.returncode == 0
        _assert_output_but_not_logged(result)
        strict = run_cli("sample", "--len", "30", "--seed", "1", "--database", f"sqlite:///{path}",
                         "--require-log")
        assert strict.returncode == 1 and strict.stdout == result.stdout
        assert time.time() - start < 60
    finally:
        holder.rollback()
        holder.close()


def test_read_only_and_unreachable_databases(run: Path, tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    assert run_cli("sample", "--len", "5", "--database", f"sqlite:///{path}").returncode == 0
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    _assert_output_but_not_logged(run_cli("sample", "--len", "20", "--database", read_only))
    missing_dir = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'h.db'}"
    _assert_output_but_not_logged(run_cli("sample", "--len", "20", "--database", missing_dir))
    bogus = "postgresql://nobody@127.0.0.1:1/none"
    result = run_cli("sample", "--len", "20", "--database", bogus, "--require-log")
    assert result.returncode == 1
    _assert_output_but_not_logged(result)


@pytest.mark.slow
def test_sampling_without_logging_imports_no_sqlalchemy(run: Path, tmp_path: Path, database_url: str) -> None:
    """`chargen sample --no-log` never loads the history store (SQLAlchemy costs ~0.3 s a start)."""
    probe = ("import sys\nfrom chargen.cli import main\nsys.argv = ['chargen', 'sample', '--len', '5', *sys.argv[1:]]\n"
             "try:\n    main()\nexcept SystemExit as exc:\n"
             "    print('exit', exc.code, any(m.split('.')[0] == 'sqlalchemy' for m in sys.modules), file=sys.stderr)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    quiet = subprocess.run([sys.executable, "-c", probe, "--no-log"], capture_output=True, text=True, env=env,
                           timeout=180)
    assert quiet.stderr.splitlines()[-1] == "exit 0 False", quiet.stderr
    logged = subprocess.run([sys.executable, "-c", probe, "--database", database_url], capture_output=True,
                            text=True, env=env, timeout=180)
    assert logged.stderr.splitlines()[-1] == "exit 0 True", logged.stderr  # the probe does see it when used
