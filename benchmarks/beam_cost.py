"""Beam width 8 against plain sampling, time per generated character, for the sampling issue.

    python -m benchmarks.beam_cost [--sizes 256 512] [--checkpoint RUN ...] [--rounds 7] [--length 300]

Times ``Generator.generate`` (the code `chargen sample` runs) on a 2-layer LSTM
of each hidden size, vocabulary 65, untrained weights, and on each trained
``--checkpoint`` (where the n-gram block has real repeats to ban). Each round
runs sampling, beam search (default n-gram block) and beam search without the
block back to back and takes their ratios, so all see the same machine load;
prints medians and the range of the per-round ratio as Markdown, and the ratio
of each decoder's fastest round (the least disturbed by other load: on a shared
VM, noise only ever adds time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from chargen.codecs.text import TextCodec
from chargen.model import CharRNN, ModelConfig
from chargen.runs.checkpoint import load_checkpoint
from chargen.runs.lookup import resolve_checkpoint
from chargen.sampling import DecodeConfig, Generator

ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # tiny-shakespeare's 65


def per_char_us(generator: Generator, config: DecodeConfig) -> float:
    start = time.perf_counter()
    generator.generate("The ", config)
    return (time.perf_counter() - start) / config.length * 1e6


def measure(label: str, generator: Generator, args: argparse.Namespace) -> str:
    sample = DecodeConfig(length=args.length, seed=1)
    beam = DecodeConfig(length=args.length, beam_width=8)  # default n-gram block 12, as users get
    unblocked = DecodeConfig(length=args.length, beam_width=8, no_repeat_ngram=0)
    for config in (sample, beam, unblocked):  # warm-up
        per_char_us(generator, config)
    rows = [tuple(per_char_us(generator, c) for c in (sample, beam, unblocked)) for _ in range(args.rounds)]
    med = statistics.median
    ratios = [b / s for s, b, _ in rows]
    fastest = min(b for _, b, _ in rows) / min(s for s, _, _ in rows)  # each decoder's least-disturbed round
    return (f"| {label} | {med(r[0] for r in rows):,.0f} | {med(r[1] for r in rows):,.0f} | "
            f"{med(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {fastest:.2f} | "
            f"{med(u / s for s, _, u in rows):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512])
    parser.add_argument("--checkpoint", nargs="*", default=[], help="trained runs or weights files")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--length", type=int, default=300)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    extra = "".join(f" --checkpoint {c}" for c in args.checkpoint)
    print(f"Command: `python -m benchmarks.beam_cost --sizes {' '.join(map(str, args.sizes))}{extra} "
          f"--rounds {args.rounds} --length {args.length}`; torch {torch.__version__}; load average {load:.2f}\n")
    print("| model | sampling µs/char | beam 8 µs/char | beam 8 / sampling | fastest / fastest "
          "| without n-gram block |")
    print("|---|---:|---:|---:|---:|---:|")
    for hidden in args.sizes:
        torch.manual_seed(0)
        model = CharRNN(ModelConfig(vocab_size=len(ALPHABET), layers=2, hidden=hidden, embedding=64))
        print(measure(f"2x{hidden} LSTM, untrained", Generator(model, TextCodec(ALPHABET)), args), flush=True)
    for spec in args.checkpoint:
        loaded = load_checkpoint(resolve_checkpoint(spec))
        cfg = loaded.config
        label = f"{cfg.layers}x{cfg.hidden} {cfg.cell.upper()}, trained ({Path(spec).name})"
        print(measure(label, Generator(loaded.model, loaded.codec), args), flush=True)

if __name__ == "__main__":
    main()
