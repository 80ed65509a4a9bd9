"""``chargen`` command line: thin click code over the engine library, one file per command.

``group`` holds the ``chargen`` group; importing each command module registers its command.
"""

from __future__ import annotations

from chargen.cli import info, midi, plot, replay, sample, score, serve, train  # noqa: F401  (each registers its command)
from chargen.cli.group import cli
from chargen.cli.history import history

cli.add_command(history)

__all__ = ["cli", "main"]


def main() -> None:
    """Console entry point; failures are handled by ChargenGroup.main (one line, an exit code)."""
    cli.main(prog_name="chargen")
