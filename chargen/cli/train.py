"""``chargen train``: a new run, a resumed one, or a fine-tuned one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from chargen.cli.group import cli, warn
from chargen.cli.types import (
    HUGE,
    SEED_RANGE,
    FiniteFloat,
    OutputFolder,
    RunOrPath,
    SemitoneRange,
)
from chargen.errors import ChargenError

#: chargen.model.PRESETS' names, spelled out so that `chargen --help` does not import torch
PRESET_NAMES = ("tiny", "small", "medium", "large")


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
@click.option("--size", type=click.Choice(PRESET_NAMES), help="Model preset [default: medium = 2x512 LSTM].")
@click.option("--cell", type=click.Choice(["lstm", "gru", "rnn"]), help="Recurrent cell [default: lstm].")
@click.option("--layers", type=click.IntRange(1, 64), help="Recurrent layers (overrides the preset).")
@click.option("--hidden", type=click.IntRange(1, 65536), help="Hidden units per layer (overrides the preset).")
@click.option("--embedding", type=click.IntRange(1, 65536), help="Embedding width (overrides the preset).")
@click.option("--dropout", type=FiniteFloat(0, 1, max_open=True), help="Dropout (overrides the preset).")
@click.option("--weight-drop", type=FiniteFloat(0, 1, max_open=True),
              help="DropConnect on the recurrent weights while training (AWD-LSTM's weight drop) [default: 0, or "
              "the --minutes budget's choice].")
@click.option("--batch-size", type=click.IntRange(1, 65536), default=32, show_default=True,
              help="Parallel streams per batch.")
@click.option("--seq-len", type=click.IntRange(1, 1_000_000), default=100, show_default=True,
              help="Tokens per stream per step (truncated BPTT length).")
@click.option("--lr", type=FiniteFloat(min=0, max=10, min_open=True), default=3e-3, show_default=True,
              help="Peak learning rate (linear warmup, cosine decay to 10%).")
@click.option("--weight-decay", type=FiniteFloat(0, 10), default=0.3, show_default=True,
              help="AdamW's decoupled weight decay on the weight matrices (not biases or embeddings); 0: none.")
@click.option("--ema", type=FiniteFloat(0, 1, max_open=True), default=0.99, show_default=True,
              help="Evaluate and save a moving average of the weights over about 1/(1-EMA) steps (better late "
                   "in a run than the last step's weights); 0: the raw weights.")
@click.option("--epochs", type=FiniteFloat(min=0, max=HUGE, min_open=True), help="Stop after this many epochs.")
@click.option("--max-steps", type=click.IntRange(1, HUGE),
              help="Stop after this many steps (with --resume: go on to this step, also past a finished run's end).")
@click.option("--minutes", type=FiniteFloat(min=0, max=366 * 24 * 60, min_open=True),
              help="Wall-clock budget; the schedule is fitted to it. Default when no stop is given: 10.")
@click.option("--eval-every", type=click.IntRange(1, HUGE), default=200, show_default=True,
              help="Validate and checkpoint every N steps. Left at 200 on a corpus of fewer steps per "
                   "pass: once per pass (at least every 20 steps).")
@click.option("--val-fraction", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="Last fraction of the corpus held out for validation.")
@click.option("--seed", type=SEED_RANGE, default=1337, show_default=True, help="Seed for weights, dropout and order.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True, help="auto: the fastest that holds the loss, measured (cached) per machine and model.")
@click.option("--threads", type=click.IntRange(1, 1024),
              help="CPU threads (default: the free cores, re-measured at each evaluation).")
@click.option("--transpose", type=SemitoneRange(),
              help="MIDI only: transpose each training stream by a random shift in LOW..HIGH, e.g. -5..6.")
@click.option("--labels-from", type=click.Choice(["folders"]),
              help="Condition on labels: each subfolder of the one CORPUS folder is a label (sample --label NAME).")
@click.option("--label", "label", metavar="NAME", help="Condition on one label NAME for the whole corpus.")
@click.option("--run-name", help="Run folder name [default: <corpus>-<date>-<time>].")
@click.option("--out", type=OutputFolder(),
              help="Parent folder of run folders [default: $CHARGEN_CHECKPOINTS or ./checkpoints].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--database", metavar="URL", help="History database for the run record.")
@click.option("--no-log", is_flag=True, help="Do not record this run in the history.")
def train(corpus: tuple[Path, ...], resume: str | None, init_from: str | None, codec: str, encoding: str,
          size: str | None,
          cell: str | None, layers: int | None, hidden: int | None, embedding: int | None, dropout: float | None,
          weight_drop: float | None,
          batch_size: int, seq_len: int, lr: float, weight_decay: float, ema: float, epochs: float | None,
          max_steps: int | None, minutes: float | None, eval_every: int, val_fraction: float, seed: int,
          device: str, precision: str, threads: int | None, transpose: tuple[int, int] | None,
          labels_from: str | None, label: str | None, run_name: str | None, out: Path | None,
          quiet: bool, as_json: bool, database: str | None, no_log: bool) -> None:
    """Train a model on CORPUS: text files, a folder of .txt, or a folder of .mid files.

    Writes checkpoints/<run>/ with best and last weights (safetensors) and the
    state to --resume from. Ctrl-C saves and stops; --resume goes on exactly.
    """
    from chargen.runs import resume_run, start_run
    from chargen.training import TrainConfig, distributed

    if resume and init_from:
        raise click.UsageError("give either --resume RUN or --init-from RUN, not both")
    ranks = distributed.start(device)  # under torchrun: join the job (one process per rank)
    if resume:
        if corpus:
            raise click.UsageError("give either CORPUS or --resume RUN, not both")
        if labels_from or label is not None:
            raise click.UsageError("--labels-from and --label start a run; a resumed run keeps its labels")
        # A limit given here replaces the run's own (a finished run is extended to it).
        limits = TrainConfig(max_steps=max_steps, epochs=epochs, minutes=minutes, device=device, threads=threads)
        result = resume_run(resume, limits, progress=not quiet, warn=warn)
    else:
        if not corpus:
            raise click.UsageError("missing CORPUS: a text file, several files, or a folder")
        if labels_from and label is not None:
            raise click.UsageError("give either --labels-from or --label, not both")
        if labels_from and (len(corpus) != 1 or not corpus[0].is_dir()):
            raise click.UsageError("--labels-from folders takes one CORPUS folder, whose subfolders are the labels")
        if epochs is None and max_steps is None and minutes is None:
            minutes = 10.0
        config = TrainConfig(batch_size=batch_size, seq_len=seq_len, lr=lr, weight_decay=weight_decay, ema=ema,
                             epochs=epochs, max_steps=max_steps, minutes=minutes, eval_every=eval_every,
                             val_fraction=val_fraction, seed=seed, device=device, precision=precision,
                             threads=threads, transpose=transpose)
        overrides = {"cell": cell, "layers": layers, "hidden": hidden, "embedding": embedding, "dropout": dropout,
                     "weight_drop": weight_drop}
        if init_from:
            from chargen.training.finetune import check_no_shape_options

            try:
                check_no_shape_options(dict(overrides, size=size))
            except ChargenError as exc:
                raise click.UsageError(str(exc)) from None
        result = start_run(corpus, config, size, overrides, run_name, out, codec, encoding,
                           progress=not quiet, warn=warn, labels_from=labels_from, label=label, init_from=init_from)
    distributed.stop()
    if not ranks.is_main:  # rank 0 logs and reports for the job
        sys.exit(130 if result.interrupted else 0)
    if not no_log:
        from chargen.checkpoint import LAST, checkpoint_codec
        from chargen.history import HistoryUnavailable
        from chargen.records import log_training_run

        try:
            codec_used = checkpoint_codec(result.run_dir / LAST)
            log_training_run(database, result, codec_used)
        except HistoryUnavailable as exc:
            warn(f"warning: training run not logged: {exc}")
    if as_json:
        click.echo(json.dumps({"run_dir": str(result.run_dir), "step": result.step, "best_val_loss":
                               result.best_val_loss, "interrupted": result.interrupted,
                               "chars_per_s": result.chars_per_s, "elapsed_s": result.elapsed_s}))
    if result.interrupted:
        warn(f"stopped at step {result.step}; saved. Continue with: chargen train --resume {result.run_dir}")
        sys.exit(130)
    warn(f"saved {result.run_dir} (best val {result.best_val_loss:.4f} nats/char)")
