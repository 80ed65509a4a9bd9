"""Training curves: metrics.jsonl is read, plotted to a PNG, and judged (improving or overfitting)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from chargen.runs.checkpoint import load_state
from chargen.runs.curve import METRICS, read_curve, trend
from chargen.runs.layout import LAST
from chargen.runs.plot import DPI, FIGSIZE_IN, plot_runs
from tests.conftest import REPO, assert_one_line_error, run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a valid PNG has first."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def write_metrics(run_dir: Path, evals: list[tuple[int, float, float]], every: int = 10) -> Path:
    """A metrics.jsonl as training writes it: a line per logged step, val_loss only at evaluations."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    previous = 0
    for step, train_loss, val_loss in evals:
        for between in range(previous + every, step, every):  # train-only lines, val_loss null
            lines.append({"step": between, "elapsed_s": between * 0.5, "train_loss": train_loss + 0.1,
                          "val_loss": None, "lr": 3e-3, "chars_per_s": 5000.0, "precision": "fp32"})
        lines.append({"step": step, "elapsed_s": step * 0.5, "train_loss": train_loss, "val_loss": val_loss,
                      "lr": 3e-3, "chars_per_s": 5000.0, "precision": "fp32"})
        previous = step
    (run_dir / METRICS).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run_dir


IMPROVING = [(50, 2.5, 2.6), (100, 2.0, 2.2), (150, 1.8, 2.0)]
OVERFITTING = [(50, 2.0, 2.1), (100, 1.5, 1.8), (150, 1.0, 1.95), (200, 0.7, 2.2)]


def test_plot_of_one_run_is_a_png_of_the_chart_size(isolated_home: Path) -> None:
    run_dir = write_metrics(isolated_home / "checkpoints" / "alpha", IMPROVING)
    out = isolated_home / "curve.png"
    result = run_cli("plot", "alpha", "-o", str(out))  # a run name, resolved under $CHARGEN_CHECKPOINTS
    assert result.returncode == 0, result.stderr
    assert png_size(out) == (int(FIGSIZE_IN[0] * DPI), int(FIGSIZE_IN[1] * DPI))
    assert "alpha val" in plot_runs([run_dir], isolated_home / "again.png").labels
    assert not list(isolated_home.glob(".*.tmp"))  # written atomically: no temp file left behind


def test_plot_of_two_runs_draws_both(tmp_path: Path) -> None:
    alpha = write_metrics(tmp_path / "alpha", IMPROVING)
    beta = write_metrics(tmp_path / "beta", OVERFITTING, every=25)
    plotted = plot_runs([alpha, beta], tmp_path / "both.png", x="minutes")
    assert plotted.labels == ["alpha val", "alpha train", "beta val", "beta train"]
    assert png_size(plotted.path)[0] == FIGSIZE_IN[0] * DPI
    cli = run_cli("plot", str(alpha), str(beta), "-o", str(tmp_path / "cli.png"), "--x", "minutes")
    assert cli.returncode == 0 and "2 run(s), 4 lines" in cli.stderr, cli.stderr
    assert (tmp_path / "cli.png").read_bytes()[:8] == PNG_SIGNATURE


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    run_dir = write_metrics(tmp_path / "torn", IMPROVING)
    with open(run_dir / METRICS, "a") as handle:
        handle.write('{"step": 160, "elapsed_s": 80.0, "train_lo')
    points = read_curve(run_dir)
    assert points[-1].step == 150 and [p.step for p in points if p.val_loss is not None] == [50, 100, 150]


@pytest.mark.parametrize(
    ("evals", "verdict", "best_step"),
    [
        (IMPROVING, "improving", 150),
        (OVERFITTING, "overfitting", 100),
        ([(50, 2.0, 2.1), (100, 1.9, 1.800), (150, 1.85, 1.805)], "plateaued", 100),
        ([(50, 2.0, 2.1), (100, 1.9, 1.8), (150, 2.4, 2.5)], "worsening", 100),
    ],
)
def test_trend_says_whether_the_run_improves(tmp_path: Path, evals: list, verdict: str, best_step: int) -> None:
    found = trend(write_metrics(tmp_path / verdict, evals))
    assert found is not None
    assert (found.verdict, found.best_step, found.last_step) == (verdict, best_step, evals[-1][0])
    assert found.summary.startswith(verdict)


def test_info_reports_the_trend_of_a_real_run(run: Path) -> None:
    result = run_cli("info", str(run), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["trend"]
    evals = load_state(run / "state.pt")["evals"]  # what the run itself recorded
    assert data["last_step"] == evals[-1]["step"] == 150
    assert data["best_val_loss"] == pytest.approx(min(e["val_loss"] for e in evals))
    assert data["verdict"] in ("improving", "plateaued", "overfitting", "worsening")
    text = run_cli("info", str(run / LAST))
    assert "trend        " + data["verdict"] in text.stdout, text.stdout


def test_plot_reads_a_real_runs_metrics_jsonl(run: Path, tmp_path: Path) -> None:
    if not (run / METRICS).is_file():
        pytest.skip("this branch's training does not write metrics.jsonl yet")
    lines = (run / METRICS).read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    points = read_curve(run)
    assert len(points) == len(lines) and points[-1].step == 150
    assert sum(p.val_loss is not None for p in points) >= 3  # eval_every 50 over 150 steps
    plotted = plot_runs([run], tmp_path / "real.png")
    assert png_size(plotted.path) == (int(FIGSIZE_IN[0] * DPI), int(FIGSIZE_IN[1] * DPI))


def test_missing_matplotlib_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    run_dir = write_metrics(tmp_path / "alpha", IMPROVING)
    shadow = tmp_path / "no-matplotlib"
    (shadow / "matplotlib").mkdir(parents=True)
    (shadow / "matplotlib" / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = dict(os.environ, PYTHONPATH=f"{shadow}{os.pathsep}{REPO}")
    env.pop("CHARGEN_DEBUG", None)
    result = subprocess.run([sys.executable, "-m", "chargen", "plot", str(run_dir), "-o", str(tmp_path / "x.png")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert_one_line_error(result, "chargen[plot]", "matplotlib")
    assert not (tmp_path / "x.png").exists()


def test_a_run_without_a_curve_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("plot", str(tmp_path / "empty")), "no training curve")
    assert_one_line_error(run_cli("plot", str(tmp_path / "absent")), "no such run")
