"""``chargen midi``: MIDI helpers (a file as its token stream)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from chargen.cli.group import cli
from chargen.cli.types import (
    InputFile,
)


@cli.group()
def midi() -> None:
    """MIDI helpers: inspect how files become tokens."""


@midi.command("tokens")
@click.argument("file", type=InputFile())
@click.option("--json", "as_json", is_flag=True, help="Print token ids and event names as JSON.")
def midi_tokens(file: Path, as_json: bool) -> None:
    """Print FILE as its token stream (one printable character per event)."""
    from chargen.codecs.midi import MidiCodec, midi_stats, token_name
    from chargen.sampling.primes import midi_tokens

    codec = MidiCodec()
    ids = midi_tokens(codec, file).tolist()  # an error, not an empty line, for a file without notes
    if as_json:
        stats = midi_stats(ids)
        click.echo(json.dumps({"file": str(file), "ids": ids, "events": [token_name(i) for i in ids],
                               "text": codec.decode(ids), "notes": stats.notes, "duration_s": stats.duration_s},
                              ensure_ascii=False))
    else:
        click.echo(codec.decode(ids))
