"""The MIDI event grammar as a per-sequence decoding constraint (its limits are learnt: :mod:`.texture`).

A model trained on performance events (:mod:`chargen.codecs.midi`) can emit
events that make no sense as music: a NOTE_OFF for a key that is not down, or
ever more NOTE_ONs without their NOTE_OFFs, until the export's held-note cap
ends them (sampled chorales pile up 7.5 notes where the corpus has 4).
:class:`MidiGrammar` follows one sequence and says which tokens may not come
next; it has the shape of :class:`chargen.sampling.NgramBlocker`
(``push``/``banned``/``fork``: :class:`chargen.sampling.constraints.TokenConstraint`),
so a decoder applies it the same way for sampling, greedy and beam search.

The rules. The first two match what every encoded corpus file already does
(see "Canonical form" in :mod:`chargen.codecs.midi`), so they never forbid
anything the model learnt from data; the cap, at the corpus's 99th
percentile of simultaneous notes over time, is what the corpus itself stays
within 99 % of the time it sounds.

* NOTE_OFF p only while p sounds, and not in the step p started in (no TIME_SHIFT
  since its NOTE_ON): every encoded note lasts at least one step; the export
  would stretch a zero-length note to a one-step blip. (Such a note, from a
  prime, still counts toward the cap until the step ends, as it sounds then.)
* No NOTE_ON p while p sounds. A re-strike is spelled as the corpus spells it:
  NOTE_OFF p then NOTE_ON p, in the same step if need be (allowed: p is then
  silent). A second NOTE_ON would otherwise mean an implicit cut, which the
  encoder never writes.
* With a cap ``cap`` > 0: no NOTE_ON while ``cap`` pitches sound. 0 = no cap.
* A VELOCITY only where a NOTE_ON may follow, and then a NOTE_ON: not at the
  cap, not right after another VELOCITY, and after one nothing but a NOTE_ON
  (the encoder writes a VELOCITY only just before the NOTE_ON it sets, never
  two in a row). Without this a model at the cap, wanting a NOTE_ON, wrote
  VELOCITY after VELOCITY (hundreds in a row; BENCHMARKS.md, "Music quality"):
  no time passed, so no held note ever came due.
* TIME_SHIFT is always allowed (but see ``max_hold``, and a VELOCITY's NOTE_ON),
  so the allowed set is never empty.
* Optional, off by default: with ``max_hold`` > 0 (steps), no note sounds longer
  than that. A TIME_SHIFT that would carry the longest-held note past it is
  banned; once it is due, so is every event but a NOTE_OFF (the due note's is
  always allowed: it started at least one step ago), so the model must end a
  note before anything else happens. Set to at most the export's held-note
  cap (``max_note_s`` in steps; the decoder's default is the corpus's 99th
  percentile of note length, capped there), the model picks the note to
  release instead of the export cutting notes it forgot. (Letting a NOTE_ON under the cap through
  as well, as a first version did, kept a forgetful model's polyphony near the
  cap: it started notes instead of releasing; BENCHMARKS.md, "Music quality".)

Tokens pushed that break a rule (a prime is not checked, and a decoder may
push anything) update the state the way :func:`chargen.codecs.midi.ids_to_notes`
reads them (a stray NOTE_OFF is ignored, a repeated NOTE_ON restarts the
note), so the state always mirrors what the export will write.

State is three 128-bit Python ints (and, for ``max_hold``, a clock and a
tuple of the sounding notes' onsets): immutable, so ``fork`` copies a few
references, whatever the sequence length. ``banned()`` is one cached lookup.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

from chargen.codecs.midi.texture import (
    CAP_CHUNK,
    CAP_PERCENTILE,
    corpus_polyphony_cap,
    onset_polyphony_counts,
    polyphony_cap,
)
from chargen.codecs.midi.vocab import DEFAULT_VOCAB, MidiVocab

__all__ = ["ALL_RULES", "CAP_CHUNK", "CAP_PERCENTILE", "RULES", "MidiGrammar", "corpus_polyphony_cap",
           "onset_polyphony_counts", "polyphony_cap"]

_PITCHES = 128


#: The rules a grammar can apply beside its two limits (the cap and the longest hold, on when > 0):
#: "offs" (a NOTE_OFF only for a pitch that sounds, not in its first step), "restrike" (no NOTE_ON of a
#: sounding pitch), "velocity" (a VELOCITY only right before a NOTE_ON).
RULES = ("offs", "restrike", "velocity")
ALL_RULES = frozenset(RULES)


@functools.lru_cache(maxsize=8192)
def _banned_ids(vocab: MidiVocab, sounding: int, fresh: int, full: bool, room: int,
                after_velocity: bool = False, rules: frozenset[str] = ALL_RULES) -> tuple[int, ...]:
    """Banned ids for one state (pure, so cached: a piece revisits few states).

    ``full``: at the polyphony cap. ``room``: steps the longest-held note may
    still sound (``max_shift_steps`` or more: no limit; 0: it must end now).
    ``after_velocity``: the last token was a VELOCITY. ``rules``: which of
    :data:`RULES` apply.
    """
    offs_allowed = sounding & ~fresh
    due = room <= 0  # a note must end now: only a NOTE_OFF may come, no new note, nothing that lets time pass
    no_note_on = full or due or ("restrike" in rules and sounding == (1 << _PITCHES) - 1)
    if no_note_on:
        banned = list(range(_PITCHES))
    else:
        banned = [p for p in range(_PITCHES) if sounding >> p & 1] if "restrike" in rules else []
    velocity = "velocity" in rules
    if velocity and after_velocity and not no_note_on:  # the VELOCITY's NOTE_ON, nothing else
        return tuple(banned + list(range(vocab.note_off_base, vocab.size)))
    if "offs" in rules or due:  # a due note's release is the only way on: never a NOTE_OFF that ends nothing
        banned += [vocab.note_off_base + p for p in range(_PITCHES) if not offs_allowed >> p & 1]
    if due:
        banned += range(vocab.shift_base, vocab.size)
    else:
        if room < vocab.max_shift_steps:
            banned += range(vocab.shift_base + room, vocab.velocity_base)  # TIME_SHIFT n has id shift_base + n - 1
        if velocity and (no_note_on or after_velocity):  # a VELOCITY only where its NOTE_ON may follow
            banned += range(vocab.velocity_base, vocab.size)
    return tuple(banned)


@functools.lru_cache(maxsize=8192)
def _banned_row(vocab: MidiVocab, sounding: int, fresh: int, full: bool, room: int,
                after_velocity: bool = False, rules: frozenset[str] = ALL_RULES) -> np.ndarray:
    """``_banned_ids`` as a read-only boolean row of the vocabulary (True = banned), for masks."""
    row = np.zeros(vocab.size, dtype=bool)
    row[list(_banned_ids(vocab, sounding, fresh, full, room, after_velocity, rules))] = True
    row.flags.writeable = False
    return row



def checked_rules(cap: int, max_hold: int, rules: Iterable[str], known: frozenset[str], what: str) -> frozenset[str]:
    """A grammar's rules, after ValueError for a negative cap or hold or a rule ``known`` lacks (both grammars)."""
    if cap < 0:
        raise ValueError(f"polyphony cap must be >= 0 (0 = off), not {cap}")
    if max_hold < 0:
        raise ValueError(f"longest hold must be >= 0 steps (0 = off), not {max_hold}")
    chosen = frozenset(rules)
    if not chosen <= known:
        raise ValueError(f"unknown {what} rule(s): {', '.join(sorted(chosen - known))}")
    return chosen

