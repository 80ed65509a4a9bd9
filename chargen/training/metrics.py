"""``metrics.jsonl``: the training curve, one JSON line per evaluation or progress point.

Each line is written with a single ``write`` on an ``O_APPEND`` descriptor and
fsynced, so a kill at any moment leaves every line whole (at worst the last
line is missing). A resumed run first drops the lines past the step it resumes
from (written after its last checkpoint), then appends: one curve per run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from chargen.checkpoint import METRICS, atomic_write
from chargen.errors import ChargenError

#: val_tokens: validation tokens val_loss scored; val_sample: whether those were the evaluation sample of a
#: large split rather than the whole split; whole_val_loss: the whole split's loss (the end of a sampled run).
FIELDS = ("step", "elapsed_s", "train_loss", "val_loss", "lr", "chars_per_s", "precision", "val_tokens",
          "val_sample", "whole_val_loss")


def _plain(value: Any) -> Any:
    """JSON has no NaN or infinity: a non-finite number is written as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsLog:
    def __init__(self, run_dir: Path):
        self.path = run_dir / METRICS
        self._fd: int | None = None

    def keep_until(self, step: int) -> None:
        """Drop lines after ``step`` (and any unreadable tail), rewriting the file atomically if needed."""
        if not self.path.is_file():
            return
        kept: list[str] = []
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                kept.append(line)
        if len(kept) != len(lines):
            atomic_write(self.path, lambda tmp: tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8"))

    def append(self, **record: Any) -> None:
        line = json.dumps({key: _plain(record.get(key)) for key in FIELDS}, allow_nan=False) + "\n"
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._fd, line.encode("utf-8"))  # one write: a line is whole or absent
            os.fsync(self._fd)
        except OSError as exc:
            raise ChargenError(f"{self.path}: cannot write the training curve ({exc.strerror or exc})") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every readable line of a run's ``metrics.jsonl`` (none when the run has no curve yet)."""
    path = run_dir / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
