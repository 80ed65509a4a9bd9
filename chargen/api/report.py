"""Where the library's notes and warnings go unless the caller says otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable

Report = Callable[[str], None]


def report_to_stderr(message: str) -> None:
    """A note or warning on stderr, as the CLI prints them (a terminal, a notebook)."""
    print(f"chargen: {message}", file=sys.stderr)
