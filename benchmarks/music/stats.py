"""Texture statistics of music, read back from exported .mid files by pretty_midi, with bootstrap intervals.

Every piece, corpus file or sample, goes the same way: token ids ->
:func:`chargen.codecs.midi.export.decode_to_midi` (the model's own vocabulary, so
either music codec) -> a Standard MIDI File read back by pretty_midi, which the
statistics are taken from. A setting's figure pools its pieces (so a long
piece weighs more); its 95 % interval is the percentile bootstrap over pieces.

The statistics (:data:`STATISTICS`):

* polyphony: time-weighted mean number of sounding notes while at least one
  sounds: the total duration of all notes over the time any note sounds
  (rests left out; a four-voice chorale scores about 4).
* pitch mean, pitch sd: of MIDI pitch over notes (each note once).
* pitch range: the 5th to 95th percentile of pitch, in semitones (unlike the
  extremes, it does not grow with the length of a piece).
* note length median and IQR (its spread), in seconds, as exported.
* IOI: the median interval between successive distinct onsets (seconds).
* notes/s: notes over the summed length of the pieces (0 to the last note's end).
* velocity mean.
* PCP distance: total variation (0..1) between the setting's and the corpus's
  key-normalised pitch-class profiles. A piece's profile is its
  duration-weighted pitch-class histogram rotated so that its key's tonic
  (Krumhansl-Schmuckler: the best correlating of the 24 Krumhansl-Kessler
  profiles) is class 0; a setting's profile is the mean of its pieces'.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from chargen.codecs.midi.export import decode_to_midi

#: The statistics of a setting, in table order: key -> (column heading, unit, digits).
STATISTICS: dict[str, tuple[str, str, int]] = {
    "polyphony": ("polyphony", "", 2),
    "pitch_mean": ("pitch mean", "", 1),
    "pitch_sd": ("pitch sd", "", 1),
    "pitch_range": ("pitch range p5-p95", "", 1),
    "median": ("note length median", "s", 2),
    "iqr": ("note length IQR", "s", 2),
    "ioi": ("IOI median", "s", 3),
    "per_s": ("notes/s", "", 2),
    "velocity": ("velocity mean", "", 1),
    "pcp": ("PCP distance", "", 3),
}
BOOTSTRAP = 1000
#: A rule's verdict asks about every statistic on every corpus and level at once (10 x 3 x 2 = 60 one-sided
#: tests): a difference counts only beyond this many standard errors, the 2.5 % level shared among 60
#: (Bonferroni), so that a rule without effect is not dropped for the one test in 40 that chance fails.
FAMILY_Z = 3.34
# Krumhansl-Kessler key profiles (C major, C minor); the other keys are rotations.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass
class Piece:
    """The notes of one exported piece as pretty_midi reads them."""

    start: np.ndarray
    end: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray

    @property
    def duration(self) -> np.ndarray:
        return self.end - self.start

    def __len__(self) -> int:
        return len(self.pitch)


def read_back(ids: Sequence[int], vocab: object, max_note_s: float | None) -> Piece:
    """Export ``ids`` as chargen writes a file (held-note cap ``max_note_s``) and read it with pretty_midi."""
    import pretty_midi

    from chargen.errors import ChargenError

    buffer = io.BytesIO()
    try:
        decode_to_midi(ids, vocab=vocab, max_note_s=max_note_s).save(file=buffer)  # type: ignore[arg-type]
    except ChargenError:  # no notes
        empty = np.zeros(0)
        return Piece(empty, empty, empty, empty)
    buffer.seek(0)
    with warnings.catch_warnings():  # pretty_midi warns about meta events it does not need
        warnings.simplefilter("ignore")
        read = [n for inst in pretty_midi.PrettyMIDI(buffer).instruments if not inst.is_drum for n in inst.notes]
    return Piece(*(np.array([getattr(n, name) for n in read], dtype=float)
                   for name in ("start", "end", "pitch", "velocity")))


def sounding_time(piece: Piece) -> float:
    """Seconds during which at least one note sounds (the union of the notes' intervals)."""
    if not len(piece):
        return 0.0
    times = np.concatenate([piece.start, piece.end])
    change = np.concatenate([np.ones(len(piece)), -np.ones(len(piece))])
    order = np.lexsort((change, times))  # at one time, ends (-1) before starts
    times, running = times[order], np.cumsum(change[order])
    return float(np.sum(np.diff(times)[running[:-1] > 0]))


def tonic(histogram: np.ndarray) -> int:
    """The tonic pitch class of a pitch-class histogram (Krumhansl-Schmuckler key finding)."""
    best, best_r = 0, -np.inf
    for key in range(12):
        rotated = np.roll(histogram, -key)
        for profile in (_MAJOR, _MINOR):
            r = np.corrcoef(rotated, profile)[0, 1] if rotated.std() > 0 else -np.inf
            if r > best_r:
                best, best_r = key, r
    return best


def pitch_class_profile(piece: Piece) -> np.ndarray:
    """Duration-weighted pitch-class histogram summing to 1, rotated so that its tonic is class 0."""
    histogram = np.bincount(piece.pitch.astype(np.int64) % 12, weights=piece.duration, minlength=12)
    total = histogram.sum()
    if total <= 0:
        return np.zeros(12)
    return np.roll(histogram / total, -tonic(histogram))


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(p - q).sum())


