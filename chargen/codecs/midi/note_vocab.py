"""The note vocabulary (codec ``midi-notes``): each note is one PITCH and its DURATION, so none can be left on.

With the default settings there are 460 tokens, in this id order:

====================  =====  ================================================
kind                  count  meaning
====================  =====  ================================================
PITCH 0..127            128  a note of pitch p starts now, at the current velocity
DURATION 1..200         200  the note just started lasts n x 10 ms (10 ms .. 2 s)
TIME_SHIFT 1..100       100  advance the clock by n x 10 ms (10 ms .. 1 s)
VELOCITY 0..31           32  velocity bin for the following PITCHes
====================  =====  ================================================

A note is ``[VELOCITY] PITCH DURATION...``: a VELOCITY only where the bin
changes, right before its PITCH; a note longer than the longest DURATION takes
several, which add up (the longest first). Time moves only by TIME_SHIFTs
between onsets, and after the last onset to the end of the last note (so
that pieces concatenated into a corpus follow one another, as in the event
codec); notes starting on one step come by ascending pitch. The notes
are the same canonical notes as the event codec's (:func:`chargen.codecs.midi.normalize_notes`),
on the same 10 ms grid and velocity bins, so both codecs read a file as the
same notes and encode -> decode -> encode is the identity.

Decoding accepts any stream: the DURATIONs right after a PITCH add up to its
length; a PITCH without one lasts one step; a DURATION anywhere else is
ignored; NOTE_ONs before any VELOCITY use the bin of velocity 64.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from chargen.codecs.midi.notes import normalize_notes
from chargen.codecs.midi.vocab import Note, TimedVocab
from chargen.errors import ChargenError

_PITCHES = 128


@dataclass(frozen=True)
class NoteVocab(TimedVocab):
    """The note vocabulary; fixed entirely by these settings, never by data."""

    step_ms: int = 10
    max_shift_steps: int = 100
    max_duration_steps: int = 200
    velocity_bins: int = 32

    def __post_init__(self) -> None:
        self.check_settings((("step_ms", 1, 1000), ("max_shift_steps", 1, 1000), ("max_duration_steps", 1, 1000),
                             ("velocity_bins", 1, 127)))

    # Id layout: PITCH 0..127, DURATION, TIME_SHIFT, VELOCITY.
    @property
    def duration_base(self) -> int:
        return _PITCHES

    @property
    def shift_base(self) -> int:
        return _PITCHES + self.max_duration_steps

    @property
    def velocity_base(self) -> int:
        return self.shift_base + self.max_shift_steps

    @property
    def size(self) -> int:
        return self.velocity_base + self.velocity_bins



DEFAULT_NOTE_VOCAB = NoteVocab()


def _runs(total: int, longest: int) -> list[int]:
    """``total`` steps as the fewest steps of at most ``longest``, the longest first."""
    return [longest] * (total // longest) + ([total % longest] if total % longest else [])


def notes_to_note_ids(notes: Iterable[Note], vocab: NoteVocab = DEFAULT_NOTE_VOCAB) -> list[int]:
    """Token ids of notes (normalized first, so the result is canonical)."""
    ids: list[int] = []
    now, velocity, last_end = 0, -1, 0
    for note in normalize_notes(notes):  # by (start, pitch)
        ids.extend(vocab.shift_base - 1 + n for n in _runs(note.start - now, vocab.max_shift_steps))
        now = note.start
        if note.velocity != velocity:
            ids.append(vocab.velocity_base + note.velocity)
            velocity = note.velocity
        ids.append(note.pitch)
        ids.extend(vocab.duration_base - 1 + n for n in _runs(note.end - note.start, vocab.max_duration_steps))
        last_end = max(last_end, note.end)
    # The stream ends where its last note does, so that pieces concatenated into a corpus follow one
    # another as they do in the event codec, instead of the next starting under the last one's tail.
    ids.extend(vocab.shift_base - 1 + n for n in _runs(last_end - now, vocab.max_shift_steps))
    return ids


def check_ids(ids: Sequence[int] | np.ndarray, size: int) -> list[int]:
    values = np.asarray(ids, dtype=np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() >= size):
        bad = int(values[(values < 0) | (values >= size)][0])
        raise ChargenError(f"token id {bad} is outside the MIDI vocabulary (0..{size - 1})")
    return values.tolist()


def note_ids_to_notes(ids: Sequence[int] | np.ndarray, vocab: NoteVocab = DEFAULT_NOTE_VOCAB) -> list[Note]:
    """Normalized notes of any token stream (see the module docstring for how a malformed one reads)."""
    notes: list[Note] = []
    now = 0
    velocity = vocab.velocity_bin(64)
    pending: list[int] | None = None  # [pitch, start, steps, bin] of the note whose DURATIONs may follow
    dur_base, shift_base, vel_base = vocab.duration_base, vocab.shift_base, vocab.velocity_base
    for token in check_ids(ids, vocab.size):
        if dur_base <= token < shift_base:
            if pending is not None:
                pending[2] += token - dur_base + 1
            continue
        if pending is not None:
            notes.append(Note(pending[0], pending[1], pending[1] + max(1, pending[2]), pending[3]))
            pending = None
        if token < dur_base:
            pending = [token, now, 0, velocity]
        elif token < vel_base:
            now += token - shift_base + 1
        else:
            velocity = token - vel_base
    if pending is not None:
        notes.append(Note(pending[0], pending[1], pending[1] + max(1, pending[2]), pending[3]))
    return normalize_notes(notes)


def note_token_name(token: int, vocab: NoteVocab = DEFAULT_NOTE_VOCAB) -> str:
    """Readable name of one id: ``p60``, ``d500ms``, ``+120ms``, ``v20``."""
    if not 0 <= token < vocab.size:
        raise ChargenError(f"token id {token} is outside the MIDI vocabulary (0..{vocab.size - 1})")
    if token < vocab.duration_base:
        return f"p{token}"
    if token < vocab.shift_base:
        return f"d{(token - vocab.duration_base + 1) * vocab.step_ms}ms"
    if token < vocab.velocity_base:
        return f"+{(token - vocab.shift_base + 1) * vocab.step_ms}ms"
    return f"v{token - vocab.velocity_base}"
