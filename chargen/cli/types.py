"""click parameter types for chargen's options: numbers that must be finite, checked paths.

Every float option of every command uses :class:`FiniteFloat`, so ``nan``,
``inf`` and ``1e999`` are usage errors (exit 2) wherever a number is read,
not a run that never stops or a late "internal error".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from chargen.files.user_paths import check_output_file, check_output_folder, path_kind

#: seeds go to torch, numpy and a signed 64-bit history column
SEED_RANGE = click.IntRange(0, 2**63 - 1)
#: a cap for counts a user could mistype by orders of magnitude (steps, tokens, rows, limits)
HUGE = 10**9
#: how many history rows to list (0: all)
COUNT_RANGE = click.IntRange(0, HUGE)


class FiniteFloat(click.FloatRange):
    """A float in an optional range that must be a finite number (no nan, no infinities)."""

    name = "float"

    def __init__(self, min: float | None = None, max: float | None = None, min_open: bool = False,
                 max_open: bool = False) -> None:
        super().__init__(min, max, min_open=min_open, max_open=max_open, clamp=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


class IntPair(click.ParamType):
    """``LOW..HIGH`` whole numbers within [low, high], e.g. semitones ``-5..6``."""

    name = "LOW..HIGH"

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            first, second = (int(part) for part in str(value).split(".."))
        except ValueError:
            self.fail(f"{value!r} is not a range like -5..6", param, ctx)
        if not self.low <= first <= second <= self.high:
            self.fail(f"{value!r}: need {self.low} <= LOW <= HIGH <= {self.high}", param, ctx)
        return (first, second)


class CheckedPath(click.Path):
    """A path that :meth:`problem` finds nothing wrong with (else a usage error saying what)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def problem(self, path: Path) -> str | None:
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            path = super().convert(value, param, ctx)
        except ValueError:  # click stats it: a NUL or a lone surrogate makes no path the system can take
            self.fail(f"{value!r} is not a valid path (it holds a NUL or an unencodable character)", param, ctx)
        problem = self.problem(path)
        if problem:
            self.fail(problem, param, ctx)
        return path


class InputFile(CheckedPath):
    """An existing regular file (or a symlink to one): not a folder, FIFO or device."""

    def problem(self, path: Path) -> str | None:
        kind = path_kind(path)
        if kind == "file":
            return None
        return f"{path}: " + ("no such file" if kind is None else f"is a {kind}, not a regular file")


class OutputFile(CheckedPath):
    """A file to write: absent or a regular file, in an existing folder."""

    problem = staticmethod(check_output_file)


class OutputFolder(CheckedPath):
    """A folder to write into: absent (it will be made) or a folder."""

    problem = staticmethod(check_output_folder)


class RunOrPath(click.ParamType):
    """A weights file, a run folder or a run name (``NAME=`` first when ``named``).

    Only what exists as something other than a file or folder (a FIFO, a
    device) is refused here; finding the run is the checkpoint module's job.
    """

    name = "PATH|RUN"

    def __init__(self, named: bool = False) -> None:
        self.named = named

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        spec = str(value)
        target = spec.split("=", 1)[1] if self.named and "=" in spec and path_kind(Path(spec)) is None else spec
        kind = path_kind(Path(target)) if target else None
        if kind not in (None, "file", "folder"):
            self.fail(f"{target}: is a {kind}; give a weights file, a run folder or a run name", param, ctx)
        return value
