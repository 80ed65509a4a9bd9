"""Corpora of 10 MB to 1 GB: encoding speed, peak memory of a short training run, an evaluation's cost.

    python -m benchmarks.big_corpus [--sizes 10,100,1000] [--out BENCHMARKS.md] [--json PATH]

Each corpus is generated on the fly in a temporary folder (never kept): Python source
(the first BASE_BYTES of this interpreter's standard library, the files that are UTF-8,
repeated to the size), mostly ASCII with a few other characters, as a new user's big
corpus might be. Every size repeats the same base, so every size has the same vocabulary
and the same model: what changes is only the corpus's size.
For each size, in fresh processes:

- the vocabulary pass and the encoding pass (``chargen.training.data.build_corpus``), in MB/s
  of the corpus, and the whole preparation (both passes and the sha256 of the files);
- ``chargen train CORPUS --size tiny --max-steps 5 --threads 1``: its peak RSS and
  seconds, as a user would run it;
- one evaluation as training runs it (the fixed sample of the validation split,
  ``TrainConfig.evaluation_tokens``), in seconds and tokens; and the whole split
  where it holds at most ``--whole-up-to`` tokens.

Writes the JSON (default ``benchmarks/results/big_corpus.json``) and a Markdown section
into ``--out``. Speeds need a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, cores, cpu_model, publish, record

START = "<!-- benchmarks/big_corpus.py: start (generated) -->"
END = "<!-- benchmarks/big_corpus.py: end -->"
MB = 1_000_000
#: The source every corpus repeats (no smaller than the smallest size, so each size holds all of it).
BASE_BYTES = 4 * MB

PREPARE = """
import json, sys, time
from pathlib import Path
from chargen.training.data import build_corpus
from chargen.codecs.text import TextCodec
corpus, tokens = Path(sys.argv[1]), Path(sys.argv[2])
began = time.perf_counter(); codec = TextCodec.fit([corpus]); fit = time.perf_counter() - began
began = time.perf_counter(); build_corpus([corpus], tokens, codec=codec); encode = time.perf_counter() - began
began = time.perf_counter(); build_corpus([corpus], tokens); whole = time.perf_counter() - began
print(json.dumps({"vocab_s": fit, "encode_s": encode, "prepare_s": whole, "vocab": codec.vocab_size}))
"""

EVALUATE = """
import json, sys, time
import numpy as np, torch
from pathlib import Path
from chargen.runs.checkpoint import load_checkpoint
from chargen.training.data import load_tokens, split_tokens
from chargen.scoring.evaluate import mean_loss, scored_tokens
from chargen.training import TrainConfig
torch.set_num_threads(1)
run, whole_up_to = Path(sys.argv[1]), int(sys.argv[2])
model = load_checkpoint(run / "last.safetensors").model
config = TrainConfig.from_dict(json.loads((run / "run.json").read_text())["train_config"])
data = split_tokens(load_tokens(run / "tokens.npy"), config.val_fraction, config.batch_size, config.seq_len)
cap = config.evaluation_tokens()
out = {"val_tokens": len(data.val), "sample_tokens": scored_tokens(len(data.val), config.seq_len, max_tokens=cap)}
mean_loss(model, data.val[:100_000], config.seq_len)  # warm-up
began = time.perf_counter(); mean_loss(model, data.val, config.seq_len, max_tokens=cap)
out["eval_s"] = time.perf_counter() - began
if len(data.val) <= whole_up_to:
    began = time.perf_counter()
    mean_loss(model, data.val, config.seq_len)
    out["whole_s"] = time.perf_counter() - began
