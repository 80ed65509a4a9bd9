"""The MIDI event grammar (a decoding constraint) and the corpus polyphony cap."""

from __future__ import annotations

import io
from pathlib import Path

import mido
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chargen.codecs.midi import DEFAULT_VOCAB, MidiCodec, ids_to_notes
from chargen.codecs.midi.export import decode_to_midi, write_midi
from chargen.codecs.midi.grammar import MidiGrammar, corpus_polyphony_cap, onset_polyphony_counts, polyphony_cap
from chargen.sampling import NgramBlocker
from chargen.sampling.constraints import ban_lists, ban_mask
from tests.conftest import REPO

V = DEFAULT_VOCAB
ON, OFF, SHIFT, VEL = 0, V.note_off_base, V.shift_base, V.velocity_base
ALWAYS = set(range(SHIFT, V.size))  # time shifts and velocities
SHIFTS = set(range(SHIFT, VEL))
VELOCITIES = set(range(VEL, V.size))
NOTE_ONS = set(range(ON, OFF))
BASICS = REPO / "corpora" / "midi-basics"


def test_note_off_only_for_a_sounding_pitch_and_not_in_its_first_step() -> None:
    grammar = MidiGrammar(0)
    assert all(OFF + p in grammar.banned() for p in range(128))
    grammar.push(ON + 60)
    assert OFF + 60 in grammar.banned()  # same step as its NOTE_ON: the note would last no time
    grammar.push(SHIFT)
    assert OFF + 60 not in grammar.banned()
    assert OFF + 61 in grammar.banned()


def test_no_second_note_on_for_a_sounding_pitch_but_a_restrike_is_off_then_on() -> None:
    grammar = MidiGrammar(0, [ON + 60, SHIFT + 9])
    assert ON + 60 in grammar.banned()
    grammar.push(OFF + 60)
    assert ON + 60 not in grammar.banned()  # the re-strike, in the same step
    grammar.push(ON + 60)
    assert grammar.polyphony == 1


def test_polyphony_cap_bans_every_note_on_and_zero_is_no_cap() -> None:
    chord = [ON + 60, ON + 64, ON + 67, SHIFT + 20]
    capped = MidiGrammar(3, chord)
    assert set(range(128)) <= set(capped.banned())
    capped.push(OFF + 64)
    assert ON + 72 not in capped.banned() and ON + 60 in capped.banned()
    uncapped = MidiGrammar(0, chord)
    assert ON + 72 not in uncapped.banned()


def test_time_shifts_always_pass_and_a_velocity_only_where_its_note_on_may_follow() -> None:
    rng = np.random.default_rng(0)
    grammar = MidiGrammar(2)
    seen = set()
    allowed = set(range(V.size))
    for _ in range(3000):
        token = int(rng.choice(sorted(allowed)))  # a model that keeps to the grammar
        allowed = set(range(V.size)) - set(grammar.push(token))
        note_on = bool(allowed & NOTE_ONS)
        if token >= VEL and note_on:  # after a VELOCITY: its NOTE_ON, nothing else
            assert allowed <= NOTE_ONS
            seen.add("note-on only")
        else:
            assert SHIFTS <= allowed
            assert (VELOCITIES <= allowed) == (note_on and token < VEL)  # never at the cap, never two in a row
            assert not (VELOCITIES & allowed) or VELOCITIES <= allowed
            seen.add("velocities" if VELOCITIES <= allowed else "no velocity")
    assert seen == {"note-on only", "velocities", "no velocity"}


def test_at_the_cap_a_model_cannot_stall_on_velocities() -> None:
    grammar = MidiGrammar(2, [VEL + 3, ON + 60, VEL + 4, ON + 64])  # at the cap
    allowed = set(range(V.size)) - set(grammar.banned())
    assert allowed == SHIFTS  # both notes began this step: only time may pass
    grammar.push(SHIFT)
    assert set(range(V.size)) - set(grammar.banned()) == SHIFTS | {OFF + 60, OFF + 64}
    grammar.push(OFF + 60)
    assert VELOCITIES <= set(range(V.size)) - set(grammar.banned())  # under the cap again


