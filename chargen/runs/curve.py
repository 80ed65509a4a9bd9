"""A run's training curve: read from ``<run>/metrics.jsonl``, and what it says.

Every run writes one JSON object per line (step, elapsed_s, train_loss,
val_loss, lr, chars_per_s, precision; val_loss is null between evaluations).
Runs from before metrics.jsonl existed still have their evaluations in
``state.pt``, so their curve is read from there.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chargen.errors import ChargenError
from chargen.runs.checkpoint import load_state
from chargen.runs.layout import METRICS, STATE
from chargen.runs.metrics import iter_metrics

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


#: The most points a curve is read as: a chart's worth. Longer curves are thinned evenly (their best
#: and last evaluations always kept), in memory bounded by this, however long ``metrics.jsonl`` is.
MAX_POINTS = 2000


def _point(row: dict[str, Any]) -> Point | None:
    try:
        step = row["step"]
        if not isinstance(step, int) or isinstance(step, bool):
            return None
        return Point(step=step, elapsed_s=_number(row.get("elapsed_s")) or 0.0,
                     train_loss=_number(row.get("train_loss")), val_loss=_number(row.get("val_loss")))
    except (KeyError, TypeError, AttributeError):
        return None


def _rows(run_dir: Path) -> Iterator[Point]:
    if (run_dir / METRICS).is_file():
        for row in iter_metrics(run_dir):
            point = _point(row) if row is not None else None
            if point is not None:
                yield point
        return
    if (run_dir / STATE).is_file():  # runs from before metrics.jsonl: their evaluations are in state.pt
        try:
            evals = load_state(run_dir / STATE).get("evals", [])
        except (ChargenError, AttributeError):
            return
        for e in evals if isinstance(evals, list) else []:
            minutes = _number(e.get("minutes")) if isinstance(e, dict) else None
            point = _point(dict(e, elapsed_s=(minutes or 0.0) * 60)) if isinstance(e, dict) else None
            if point is not None:
                yield point


@dataclass
class Curve:
    """A run's curve, thinned to at most ``MAX_POINTS`` points, and the facts of all of it."""

    points: list[Point]
    best: Point | None  # the lowest validation loss (the earliest of equals)
    last: Point | None  # the latest evaluation
    evaluations: int


def scan_curve(run_dir: Path, max_points: int = MAX_POINTS) -> Curve:
    """Read the curve once, keeping every ``stride``-th point (the stride doubles whenever twice
    ``max_points`` are kept), so memory stays bounded however many lines the file holds."""
    kept: list[Point] = []
    stride, seen, evaluations = 1, 0, 0
    best = last = final = None
    for point in _rows(run_dir):
        if point.val_loss is not None:
            evaluations += 1
            if best is None or (point.val_loss, point.step) < (best.val_loss, best.step):
                best = point
            if last is None or point.step >= last.step:
                last = point
        if seen % stride == 0:
            kept.append(point)
            if len(kept) > 2 * max_points:
                kept, stride = kept[::2], stride * 2
        seen += 1
        final = point
    while len(kept) > max_points:
        kept = kept[::2]
    extra = [p for p in (best, last, final) if p is not None and all(p is not k for k in kept)]
    if extra:
        kept = kept[: max(0, max_points - len(extra))] if len(kept) + len(extra) > max_points else kept
        kept.extend(extra)
    return Curve(sorted(kept, key=lambda point: point.step), best, last, evaluations)


def read_curve(run_dir: Path, max_points: int = MAX_POINTS) -> list[Point]:
    """The run's points in step order (at most ``max_points``, thinned evenly); empty when the run has
    recorded none. A line that does not parse (a write cut short by a kill on a filesystem without
    atomic appends) is skipped rather than failing the whole curve."""
    return scan_curve(run_dir, max_points).points


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


def trend(run_dir: Path, curve: Curve | None = None) -> Trend | None:
    """Whether the run is still improving or overfitting: its best evaluation against its last."""
    curve = curve if curve is not None else scan_curve(run_dir)
    best, last = curve.best, curve.last
    if best is None or last is None:
        return None
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
                 last_val_loss=last.val_loss, evaluations=curve.evaluations)
