"""Per-sequence decoding constraints: their shape, their bans as a batch, and several as one.

A constraint follows one sequence (``push`` each token) and says which tokens
may not come next (``banned``); beam search ``fork``s it for each extra child
of a beam. :class:`chargen.sampling.NgramBlocker` (a preference: do not
repeat) and :class:`chargen.codecs.midi.grammar.MidiGrammar` (a rule: what is
playable) both have this shape. A decoder masks the bans with -inf before it
draws, takes the argmax or ranks beams, and reports the model's own
log-probability of what it chose (the unmasked distribution's), as it does
for the n-gram block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class TokenConstraint(Protocol):
    """What a decoder needs of a per-sequence constraint."""

    def push(self, token: int) -> tuple[int, ...]: ...  # add a token; returns banned()

    def banned(self) -> tuple[int, ...]: ...

    def fork(self) -> TokenConstraint: ...


def ban_lists(constraints: Sequence[TokenConstraint]) -> tuple[list[int], list[int]]:
    """The bans of a batch of constraints as (rows, columns), for ``scores[rows, cols] = -inf``."""
    rows: list[int] = []
    cols: list[int] = []
    for row, constraint in enumerate(constraints):
        banned = constraint.banned()
        rows.extend([row] * len(banned))
        cols.extend(banned)
    return rows, cols


def ban_mask(constraints: Sequence[TokenConstraint], vocab_size: int) -> np.ndarray:
    """The bans of a batch of constraints as a new boolean [B, V] array (True = banned).

    ``torch.from_numpy(mask)`` shares its memory, for ``logits.masked_fill``.
    Constraints with a ``banned_row()`` (a cached [V] row, as MidiGrammar has)
    are stacked from it; others are filled from ``banned()``.
    """
    row_makers = [getattr(c, "banned_row", None) for c in constraints]
    cached = [make for make in row_makers if callable(make)]
    if constraints and len(cached) == len(constraints):
        stacked = np.stack([make() for make in cached])
        if stacked.shape[1] == vocab_size:
            return stacked
    mask = np.zeros((len(constraints), vocab_size), dtype=bool)
    rows, cols = ban_lists(constraints)
    mask[rows, cols] = True
    return mask


class Constraints:
    """Rules and preferences on one sequence as one constraint (for ``advance_beams`` and the like).

    ``banned()`` is the union of everything banned, except where that would
    leave no token at all: then the preferences yield and only the rules'
    bans stand (as a lone n-gram block that bans everything yields today).
    Rules must never ban everything themselves (MidiGrammar never does).
    """

    __slots__ = ("rules", "preferences", "vocab_size")

    def __init__(self, rules: Sequence[TokenConstraint], preferences: Sequence[TokenConstraint], vocab_size: int):
        self.rules = list(rules)
        self.preferences = list(preferences)
        self.vocab_size = vocab_size

    def push(self, token: int) -> tuple[int, ...]:
        for part in self.rules:
            part.push(token)
        for part in self.preferences:
            part.push(token)
        return self.banned()

    def banned(self) -> tuple[int, ...]:
        required = {t for part in self.rules for t in part.banned()}
        wished = {t for part in self.preferences for t in part.banned()} - required
        if len(required) + len(wished) >= self.vocab_size:
            wished = set()
        return tuple(sorted(required | wished))

    def fork(self) -> Constraints:
        return Constraints([p.fork() for p in self.rules], [p.fork() for p in self.preferences], self.vocab_size)