def test_a_note_ended_in_its_own_step_still_counts_toward_the_cap_until_the_step_ends() -> None:
    # Only a prime can do this (the grammar bans the NOTE_OFF); the export stretches the note to one step.
    grammar = MidiGrammar(1, [ON + 60, OFF + 60])
    assert grammar.polyphony == 1 and ON + 62 in grammar.banned()
    grammar.push(SHIFT)
    assert grammar.polyphony == 0 and ON + 62 not in grammar.banned()


def test_max_hold_limits_time_shifts_then_forces_a_note_off() -> None:
    grammar = MidiGrammar(1, [ON + 60, SHIFT + 99], max_hold=150)  # held 100 of at most 150 steps
    banned = set(grammar.banned())
    assert SHIFT + 49 not in banned and SHIFT + 50 in banned  # +50 steps still fits, +51 does not
    grammar.push(SHIFT + 49)
    assert set(range(V.size)) - set(grammar.banned()) == {OFF + 60}  # due, and at the cap: only its release
    grammar.push(OFF + 60)
    assert not ALWAYS & set(grammar.banned())  # nothing held: time may pass again
    assert not SHIFTS & set(MidiGrammar(1, [ON + 60, SHIFT + 99]).banned())  # max_hold 0: no limit



def test_a_due_note_must_be_released_before_any_new_note_starts() -> None:
    grammar = MidiGrammar(0, [ON + 60, SHIFT + 99, ON + 64, SHIFT], max_hold=101)  # 60 held 101 steps: due
    assert set(range(V.size)) - set(grammar.banned()) == {OFF + 60, OFF + 64}  # no NOTE_ON, though no cap
    grammar.push(OFF + 60)
    assert ON + 67 not in grammar.banned() and SHIFT not in grammar.banned()


def test_max_hold_counts_from_the_latest_start_of_a_restarted_note_and_the_oldest_note_decides() -> None:
    grammar = MidiGrammar(0, [ON + 60, SHIFT + 99, ON + 60, ON + 64, SHIFT + 9], max_hold=100)
    assert SHIFT + 89 not in grammar.banned() and SHIFT + 90 in grammar.banned()  # 60 restarted 10 steps ago
    grammar.push(OFF + 60)
    assert SHIFT + 89 not in grammar.banned()
    child = grammar.fork()
    child.push(SHIFT + 89)
    assert SHIFT not in grammar.banned() and SHIFT in child.banned()


def test_fork_is_independent_of_its_parent() -> None:
    parent = MidiGrammar(2, [ON + 60, SHIFT])
    child = parent.fork()
    child.push(OFF + 60)
    assert ON + 60 in parent.banned() and ON + 60 not in child.banned()
    assert parent.polyphony == 1 and child.polyphony == 0


def test_every_corpus_file_obeys_the_grammar_under_the_corpus_cap() -> None:
    """The rules only forbid what the encoder never writes; the cap is the corpus's own maximum here."""
    codec = MidiCodec()
    pieces = [codec.encode_file(p).tolist() for p in sorted(BASICS.glob("*.mid"))]
    cap = max(int(np.flatnonzero(onset_polyphony_counts(ids))[-1]) for ids in pieces)
    for ids in pieces:
        grammar = MidiGrammar(cap)
        for token in ids:
            assert grammar.allows(token)
            grammar.push(token)
        assert grammar.polyphony == 0  # every note of a file is closed by its end


def test_ban_mask_and_lists_agree_with_each_grammar() -> None:
    grammars = [MidiGrammar(0), MidiGrammar(1, [ON + 60, SHIFT]), MidiGrammar(0, [ON + 61, SHIFT])]
    mask = ban_mask(grammars, V.size)
    assert mask.shape == (3, V.size)
    for row, grammar in enumerate(grammars):
        assert set(np.flatnonzero(mask[row]).tolist()) == set(grammar.banned())
    rows, cols = ban_lists(grammars)
    assert sorted(zip(rows, cols)) == sorted(zip(*np.nonzero(mask)))
    # Any constraint with banned() goes in the same mask (here an n-gram blocker beside a grammar).
    blocker = NgramBlocker(2, [5, 7, 5])
    mixed = ban_mask([grammars[1], blocker], V.size)
    assert (mixed[0] == mask[1]).all() and np.flatnonzero(mixed[1]).tolist() == [7]
    mask[1] = False  # a caller's array: writing to it leaves the grammar's cached rows alone
    assert (ban_mask(grammars, V.size)[1] == mixed[0]).all()


