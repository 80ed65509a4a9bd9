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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chargen.errors import ChargenError
from chargen.files.atomic import atomic_write
from chargen.runs.layout import METRICS

#: chargen writes lines of about 200 bytes; anything much longer is not one of its lines.
MAX_LINE_BYTES = 4096
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
        """Drop lines after ``step`` (and any unreadable tail), rewriting the file atomically if needed.

        Streams the file, line by line: a curve of millions of lines is never held in memory."""
        if not self.path.is_file():
            return
        if all(_within(record, step) for record in iter_metrics(self.path.parent, skip_bad=False)):
            return

        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as out:
                for record in iter_metrics(self.path.parent):
                    if _within(record, step):
                        out.write(json.dumps(record, allow_nan=False) + "\n")

        atomic_write(self.path, write)

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


def _within(record: dict[str, Any] | None, step: int) -> bool:
    return record is not None and isinstance(record.get("step"), int) and record["step"] <= step


def iter_metrics(run_dir: Path, skip_bad: bool = True) -> Iterator[dict[str, Any] | None]:
    """Each line of a run's ``metrics.jsonl`` as a dict, read one line at a time (bounded memory: a line
    longer than :data:`MAX_LINE_BYTES` is not one of chargen's and is skipped unread). ``skip_bad=False``
    yields None for a line that is not a JSON object instead of skipping it."""
    path = run_dir / METRICS
    if not path.is_file():
        return
    with open(path, "rb") as handle:
        while line := handle.readline(MAX_LINE_BYTES):
            if not line.endswith(b"\n") and len(line) == MAX_LINE_BYTES:
                while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass  # the rest of an overlong line
                record = None
            else:
                try:
                    record = json.loads(line.decode("utf-8", "replace"), parse_constant=lambda name: None)
                except ValueError:
                    record = None
            if isinstance(record, dict):
                yield record
            elif not skip_bad:
                yield None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every readable line of a run's ``metrics.jsonl`` (none when the run has no curve yet)."""
    return [record for record in iter_metrics(run_dir) if record is not None]
