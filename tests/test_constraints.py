"""chargen.sampling.constraints: rules and preferences as one constraint, and batch bans."""

from __future__ import annotations

import numpy as np

from chargen.codecs.midi import DEFAULT_VOCAB
from chargen.codecs.midi.grammar import MidiGrammar
from chargen.sampling import NgramBlocker, advance_beams
from chargen.sampling.constraints import Constraints, ban_mask

V = DEFAULT_VOCAB
ON, OFF, SHIFT = 0, V.note_off_base, V.shift_base


def test_bans_are_the_union_of_rules_and_preferences() -> None:
    history = [ON + 60, SHIFT, OFF + 60, ON + 60, SHIFT]
    both = Constraints([MidiGrammar(2, history)], [NgramBlocker(3, history)], V.size)
    grammar_bans = set(MidiGrammar(2, history).banned())
    assert OFF + 60 not in grammar_bans  # the grammar allows the release ...
    assert set(both.banned()) == grammar_bans | {OFF + 60}  # ... the 3-gram "60 +10ms off60" may not repeat


def test_preferences_yield_where_everything_would_be_banned() -> None:
    grammar = MidiGrammar(1, [ON + 60, SHIFT])
    everything = NgramBlocker(1, list(range(V.size)))  # a unigram block: every token has been seen
    assert len(set(everything.banned())) == V.size
    both = Constraints([grammar], [everything], V.size)
    assert both.banned() == tuple(sorted(grammar.banned()))


def test_forks_through_advance_beams_keep_each_child_its_own_state() -> None:
    parent = Constraints([MidiGrammar(1, [ON + 60, SHIFT])], [NgramBlocker(4, [])], V.size)
    children, rows, cols = advance_beams([parent, parent], [0, 0], [OFF + 60, SHIFT], V.size)
    assert children[0] is parent and children[1] is not parent
    mask = ban_mask(children, V.size)
    assert sorted(zip(rows, cols)) == sorted(zip(*np.nonzero(mask)))  # advance_beams's bans are the mask's
    assert not mask[0, ON + 62] and mask[1, ON + 62]  # released in one child, still at the cap in the other
