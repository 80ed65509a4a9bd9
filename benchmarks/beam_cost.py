"""Beam width 8 against plain sampling, time per generated character, for the sampling issue.

    python -m benchmarks.beam_cost [--sizes 256 512] [--rounds 7] [--length 300]

Times ``Generator.generate`` (the code `chargen sample` runs) on a 2-layer LSTM
of each hidden size, vocabulary 65, untrained weights (timing does not depend on
them). Each round runs sampling and beam search back to back and takes their
ratio, so both see the same machine load; prints median and range as Markdown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from chargen.model import CharRNN, ModelConfig
from chargen.sampling import DecodeConfig, Generator
from chargen.text_codec import TextCodec

ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # tiny-shakespeare's 65


def per_char_us(generator: Generator, config: DecodeConfig) -> float:
    start = time.perf_counter()
    generator.generate("The ", config)
    return (time.perf_counter() - start) / config.length * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--length", type=int, default=300)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"Command: `python -m benchmarks.beam_cost --sizes {' '.join(map(str, args.sizes))} "
          f"--rounds {args.rounds} --length {args.length}`; torch {torch.__version__}; load average {load:.2f}\n")
    print("| model | sampling µs/char | beam 8 µs/char | beam 8 / sampling |")
    print("|---|---:|---:|---:|")
    for hidden in args.sizes:
        torch.manual_seed(0)
        model = CharRNN(ModelConfig(vocab_size=len(ALPHABET), layers=2, hidden=hidden, embedding=64))
        generator = Generator(model, TextCodec(ALPHABET))
        sample = DecodeConfig(length=args.length, seed=1)
        beam = DecodeConfig(length=args.length, beam_width=8)  # default n-gram block 12, as users get
        per_char_us(generator, sample), per_char_us(generator, beam)  # warm-up
        rows = [(per_char_us(generator, sample), per_char_us(generator, beam)) for _ in range(args.rounds)]
        ratios = [b / s for s, b in rows]
        med = statistics.median
        print(f"| 2x{hidden} LSTM | {med(s for s, _ in rows):,.0f} | {med(b for _, b in rows):,.0f} | "
              f"{med(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")


if __name__ == "__main__":
    main()