@dataclass
class Summary:
    """The pieces of one setting, reduced to what its statistics need (so a bootstrap resamples rows)."""

    pieces: list[Piece]

    def __post_init__(self) -> None:
        self.pieces = [p for p in self.pieces if len(p)]
        self.profiles = np.array([pitch_class_profile(p) for p in self.pieces]).reshape(-1, 12)
        self.sounding = np.array([sounding_time(p) for p in self.pieces])
        self.span = np.array([float(p.end.max()) for p in self.pieces])

    def statistics(self, corpus_profile: np.ndarray | None, rows: np.ndarray | None = None) -> dict[str, float]:
        """Every statistic over the pieces ``rows`` (all by default); NaN where there are no notes."""
        chosen = np.arange(len(self.pieces)) if rows is None else rows
        pieces = [self.pieces[i] for i in chosen]
        if not pieces:
            return dict.fromkeys(STATISTICS, float("nan"))
        pitch = np.concatenate([p.pitch for p in pieces])
        duration = np.concatenate([p.duration for p in pieces])
        onsets = [np.unique(p.start) for p in pieces]
        gaps = np.concatenate([np.diff(o) for o in onsets])
        q5, q95 = np.percentile(pitch, [5, 95])
        q25, median, q75 = np.percentile(duration, [25, 50, 75])
        profile = self.profiles[chosen].mean(axis=0)
        return {
            "polyphony": float(duration.sum() / self.sounding[chosen].sum()),
            "pitch_mean": float(pitch.mean()),
            "pitch_sd": float(pitch.std()),
            "pitch_range": float(q95 - q5),
            "median": float(median),
            "iqr": float(q75 - q25),
            "ioi": float(np.median(gaps)) if gaps.size else float("nan"),
            "per_s": float(len(pitch) / self.span[chosen].sum()),
            "velocity": float(np.concatenate([p.velocity for p in pieces]).mean()),
            "pcp": total_variation(profile, corpus_profile) if corpus_profile is not None else 0.0,
        }

    def profile(self) -> np.ndarray:
        return self.profiles.mean(axis=0) if len(self.pieces) else np.zeros(12)

    def resample(self, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, len(self.pieces), len(self.pieces))


@dataclass
class Figure:
    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def bootstrap(summary: Summary, corpus_profile: np.ndarray | None, seed: int = 0,
              rounds: int = BOOTSTRAP) -> dict[str, Figure]:
    """Each statistic with its 95 % percentile-bootstrap interval over pieces."""
    point = summary.statistics(corpus_profile)
    if not summary.pieces:
        return {k: Figure(v, v, v) for k, v in point.items()}
    rng = np.random.default_rng(seed)
    draws = [summary.statistics(corpus_profile, summary.resample(rng)) for _ in range(rounds)]
    out = {}
    for key, value in point.items():
        column = np.array([d[key] for d in draws])
        column = column[np.isfinite(column)]
        low, high = np.percentile(column, [2.5, 97.5]) if column.size else (np.nan, np.nan)
        out[key] = Figure(value, float(low), float(high))
    return out


def further_than(summary: Summary, other: Summary, corpus: Summary, corpus_profile: np.ndarray, seed: int = 0,
                 rounds: int = BOOTSTRAP) -> tuple[dict[str, bool], dict[str, float]]:
    """Per statistic: is ``summary`` further from the corpus than ``other``, beyond the 95 % interval?

    The bootstrap resamples the pieces of all three settings independently and
    takes the difference of the two distances to the corpus's figure; True
    where that difference's interval lies wholly above 0 (its 2.5th percentile).
    Also each difference standardised (bootstrap mean over its sd), for tests
    that must hold across many statistics at once (:data:`FAMILY_Z`).
    """
    if not summary.pieces or not other.pieces:
        return dict.fromkeys(STATISTICS, False), dict.fromkeys(STATISTICS, 0.0)
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {k: [] for k in STATISTICS}
    distance: Callable[[float, float], float] = lambda a, c: abs(a - c)  # noqa: E731
    for _ in range(rounds):
        ref = corpus.statistics(corpus_profile, corpus.resample(rng))
        mine = summary.statistics(corpus_profile, summary.resample(rng))
        theirs = other.statistics(corpus_profile, other.resample(rng))
        for key in STATISTICS:
            target = 0.0 if key == "pcp" else ref[key]
            diffs[key].append(distance(mine[key], target) - distance(theirs[key], target))
    out, z = {}, {}
    for key, values in diffs.items():
        column = np.array(values)
        column = column[np.isfinite(column)]
        out[key] = bool(column.size and np.percentile(column, 2.5) > 0)
        spread = float(column.std()) if column.size else 0.0
        z[key] = float(column.mean() / spread) if spread > 0 else (np.inf if column.size and column.mean() > 0 else 0.0)
    return out, z
