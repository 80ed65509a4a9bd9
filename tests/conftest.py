"""Shared fixtures: tiny corpora and models, isolated checkpoint and history folders."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_support import PostgresServer
from pg_support import Unavailable as PostgresUnavailable
from pg_support import start_server as start_postgres_server

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "corpora"
FABLES = REPO / "corpora" / "fables.txt"


def shared_path(*parts: str) -> Path:
    """A path in ../shared/corpora, or skip: a user's clone does not have it."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared material {path} is absent (only present in the team's workspace)")
    return path


@pytest.fixture(scope="session", autouse=True)
def machine_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The suite measures nothing (CHARGEN_MEASURE=0: torch's batch-1 kernel, the device's default precision,
    all cores, a nominal speed for --minutes sizing, no GPU offload), so no test times this machine again;
    the tests of those measurements turn them on (``measuring``). One private cache folder for the session,
    the CLI's subprocesses included."""
    folder = tmp_path_factory.mktemp("machine-cache")
    folder.chmod(0o700)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHARGEN_CACHE", str(folder))
        patch.setenv("CHARGEN_MEASURE", "0")
        yield folder


@pytest.fixture
def measuring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Measuring on (the tests of the measurements), with a fresh private cache folder; returns it."""
    folder = tmp_path / "machine-cache"
    monkeypatch.setenv("CHARGEN_CACHE", str(folder))
    monkeypatch.setenv("CHARGEN_MEASURE", "1")
    return folder


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own checkpoint root and CHARGEN_HOME."""
    monkeypatch.setenv("CHARGEN_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("CHARGEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CHARGEN_DATABASE_URL", raising=False)
    return tmp_path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 180, process: bool = False,
            **kwargs) -> subprocess.CompletedProcess:
    """Run ``chargen ARGS`` as a user would: in this process through click's runner (the console script's
    own ChargenGroup.main, without paying a Python and torch start-up), or as a real ``python -m chargen``
    process where that is the point (``process=True``: the entry point, signals, concurrent processes)."""
    if not process:
        with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
            return invoke(*args, input=kwargs.get("input"))
    env = dict(os.environ, PYTHONPATH=str(REPO), CHARGEN_DEBUG="")
    env.pop("CHARGEN_DEBUG")
    return subprocess.run(
        [sys.executable, "-m", "chargen", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, **kwargs,
    )


def invoke(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``chargen ARGS`` in this process with click's CliRunner (through the same
    ChargenGroup.main as the console script); the result looks like ``run_cli``'s."""
    from click.testing import CliRunner

    from chargen.cli import cli

    result = CliRunner().invoke(cli, list(args), input=input, prog_name="chargen")
    return subprocess.CompletedProcess(["chargen", *args], result.exit_code, result.stdout, result.stderr)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small LSTM trained briefly on the embedded fables corpus (shared by tests)."""
    from chargen.runs.start import start_run
    from chargen.training import TrainConfig

    root = tmp_path_factory.mktemp("session-checkpoints")
    config = TrainConfig(batch_size=16, seq_len=64, lr=1e-2, max_steps=150, eval_every=50, seed=7, threads=1)
    result = start_run([FABLES], config, preset="tiny", run_name="fables-tiny", out=root, progress=False,
                       warn=lambda message: None)
    return result.run_dir


@pytest.fixture
def run(trained_run: Path, isolated_home: Path) -> Path:
    """A private copy of the session's trained run under this test's checkpoint root."""
    target = isolated_home / "checkpoints" / trained_run.name
    shutil.copytree(trained_run, target)
    return target


# -- PostgreSQL: a private server per session, a fresh database per test -----------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server (tests/pg_support.py). Where none can be had the test
    skips and says why, except under CI (``$CI`` set), where these tests must run."""
    try:
        server = start_postgres_server()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI: {exc}", pytrace=False)
        pytest.skip(f"no PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    with postgres_server.database() as url:
        yield url


#: The history's two engines: a test that takes ``database_url`` runs once on each.
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty history database: an SQLite file, then (the second parameter) a real PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "history.db")
    return request.getfixturevalue("postgres_url")

