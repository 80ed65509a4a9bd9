"""The note codec's grammar: its rules one by one, and the structural property of anything decoded under it."""

from __future__ import annotations

import io
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chargen.codecs.midi import stream_notes
from chargen.codecs.midi.export import decode_to_midi
from chargen.codecs.midi.note_codec import NoteCodec
from chargen.codecs.midi.note_grammar import NOTE_RULES, NoteGrammar
from chargen.codecs.midi.note_vocab import DEFAULT_NOTE_VOCAB
from chargen.sampling.constraints import ban_lists, ban_mask
from tests.conftest import REPO

V = DEFAULT_NOTE_VOCAB
DUR, SHIFT, VEL = V.duration_base, V.shift_base, V.velocity_base
PITCHES, DURATIONS, SHIFTS, VELOCITIES = (set(range(lo, hi)) for lo, hi in
                                          ((0, DUR), (DUR, SHIFT), (SHIFT, VEL), (VEL, V.size)))
EVERYTHING = set(range(V.size))


def allowed(grammar: NoteGrammar) -> set[int]:
    return EVERYTHING - set(grammar.banned())


def test_a_pitch_takes_its_duration_and_a_duration_comes_only_after_its_pitch() -> None:
    grammar = NoteGrammar(0)
    assert not DURATIONS & allowed(grammar)  # nothing to give a length to
    grammar.push(60)
    assert allowed(grammar) == DURATIONS
    grammar.push(DUR + 49)
    assert not DURATIONS & allowed(grammar) and SHIFTS <= allowed(grammar)
    grammar.push(62)
    grammar.push(DUR + V.max_duration_steps - 1)  # the longest: the note may go on
    assert DURATIONS <= allowed(grammar)
    assert NoteGrammar(0, [60], rules=()).banned() == ()  # without the rule: anything


def test_velocity_only_right_before_a_pitch() -> None:
    grammar = NoteGrammar(0, [VEL + 5])
    assert allowed(grammar) == PITCHES
    grammar.push(60)
    grammar.push(DUR)
    assert VELOCITIES <= allowed(grammar)
    full = NoteGrammar(1, [60, DUR + 99])  # at the cap: no pitch may follow, so no velocity either
    assert not (VELOCITIES | PITCHES) & allowed(full)


def test_no_pitch_while_it_sounds_and_the_cap_counts_sounding_notes() -> None:
    grammar = NoteGrammar(2, [60, DUR + 99, SHIFT + 9])  # 60 sounds 100 steps; 10 have passed
    assert 60 not in allowed(grammar) and 61 in allowed(grammar)
    grammar.push(64)
    grammar.push(DUR + 9)  # 64 sounds until step 20
    assert not PITCHES & allowed(grammar)  # two sound: the cap
    grammar.push(SHIFT + 9)  # step 20: 64 has ended
    assert grammar.polyphony == 1 and 64 in allowed(grammar)
    grammar.push(SHIFT + 89)  # step 110: 60 has ended too
    assert grammar.polyphony == 0 and 60 in allowed(grammar)


def test_the_longest_hold_limits_durations() -> None:
    grammar = NoteGrammar(0, [60], max_hold=250)
    assert allowed(grammar) == DURATIONS  # 200 steps at most per token, all under 250
    grammar.push(DUR + V.max_duration_steps - 1)
    assert allowed(grammar) & DURATIONS == set(range(DUR, DUR + 50))
    assert allowed(NoteGrammar(0, [60], max_hold=20)) == set(range(DUR, DUR + 20))
    # Without the syntax rule any DURATIONs after a PITCH add up (as the decoder reads them): the hold counts all.
    free = NoteGrammar(0, [60, DUR + 2], max_hold=4, rules=())  # 3 of 4 steps taken
    assert allowed(free) & DURATIONS == {DUR}


def test_fork_is_independent_and_masks_agree() -> None:
    parent = NoteGrammar(3, [60, DUR + 9])
    child = parent.fork()
    child.push(SHIFT + 20)
    assert 60 not in allowed(parent) and 60 in allowed(child)
    rows, cols = ban_lists([parent, child])
    mask = ban_mask([parent, child], V.size)
    assert set(zip(rows, cols)) == set(zip(*np.nonzero(mask)))


def test_every_corpus_file_obeys_every_rule() -> None:
    codec = NoteCodec()
    for path in sorted((REPO / "corpora" / "midi-basics").glob("*.mid")):
        grammar = NoteGrammar(0)
        for token in codec.encode_file(path).tolist():
            assert grammar.allows(token), (path.name, codec.token_name(token))
            grammar.push(token)


def _walk(prime: list[int], cap: int, max_hold: int, rules: frozenset[str], choices: list[int]) -> list[int]:
    """A stream that only takes allowed tokens, choosing a kind of token first (as in test_midi_grammar)."""
    grammar = NoteGrammar(cap, prime, max_hold=max_hold, rules=rules)
    bounds = (0, DUR, SHIFT, VEL, V.size)
    out = []
    for choice in choices:
        banned = set(grammar.banned())
        kinds = [k for k in ([t for t in range(lo, hi) if t not in banned] for lo, hi in zip(bounds, bounds[1:])) if k]
        kind = kinds[choice % len(kinds)]
        token = kind[choice // len(kinds) % len(kind)]
        out.append(token)
        grammar.push(token)
    return out


def _pretty_notes(ids: list[int]) -> list[tuple[float, float, int]]:
    import pretty_midi

    buffer = io.BytesIO()
    decode_to_midi(ids, vocab=V).save(file=buffer)
    buffer.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        midi = pretty_midi.PrettyMIDI(buffer)
    return [(n.start, n.end, n.pitch) for inst in midi.instruments for n in inst.notes]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prime=st.one_of(st.just([]), st.lists(st.integers(0, V.size - 1), max_size=30)), cap=st.integers(0, 5),
       max_hold=st.sampled_from([0, 0, 3, 150, 450]),
       rules=st.sampled_from([frozenset(NOTE_RULES), frozenset({"duration"}), frozenset()]),
       choices=st.lists(st.integers(0, 2047), min_size=1, max_size=250))
def test_any_stream_under_the_grammar_gives_each_pitch_a_duration_and_keeps_the_cap_and_hold(
        prime: list[int], cap: int, max_hold: int, rules: frozenset[str], choices: list[int]) -> None:
    ids = _walk(prime, cap, max_hold, rules, choices)
    if "duration" in rules:  # every PITCH is followed by a DURATION (but the last token)
        assert all(DUR <= b < SHIFT for a, b in zip(ids, ids[1:]) if a < DUR)
    if prime or not stream_notes(ids, V):
        return  # a prime's own notes are not the grammar's doing
    notes = _pretty_notes(ids)
    if cap:
        events = sorted([(s, 1) for s, _, _ in notes] + [(e, -1) for _, e, _ in notes])  # at one time, ends first
        assert max(np.cumsum([c for _, c in events])) <= cap
    if max_hold:
        assert max(e - s for s, e, _ in notes) <= max_hold * V.step_s + 1e-3
