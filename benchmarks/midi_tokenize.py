"""Time tokenizing a folder of MIDI files with the MIDI codec; prints Markdown.

Usage (from the repository root)::

    python benchmarks/midi_tokenize.py [FOLDER] [--runs 5]

FOLDER defaults to the shared test corpus (<repo>/../shared/corpora/midi).
Each run parses and encodes every file once; the median run is reported.
The target is under 5 s for the 56 shared files.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's chargen, not an installed one

from chargen.codecs.midi import MidiCodec  # noqa: E402
from chargen.errors import CorruptFileError  # noqa: E402

DEFAULT_FOLDER = REPO.parent / "shared" / "corpora" / "midi"
TARGET_S = 5.0


def tokenize_all(codec: MidiCodec, files: list[Path]) -> tuple[int, int]:
    tokens = skipped = 0
    for path in files:
        try:
            tokens += len(codec.encode_file(path))
        except CorruptFileError:
            skipped += 1
    return tokens, skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in MidiCodec.suffixes)
    if not files:
        print(f"no MIDI files under {args.folder}", file=sys.stderr)
        return 1
    codec = MidiCodec()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        tokens, skipped = tokenize_all(codec, files)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    size = sum(p.stat().st_size for p in files)
    verdict = "meets" if median < TARGET_S else "MISSES"
    print(f"### MIDI tokenization ({args.folder.name}/, {len(files)} files, {size / 1024:.0f} KiB)\n")
    print("| files | tokens | median of runs | files/s | tokens/s |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {len(files)} | {tokens:,} | {median:.3f} s ({args.runs}) | {len(files) / median:,.0f} "
          f"| {tokens / median:,.0f} |")
    print(f"\n{skipped} file(s) skipped as corrupt. Target < {TARGET_S:g} s: {verdict}. "
          f"Python {platform.python_version()}, {platform.machine()}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
