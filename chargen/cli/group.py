"""The ``chargen`` group every command joins, and the one way commands warn."""

from __future__ import annotations

import click

from chargen.cli.failures import ChargenGroup
from chargen.terminal import printable
from chargen.version import __version__


def warn(message: str) -> None:
    """A diagnostic on stderr (stdout carries only output), escaped for the terminal: it may name files."""
    click.echo(f"chargen: {printable(message)}", err=True)


@click.group(cls=ChargenGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="chargen")
def cli() -> None:
    """Train character-level (and MIDI-event) LSTM/GRU/RNN language models and generate from them.

    \b
    Quick start:
      chargen train corpora/fables.txt --minutes 2
      chargen sample --len 300 --temperature 0.8
    """
