"""Does ``make demo``'s sample read as its corpus's language? Fresh runs from a clean clone, words counted.

    python -m benchmarks.demo_words [--runs 5] [--clone DIR]

Clones the repository into DIR (default: a temporary folder; replaced if it exists), runs
``make -s demo`` there ``--runs`` times (the first one includes the install, as on a fresh
machine) and, for each printed sample, counts the share of its whitespace-separated words
(punctuation stripped, any case) that occur in the demo's corpus (corpora/fables.txt). Writes
benchmarks/results/demo_words.json and its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, publish, record

START = "<!-- benchmarks/demo_words.py: start (generated; edit the script, not this section) -->"
END = "<!-- benchmarks/demo_words.py: end -->"
CORPUS = REPO / "corpora" / "fables.txt"


def words(text: str) -> list[str]:
    """Whitespace-separated words, punctuation stripped (an apostrophe inside a word kept), lower case."""
    return [w for w in (re.sub(r"[^\w']+", "", t).strip("'").lower() for t in text.split()) if w]


def share_in(sample: str, vocabulary: set[str]) -> tuple[float, int]:
    found = words(sample)
    return sum(w in vocabulary for w in found) / max(1, len(found)), len(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clone", type=Path)
    args = parser.parse_args()
    command = "python -m benchmarks.demo_words " + shlex.join(sys.argv[1:])
    vocabulary = set(words(CORPUS.read_text()))
    scratch = None if args.clone else tempfile.TemporaryDirectory(prefix="chargen-demo-")
    clone = args.clone or Path(scratch.name) / "chargen"  # type: ignore[union-attr]
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    runs = []
    for index in range(args.runs):
        began = time.monotonic()
        done = subprocess.run(["make", "-s", "demo"], cwd=clone, capture_output=True, text=True)
        seconds = time.monotonic() - began
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        share, count = share_in(done.stdout, vocabulary)
        runs.append({"seconds": round(seconds, 1), "share": share, "words": count, "sample": done.stdout,
                     "install": index == 0})
        print(f"run {index + 1}: {share:.0%} of {count} words, {seconds:.0f} s", file=sys.stderr)
    if scratch is not None:
        scratch.cleanup()
    mean = sum(r["share"] for r in runs) / len(runs)
    lines = ["## `make demo`'s sample against its corpus (benchmarks/demo_words.py)", "",
             f"Command: `{command}`: {len(runs)} runs of `make -s demo` in a fresh clone (the first with the "
             "install); share of each sample's words (punctuation stripped, any case) found in corpora/fables.txt.",
             "", "| run | words in the corpus | words | wall s |", "|---:|---:|---:|---:|"]
    for index, run in enumerate(runs):
        note = " (with the install)" if run["install"] else ""
        lines.append(f"| {index + 1} | {run['share']:.1%} | {run['words']} | {run['seconds']:.0f}{note} |")
    lines += ["", f"Mean {mean:.1%}, lowest {min(r['share'] for r in runs):.1%}. The first sample:", "",
              "```text", runs[0]["sample"].strip(), "```"]
    headline = [{"figure": "make demo: words of the sample found in its corpus (mean of fresh runs)",
                 "value": f"{mean:.1%} (lowest {min(r['share'] for r in runs):.1%}, {len(runs)} runs)",
                 "target": ">= 80%", "corpus": "corpora/fables.txt"},
                {"figure": "make demo on a fresh clone, the install included", "value": f"{runs[0]['seconds']:.0f} s",
                 "target": "< 180 s"}]
    record("demo_words", headline, command, runs)
    return publish("\n".join(lines), REPO / "BENCHMARKS.md", START, END)


if __name__ == "__main__":
    sys.exit(main())
