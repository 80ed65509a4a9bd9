"""One writer per run folder (issue 27, items 1 and 2): real `chargen train` processes on one run.

Two trainings under one --run-name, and two --resume of one run: exactly one proceeds, the other
exits 1 with one line naming the holder (PID and host), and nothing of the first run is lost or
mixed: metrics.jsonl, run.json, the weights' metadata and the history's row are all the first's.
A lock left by a killed process never blocks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chargen.history import History
from chargen.runs.checkpoint import read_metadata
from chargen.runs.layout import read_run_json
from chargen.runs.metrics import read_metrics
from tests.conftest import FABLES, REPO, assert_one_line_error

LOCK_FILE = ".lock"  # chargen.runs.lock.LOCK_FILE: spelled out, so that this file also runs against chargen before it
TRAIN = ["--size", "tiny", "--threads", "1", "--precision", "fp32", "--batch-size", "8", "--seq-len", "32",
         "--quiet"]


def chargen(*args: str, home: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), CHARGEN_HOME=str(home / "home"),
               CHARGEN_CHECKPOINTS=str(home / "checkpoints"), OMP_NUM_THREADS="1")
    env.pop("CHARGEN_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "chargen", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=home)


def finish(proc: subprocess.Popen, timeout: float = 240) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for_lock(run_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``proc`` has begun training (it takes the run's lock before writing anything there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read_metrics(run_dir) and (read_run_json(run_dir) or {}).get("status") == "running":
            return
        if proc.poll() is not None:
            pytest.fail(f"the first trainer ended early: {proc.returncode} {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.1)
    pytest.fail("the first trainer never took the run's lock")


def corpora(tmp_path: Path) -> tuple[Path, Path]:
    text = FABLES.read_text()
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(text[:30_000])
    b.write_text(text[30_000:60_000].upper())  # another vocabulary: mixing would show
    return a, b


def assert_one_curve(run_dir: Path) -> None:
    steps = [row["step"] for row in read_metrics(run_dir)]
    assert steps and steps == sorted(steps) and len(steps) == len(set(steps)), steps


def assert_locked_out(result: subprocess.CompletedProcess, holder: subprocess.Popen) -> None:
    assert result.returncode == 1, result
    assert_one_line_error(result, "another chargen process is writing this run",
                          f"PID {holder.pid} on {socket.gethostname()}")


@pytest.mark.slow
def test_two_trainings_under_one_run_name(tmp_path: Path) -> None:
    a, b = corpora(tmp_path)
    run_dir = tmp_path / "checkpoints" / "same"
    first = chargen("train", str(a), "--run-name", "same", "--max-steps", "100000", "--eval-every", "20", *TRAIN,
                    home=tmp_path)
    try:
        wait_for_lock(run_dir, first)
        second = finish(chargen("train", str(b), "--run-name", "same", "--max-steps", "60", *TRAIN, home=tmp_path))
        assert_locked_out(second, first)
    finally:
        first.send_signal(signal.SIGINT)  # saves and stops
    stopped = finish(first)
    assert stopped.returncode == 130, stopped.stderr
    recorded = read_run_json(run_dir)
    assert recorded is not None and recorded["corpus"]["paths"] == [str(a)] and recorded["status"] == "interrupted"
    assert recorded["train_config"]["max_steps"] == 100000
    assert json.loads(read_metadata(run_dir / "last.safetensors")["training"])["corpus_paths"] == [str(a)]
    assert_one_curve(run_dir)
    with History(str(tmp_path / "home" / "history.db")) as history:
        assert [r.corpus_path for r in history.list_runs()] == [str(a)]


@pytest.mark.slow
def test_two_trainings_started_together(tmp_path: Path) -> None:
    """Started at the same moment: one trains, the other is refused (by the lock, or, if it came
    only once the first had finished, because the folder holds a run); the survivor is whole."""
    a, b = corpora(tmp_path)
    procs = [chargen("train", str(corpus), "--run-name", "same", "--max-steps", "40", "--eval-every", "20", *TRAIN,
                     home=tmp_path) for corpus in (a, b)]
    results = [finish(proc) for proc in procs]
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 1], [(r.returncode, r.stderr) for r in results]
    winner = (a, b)[[r.returncode for r in results].index(0)]
    loser = results[[r.returncode for r in results].index(1)]
    assert_one_line_error(loser)
    assert "another chargen process is writing this run" in loser.stderr or "already holds a run" in loser.stderr
    run_dir = tmp_path / "checkpoints" / "same"
    assert read_run_json(run_dir)["corpus"]["paths"] == [str(winner)]
    assert [row["step"] for row in read_metrics(run_dir) if row["val_loss"] is not None] == [20, 40]
    assert_one_curve(run_dir)
    with History(str(tmp_path / "home" / "history.db")) as history:
        assert [r.corpus_path for r in history.list_runs()] == [str(winner)]


@pytest.mark.slow
def test_two_resumes_of_one_run(run: Path, isolated_home: Path) -> None:
    before = read_run_json(run)
    first = chargen("train", "--resume", run.name, "--max-steps", "100000", "--quiet", "--threads", "1",
                    home=isolated_home)
    try:
        wait_for_lock(run, first)
        second = finish(chargen("train", "--resume", run.name, "--max-steps", "200", "--quiet", "--threads", "1",
                                home=isolated_home))
        assert_locked_out(second, first)
    finally:
        first.send_signal(signal.SIGINT)
    assert finish(first).returncode == 130
    recorded = read_run_json(run)
    assert recorded["train_config"]["max_steps"] == 100000 and recorded["run_id"] == before["run_id"]
    assert_one_curve(run)
    saved = json.loads(read_metadata(run / "last.safetensors")["training"])
    assert saved["step"] == max(row["step"] for row in read_metrics(run))


@pytest.mark.slow
def test_a_killed_writer_leaves_no_lock_behind(run: Path, isolated_home: Path) -> None:
    holder = chargen("train", "--resume", run.name, "--max-steps", "100000", "--quiet", "--threads", "1",
                     home=isolated_home)
    try:
        wait_for_lock(run, holder)
    finally:
        holder.kill()  # SIGKILL: no clean-up runs; the lock file stays, with its PID
        holder.wait()
    assert (run / LOCK_FILE).read_text().split()[0] == str(holder.pid)
    resumed = finish(chargen("train", "--resume", run.name, "--max-steps", "160", "--quiet", "--threads", "1",
                             home=isolated_home))
    assert resumed.returncode == 0, resumed.stderr


def test_lock_in_process(tmp_path: Path) -> None:
    from chargen.runs.lock import RunLock, RunLocked

    with RunLock(tmp_path):
        with pytest.raises(RunLocked, match=rf"PID {os.getpid()} on "):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path) as again:  # released: free again
        assert again.held
