"""What a corpus teaches the MIDI grammar: its polyphony cap and its longest hold.

The grammar (:mod:`chargen.codecs.midi.grammar`) limits a sequence by two numbers,
both learnt from the training corpus's encoded stream and stored with the
weights (``training["polyphony_cap"]``, ``training["max_hold_s"]``):

* the polyphony cap, the 99th percentile of the number of notes sounding,
  weighted by time (over the time at least one note sounds): the corpus spends
  99 % of its sounding time at the cap or below. The first version took the
  percentile over note onsets; a dense chord then counts once per note it
  starts, however briefly it is held, which put the shared MIDI folder's cap
  at 12 where its time-weighted 99th percentile is 11 (BENCHMARKS.md,
  "Music quality"). Checkpoints that stored the onset cap keep it.
* the longest hold, the 99th percentile of note length, clamped to
  [``HOLD_FLOOR_S``, the export's held-note cap]: no sampled note outlasts
  all but 1 % of the corpus's own, and none is ever cut by the export.

One vectorised pass per chunk (a memory-mapped ``tokens.npy`` is never read
whole) reads the stream as :func:`chargen.codecs.midi.ids_to_notes` does: each note
event changes its pitch's state from that of the pitch's previous event
(carried across chunks), so the number sounding is a cumulative sum of those
changes; a stray NOTE_OFF changes nothing, a repeated NOTE_ON ends the note
and starts another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chargen.codecs.midi.export import DEFAULT_MAX_NOTE_S
from chargen.codecs.midi.streams import stream_notes
from chargen.codecs.midi.vocab import DEFAULT_VOCAB, MidiVocab, MusicVocab, Note

#: The percentile of the corpus's (time-weighted) polyphony taken as the default cap.
CAP_PERCENTILE = 99.0
#: The percentile of the corpus's note lengths taken as the longest hold.
HOLD_PERCENTILE = 99.0
#: The shortest learnt hold (seconds): a staccato corpus still lets a note ring a while.
HOLD_FLOOR_S = 1.0
#: Tokens per pass (bounded memory on a memory-mapped corpus).
CAP_CHUNK = 1 << 22
#: Note lengths are counted in steps up to this many (longer ones count as this long).
_LENGTH_BINS = 1 << 16
_PITCHES = 128


@dataclass(frozen=True)
class Texture:
    """Histograms of one token stream: polyphony at onsets, time at each polyphony, note lengths."""

    onsets: np.ndarray  # [129]: NOTE_ONs after which k notes sound
    time: np.ndarray  # [129]: time steps during which k notes sound
    lengths: np.ndarray  # [_LENGTH_BINS]: notes lasting n steps (ended notes only)
    pitches: np.ndarray  # [128]: NOTE_ONs of each pitch


def notes_texture(notes: Sequence[Note]) -> Texture:
    """The :class:`Texture` of decoded notes (the note codec's streams, whose notes carry their lengths)."""
    onsets = np.zeros(_PITCHES + 1, dtype=np.int64)
    time = np.zeros(_PITCHES + 1, dtype=np.int64)
    lengths = np.zeros(_LENGTH_BINS, dtype=np.int64)
    if not notes:
        return Texture(onsets, time, lengths, np.zeros(_PITCHES, dtype=np.int64))
    table = np.array([(n.start, n.end) for n in notes], dtype=np.int64)
    pitches = np.bincount([n.pitch for n in notes], minlength=_PITCHES).astype(np.int64)
    lengths += np.bincount(np.minimum(table[:, 1] - table[:, 0], _LENGTH_BINS - 1), minlength=_LENGTH_BINS)
    times = np.concatenate([table[:, 0], table[:, 1]])
    change = np.concatenate([np.ones(len(table), np.int64), -np.ones(len(table), np.int64)])
    order = np.lexsort((change, times))  # at one step, ends before starts
    times, change = times[order], change[order]
    running = np.cumsum(change)  # sounding after each event
    onsets += np.bincount(running[change > 0], minlength=_PITCHES + 1)[: _PITCHES + 1]
    time += np.bincount(running[:-1], weights=np.diff(times), minlength=_PITCHES + 1)[: _PITCHES + 1].astype(np.int64)
    return Texture(onsets, time, lengths, pitches)


def texture(ids: np.ndarray | Sequence[int], vocab: MusicVocab = DEFAULT_VOCAB, chunk: int = CAP_CHUNK) -> Texture:
    """The :class:`Texture` of ``ids`` (see the module docstring for how it is read)."""
    if not isinstance(vocab, MidiVocab):  # the note codec: decoded, since each note gives its own length
        return notes_texture(stream_notes(np.asarray(ids), vocab))
    tokens = np.asarray(ids)
    state = np.zeros(_PITCHES, dtype=np.int8)  # 1 = sounding, after everything seen so far
    last_time = np.zeros(_PITCHES, dtype=np.int64)  # step of each pitch's last event (its onset while sounding)
    sounding, clock = 0, 0
    onsets = np.zeros(_PITCHES + 1, dtype=np.int64)
    time = np.zeros(_PITCHES + 1, dtype=np.int64)
    lengths = np.zeros(_LENGTH_BINS, dtype=np.int64)
    pitches = np.zeros(_PITCHES, dtype=np.int64)
    for begin in range(0, len(tokens), chunk):
        part = np.asarray(tokens[begin : begin + chunk], dtype=np.int64)
        is_shift = (part >= vocab.shift_base) & (part < vocab.velocity_base)
        steps = np.where(is_shift, part - vocab.shift_base + 1, 0)
        now = clock + np.cumsum(steps)  # the step each token happens in
        where = np.flatnonzero(part < vocab.shift_base)  # note events, in order
        delta_all = np.zeros(len(part), dtype=np.int64)
        if where.size:
            notes = part[where]
            is_on = (notes < vocab.note_off_base).astype(np.int8)
            pitch = (notes % vocab.note_off_base).astype(np.uint8)
            order = np.argsort(pitch, kind="stable")  # by pitch, in stream order within each (radix sort)
            by_pitch, on_sorted, at = pitch[order], is_on[order], now[where][order]
            first = np.ones(len(order), dtype=bool)
            first[1:] = by_pitch[1:] != by_pitch[:-1]
            before = np.empty_like(on_sorted)  # each event's pitch state before it
            before[1:] = on_sorted[:-1]
            before[first] = state[by_pitch[first]]
            since = np.empty_like(at)  # the step of the pitch's previous event: the onset, if it sounds
            since[1:] = at[:-1]
            since[first] = last_time[by_pitch[first]]
            ended = before.astype(bool)
            lengths += np.bincount(np.minimum(at[ended] - since[ended], _LENGTH_BINS - 1), minlength=_LENGTH_BINS)
            delta = np.empty(len(notes), dtype=np.int64)
            delta[order] = on_sorted.astype(np.int64) - before
            delta_all[where] = delta
            last = np.ones(len(order), dtype=bool)
            last[:-1] = first[1:]
            state[by_pitch[last]] = on_sorted[last]
            last_time[by_pitch[last]] = at[last]
        running = sounding + np.cumsum(delta_all)  # notes sounding after each token
        onsets += np.bincount(running[part < vocab.note_off_base], minlength=_PITCHES + 1)
        pitches += np.bincount(part[part < vocab.note_off_base], minlength=_PITCHES)
        time += np.bincount(running[is_shift], weights=steps[is_shift], minlength=_PITCHES + 1).astype(np.int64)
        if len(part):
            sounding, clock = int(running[-1]), int(now[-1])
    return Texture(onsets, time, lengths, pitches)


def _percentile_bin(hist: np.ndarray, percentile: float) -> int:
    """The smallest bin with at least ``percentile`` % of the histogram's mass at or below it."""
    return int(np.searchsorted(np.cumsum(hist), hist.sum() * percentile / 100.0 - 1e-9))


def onset_polyphony_counts(ids: np.ndarray | Sequence[int], vocab: MusicVocab = DEFAULT_VOCAB,
                           chunk: int = CAP_CHUNK) -> np.ndarray:
    """Histogram of polyphony at note onsets: ``counts[k]`` = NOTE_ONs after which k notes sound.

    A note ended in the step it began is not counted for the rest of that step
    (the encoder never writes one).
    """
    return texture(ids, vocab, chunk).onsets


def time_polyphony_counts(ids: np.ndarray | Sequence[int], vocab: MusicVocab = DEFAULT_VOCAB,
                          chunk: int = CAP_CHUNK) -> np.ndarray:
    """Histogram of polyphony over time: ``counts[k]`` = time steps during which k notes sound."""
    return texture(ids, vocab, chunk).time


def cap_of(found: Texture, percentile: float = CAP_PERCENTILE) -> int:
    """The polyphony cap of a :class:`Texture`: 0 (no cap) where no note sounds for any time."""
    sounding = found.time[1:]  # rests (nothing sounding) are not polyphony
    return 1 + _percentile_bin(sounding, percentile) if sounding.sum() else 0


def hold_of(found: Texture, vocab: MusicVocab = DEFAULT_VOCAB, percentile: float = HOLD_PERCENTILE) -> float:
    """The longest hold of a :class:`Texture` in seconds: the export's cap where no note ends."""
    if not found.lengths.sum():
        return DEFAULT_MAX_NOTE_S
    seconds = _percentile_bin(found.lengths, percentile) * vocab.step_s
    return round(min(max(seconds, HOLD_FLOOR_S), DEFAULT_MAX_NOTE_S), 6)


def polyphony_cap(ids: np.ndarray | Sequence[int], vocab: MusicVocab = DEFAULT_VOCAB,
                  percentile: float = CAP_PERCENTILE) -> int:
    """The corpus's polyphony cap: the ``percentile`` of simultaneous notes weighted by time.

    The smallest k such that at least ``percentile`` % of the time during
    which any note sounds has k or fewer sounding; 0 (no cap) for a stream
    without sounding notes.
    """
    return cap_of(texture(ids, vocab), percentile)


def hold_limit_s(ids: np.ndarray | Sequence[int], vocab: MusicVocab = DEFAULT_VOCAB,
                 percentile: float = HOLD_PERCENTILE) -> float:
    """The corpus's longest hold: the ``percentile`` of its note lengths, in [HOLD_FLOOR_S, the export's cap]."""
    return hold_of(texture(ids, vocab), vocab, percentile)


def statistics_of(found: Texture, vocab: MusicVocab = DEFAULT_VOCAB) -> dict[str, float | None]:
    """The corpus's own texture, as ``chargen info`` shows it beside the limits (None where there are no notes).

    polyphony: time-weighted mean of notes sounding while any sounds; median note length (s); notes per
    second of the whole stream; mean and standard deviation of pitch over notes.
    """
    sounding = found.time[1:]
    notes = int(found.pitches.sum())
    if not notes or not sounding.sum():
        return dict.fromkeys(("polyphony", "median_note_s", "notes_per_s", "pitch_mean", "pitch_sd"), None)
    levels = np.arange(1, len(found.time))
    keys = np.arange(_PITCHES)
    mean = float(found.pitches @ keys / notes)
    return {
        "polyphony": round(float(sounding @ levels / sounding.sum()), 3),
        "median_note_s": round(_percentile_bin(found.lengths, 50.0) * vocab.step_s, 3)
        if found.lengths.sum() else None,
        "notes_per_s": round(notes / (float(found.time.sum()) * vocab.step_s), 3),
        "pitch_mean": round(mean, 2),
        "pitch_sd": round(float(np.sqrt(found.pitches @ (keys - mean) ** 2 / notes)), 2),
    }


def corpus_texture(tokens_path: Path, vocab: MusicVocab = DEFAULT_VOCAB) -> Texture:
    """The :class:`Texture` of a run's encoded corpus (``tokens.npy``, memory-mapped)."""
    return texture(np.load(tokens_path, mmap_mode="r"), vocab)


def corpus_limits(tokens_path: Path, vocab: MusicVocab = DEFAULT_VOCAB) -> tuple[int, float]:
    """The polyphony cap and the longest hold (s) of a run's encoded corpus (``tokens.npy``, memory-mapped)."""
    found = texture(np.load(tokens_path, mmap_mode="r"), vocab)
    return cap_of(found), hold_of(found, vocab)


def corpus_polyphony_cap(tokens_path: Path, vocab: MusicVocab = DEFAULT_VOCAB) -> int:
    """:func:`polyphony_cap` of a run's encoded corpus (``tokens.npy``, memory-mapped)."""
    return corpus_limits(tokens_path, vocab)[0]
