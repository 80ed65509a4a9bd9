"""The note codec's grammar (``midi-notes``) as a per-sequence decoding constraint.

The shape of :class:`chargen.codecs.midi.grammar.MidiGrammar` (``push``/``banned``/
``fork``/``banned_row``), for streams of :mod:`chargen.codecs.midi.note_vocab`. A note
cannot be left on in this codec, so there is no NOTE_OFF rule; the rules
(:data:`NOTE_RULES`) are what every encoded file already does:

* "duration": after a PITCH only a DURATION, and a DURATION only right after
  its PITCH or after a DURATION of the longest length (a long note's next
  part). Without it, a PITCH the model gives no DURATION lasts one step.
* "velocity": after a VELOCITY only a PITCH, and a VELOCITY only where a PITCH
  may follow (not at the cap).
* "restrike": no PITCH p while a note of p sounds (its start cuts the earlier
  note short, which the encoder never writes).

And the two limits, learnt from the corpus like the event codec's:

* a polyphony cap ``cap`` > 0: no PITCH while ``cap`` notes sound;
* a longest hold ``max_hold`` > 0 (steps): no DURATION that makes a note longer.

TIME_SHIFT is allowed wherever a DURATION is not due, so the allowed set is
never empty. Tokens pushed that break a rule update the state the way
:func:`chargen.codecs.midi.note_vocab.note_ids_to_notes` reads them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

from chargen.codecs.midi.grammar import checked_rules
from chargen.codecs.midi.note_vocab import DEFAULT_NOTE_VOCAB, NoteVocab

NOTE_RULES = ("duration", "restrike", "velocity")
ALL_NOTE_RULES = frozenset(NOTE_RULES)
_PITCHES = 128
# What the last token was: what may follow depends on it. A DURATION right after a PITCH or a DURATION
# adds to that PITCH's note (as the decoder reads it); _LONG: one of the longest length, _SHORT: another.
_OTHER, _PITCH, _LONG, _SHORT, _VELOCITY = 0, 1, 2, 3, 4
_TAKING = (_PITCH, _LONG, _SHORT)  # a DURATION now would lengthen the current note


@functools.lru_cache(maxsize=8192)
def _banned_ids(vocab: NoteVocab, sounding: int, full: bool, after: int, room: int,
                rules: frozenset[str]) -> tuple[int, ...]:
    """Banned ids for one state (pure, so cached).

    ``sounding``: bit p set while a note of p sounds. ``full``: at the cap.
    ``room``: the longest DURATION the current note may still take (steps).
    """
    dur_base, shift_base = vocab.duration_base, vocab.shift_base
    no_pitch = full or ("restrike" in rules and sounding == (1 << _PITCHES) - 1)
    pitches = list(range(_PITCHES)) if no_pitch else \
        ([p for p in range(_PITCHES) if sounding >> p & 1] if "restrike" in rules else [])
    if "duration" in rules and after == _PITCH:  # its DURATION, nothing else
        allowed = range(dur_base, dur_base + max(1, min(room, vocab.max_duration_steps)))
        return tuple(t for t in range(vocab.size) if t not in allowed)
    if "velocity" in rules and after == _VELOCITY and not no_pitch:  # its PITCH, nothing else
        return tuple(pitches + list(range(dur_base, vocab.size)))
    banned = pitches
    if "duration" in rules:  # a DURATION only to go on from one of the longest, within the hold
        banned += range(dur_base + (room if after == _LONG else 0), shift_base)
    elif after in _TAKING and room < vocab.max_duration_steps:  # the longest hold, without the syntax rule
        banned += range(dur_base + room, shift_base)
    if "velocity" in rules and (no_pitch or after == _VELOCITY):
        banned += range(vocab.velocity_base, vocab.size)
    return tuple(banned)


@functools.lru_cache(maxsize=8192)
def _banned_row(vocab: NoteVocab, sounding: int, full: bool, after: int, room: int,
                rules: frozenset[str]) -> np.ndarray:
    row = np.zeros(vocab.size, dtype=bool)
    row[list(_banned_ids(vocab, sounding, full, after, room, rules))] = True
    row.flags.writeable = False
    return row


class NoteGrammar:
    """Which note-codec tokens may come next in one sequence (see the module docstring for the rules)."""

    __slots__ = ("cap", "max_hold", "vocab", "rules", "now", "notes", "current", "after")

    def __init__(self, cap: int, history: Iterable[int] = (), vocab: NoteVocab = DEFAULT_NOTE_VOCAB,
                 max_hold: int = 0, rules: Iterable[str] = ALL_NOTE_RULES):
        self.rules = checked_rules(cap, max_hold, rules, ALL_NOTE_RULES, "note grammar")
        self.cap, self.max_hold, self.vocab = cap, max_hold, vocab
        self.now = 0
        self.notes: tuple[tuple[int, int], ...] = ()  # (pitch, end step) of earlier notes still sounding
        self.current: tuple[int, int, int] | None = None  # (pitch, start, steps so far) of the note taking DURATIONs
        self.after = _OTHER
        for token in history:
            self.push(token)

    def _close(self) -> None:
        if self.current is not None:
            pitch, start, steps = self.current
            end = start + max(1, steps)
            # A later note of the same pitch cuts an earlier one (as the decoder's normal form does).
            self.notes = tuple(n for n in self.notes if n[0] != pitch) + ((pitch, end),)
            self.current = None

    def _sounding(self) -> list[tuple[int, int]]:
        notes = [n for n in self.notes if n[1] > self.now]
        if self.current is not None:
            pitch, start, steps = self.current
            notes = [n for n in notes if n[0] != pitch] + [(pitch, start + max(1, steps))]
        return notes

    @property
    def polyphony(self) -> int:
        """Notes sounding at the current step."""
        return len(self._sounding())

    def push(self, token: int) -> tuple[int, ...]:
        """Add ``token``; returns what is banned next (``banned()``)."""
        vocab = self.vocab
        if vocab.duration_base <= token < vocab.shift_base:
            if self.current is not None and self.after in _TAKING:
                n = token - vocab.duration_base + 1
                pitch, start, steps = self.current
                self.current = (pitch, start, steps + n)
                self.after = _LONG if n == vocab.max_duration_steps else _SHORT
            else:
                self.after = _OTHER  # a stray DURATION: ignored
            return self.banned()
        self._close()
        if token < vocab.duration_base:
            self.current = (token, self.now, 0)
            self.after = _PITCH
        elif token < vocab.velocity_base:
            self.now += token - vocab.shift_base + 1
            self.notes = tuple(n for n in self.notes if n[1] > self.now)
            self.after = _OTHER
        else:
            self.after = _VELOCITY
        return self.banned()

    def _key(self) -> tuple[NoteVocab, int, bool, int, int, frozenset[str]]:
        sounding = self._sounding()
        bits = 0
        for pitch, _ in sounding:
            bits |= 1 << pitch
        full = self.cap > 0 and len(sounding) >= self.cap
        room = self.vocab.max_duration_steps
        if self.current is not None and self.after in _TAKING and self.max_hold:
            room = max(0, min(room, self.max_hold - self.current[2]))
        return self.vocab, bits, full, self.after, room, self.rules

    def banned(self) -> tuple[int, ...]:
        return _banned_ids(*self._key())

    def banned_row(self) -> np.ndarray:
        """``banned()`` as a read-only boolean [V] row (True = banned), cached like ``banned()``."""
        return _banned_row(*self._key())

    def allows(self, token: int) -> bool:
        return token not in self.banned()

    def fork(self) -> NoteGrammar:
        twin = NoteGrammar.__new__(NoteGrammar)
        twin.cap, twin.max_hold, twin.vocab, twin.rules = self.cap, self.max_hold, self.vocab, self.rules
        twin.now, twin.notes, twin.current, twin.after = self.now, self.notes, self.current, self.after
        return twin
