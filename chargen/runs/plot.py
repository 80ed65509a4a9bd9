"""``chargen plot``: training curves of one or several runs on one chart (PNG).

matplotlib is an optional extra (``pip install 'chargen[plot]'``); it is
imported only here, with the Agg backend, so plotting needs no display.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chargen.errors import ChargenError
from chargen.files.atomic import atomic_write
from chargen.runs.curve import Point, read_curve

FIGSIZE_IN = (9.0, 5.0)
DPI = 100  # 900 x 500 pixels
X_AXES = ("steps", "minutes")


@dataclass
class Plotted:
    path: Path
    labels: list[str]  # legend entries, one per line drawn


def _x(point: Point, x: str) -> float:
    return point.step if x == "steps" else point.elapsed_s / 60


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError:
        raise ChargenError("plotting needs matplotlib: pip install 'chargen[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_runs(run_dirs: Sequence[Path], out: Path, x: str = "steps") -> Plotted:
    """Validation loss (solid) and training loss (dashed, same colour) of each run against ``x``."""
    if x not in X_AXES:
        raise ChargenError(f"unknown x axis {x!r}; choose one of {', '.join(X_AXES)}")
    curves = [(Path(run_dir), read_curve(Path(run_dir))) for run_dir in run_dirs]
    for run_dir, points in curves:
        if not points:
            raise ChargenError(f"{run_dir}: no training curve (no metrics.jsonl and no evaluations in state.pt)")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE_IN, dpi=DPI)
    try:
        names = [run_dir.name for run_dir, _ in curves]
        if len(set(names)) < len(names):  # same folder name under different roots: tell them apart
            names = [str(run_dir) for run_dir, _ in curves]
        for name, (_, points) in zip(names, curves):
            val = [p for p in points if p.val_loss is not None]
            line = None
            if val:
                (line,) = ax.plot([_x(p, x) for p in val], [p.val_loss for p in val], marker="o", markersize=3,
                                  label=f"{name} val")
            train = [p for p in points if p.train_loss is not None]
            if train:
                ax.plot([_x(p, x) for p in train], [p.train_loss for p in train], linestyle="--", alpha=0.7,
                        color=line.get_color() if line else None, label=f"{name} train")
        ax.set_xlabel("step" if x == "steps" else "minutes")
        ax.set_ylabel("loss (nats/token)")
        ax.set_title("validation (solid) and training (dashed) loss")
        ax.grid(True, alpha=0.3)
        legend = ax.legend()
        labels = [text.get_text() for text in legend.get_texts()]
        fig.tight_layout()
        atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        plt.close(fig)
    return Plotted(path=out, labels=labels)
