"""``chargen plot``: the training curves of one or several runs on one chart."""

from __future__ import annotations

from pathlib import Path

import click

from chargen.cli.group import cli, warn


@cli.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=Path("curve.png"),
              show_default=True, help="PNG file to write.")
@click.option("--x", "x_axis", type=click.Choice(["steps", "minutes"]), default="steps", show_default=True,
              help="Horizontal axis.")
def plot(runs: tuple[str, ...], output: Path, x_axis: str) -> None:
    """Draw the validation (solid) and training (dashed) loss of one or several runs on one chart.

    \b
    Needs matplotlib: pip install 'chargen[plot]'.
      chargen plot fables-small fables-medium -o curves.png --x minutes
    """
    from chargen.runs.lookup import resolve_run_dir
    from chargen.runs.plot import plot_runs

    plotted = plot_runs([resolve_run_dir(run) for run in runs], output, x_axis)
    warn(f"wrote {plotted.path} ({len(runs)} run(s), {len(plotted.labels)} lines)")
