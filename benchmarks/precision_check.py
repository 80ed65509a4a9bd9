"""Does bf16 training reach fp32's validation loss at an equal number of steps?

    python -m benchmarks.precision_check [--steps 300] [--preset small] [--out BENCHMARKS.md]

Trains the same model twice through ``chargen.runs.start_run`` (same seed,
same batches, same schedule), once with ``--precision fp32`` and once with
``--precision bf16``, and compares the final validation loss. Where the
machine cannot train bf16 (a CPU without avx512_bf16/amx_bf16: chargen
refuses, and oneDNN's bf16 LSTM fails), it says so and why, and trains
nothing: there is no bf16 figure to compare, and none is made up.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import REPO, cpu_flags, cpu_model, load_corpus, publish
from chargen.errors import ChargenError
from chargen.machine.device import autocast_context, resolve_device, resolve_precision
from chargen.model import CharRNN, ModelConfig
from chargen.training import TrainConfig

START = "<!-- benchmarks/precision_check.py: start (generated) -->"
END = "<!-- benchmarks/precision_check.py: end -->"
#: Losses closer than this (nats/char) count as "the same" at equal steps.
TOLERANCE = 0.02


def bf16_blocker(device: torch.device) -> str | None:
    """Why bf16 LSTM training cannot run here, or None when it can."""
    try:
        resolve_precision("bf16", device)
    except ChargenError as exc:
        reason = str(exc).rstrip(".")
    else:
        reason = None
    # Also try one real step: a CPU may advertise bf16 yet lack oneDNN's bf16 LSTM.
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, layers=1, hidden=32, embedding=8)).to(device)
    tokens = torch.randint(0, 11, (2, 9), device=device)
    try:
        with autocast_context(device, "bf16"):
            logits, _ = model(tokens[:, :-1])
            loss = nn.functional.cross_entropy(logits.float().reshape(-1, 11), tokens[:, 1:].reshape(-1))
        loss.backward()
    except RuntimeError as exc:
        step = f"one bf16 autocast LSTM step fails: {str(exc).splitlines()[0].split('. ')[0]}"
        return f"{reason}; {step}" if reason else step
    return reason


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps for each precision")
    parser.add_argument("--preset", default="small", help="model size (chargen preset)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--corpus", type=Path, help="text file (default: tinyshakespeare if present, else fables)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="Markdown file to update")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    corpus = load_corpus(args.corpus)
    flags = ", ".join(name for name, have in cpu_flags().items() if have) or "none of interest"
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_model()} (flags: {flags})")
    command = shlex.join(["python", "-m", "benchmarks.precision_check", *(sys.argv[1:] if argv is None else argv)])
    lines = ["## bf16 vs fp32 at equal steps (benchmarks/precision_check.py)", "",
             f"Command: `{command}`"
             f" ({time.strftime('%Y-%m-%d')}), device: {device.type}, {where}; torch {torch.__version__}; "
             f"corpus: {corpus.note}.", ""]
    blocker = bf16_blocker(device)
    if blocker is not None:
        lines += [f"**Not run: bf16 training is not supported on this machine.** {blocker}.", "",
                  "No bf16 loss is reported, and none is estimated: the comparison needs a CPU with "
                  "avx512_bf16 or AMX, or a CUDA GPU with bf16."]
    else:
        results = {}
        with tempfile.TemporaryDirectory(prefix="chargen-precision-") as tmp:
            from chargen.runs.start import start_run

            for precision in ("fp32", "bf16"):
                config = TrainConfig(max_steps=args.steps, eval_every=10**9, seed=1337, device=args.device,
                                     precision=precision)
                started = time.monotonic()
                result = start_run([corpus.path], config, preset=args.preset, run_name=precision, out=Path(tmp),
                                   progress=False, warn=lambda message: None)
                results[precision] = (result, time.monotonic() - started)
        fp32, bf16 = (results[p][0].last_val_loss or math.nan for p in ("fp32", "bf16"))
        same = abs(bf16 - fp32) <= TOLERANCE
        lines += ["| precision | steps | val loss (nats/char) | bpc | wall-clock |", "|---|---|---|---|---|"]
        for precision, (result, seconds) in results.items():
            val = result.last_val_loss or math.nan
            lines.append(f"| {precision} | {result.step} | {val:.4f} | {val / math.log(2):.3f} | {seconds:.0f} s |")
        lines += ["", f"bf16 − fp32 = {bf16 - fp32:+.4f} nats/char: "
                  + ("the same" if same else "not the same") + f" within ±{TOLERANCE} ({args.preset} preset, "
                  f"{args.steps} steps, batch 32 × seq 100, one seed: a single run, not a distribution)."]
    return publish("\n".join(lines), args.out, START, END)


if __name__ == "__main__":
    sys.exit(main())
