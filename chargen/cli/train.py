"""``chargen train``: a new run, a resumed one, or a fine-tuned one (a thin client of ``chargen.train``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from chargen.cli.group import cli, warn
from chargen.cli.options import given, spec_options
from chargen.cli.types import OutputFolder, RunOrPath
from chargen.errors import TrainingInterrupted
from chargen.model.config import ModelConfig
from chargen.training.config import TrainConfig

#: chargen.model.PRESETS' names, spelled out so that `chargen --help` does not import torch
PRESET_NAMES = ("tiny", "small", "medium", "large")
MODEL_FIELDS = ("cell", "layers", "hidden", "embedding", "dropout", "weight_drop")


@cli.command()
@click.argument("corpus", nargs=-1, type=click.Path(path_type=Path))
@click.option("--resume", "resume", type=RunOrPath(), metavar="RUN",
              help="Continue the run RUN (name or folder) where it stopped.")
@click.option("--init-from", metavar="RUN",
              help="Fine-tune: start from RUN's weights (best, else last) with a fresh optimizer and schedule; "
              "new characters extend its vocabulary.")
@click.option("--codec", type=click.Choice(["auto", "text", "midi", "midi-notes"]), default="auto", show_default=True,
              help="How to read the corpus; auto picks by file type.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the corpus files.")
@click.option("--size", type=click.Choice(PRESET_NAMES),
              help="Model preset: tiny 1x128, small 2x256, medium 2x512, large 3x768 [default: with --minutes, "
              "the largest the budget buys here; else medium].")
@spec_options(ModelConfig, only=MODEL_FIELDS)
@spec_options(TrainConfig)
@click.option("--labels-from", type=click.Choice(["folders"]),
              help="Condition on labels: each subfolder of the one CORPUS folder is a label (sample --label NAME).")
@click.option("--label", "label", metavar="NAME", help="Condition on one label NAME for the whole corpus.")
# The default is chargen.training.data.DEFAULT_MAX_VOCAB, spelled out so that `chargen --help` does not import torch.
@click.option("--max-vocab", type=click.IntRange(1, 0x110000),
              help="Refuse a corpus with more distinct symbols than this (a warning past 4096): each one is a row of "
              "the embedding and the output layer. [default: 32768]")
@click.option("--run-name", help="Run folder name [default: <corpus>-<date>-<time>]. A run folder has one writer at "
              "a time: a second process training it is refused.")
@click.option("--out", type=OutputFolder(),
              help="Parent folder of run folders [default: $CHARGEN_CHECKPOINTS or ./checkpoints].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--database", metavar="URL", help="History database for the run record.")
@click.option("--no-log", is_flag=True, help="Do not record this run in the history.")
def train(corpus: tuple[Path, ...], resume: str | None, init_from: str | None, codec: str, encoding: str,
          size: str | None, labels_from: str | None, label: str | None, max_vocab: int | None, run_name: str | None,
          out: Path | None,
          quiet: bool, as_json: bool, database: str | None, no_log: bool, **options: Any) -> None:
    """Train a model on CORPUS: text files, a folder of .txt, or a folder of .mid files.

    Writes checkpoints/<run>/ with best and last weights (safetensors) and the
    state to --resume from. Ctrl-C saves and stops; --resume goes on exactly.
    Without --minutes, --max-steps or --epochs a new run trains for 10 minutes.
    """
    from chargen.api import Run
    from chargen.api import train as train_model

    def print_json(run: Run) -> None:
        if as_json and not run.rank:
            click.echo(json.dumps({"run_dir": str(run.dir), "step": run.step, "best_val_loss": run.best_val_loss,
                                   "interrupted": run.interrupted, "chars_per_s": run.chars_per_s,
                                   "elapsed_s": run.elapsed_s, "history_id": run.history_id}))

    try:
        run = train_model(list(corpus) or None, resume=resume, init_from=init_from, size=size, run_name=run_name,
                          out=out, codec=codec, encoding=encoding, labels_from=labels_from, label=label,
                          max_vocab=max_vocab,
                          progress=not quiet, log=not no_log, database=database, report=warn, **given(options))
    except TrainingInterrupted as stopped:
        print_json(stopped.run)  # type: ignore[arg-type]
        raise
    if run.rank:  # under torchrun, rank 0 reports for the job
        return
    print_json(run)
    best = f"{run.best_val_loss:.4f}" if run.best_val_loss is not None else "-"
    warn(f"saved {run.dir} (best val {best} nats/char)")
