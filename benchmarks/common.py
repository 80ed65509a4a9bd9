"""Shared by the benchmark scripts: the corpus, the machine, timing and load accounting."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPUS = REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"
FALLBACK_CORPUS = REPO / "corpora" / "fables.txt"
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


@dataclass
class Corpus:
    path: Path
    note: str  # how it was chosen, for the report
    ids: np.ndarray  # int64 token ids of the whole text
    vocab: int
    train: np.ndarray  # nanoGPT split: first 90%
    val: np.ndarray  # last 10%


def load_corpus(path: Path | None = None) -> Corpus:
    """The real corpus when the workspace has it; else the project's own fables (and say so)."""
    from chargen.codecs.text import TextCodec

    if path is not None:
        note = f"{path} (given with --corpus)"
    elif SHARED_CORPUS.is_file():
        path, note = SHARED_CORPUS, f"tinyshakespeare ({SHARED_CORPUS})"
    else:
        path = FALLBACK_CORPUS
        note = f"corpora/fables.txt: {SHARED_CORPUS} is absent here, so figures use the project's own small corpus"
    codec = TextCodec.fit([path])
    ids = codec.encode_file(path)
    n_train = len(ids) - int(len(ids) * 0.1)
    return Corpus(path, note, ids, codec.vocab_size, ids[:n_train], ids[n_train:])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> dict[str, bool]:
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    return {flag: flag in flags for flag in FLAGS_OF_INTEREST}


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class LoadMeter:
    """CPU time other processes used while a section ran, in cores (from /proc/stat minus our own).

    loadavg lags by a minute; this says how contended each figure actually was.
    """

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as handle:
                fields = [int(v) for v in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
        own = os.times()
        return time.monotonic(), busy, own.user + own.system

    def others_cores(self) -> float | None:
        end = self._sample()
        if end is None or self._start is None or end[0] <= self._start[0]:
            return None
        wall = end[0] - self._start[0]
        return max(0.0, ((end[1] - self._start[1]) - (end[2] - self._start[2])) / wall)


def median_range(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt(values: Sequence[float], digits: int = 0, scale: float = 1.0) -> str:
    """'median (min–max)' of a series of repetitions."""
    mid, low, high = median_range([v * scale for v in values])
    return f"{mid:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def write_section(path: Path, body: str, start: str, end: str) -> None:
    """Put ``body`` between the ``start``/``end`` markers of ``path``, keeping everything else."""
    section = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = before + section + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def publish(body: str, path: Path, start: str, end: str) -> int:
    """Print a benchmark's section and put it between its markers in ``path``; the script's exit status."""
    print(body)
    write_section(path, body, start, end)
    return 0


RESULTS = REPO / "benchmarks" / "results"


def machine() -> dict[str, object]:
    """What a figure was measured on: the CPU and its flags, torch, threads, the load averages."""
    import torch

    return {"cpu": cpu_model(), "cores": cores(), "flags": [name for name, present in cpu_flags().items() if present],
            "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "load": [round(value, 2) for value in os.getloadavg()]}


def record(name: str, headline: Sequence[dict[str, object]], command: str, data: object = None,
           path: Path | None = None) -> Path:
    """Write ``benchmarks/results/NAME.json``: the headline figures (each ``figure``, ``value``, and where there is
    one ``target`` and ``corpus``), the command, the machine and the date, and the benchmark's own ``data``.
    ``benchmarks/summary.py`` makes BENCHMARKS.md's opening table from these files."""
    import json

    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": machine(), "headline": list(headline), "data": data}
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return path
