"""What dropout costs a training step: torch's per-element mask against chargen's cheaper one.

    python -m benchmarks.dropout_cost [--presets small medium] [--p 0.1] [--rounds 4] [--steps 5]
                                      [--out BENCHMARKS.md]

Times real ``Trainer.step`` calls (the loop `chargen train` runs: forward, backward,
AdamW, weight average) of each preset in three variants, round-robin so that all see
the same machine load: no dropout; dropout ``p`` as chargen did before
(``nn.LSTM``'s fused stack with its own dropout between the layers and
``F.dropout`` before the head, one Bernoulli draw per element); and dropout ``p`` as
chargen does now (``chargen.model.dropout``: 15 random bits per element, the stack run one
fused layer at a time). Reports the median step per variant and each round's
ratios, and writes a Markdown section between markers.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

import chargen.model.network
from benchmarks.common import REPO, cores, cpu_flags, cpu_model, load_corpus, publish
from chargen.model import PRESETS, ModelConfig
from chargen.training import TrainConfig
from chargen.training.data import split_tokens
from chargen.training.trainer import Trainer

START = "<!-- benchmarks/dropout_cost.py: start (generated) -->"
END = "<!-- benchmarks/dropout_cost.py: end -->"
VARIANTS = ("none", "torch", "chargen")


@contextmanager
def torch_dropout(trainer: Trainer) -> Iterator[None]:
    """The trainer's model with dropout as before: the fused stack's own, and ``F.dropout`` at the head."""
    model, own = trainer.model, chargen.model.network.dropout
    model._layer_by_layer = lambda x, hx: model.rnn(x, hx)  # nn.LSTM(dropout=p) draws per element in training
    chargen.model.network.dropout = lambda x, p, training=True: torch.nn.functional.dropout(x, p, training)
    try:
        yield
    finally:
        del model._layer_by_layer
        chargen.model.network.dropout = own


def trainers(preset: str, p: float, data: object, vocab: int, threads: int) -> dict[str, Trainer]:
    config = TrainConfig(precision="fp32", threads=threads, max_steps=100_000, seed=1)
    made = {}
    for variant in VARIANTS:
        settings = dict(PRESETS[preset], dropout=0.0 if variant == "none" else p)
        made[variant] = Trainer(ModelConfig(vocab_size=vocab, **settings), config, data)
    return made


def step_times(trainer: Trainer, variant: str, steps: int) -> list[float]:
    times = []
    with torch_dropout(trainer) if variant == "torch" else _nothing():
        for _ in range(steps):
            start = time.perf_counter()
            trainer.step()
            times.append(time.perf_counter() - start)
    return times


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def measure(preset: str, p: float, data: object, vocab: int, args: argparse.Namespace) -> str:
    made = trainers(preset, p, data, vocab, args.threads)
    for variant in VARIANTS:  # warm-up: allocator growth, oneDNN kernel selection
        step_times(made[variant], variant, 2)
    rounds = [{v: statistics.median(step_times(made[v], v, args.steps)) for v in VARIANTS} for _ in range(args.rounds)]
    med = {v: statistics.median(r[v] for r in rounds) for v in VARIANTS}
    saved = [r["torch"] / r["chargen"] for r in rounds]
    over = [r["chargen"] / r["none"] for r in rounds]
    return (f"| {preset} | {med['none'] * 1e3:,.0f} | {med['torch'] * 1e3:,.0f} | {med['chargen'] * 1e3:,.0f} | "
            f"{statistics.median(saved):.3f} ({min(saved):.3f}–{max(saved):.3f}) | "
            f"{statistics.median(over):.3f} ({min(over):.3f}–{max(over):.3f}) |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dropout_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "medium"], choices=sorted(PRESETS))
    parser.add_argument("--p", type=float, default=0.1, help="dropout probability (default 0.1)")
    parser.add_argument("--rounds", type=int, default=4, help="round-robin rounds (default 4)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant per round (default 5)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--corpus", type=Path, help="text file (default: tinyshakespeare if present, else fables)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="Markdown file to update")
    args = parser.parse_args(argv)
    corpus = load_corpus(args.corpus)
    config = TrainConfig()
    data = split_tokens(corpus.ids, config.val_fraction, config.batch_size, config.seq_len)
    flags = ", ".join(name for name, have in cpu_flags().items() if have) or "none of interest"
    command = shlex.join(["python", "-m", "benchmarks.dropout_cost", *(sys.argv[1:] if argv is None else argv)])
    lines = ["## What dropout costs a training step (benchmarks/dropout_cost.py)", "",
             f"Command: `{command}` ({time.strftime('%Y-%m-%d')}); {cpu_model()} (flags: {flags}), {cores()} cores, "
             f"{args.threads} threads, torch {torch.__version__}; corpus: {corpus.note}; batch 32 x 100, fp32, "
             f"dropout {args.p:g}; load average at the start {os.getloadavg()[0]:.2f}.", "",
             "| preset | no dropout, ms/step | torch's dropout, ms/step | chargen's dropout, ms/step "
             "| torch's / chargen's (per round) | chargen's / none (per round) |",
             "|---|---:|---:|---:|---:|---:|"]
    for preset in args.presets:
        lines.append(measure(preset, args.p, data, corpus.vocab, args))
        print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", f"Load average at the end {os.getloadavg()[0]:.2f}."]
    return publish("\n".join(lines), args.out, START, END)


if __name__ == "__main__":
    sys.exit(main())
