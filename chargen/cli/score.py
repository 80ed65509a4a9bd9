"""``chargen score``: how well a model predicts files (a thin client of ``Model.score_files``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from chargen.cli.group import cli, warn
from chargen.terminal import printable


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--checkpoint", "-c", metavar="PATH|RUN",
              help="Weights file, run folder or run name [default: newest run].")
@click.option("--per-line", type=click.IntRange(min=1), metavar="N", help="Also list the N worst-predicted lines.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@click.option("--database", metavar="URL", help="History database [default: $CHARGEN_DATABASE_URL, "
              "else $CHARGEN_HOME/history.db].")
@click.option("--no-log", is_flag=True, help="Do not record the scores in the history.")
def score(files: tuple[Path, ...], checkpoint: str | None, per_line: int | None, device: str, as_json: bool,
          database: str | None, no_log: bool) -> None:
    """Score FILE...: nats and bits per character (token) and perplexity under a model.

    \b
    Text files are read as text (characters the model does not know are removed
    and reported); .mid files as MIDI. Scoring a run's validation text gives the
    validation loss the run recorded. Each file's score is logged to the history
    (list them with `chargen history scores`) unless --no-log.
      chargen score notes.txt --checkpoint fables-small --per-line 5
    """
    from chargen.api import load
    from chargen.scoring.files import describe_unknown

    model = load(checkpoint, database=database, log=not no_log, report=warn)
    scores = model.score_files(list(files), per_line or 0, device=device)
    for item in scores:
        if item.unknown:
            warn(describe_unknown(item))
    if as_json:
        click.echo(json.dumps({"checkpoint": str(model.path), "sha256": model.sha256,
                               "files": [item.to_dict() for item in scores]}, ensure_ascii=False, indent=2))
        return
    for item in scores:
        click.echo(f"{printable(item.path)}: {item.nats_per_token:.4f} nats/{item.unit}, {item.bits_per_token:.4f} "
                   f"bits/{item.unit}, perplexity {item.perplexity:.3f} ({item.scored:,} {item.unit}s scored)")
        for line in item.worst_lines:
            click.echo(f"  line {line.line}: {line.nats_per_char:.3f} nats/char  {line.text[:100]!r}")