# ---------------------------------------------------------------------------
# polyphony_cap


def _onset_counts_reference(ids: list[int]) -> np.ndarray:
    """Per-token reference: notes sounding after each NOTE_ON (ids_to_notes's reading of the stream)."""
    sounding: set[int] = set()
    hist = np.zeros(129, dtype=np.int64)
    for token in ids:
        if token < OFF:
            sounding.add(token)
            hist[len(sounding)] += 1
        elif token < SHIFT:
            sounding.discard(token - OFF)
    return hist


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 5), st.integers(OFF, OFF + 5), st.integers(SHIFT, V.size - 1)),
                max_size=300),
       st.integers(1, 40))
def test_onset_counts_match_a_per_token_reference_in_any_chunking(ids: list[int], chunk: int) -> None:
    expected = _onset_counts_reference(ids)
    assert onset_polyphony_counts(np.asarray(ids, dtype=np.uint16)).tolist() == expected.tolist()
    assert onset_polyphony_counts(ids, chunk=chunk).tolist() == expected.tolist()


def test_polyphony_cap_is_the_99th_percentile_of_simultaneous_notes_over_time(tmp_path: Path) -> None:
    # 4,990 single notes and 10 five-note chords, each 10 steps long: 99.8 % of the sounding time at one note.
    single = [ON + 60, SHIFT + 9, OFF + 60]
    chord = [ON + 60, ON + 62, ON + 64, ON + 65, ON + 67, SHIFT + 9] + [OFF + p for p in (60, 62, 64, 65, 67)]
    ids = single * 4990 + chord * 10
    assert polyphony_cap(ids) == 1
    assert polyphony_cap(ids, percentile=100.0) == 5
    # 600 brief chords (one step) among 1,000 long notes (100 steps): 75 % of the onsets are in chords, but
    # 99.4 % of the sounding time has one note; the onset percentile would have said 5.
    brief = chord[:5] + [SHIFT] + chord[6:]
    long = [ON + 60, SHIFT + 99, OFF + 60]
    assert polyphony_cap(brief * 300 + long * 1000 + brief * 300) == 1
    assert np.flatnonzero(onset_polyphony_counts(brief * 300 + long * 1000 + brief * 300)).tolist() == [1, 2, 3, 4, 5]
    assert polyphony_cap([SHIFT, VEL]) == 0  # no notes: no cap
    assert polyphony_cap([ON + 60, OFF + 60, SHIFT]) == 0  # a note that never sounds for any time: none
    path = tmp_path / "tokens.npy"
    np.save(path, np.asarray(ids, dtype=np.uint16))
    assert corpus_polyphony_cap(path) == 1


def test_midi_basics_cap_is_four_voices() -> None:
    codec = MidiCodec()
    ids = np.concatenate([codec.encode_file(p) for p in sorted(BASICS.glob("*.mid"))])
    assert polyphony_cap(ids) == 4  # the chorales are SATB; nothing else goes above three


# ---------------------------------------------------------------------------
# The property: whatever a model could produce under the constraints exports cleanly.