class MidiGrammar:
    """Which MIDI events may come next in one sequence (see the module docstring for the rules)."""

    __slots__ = ("cap", "max_hold", "vocab", "rules", "sounding", "fresh", "lingering", "now", "onsets",
                 "after_velocity")

    def __init__(self, cap: int, history: Iterable[int] = (), vocab: MidiVocab = DEFAULT_VOCAB,
                 max_hold: int = 0, rules: Iterable[str] = ALL_RULES):
        self.rules = checked_rules(cap, max_hold, rules, ALL_RULES, "MIDI grammar")
        self.cap = cap
        self.max_hold = max_hold
        self.vocab = vocab
        self.sounding = 0  # bit p: pitch p sounds
        self.fresh = 0  # bit p: p's NOTE_ON came after the last TIME_SHIFT
        self.lingering = 0  # bit p: p ended in the step it began; the export keeps it for that step
        self.now = 0  # steps since the start of the history
        self.onsets: tuple[tuple[int, int], ...] = ()  # (pitch, start step) of sounding notes, oldest first
        self.after_velocity = False  # the last token was a VELOCITY: its NOTE_ON comes next
        for token in history:
            self.push(token)

    @property
    def polyphony(self) -> int:
        """Notes sounding in the current step, as the export will write them."""
        return (self.sounding | self.lingering).bit_count()

    def push(self, token: int) -> tuple[int, ...]:
        """Add ``token``; returns what is banned next (``banned()``)."""
        vocab = self.vocab
        self.after_velocity = token >= vocab.velocity_base
        if token < vocab.note_off_base:  # NOTE_ON
            bit = 1 << token
            if self.max_hold:  # a restart (from a prime) counts from now
                self.onsets = tuple(o for o in self.onsets if o[0] != token) + ((token, self.now),)
            self.sounding |= bit
            self.fresh |= bit
        elif token < vocab.shift_base:  # NOTE_OFF
            pitch = token - vocab.note_off_base
            bit = 1 << pitch
            if self.sounding & bit:
                self.sounding &= ~bit
                if self.max_hold:
                    self.onsets = tuple(o for o in self.onsets if o[0] != pitch)
                if self.fresh & bit:
                    self.lingering |= bit
                    self.fresh &= ~bit
        elif token < vocab.velocity_base:  # TIME_SHIFT: a new step
            self.now += token - vocab.shift_base + 1
            self.fresh = 0
            self.lingering = 0
        return self.banned()

    def _key(self) -> tuple[MidiVocab, int, int, bool, int, bool, frozenset[str]]:
        full = self.cap > 0 and self.polyphony >= self.cap
        room = self.vocab.max_shift_steps
        if self.max_hold and self.onsets:
            room = max(0, min(room, self.onsets[0][1] + self.max_hold - self.now))
        return self.vocab, self.sounding, self.fresh, full, room, self.after_velocity, self.rules

    def banned(self) -> tuple[int, ...]:
        return _banned_ids(*self._key())

    def banned_row(self) -> np.ndarray:
        """``banned()`` as a read-only boolean [V] row (True = banned); cached like ``banned()``.

        Read-only because it is shared: ``torch.from_numpy`` wants a copy
        (:func:`chargen.sampling.constraints.ban_mask` makes one).
        """
        return _banned_row(*self._key())

    def allows(self, token: int) -> bool:
        return token not in self.banned()

    def fork(self) -> MidiGrammar:
        twin = MidiGrammar.__new__(MidiGrammar)
        twin.cap, twin.max_hold, twin.vocab, twin.rules = self.cap, self.max_hold, self.vocab, self.rules
        twin.sounding, twin.fresh, twin.lingering = self.sounding, self.fresh, self.lingering
        twin.now, twin.onsets = self.now, self.onsets  # all immutable: shared until either changes them
        twin.after_velocity = self.after_velocity
        return twin
