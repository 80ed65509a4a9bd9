"""Notes <-> token ids, and readable views (names, stats) of a token stream."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import mido
import numpy as np

from chargen.codecs.midi.notes import midi_notes, normalize_notes
from chargen.codecs.midi.vocab import DEFAULT_VOCAB, MidiVocab, Note
from chargen.errors import ChargenError


def notes_to_ids(notes: Iterable[Note], vocab: MidiVocab = DEFAULT_VOCAB) -> list[int]:
    """Token ids of notes (normalized first, so the result is canonical)."""
    events: list[tuple[int, int, int, int]] = []
    for note in normalize_notes(notes):
        events.append((note.start, 1, note.pitch, note.velocity))
        events.append((note.end, 0, note.pitch, 0))
    events.sort()  # per step: offs (kind 0) before ons, each by pitch
    ids: list[int] = []
    now = 0
    velocity = -1
    shift_base = vocab.shift_base - 1  # TIME_SHIFT n has id shift_base + n
    for time, kind, pitch, vbin in events:
        gap = time - now
        while gap > 0:
            step = min(gap, vocab.max_shift_steps)
            ids.append(shift_base + step)
            gap -= step
        now = time
        if kind:
            if vbin != velocity:
                ids.append(vocab.velocity_base + vbin)
                velocity = vbin
            ids.append(pitch)
        else:
            ids.append(vocab.note_off_base + pitch)
    return ids


def _check_ids(ids: Sequence[int] | np.ndarray, vocab: MidiVocab) -> list[int]:
    values = np.asarray(ids, dtype=np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() >= vocab.size):
        bad = int(values[(values < 0) | (values >= vocab.size)][0])
        raise ChargenError(f"token id {bad} is outside the MIDI vocabulary (0..{vocab.size - 1})")
    return values.tolist()


def ids_to_notes(ids: Sequence[int] | np.ndarray, vocab: MidiVocab = DEFAULT_VOCAB) -> list[Note]:
    """Normalized notes of any token stream (a model's output need not be well formed).

    NOTE_OFF without an open note is dropped; a repeated NOTE_ON of a sounding
    pitch restarts it; notes still open at the end close when the stream ends
    (at least one step after they start). NOTE_ONs before any VELOCITY token
    use the bin of velocity 64.
    """
    values = _check_ids(ids, vocab)
    notes: list[Note] = []
    open_notes: dict[int, tuple[int, int]] = {}
    now = 0
    velocity = vocab.velocity_bin(64)
    off_base, shift_base, vel_base = vocab.note_off_base, vocab.shift_base, vocab.velocity_base
    for token in values:
        if token < off_base:
            started = open_notes.pop(token, None)
            if started is not None:
                notes.append(Note(token, started[0], now, started[1]))
            open_notes[token] = (now, velocity)
        elif token < shift_base:
            started = open_notes.pop(token - off_base, None)
            if started is not None:
                notes.append(Note(token - off_base, started[0], now, started[1]))
        elif token < vel_base:
            now += token - shift_base + 1
        else:
            velocity = token - vel_base
    for pitch, (start, vbin) in open_notes.items():
        notes.append(Note(pitch, start, now, vbin))
    return normalize_notes(notes)


def encode_midi(mid: mido.MidiFile, vocab: MidiVocab = DEFAULT_VOCAB) -> list[int]:
    """Token ids of a parsed MIDI file; empty when it has no (non-drum) notes."""
    return notes_to_ids(midi_notes(mid, vocab), vocab)


def token_name(token: int, vocab: MidiVocab = DEFAULT_VOCAB) -> str:
    """Readable name of one id: ``on60``, ``off60``, ``+120ms``, ``v20``."""
    if not 0 <= token < vocab.size:
        raise ChargenError(f"token id {token} is outside the MIDI vocabulary (0..{vocab.size - 1})")
    if token < vocab.note_off_base:
        return f"on{token}"
    if token < vocab.shift_base:
        return f"off{token - vocab.note_off_base}"
    if token < vocab.velocity_base:
        return f"+{(token - vocab.shift_base + 1) * vocab.step_ms}ms"
    return f"v{token - vocab.velocity_base}"


def describe(ids: Sequence[int] | np.ndarray, vocab: MidiVocab = DEFAULT_VOCAB) -> str:
    """Space-separated readable names of a token stream."""
    return " ".join(token_name(t, vocab) for t in _check_ids(ids, vocab))
