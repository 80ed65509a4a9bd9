"""A run folder: the files it holds, its ``run.json`` and status, and where run folders live.

A run folder ``checkpoints/<run>/`` holds
  best.safetensors   weights with the lowest validation loss, plus metadata
  last.safetensors   weights at the latest save
  state.pt           everything to resume exactly: model, optimizer, RNG,
                     step, schedule, hidden state (tensors and plain data only,
                     loaded with ``weights_only=True``)
  tokens.npy         the encoded corpus, memory-mapped
  labels.npy         a labelled run only: each token's label id
  run.json           how the run was started, and its status (running/finished/interrupted/failed)
  metrics.jsonl      the training curve, one JSON line per evaluation or progress point
  .lock              held by the one process writing the folder (chargen.runs.lock)
Every write is atomic (chargen.files.atomic): a SIGKILL at any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from chargen.files.atomic import atomic_write

BEST = "best.safetensors"
LAST = "last.safetensors"
STATE = "state.pt"
TOKENS = "tokens.npy"
LABELS = "labels.npy"  # a labelled run: each token's label id, beside tokens.npy
RUN_JSON = "run.json"
METRICS = "metrics.jsonl"

#: Run statuses in run.json. A failed run keeps its folder for inspection (its weights may be
#: those of a diverged model) but is never picked as the default model.
RUNNING, FINISHED, INTERRUPTED, FAILED = "running", "finished", "interrupted", "failed"


def default_checkpoint_root() -> Path:
    """``$CHARGEN_CHECKPOINTS`` or ``./checkpoints`` (nanoGPT's out dir, per project)."""
    return Path(os.environ.get("CHARGEN_CHECKPOINTS", "checkpoints"))


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def read_run_json(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's ``run.json``, or None where it is missing or unreadable."""
    try:
        data = json.loads((run_dir / RUN_JSON).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def update_run_json(run_dir: Path, **changes: Any) -> None:
    """Rewrite ``run.json`` (atomically) with ``changes`` on top of what it holds."""
    write_json(run_dir / RUN_JSON, dict(read_run_json(run_dir) or {}, **changes))


def run_failed(run_dir: Path) -> bool:
    return (read_run_json(run_dir) or {}).get("status") == FAILED
