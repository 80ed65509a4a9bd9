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
@click.option("--codec", "codec_name", type=click.Choice(["midi", "midi-notes"]),
              help="The codec's tokens [default: the one training picks for .mid files].")
def midi_tokens(file: Path, as_json: bool, codec_name: str | None) -> None:
    """Print FILE as its token stream (one printable character per event)."""
    from chargen.codecs.midi import midi_stats
    from chargen.codecs.registry import codec_class, codec_for_suffix
    from chargen.sampling.primes import midi_tokens

    codec = codec_class(codec_name or codec_for_suffix(Path("x.mid")) or "midi").fit()
    ids = midi_tokens(codec, file).tolist()  # an error, not an empty line, for a file without notes
    if as_json:
        stats = midi_stats(ids, codec.vocab)  # type: ignore[attr-defined]
        click.echo(json.dumps({"file": str(file), "codec": codec.name, "ids": ids,
                               "events": [codec.token_name(i) for i in ids],  # type: ignore[attr-defined]
                               "text": codec.decode(ids), "notes": stats.notes, "duration_s": stats.duration_s},
                              ensure_ascii=False))
    else:
        click.echo(codec.decode(ids))
