"""What the fused C kernel (chargen.machine.native) buys over torch's and numpy's batch-1 steps.

    python -m benchmarks.native_gain [--rounds 15]

Times batch-1 LSTM steps of the small and medium presets (vocab 65) with each kernel,
alternating rounds (``chargen.machine.kernels.measure_kernels``: the best round of each),
and reports the fused kernel's gain over the better of the other two: the figure that
decides whether compiling C on the user's machine is worth its safeguards. Writes
benchmarks/results/native_gain.json and its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from benchmarks.common import REPO, publish, record

START = "<!-- benchmarks/native_gain.py: start (generated; edit the script, not this section) -->"
END = "<!-- benchmarks/native_gain.py: end -->"


def main() -> int:
    from chargen.machine.kernels import measure_kernels
    from chargen.machine.native import lstm_library
    from chargen.model import PRESETS, CharRNN, ModelConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    command = "python -m benchmarks.native_gain " + shlex.join(sys.argv[1:])
    if lstm_library() is None:
        print("no C compiler: the fused kernel cannot be built here", file=sys.stderr)
        return 1
    rows, headline = [], []
    for preset in ("small", "medium"):
        torch.manual_seed(0)
        model = CharRNN(ModelConfig(vocab_size=65, **{k: v for k, v in PRESETS[preset].items()
                                                      if k != "dropout"})).eval()
        seconds = measure_kernels(model, rounds=args.rounds)
        best_other = min(seconds["torch"], seconds["numpy"])
        gain = best_other / seconds["fused"] - 1
        rows.append((preset, seconds, gain))
        headline.append({"figure": f"fused kernel's gain over the better of torch and numpy, batch-1 {preset} step",
                         "value": f"{gain:+.0%} ({seconds['fused'] * 1e6:.0f} against {best_other * 1e6:.0f} µs)"})
    lines = ["## The fused C kernel against torch and numpy (benchmarks/native_gain.py)", "",
             f"Command: `{command}`; best of {args.rounds} alternating rounds per kernel, batch 1, 1 thread.", "",
             "| preset | torch µs/step | numpy µs/step | fused µs/step | fused gain |", "|---|---:|---:|---:|---:|"]
    for preset, seconds, gain in rows:
        lines.append(f"| {preset} | {seconds['torch'] * 1e6:.1f} | {seconds['numpy'] * 1e6:.1f} | "
                     f"{seconds['fused'] * 1e6:.1f} | {gain:+.1%} |")
    record("native_gain", headline, command, {p: {"seconds": s, "gain": g} for p, s, g in rows})
    return publish("\n".join(lines), REPO / "BENCHMARKS.md", START, END)


if __name__ == "__main__":
    sys.exit(main())