def _random_walk(prime: list[int], cap: int, choices: list[int], max_hold: int = 0) -> list[int]:
    """A stream that only ever takes an allowed token.

    Each choice picks a kind of event first (NOTE_ON, NOTE_OFF, TIME_SHIFT,
    VELOCITY, among the kinds with an allowed token), then one of its allowed
    tokens: uniform over tokens, a walk would almost never pick one of the few
    allowed NOTE_OFFs, and would leave the rules about them untried.
    """
    grammar = MidiGrammar(cap, prime, max_hold=max_hold)
    bounds = (ON, OFF, SHIFT, VEL, V.size)
    out: list[int] = []
    for choice in choices:
        banned = set(grammar.banned())
        kinds = [[t for t in range(lo, hi) if t not in banned] for lo, hi in zip(bounds, bounds[1:])]
        kinds = [kind for kind in kinds if kind]
        kind = kinds[choice % len(kinds)]
        token = kind[choice // len(kinds) % len(kind)]
        out.append(token)
        grammar.push(token)
    return out


def _read_back(mid: mido.MidiFile) -> tuple[int, int]:
    """(note-offs without a sounding note-on, most notes sounding at once) of a file as mido reads it."""
    buffer = io.BytesIO()
    mid.save(file=buffer)
    buffer.seek(0)
    sounding: set[tuple[int, int]] = set()
    orphans = peak = 0
    for msg in mido.MidiFile(file=buffer):  # all tracks merged in time order
        if msg.type not in ("note_on", "note_off"):
            continue
        key = (msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            assert key not in sounding, "a second note-on for a sounding pitch"
            sounding.add(key)
            peak = max(peak, len(sounding))
        elif key in sounding:
            sounding.remove(key)
        else:
            orphans += 1
    return orphans, peak


tokens = st.integers(0, V.size - 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prime=st.one_of(st.just([]), st.lists(tokens, max_size=40)), cap=st.integers(0, 6),
       choices=st.lists(st.integers(0, 511), min_size=1, max_size=250),
       max_note_s=st.sampled_from([None, 5.0, 0.05]), max_hold=st.sampled_from([0, 0, 1, 7, 150]))
def test_any_stream_taken_under_the_constraints_exports_without_orphans_or_excess_polyphony(
        prime: list[int], cap: int, choices: list[int], max_note_s: float | None, max_hold: int) -> None:
    ids = _random_walk(prime, cap, choices, max_hold)
    _check_stream(prime, ids, cap)
    if not ids_to_notes(ids):
        return  # no notes: nothing to export (the export refuses, by design)
    mid = decode_to_midi(ids, max_note_s=max_note_s)  # the sample alone, as the CLI writes it
    orphans, peak = _read_back(mid)
    assert orphans == 0
    if cap:
        assert peak <= cap
    if max_hold:
        assert _longest_note_s(mid) <= max_hold * V.step_s + 1e-3  # tick rounding: well under a millisecond
    if not prime:  # a prime that is itself grammatical exports with its continuation just as cleanly
        assert _read_back(decode_to_midi(ids))[0] == 0


def _longest_note_s(mid: mido.MidiFile) -> float:
    buffer = io.BytesIO()
    mid.save(file=buffer)
    buffer.seek(0)
    started: dict[int, float] = {}
    now = longest = 0.0
    for msg in mido.MidiFile(file=buffer):
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            started[msg.note] = now
        elif msg.type in ("note_on", "note_off") and msg.note in started:
            longest = max(longest, now - started.pop(msg.note))
    return longest


def _check_stream(prime: list[int], ids: list[int], cap: int) -> None:
    """The rules token by token, by a plain set of sounding pitches (independent of MidiGrammar)."""
    sounding: set[int] = set()
    for token in prime:  # as ids_to_notes reads it
        if token < OFF:
            sounding.add(token)
        elif token < SHIFT:
            sounding.discard(token - OFF)
    for token in ids:
        if token < OFF:
            assert token not in sounding and not (cap and len(sounding) >= cap), (token, sounding)
            sounding.add(token)
        elif token < SHIFT:
            assert token - OFF in sounding, (token, sounding)
            sounding.remove(token - OFF)


def test_the_written_file_read_by_pretty_midi_respects_the_cap(tmp_path: Path) -> None:
    import pretty_midi

    ids = _random_walk([], 3, np.random.default_rng(5).integers(0, 512, 3000).tolist())
    path = tmp_path / "walk.mid"
    write_midi(ids, path, max_note_s=5.0)
    notes = [n for inst in pretty_midi.PrettyMIDI(str(path)).instruments for n in inst.notes]
    assert len(notes) > 30
    events = sorted([(n.start, 1) for n in notes] + [(n.end, -1) for n in notes])  # at one time, ends first
    assert max(np.cumsum([change for _, change in events])) == 3
