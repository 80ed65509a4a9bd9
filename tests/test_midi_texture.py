"""What the MIDI grammar learns from a corpus (chargen.codecs.midi.texture): polyphony over time and note lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chargen.codecs.midi import DEFAULT_VOCAB
from chargen.codecs.midi.texture import HOLD_FLOOR_S, corpus_limits, hold_limit_s, texture

V = DEFAULT_VOCAB
ON, OFF, SHIFT, VEL = 0, V.note_off_base, V.shift_base, V.velocity_base


def _reference(ids: list[int]) -> tuple[list[int], list[int], dict[int, int]]:
    """Per-token reference, reading the stream as ids_to_notes does: onset and time histograms, note lengths."""
    onsets, time = [0] * 129, [0] * 129
    lengths: dict[int, int] = {}
    started: dict[int, int] = {}
    now = 0
    for token in ids:
        if token < OFF:
            if token in started:  # a repeated NOTE_ON ends the note and starts another
                lengths[now - started[token]] = lengths.get(now - started[token], 0) + 1
            started[token] = now
            onsets[len(started)] += 1
        elif token < SHIFT:
            if token - OFF in started:
                length = now - started.pop(token - OFF)
                lengths[length] = lengths.get(length, 0) + 1
        elif token < VEL:
            steps = token - SHIFT + 1
            time[len(started)] += steps
            now += steps
    return onsets, time, lengths


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 5), st.integers(OFF, OFF + 5), st.integers(SHIFT, V.size - 1)),
                max_size=300),
       st.integers(1, 40))
def test_texture_matches_a_per_token_reference_in_any_chunking(ids: list[int], chunk: int) -> None:
    onsets, time, lengths = _reference(ids)
    for found in (texture(np.asarray(ids, dtype=np.uint16)), texture(ids, chunk=chunk)):
        assert found.onsets.tolist() == onsets
        assert found.time.tolist() == time
        assert {int(n): int(found.lengths[n]) for n in np.flatnonzero(found.lengths)} == lengths


def test_hold_limit_is_the_99th_percentile_of_note_length_within_the_floor_and_the_export_cap() -> None:
    def notes(steps: int, count: int) -> list[int]:
        return [ON + 60, *[SHIFT + V.max_shift_steps - 1] * (steps // V.max_shift_steps),
                *([SHIFT + steps % V.max_shift_steps - 1] if steps % V.max_shift_steps else []), OFF + 60] * count

    assert hold_limit_s(notes(150, 990) + notes(350, 10)) == pytest.approx(1.5)  # 99.0 % at 1.5 s: 1.5 s
    assert hold_limit_s(notes(150, 980) + notes(350, 20)) == pytest.approx(3.5)  # 98 % at 1.5 s: the long ones
    assert hold_limit_s(notes(50, 1000)) == HOLD_FLOOR_S  # 0.5 s notes: the floor
    assert hold_limit_s(notes(800, 10)) == 5.0  # 8 s notes: the export's held-note cap
    assert hold_limit_s([ON + 60, SHIFT + 9]) == 5.0  # no note ends: the export's cap


def test_corpus_limits_of_a_run_tokens_file(tmp_path: Path) -> None:
    ids = [ON + 60, ON + 64, SHIFT + 99, SHIFT + 99, OFF + 60, OFF + 64] * 50  # two-note chords of 2 s
    path = tmp_path / "tokens.npy"
    np.save(path, np.asarray(ids, dtype=np.uint16))
    assert corpus_limits(path) == (2, 2.0)
