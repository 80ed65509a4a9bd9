"""``chargen history replay``: re-run a logged generation and compare it byte for byte."""

from __future__ import annotations

import json
import sys

import click

from chargen.cli.group import warn
from chargen.cli.history import database_url, history


@history.command()
@click.argument("generation_id", metavar="ID")
@click.option("--database", metavar="URL", help="History database URL.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def replay(generation_id: str, database: str | None, as_json: bool) -> None:
    """Re-run generation ID with its logged checkpoint, seed and parameters, and compare.

    Exits 0 when the output is identical byte for byte, 1 when it differs or
    cannot be replayed (the checkpoint is missing or has changed).
    """
    from chargen.api import replay as replay_generation

    outcome = replay_generation(generation_id, database_url(database))
    if as_json:
        click.echo(json.dumps({"id": outcome.generation_id, "identical": outcome.identical,
                               "recorded": outcome.recorded, "replayed": outcome.replayed}, ensure_ascii=False))
    for text in outcome.replayed if not as_json else ():
        click.echo(text)
    if outcome.identical:
        warn(f"replay of {outcome.generation_id}: identical to the logged output")
    else:
        warn(f"replay of {outcome.generation_id}: DIFFERENT from the logged output ({outcome.first_difference()})")
        sys.exit(1)
