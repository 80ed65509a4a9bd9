"""``python -m benchmarks.gpu_check`` (issue 30) on the CPU with tiny sizes: every row of its table is there,
measured and checked, so the script a GPU machine will run in one call does not go stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # real processes or servers: `make test-fast` leaves them out


def check(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu_check.json"
    environment = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **env)
    environment.pop("CHARGEN_DEBUG", None)
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--tiny",
                             "--json", str(out), *args], capture_output=True, text=True, timeout=600, cwd=REPO,
                            env=environment)
    return result, json.loads(out.read_text())


def test_the_tiny_check_on_the_cpu_fills_and_passes_every_row(tmp_path: Path) -> None:
    result, table = check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    rows = table["rows"]
    assert table["failed"] == 0 and all(row["check"] != "FAILED" for row in rows), rows
    printed = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(printed) == len(rows) + 1  # one table: the header and every row
    for row in rows:
        assert (row["device"], row["torch"], row["cuda"]) == ("cpu", torch.__version__, "-"), row
        assert row["device_name"] and row["value"], row
    by_step: dict[str, list[dict]] = {}
    for row in rows:
        by_step.setdefault(row["step"], []).append(row)
    assert [r["figure"] for r in by_step["1 matmul peak"]] == ["fp32", "tf32", "bf16"]
    assert by_step["1 matmul peak"][0]["data"]["gflops"] > 0
    for preset in ("medium", "large"):
        train = {r["figure"]: r for r in by_step[f"2 train {preset}"]}
        assert train["precision auto chose"]["value"] in ("fp32", "bf16", "fp32-bf16math")
        assert train["training chars/s (auto)"]["data"]["chars_per_s"] > 0
        assert 0 < train[next(k for k in train if k.startswith("fraction"))]["data"]["fraction"]
        losses = train["validation loss auto / fp32"]
        assert losses["check"] == "ok" and abs(losses["data"]["auto"] - losses["data"]["fp32"]) <= 0.05
        assert train["training chars/s (auto)"]["memory"].endswith("RSS")
    minutes = {r["figure"]: r for r in by_step["3 --minutes 0.05"]}
    assert minutes["size chosen"]["value"] in ("tiny", "small", "medium", "large")
    assert minutes["best validation loss"]["check"] == "ok" and minutes["best validation loss"]["data"]["steps"] > 0
    ddp, = by_step["4 torchrun"]
    assert ddp["check"] == "ok" and ddp["data"]["max_diff"] <= 1e-5 and ddp["data"]["backend"] == "gloo"
    assert ddp["memory"].endswith("RSS per process")
    parity = by_step["5 sample CPU vs device"]
    assert [r["value"] for r in parity] == ["same text", "same text"]
    for place in ("cpu", "device"):
        served = by_step[f"6 serve ({place})"]
        assert [r["data"]["streams"] for r in served] == [1, 16, 64, 256]
        assert all(r["data"]["chars_per_s"] > 0 and r["data"]["chars"] == 8 * r["data"]["streams"] for r in served)
        assert all(r["memory"].endswith("RSS per process") for r in served)


def test_a_failing_step_is_a_row_and_the_exit_is_1(tmp_path: Path) -> None:
    result, table = check(tmp_path, "--steps", "1,5", CHARGEN_DEVICE_ROWS="many")
    assert result.returncode == 1
    steps = [(row["step"], row["check"]) for row in table["rows"]]
    assert steps[:3] == [("1 matmul peak", "-")] * 3  # step 1 ran, and step 5's failure did not stop the table
    failed, = [row for row in table["rows"] if row["check"] == "FAILED"]
    assert failed["step"] == "5 sample CPU vs device" and "CHARGEN_DEVICE_ROWS" in failed["note"]
    assert "\n" not in failed["note"] and table["failed"] == 1
