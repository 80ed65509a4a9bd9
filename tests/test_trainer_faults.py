"""Training under faults: SIGKILL mid-run (metrics.jsonl stays readable), folders that cannot be written."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chargen.runs.layout import METRICS, STATE
from chargen.runs.metrics import FIELDS
from tests.conftest import FABLES, REPO
from tests.test_trainer import run_main


def _corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "fables.txt"
    corpus.write_text(FABLES.read_text()[:20000])
    return corpus


def _train(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "chargen", "train", *args, "--quiet", "--no-log"],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(condition, what: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _lines(run_dir: Path) -> list[str]:
    path = run_dir / METRICS
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
def test_metrics_jsonl_survives_sigkill_and_resume_appends(tmp_path: Path) -> None:
    run_dir = Path(os.environ["CHARGEN_CHECKPOINTS"]) / "killed"
    proc = _train(str(_corpus(tmp_path)), "--size", "tiny", "--batch-size", "8", "--seq-len", "32",
                  "--eval-every", "1", "--max-steps", "100000", "--threads", "1", "--run-name", "killed")
    rng = random.Random(1)
    seen = 0
    for _ in range(3):
        _wait_for(lambda want=seen + 3: len(_lines(run_dir)) >= want, "metrics lines")
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        proc.wait()
        text = (run_dir / METRICS).read_text()
        assert text.endswith("\n"), "a kill leaves no half-written line"
        records = [json.loads(line) for line in text.splitlines()]  # every line parses
        assert all(set(r) == set(FIELDS) for r in records)
        steps = [r["step"] for r in records]
        assert steps == sorted(set(steps)), "one curve: resume drops lines past its checkpoint, then appends"
        seen = len(records)
        proc = _train("--resume", "killed")
    _wait_for(lambda: len(_lines(run_dir)) >= seen + 2, "metrics lines after the last resume")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    records = [json.loads(line) for line in _lines(run_dir)]
    assert [r["step"] for r in records] == sorted({r["step"] for r in records})
    assert records[-1]["val_loss"] is not None


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` unwritable, for root too (``chattr +i``), and restore it afterwards."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)],
                                                        capture_output=True).returncode != 0:
        pytest.skip("running as root where chattr +i is unavailable: no way to make a folder unwritable")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_out_on_a_read_only_folder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "readonly"
    out.mkdir()
    with read_only(out):
        code, err = run_main(["train", str(_corpus(tmp_path)), "--out", str(out), "--size", "tiny",
                              "--max-steps", "1", "--threads", "1", "--quiet", "--no-log"], capsys, monkeypatch)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "cannot create the run folder" in lines[0], err
    assert "internal error" not in err


@pytest.mark.slow
def test_run_folder_made_read_only_mid_run_is_a_one_line_error(tmp_path: Path) -> None:
    run_dir = Path(os.environ["CHARGEN_CHECKPOINTS"]) / "frozen"
    proc = _train(str(_corpus(tmp_path)), "--size", "tiny", "--batch-size", "8", "--seq-len", "32",
                  "--eval-every", "2", "--max-steps", "100000", "--threads", "1", "--run-name", "frozen")
    try:
        _wait_for(lambda: (run_dir / STATE).exists() and len(_lines(run_dir)) >= 1, "the first checkpoints")
        with read_only(run_dir):
            _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("chargen: error: ") and str(run_dir) in last and "cannot write" in last, err
