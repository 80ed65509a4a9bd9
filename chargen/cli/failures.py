"""chargen's one failure path: every command's errors become one line on stderr and an exit code.

Usage errors exit 2 (click's, and the library's ArgumentError); problems the
user can fix (ChargenError, a file the system refused) 1; Ctrl-C 130; a bug 1, with its traceback only when
``CHARGEN_DEBUG=1``. click's own exits (``ctx.exit(n)``) keep their code.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
import warnings
from typing import Any

import click

from chargen.errors import ArgumentError, ChargenError, ChargenWarning, TrainingInterrupted
from chargen.terminal import printable


class ChargenGroup(click.Group):
    """The command group whose ``main`` is chargen's one failure path (see :func:`exit_code_for`)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        warnings.showwarning = _show_warning
        try:
            returned = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            # Without standalone mode click returns an explicit ctx.exit(n) as n instead of exiting.
            code = returned if isinstance(returned, int) else 0
        except Exception as exc:  # noqa: BLE001 - this is the place every failure comes to
            code = exit_code_for(exc)
        if standalone_mode:
            sys.exit(code)
        return code


def exit_code_for(exc: BaseException) -> int:
    """Report ``exc`` as one line on stderr and return the exit code for it.

    Usage errors exit 2, problems the user can fix (ChargenError, a file the
    system refused) 1, Ctrl-C 130, a bug 1 with its traceback only when
    CHARGEN_DEBUG=1.
    """
    if isinstance(exc, click.UsageError):
        command = exc.ctx.command_path if exc.ctx else "chargen"
        _error(f"{command}: error: {exc.format_message()}")
        return 2
    if isinstance(exc, click.ClickException):
        _error(f"chargen: error: {exc.format_message()}")
        return exc.exit_code
    if isinstance(exc, click.Abort) and isinstance(exc.__cause__, TrainingInterrupted):
        exc = exc.__cause__  # click turned the library's KeyboardInterrupt into an Abort
    if isinstance(exc, TrainingInterrupted):  # saved: say how to go on
        run = getattr(exc.run, "dir", None)
        if getattr(exc.run, "rank", 0) == 0:
            _error(f"chargen: {exc}. Continue with: chargen train --resume {run}")
        return 130
    if isinstance(exc, click.Abort | KeyboardInterrupt):  # click turns Ctrl-C into Abort
        _error("chargen: interrupted")
        return 130
    if isinstance(exc, ArgumentError):  # a usage error, found by the library
        _error(f"chargen: error: {exc}")
        return 2
    if isinstance(exc, ChargenError):
        _error(f"chargen: error: {exc}")
        return 1
    if isinstance(exc, OSError) and exc.filename is not None and not isinstance(exc, BrokenPipeError):
        # The system refused a file (read-only folder, disk full, permissions): not a bug.
        names = ": ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
        _error(f"chargen: error: {names}: {exc.strerror or exc}")
        return 1
    if isinstance(exc, UnicodeEncodeError) or (isinstance(exc, ValueError) and "null byte" in str(exc)):
        # A value given to the system (a path, an argument) held a NUL or a lone surrogate: no file can be named so.
        _error("chargen: error: a path or value holds a NUL or an unencodable character (a lone surrogate)")
        return 1
    if isinstance(exc, OSError) and exc.errno in _FULL:
        # Writing the output failed (stdout to a full disk, > /dev/full): the user's to fix, not a bug.
        _error(f"chargen: error: cannot write the output: {exc.strerror or exc}")
        _drop_stdout()
        return 1
    if os.environ.get("CHARGEN_DEBUG", "") not in ("", "0"):
        traceback.print_exception(exc)
    _error(f"chargen: internal error: {type(exc).__name__}: {exc} (set CHARGEN_DEBUG=1 for a traceback)")
    return 1


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """The library's warnings as one line on stderr, as the CLI's own are; others as Python shows them."""
    if issubclass(category, ChargenWarning):
        _error(f"chargen: warning: {message}")
    else:
        _show_python_warning(message, category, filename, lineno, file, line)


_show_python_warning = warnings.showwarning
#: errno values that mean the output could not be written (no space, quota, I/O, file too big, read-only)
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS})


def _drop_stdout() -> None:
    """Send what stdout still buffers to /dev/null: flushed at exit, it would fail once more and print
    Python's "Exception ignored" lines after the one-line error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (in-process tests): nothing buffered there
        pass


def _error(message: str) -> None:
    # One line, whatever the message holds (tracebacks and multi-line texts included), with no control
    # character a terminal would obey: messages name files and echo input.
    click.echo(printable(" ".join(message.split())), err=True)
