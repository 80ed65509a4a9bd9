"""The corpora the music benchmark trains on, staged in a cache folder outside the repository.

* ``midi-basics``: the repository's own 48 generated files (corpora/midi-basics).
* ``shared``: the shared folder of 56 real files (../shared/corpora/midi), skipped with a note where absent.
* ``bach``: public-domain four-part chorales from music21's bundled corpus (``pip install music21``),
  written to .mid files by the benchmark itself; skipped with a note without music21. Never committed.

Each corpus is staged as a flat folder of links named ``NNN-<name>.mid`` in a
seeded random order: chargen validates on the tail of the stream, and a
folder read in name order would put one kind of piece there (all of
midi-basics's scales), so the validation loss that decides when training has
plateaued would measure one kind only.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import REPO

BASICS = REPO / "corpora" / "midi-basics"
SHARED = REPO.parent / "shared" / "corpora" / "midi"
#: Chorales taken from music21's corpus: the first this many four-part ones, in its sorted order.
BACH_PIECES = 80


@dataclass(frozen=True)
class Corpus:
    name: str
    folder: Path | None  # None: not available here
    note: str  # where it comes from, or why it is skipped


def default_cache() -> Path:
    return Path(os.environ.get("CHARGEN_BENCH_CACHE") or Path.home() / ".cache" / "chargen-bench")


def bach_chorales(cache: Path, pieces: int = BACH_PIECES) -> tuple[Path | None, str]:
    """The first ``pieces`` four-part Bach chorales of music21's corpus as .mid files under ``cache``."""
    try:
        from music21 import corpus as m21
    except ImportError:
        return None, "skipped: music21 is not installed (pip install -r requirements-bench.txt)"
    folder = cache / f"bach-chorales-{pieces}"
    done = folder / ".complete"
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        written = 0
        for path in sorted(p for p in m21.getComposer("bach") if p.suffix == ".mxl"):
            if written == pieces:
                break
            score = m21.parse(path)
            if len(score.parts) != 4:
                continue
            score.write("midi", fp=str(folder / f"{path.stem}.mid"))
            written += 1
        done.write_text(f"{written}\n")
    count = len(list(folder.glob("*.mid")))
    return folder, f"music21's Bach chorales: the first {count} four-part ones, written to {folder}"


def staged(name: str, source: Path, cache: Path, seed: int = 1) -> Path:
    """A flat folder of symbolic links to ``source``'s .mid files, in a seeded random order."""
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".mid", ".midi") and p.is_file())
    random.Random(seed).shuffle(files)
    folder = cache / "staged" / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for i, path in enumerate(files):
        (folder / f"{i:03d}-{path.stem}{path.suffix.lower()}").symlink_to(path.resolve())
    return folder


def corpora(cache: Path, names: tuple[str, ...] = ("midi-basics", "shared", "bach")) -> list[Corpus]:
    """The benchmark's corpora, staged; those not available here carry only their note."""
    found = []
    for name in names:
        if name == "midi-basics":
            source, note = BASICS, f"the repository's {BASICS.relative_to(REPO)}"
        elif name == "shared":
            source, note = (SHARED, f"the shared folder {SHARED}") if SHARED.is_dir() else \
                (None, f"skipped: {SHARED} is absent here")
        elif name == "bach":
            source, note = bach_chorales(cache)
        else:
            raise ValueError(f"unknown corpus {name!r}")
        found.append(Corpus(name, staged(name, source, cache) if source is not None else None, note))
    return found
