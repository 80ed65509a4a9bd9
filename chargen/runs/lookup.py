"""Which weights a name means: a file, a run folder, a run name, the starter model, or the newest usable run."""

from __future__ import annotations

from pathlib import Path

from chargen import starter
from chargen.errors import CheckpointError
from chargen.runs.layout import BEST, LAST, default_checkpoint_root, run_failed


def resolve_checkpoint(spec: str | Path | None, root: Path | None = None) -> Path:
    """A weights file from a path, a run folder, a run name, or the newest run."""
    root = root or default_checkpoint_root()
    if spec is None:
        return newest_usable_run(root)
    path = Path(spec)
    if not path.exists() and not path.is_absolute() and (root / path).exists():
        path = root / path
    if path.is_dir():
        return run_weights(path)
    if path.is_file():
        return path
    if str(spec) == starter.NAME:  # the shipped starter model, unless a run has its name
        return starter.PATH
    raise CheckpointError(f"{spec}: no such checkpoint, run folder or run name (looked in {root}/)")


def newest_usable_run(root: Path) -> Path:
    """Weights of the newest run under ``root`` that has weights and did not fail."""
    candidates = [p for p in root.glob("*/*.safetensors") if p.name in (BEST, LAST)] if root.is_dir() else []
    if not candidates:
        raise CheckpointError(f"no checkpoint found under {root}/; train one first, or name a checkpoint")
    runs = {p.parent for p in candidates}
    usable = [run for run in runs if not run_failed(run)]
    if not usable:
        raise CheckpointError(f"every run under {root}/ failed ({len(runs)} of them); train a new one, or "
                              "name a failed run's checkpoint to use its weights anyway")
    newest = max(usable, key=lambda run: max(p.stat().st_mtime for p in candidates if p.parent == run))
    return run_weights(newest)


def run_weights(run_dir: Path) -> Path:
    for name in (BEST, LAST):
        if (run_dir / name).is_file():
            return run_dir / name
    raise CheckpointError(f"{run_dir}: run folder holds no {BEST} or {LAST}")


def resolve_run_dir(spec: str | Path, root: Path | None = None) -> Path:
    root = root or default_checkpoint_root()
    path = Path(spec)
    if not path.is_dir() and (root / path).is_dir():
        path = root / path
    if not path.is_dir():
        raise CheckpointError(f"{spec}: no such run (looked for a folder, and under {root}/)")
    return path