print(json.dumps(out))
"""


def make_corpus(path: Path, size: int) -> int:
    """``size`` bytes: the first BASE_BYTES of this Python's standard library source (its UTF-8 files without
    NUL, in name order), repeated."""
    sources = []
    for file in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            data = file.read_bytes()
            data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if b"\x00" not in data:
            sources.append(data)
        if sum(map(len, sources)) >= BASE_BYTES:
            break
    written = 0
    with open(path, "wb") as handle:
        while written < size:
            for data in sources:
                piece = data[: size - written]
                handle.write(piece)
                written += len(piece)
                if written >= size:
                    break
    return written


def python(code_or_module: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **env)
    done = subprocess.run([sys.executable, *code_or_module], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=environment)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(code_or_module[:3])} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done


def measure(size_mb: int, work: Path, whole_up_to: int) -> dict[str, object]:
    corpus = work / f"corpus-{size_mb}mb.txt"
    size = make_corpus(corpus, size_mb * MB)
    prepared = json.loads(python(["-c", PREPARE, str(corpus), str(work / "tokens.npy")], 3600).stdout)
    (work / "tokens.npy").unlink()
    prefix = work / f"memory-{size_mb}"
    began = time.perf_counter()
    python(["-m", "benchmarks.gpu_check.child", str(prefix), "train", str(corpus), "--size", "tiny",
            "--max-steps", "5", "--threads", "1", "--device", "cpu", "--run-name", f"big-{size_mb}", "--out",
            str(work / "runs"), "--no-log", "--quiet"], 7200, CHARGEN_HOME=str(work / "home"))
    train_s = time.perf_counter() - began
    rss = max(json.loads(p.read_text())["rss_peak_bytes"] for p in work.glob(f"{prefix.name}.*.json"))
    evaluated = json.loads(python(["-c", EVALUATE, str(work / "runs" / f"big-{size_mb}"), str(whole_up_to)],
                                  7200).stdout)
    corpus.unlink()
    return {"size_mb": size / MB, "vocab": prepared["vocab"], "vocab_mb_s": size / MB / prepared["vocab_s"],
            "encode_mb_s": size / MB / prepared["encode_s"], "prepare_mb_s": size / MB / prepared["prepare_s"],
            "train_peak_rss_mb": rss / 2**20, "train_s": train_s, **evaluated}


def markdown(results: list[dict[str, object]], command: str) -> str:
    lines = ["## Corpora of 10 MB to 1 GB (benchmarks/big_corpus.py)", "",
             f"Command: `{command}` ({time.strftime('%Y-%m-%d')}); {cpu_model()}, {cores()} cores; corpora: "
             f"the first {BASE_BYTES // MB} MB of the standard library's Python source, repeated to each size "
             "(mostly ASCII, a few other characters).", "",
             "| corpus | vocab | vocabulary pass MB/s | encoding MB/s | whole preparation MB/s | "
             "`train --size tiny --max-steps 5`: peak RSS, s | one evaluation during training: s (tokens) | "
             "whole validation split: s (tokens) |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        whole = f"{r['whole_s']:.1f} ({r['val_tokens']:,})" if "whole_s" in r else f"not run ({r['val_tokens']:,})"
        lines.append(f"| {r['size_mb']:,.0f} MB | {r['vocab']:,} | {r['vocab_mb_s']:,.0f} | {r['encode_mb_s']:,.0f} | "
                     f"{r['prepare_mb_s']:,.0f} | {r['train_peak_rss_mb']:,.0f} MiB, {r['train_s']:,.0f} s | "
                     f"{r['eval_s']:.2f} ({r['sample_tokens']:,}) | {whole} |")
    lines += ["", "The preparation is both passes and the sha256 of the corpus; the training run's seconds include "
              "it, the run's evaluations, and starting Python. An evaluation during training scores a fixed sample "
              "of the validation split, so its cost does not grow with the corpus; the whole split is scored at "
              "the end of a run where that costs at most a quarter of the run (README, Training)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.big_corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000", help="corpus sizes in MB, comma-separated")
    parser.add_argument("--whole-up-to", type=int, default=20_000_000,
                        help="score the whole validation split too where it has at most this many tokens")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="Markdown file to update")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "big_corpus.json")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.big_corpus", *(sys.argv[1:] if argv is None else argv)])
    results = []
    with tempfile.TemporaryDirectory(prefix="chargen-big-corpus-") as scratch:
        for size in (int(s) for s in args.sizes.split(",")):
            print(f"big_corpus: {size} MB ...", file=sys.stderr, flush=True)
            results.append(measure(size, Path(scratch), args.whole_up_to))
    small, large = results[0], results[-1]
    record("big_corpus", [
        {"figure": f"encoding MB/s, {large['size_mb']:,.0f} MB corpus", "value": round(large["encode_mb_s"]),
         "target": ">= 50", "corpus": "Python stdlib source, repeated"},
        {"figure": f"peak RSS MiB, train --size tiny, {large['size_mb']:,.0f} MB",
         "value": round(large["train_peak_rss_mb"]), "target": "< 1024"},
        {"figure": f"an evaluation's seconds, {large['size_mb']:,.0f} MB / {small['size_mb']:,.0f} MB",
         "value": round(large["eval_s"] / small["eval_s"], 2), "target": "<= 1 (flat)"}],
        command, results, args.json)
    return publish(markdown(results, command), args.out, START, END)


if __name__ == "__main__":
    sys.exit(main())
