"""Training the benchmark's models with ``chargen train``: a short run, and one until validation plateaus.

Both are ordinary ``chargen train`` processes (small preset, ``--transpose
-3..3``, one thread). The plateau run has a long schedule (``--max-steps``
``max_steps``) and is stopped, as Ctrl-C stops it (it saves first), once its
validation loss has not improved by ``min_delta`` (relative) for ``patience``
evaluations in a row; its best weights are the model. Existing runs are reused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import REPO


@dataclass(frozen=True)
class Level:
    name: str  # "short" or "plateau"
    max_steps: int
    eval_every: int
    patience: int = 0  # 0: run to max_steps
    min_delta: float = 0.005


@dataclass
class Trained:
    run_dir: Path
    weights: Path
    steps: int
    best_val: float | None
    best_step: int | None


def _evals(run_dir: Path) -> list[tuple[int, float]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line being written
        if isinstance(row, dict) and row.get("val_loss") is not None:
            out.append((int(row["step"]), float(row["val_loss"])))
    return out


def plateaued(evals: list[tuple[int, float]], patience: int, min_delta: float) -> bool:
    """Whether the last ``patience`` evaluations all failed to beat the best before them by ``min_delta``."""
    if patience <= 0 or len(evals) <= patience:
        return False
    best = min(v for _, v in evals[:-patience])
    return all(v > best * (1 - min_delta) for _, v in evals[-patience:])


def train(corpus: Path, codec: str, level: Level, out: Path, run_name: str, seed: int = 1337) -> Trained:
    """Train (or reuse: the same level) one run; returns where its weights are."""
    run_dir = out / run_name
    done = run_dir / "benchmark.json"
    if done.is_file() and json.loads(done.read_text()).get("level") != vars(level):
        done.unlink()  # trained for another level: again
    if not done.is_file():
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        command = [sys.executable, "-m", "chargen", "train", str(corpus), "--codec", codec, "--size", "small",
                   "--max-steps", str(level.max_steps), "--transpose=-3..3", "--threads", "1",
                   "--eval-every", str(level.eval_every), "--seed", str(seed), "--run-name", run_name,
                   "--out", str(out), "--no-log", "--quiet"]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stopped = False
        while process.poll() is None:
            time.sleep(2)
            if not stopped and plateaued(_evals(run_dir), level.patience, level.min_delta):
                process.send_signal(signal.SIGINT)  # saves, then stops
                stopped = True
        _, err = process.communicate()
        if process.returncode not in (0, 130):
            raise RuntimeError(f"chargen train failed ({process.returncode}): {err.strip()[-500:]}")
        evals = _evals(run_dir)
        best_step, best_val = min(evals, key=lambda e: e[1]) if evals else (None, None)
        steps = max((s for s, _ in evals), default=0)
        weights = "best.safetensors" if level.patience else "last.safetensors"
        done.write_text(json.dumps({"steps": steps, "best_val": best_val, "best_step": best_step,
                                    "weights": weights, "plateaued": stopped, "level": vars(level)}))
    record = json.loads(done.read_text())
    return Trained(run_dir, run_dir / record["weights"], record["steps"], record["best_val"], record["best_step"])
