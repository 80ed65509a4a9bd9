"""Validation loss at a fixed number of steps: the sizing rule's settings compared where the load does not matter.

    python -m benchmarks.quality_probe NAME [--corpus FILE] [--size medium] [--lr 5e-3] [--dropout 0.2]
        [--weight-drop 0.25] [--weight-decay 0.3] [--min-lr-ratio 0.1] [--steps 1700] [--eval-every 200] [--ema 0.99]
        [--threads 1]

``benchmarks/quality_curve.py`` measures what a ``--minutes`` budget buys, which
depends on the machine's speed and so needs a quiet machine. The question "which
learning rate / dropout / weight drop is better for a schedule of N steps" does
not: a run of a fixed number of steps on one thread computes the same numbers
whatever else the machine runs, so two probes can run side by side, one per core,
and be compared with each other and with a ``--minutes`` run that made as many
steps. Each probe drives chargen's own ``Trainer`` (the loop ``chargen train``
runs), prints every evaluation and appends its result to
``benchmarks/quality_probes.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import REPO
from chargen.codecs.text import TextCodec
from chargen.model import PRESETS, ModelConfig
from chargen.training import TrainConfig, Trainer
from chargen.training.data import split_tokens
from chargen.training.trainer import Progress

SHAKESPEARE = REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--corpus", type=Path, help="text file (default: tinyshakespeare, else the fables)")
    parser.add_argument("--size", choices=sorted(PRESETS), default="medium")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--dropout", type=float, help="default: the preset's")
    parser.add_argument("--weight-drop", type=float, default=0.0)
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's (chargen train's default: 0.3)")
    parser.add_argument("--min-lr-ratio", type=float, default=TrainConfig.min_lr_ratio)
    parser.add_argument("--steps", type=int, default=1700, help="the schedule's length (a 10-minute run made ~1,700)")
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--ema", type=float, default=0.0, help="weight average (chargen train's default: 0.99)")
    parser.add_argument("--threads", type=int, default=1, help="1: the same numbers whatever else runs")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "quality_probes.jsonl")
    args = parser.parse_args(argv)
    corpus = args.corpus or (SHAKESPEARE if SHAKESPEARE.exists() else REPO / "corpora" / "fables.txt")
    codec = TextCodec.fit([corpus])
    preset = dict(PRESETS[args.size], weight_drop=args.weight_drop)
    if args.dropout is not None:
        preset["dropout"] = args.dropout
    config = TrainConfig(max_steps=args.steps, eval_every=args.eval_every, threads=args.threads, precision="fp32",
                         lr=args.lr, min_lr_ratio=args.min_lr_ratio, ema=args.ema,
                         weight_decay=args.weight_decay)
    data = split_tokens(codec.encode_file(corpus), config.val_fraction, config.batch_size, config.seq_len)
    started, log = time.monotonic(), []

    def report(progress: Progress) -> None:
        if progress.kind in ("eval", "final") and progress.val_loss is not None:
            log.append({"step": progress.step, "val_loss": round(progress.val_loss, 4),
                        "train_loss": round(progress.train_loss or float("nan"), 4),
                        "seconds": round(time.monotonic() - started)})
            print(args.name, log[-1], flush=True)

    Trainer(ModelConfig(vocab_size=codec.vocab_size, **preset), config, data, on_progress=report).fit()
    result = {"name": args.name, "corpus": corpus.name, "best": min(e["val_loss"] for e in log),
              "model": {"size": args.size, **preset}, "lr": args.lr, "min_lr_ratio": args.min_lr_ratio, "ema": args.ema,
              "weight_decay": args.weight_decay,
              "steps": args.steps, "threads": args.threads, "log": log}
    print(json.dumps(result))
    with args.results.open("a") as out:
        out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
