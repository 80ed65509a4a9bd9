"""A run's training curve: read from ``<run>/metrics.jsonl``, and what it says.

Every run writes one JSON object per line (step, elapsed_s, train_loss,
val_loss, lr, chars_per_s, precision; val_loss is null between evaluations).
Runs from before metrics.jsonl existed still have their evaluations in
``state.pt``, so their curve is read from there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chargen.checkpoint import METRICS, STATE, load_state
from chargen.errors import ChargenError
from chargen.training.metrics import read_metrics

#: validation loss this far above the best (nats, or this fraction of the best) is more than noise
RISE_NATS = 0.005
RISE_FRACTION = 0.01


@dataclass
class Point:
    step: int
    elapsed_s: float
    train_loss: float | None
    val_loss: float | None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def read_curve(run_dir: Path) -> list[Point]:
    """The run's points in step order; empty when the run has recorded none.

    A line that does not parse (a write cut short by a kill on a filesystem
    without atomic appends) is skipped rather than failing the whole curve.
    """
    if (run_dir / METRICS).is_file():
        points = []
        for row in read_metrics(run_dir):
            try:
                points.append(Point(step=int(row["step"]), elapsed_s=float(row.get("elapsed_s") or 0.0),
                                    train_loss=_number(row.get("train_loss")), val_loss=_number(row.get("val_loss"))))
            except (ValueError, TypeError, KeyError):
                continue
        return sorted(points, key=lambda point: point.step)
    if (run_dir / STATE).is_file():
        try:
            evals = load_state(run_dir / STATE).get("evals", [])
        except ChargenError:
            return []
        return [Point(step=int(e["step"]), elapsed_s=float(e.get("minutes", 0.0)) * 60,
                      train_loss=_number(e.get("train_loss")), val_loss=_number(e.get("val_loss"))) for e in evals]
    return []


@dataclass
class Trend:
    verdict: str  # improving | plateaued | overfitting | worsening
    best_step: int
    best_val_loss: float
    last_step: int
    last_val_loss: float
    evaluations: int

    @property
    def summary(self) -> str:
        best = f"best val {self.best_val_loss:.4f} at step {self.best_step}"
        last = f"last {self.last_val_loss:.4f} at step {self.last_step}"
        advice = {
            "improving": f"improving: the latest evaluation is the best ({best}); more training should help",
            "plateaued": f"plateaued: {best}, {last} (within noise); more steps of this schedule will not help much",
            "overfitting": f"overfitting: validation loss rose while training loss fell ({best}, {last}); "
                           "use best.safetensors, more data or dropout",
            "worsening": f"worsening: validation and training loss both rose ({best}, {last}); try a lower lr",
        }
        return advice[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), summary=self.summary)


def trend(run_dir: Path) -> Trend | None:
    """Whether the run is still improving or overfitting: its best evaluation against its last."""
    evals = [point for point in read_curve(run_dir) if point.val_loss is not None]
    if not evals:
        return None
    best = min(evals, key=lambda point: (point.val_loss, point.step))
    last = evals[-1]
    assert best.val_loss is not None and last.val_loss is not None
    if best.step == last.step:
        verdict = "improving"
    elif last.val_loss - best.val_loss <= max(RISE_NATS, RISE_FRACTION * best.val_loss):
        verdict = "plateaued"
    elif last.train_loss is not None and best.train_loss is not None and last.train_loss < best.train_loss:
        verdict = "overfitting"
    else:
        verdict = "worsening"
    return Trend(verdict=verdict, best_step=best.step, best_val_loss=best.val_loss, last_step=last.step,
                 last_val_loss=last.val_loss, evaluations=len(evals))
