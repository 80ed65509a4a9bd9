"""Does training scale out over processes? 1 process x 2 threads against 2 processes x 1 thread (torchrun).

    python -m benchmarks.ddp_scaling [--preset medium] [--steps 150] [--repeats 3] [--out BENCHMARKS.md]

Both sides train the same model on the same global batch (32 streams x 100
tokens) with ``chargen train``, as a user runs it: one process with
``--threads 2``, and ``torchrun --nproc-per-node 2`` with ``--threads 1`` and
``--batch-size 16`` per process. The figure is training chars/s of the global
batch; the scaling efficiency is the ratio of the two (same cores, so 1.0 means
DDP costs nothing over intra-op threads, above 1.0 that it beats them).

Two rates per run: the session's (``--json``: the first checkpoint and
the final evaluation included) and the steady one, between the first and the
last progress points of ``metrics.jsonl`` (training steps only). Runs of the two
sides alternate, so load from other processes shifts both alike; the load
average is printed before and after each. Needs a quiet machine to mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.common import REPO, cores, cpu_flags, cpu_model, fmt, load_corpus, write_section

START = "<!-- benchmarks/ddp_scaling.py: start (generated) -->"
END = "<!-- benchmarks/ddp_scaling.py: end -->"
GLOBAL_BATCH, SEQ = 32, 100


@dataclass
class Side:
    label: str
    processes: int
    threads: int
    session: list[float] = field(default_factory=list)  # chars/s per run
    steady: list[float] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)

    def command(self, corpus: Path, preset: str, steps: int, seq_len: int, batch: int, out: Path,
                name: str) -> list[str]:
        train = ["train", str(corpus), "--size", preset, "--batch-size", str(batch // self.processes),
                 "--seq-len", str(seq_len), "--threads", str(self.threads), "--max-steps", str(steps),
                 "--eval-every", str(steps + 1), "--val-fraction", "0.02", "--out", str(out), "--run-name", name,
                 "--no-log", "--quiet", "--json"]
        if self.processes == 1:
            return [sys.executable, "-m", "chargen", *train]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                str(self.processes), "-m", "chargen", *train]


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def steady_rate(run_dir: Path, tokens_per_step: int) -> float | None:
    """chars/s between the first and last progress points (no evaluation in between), if two exist."""
    points = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("val_loss") is None:
            points.append((record["step"], record["elapsed_s"]))
    if len(points) < 2 or points[-1][1] <= points[0][1]:
        return None
    return (points[-1][0] - points[0][0]) * tokens_per_step / (points[-1][1] - points[0][1])


def measure(side: Side, args: argparse.Namespace, corpus: Path, scratch: Path, index: int) -> None:
    name = f"{side.processes}x{side.threads}-{index}"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(side.threads))
    before = load_average()
    result = subprocess.run(side.command(corpus, args.preset, args.steps, args.seq_len, args.batch, scratch, name),
                            capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"ddp_scaling: {side.label} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    side.session.append(outcome["chars_per_s"])
    steady = steady_rate(scratch / name, args.batch * args.seq_len)
    if steady is not None:
        side.steady.append(steady)
    side.loads.append(f"{before} → {load_average()}")
    print(f"  {side.label} run {index + 1}: {outcome['chars_per_s']:,.0f} chars/s (session)"
          + (f", {steady:,.0f} steady" if steady else "") + f"; load {side.loads[-1]}", file=sys.stderr)


def ratio(a: list[float], b: list[float]) -> str:
    if not a or not b or len(a) != len(b):
        return "n/a"
    return fmt([x / y for x, y in zip(a, b)], 2)


def report(sides: list[Side], args: argparse.Namespace, corpus_note: str) -> str:
    flags = ", ".join(name for name, present in cpu_flags().items() if present) or "none of interest"
    one, two = sides
    lines = [
        f"## Scaling out: 1 process × 2 threads against 2 processes × 1 thread ({time.strftime('%Y-%m-%d')})",
        "",
        f"- Machine: {cpu_model()}, {cores()} cores available; flags: {flags}; torch {torch.__version__}.",
        f"- Model: {args.preset} preset; global batch {args.batch} × seq {args.seq_len}, {args.steps} steps per run, "
        f"{args.repeats} runs per side (alternating). Corpus: {corpus_note}.",
        f"- Command: `{shlex.join(['python', '-m', 'benchmarks.ddp_scaling', *sys.argv[1:]])}`",
        "",
        "| setup | threads per process | chars/s, session | chars/s, steady | load average (1, 5, 15 min) |",
        "|---|---|---|---|---|",
    ]
    for side in sides:
        lines.append(f"| {side.label} | {side.threads} | {fmt(side.session)} | "
                     f"{fmt(side.steady) if side.steady else 'n/a (run too short)'} | {'; '.join(side.loads)} |")
    lines += [
        "",
        f"Scaling efficiency (2 processes ÷ 1 process, same cores): session {ratio(two.session, one.session)}, "
        f"steady {ratio(two.steady, one.steady)}. Median (min–max) over the runs; chars/s are of the global batch.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="medium", choices=["tiny", "small", "medium", "large"])
    parser.add_argument("--steps", type=int, default=150, help="Training steps per run.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per side.")
    parser.add_argument("--batch", type=int, default=GLOBAL_BATCH, help="Global batch (even).")
    parser.add_argument("--seq-len", type=int, default=SEQ)
    parser.add_argument("--corpus", type=Path, help="Text corpus [default: tinyshakespeare, else fables].")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="Markdown file to update.")
    parser.add_argument("--no-write", action="store_true", help="Print the section only.")
    args = parser.parse_args()
    if args.batch % 2 or args.steps < 1 or args.repeats < 1:
        parser.error("--batch must be even, --steps and --repeats at least 1")
    corpus = load_corpus(args.corpus)
    print(f"CPU {cpu_model()}, {cores()} cores, flags {cpu_flags()}; torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}; load average {load_average()}", file=sys.stderr)
    sides = [Side("1 process × 2 threads", 1, 2), Side("2 processes × 1 thread (torchrun, gloo)", 2, 1)]
    with tempfile.TemporaryDirectory(prefix="chargen-ddp-") as scratch:
        for index in range(args.repeats):
            for side in sides:
                measure(side, args, corpus.path, Path(scratch), index)
    body = report(sides, args, corpus.note)
    print(body)
    if not args.no_write:
        write_section(args.out, body, START, END)
        print(f"wrote the section into {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
