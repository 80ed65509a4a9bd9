"""The note codec (``midi-notes``): layout, metadata, round trips on real files, and its texture statistics."""

from __future__ import annotations

import io
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chargen.codecs.midi import MidiCodec, Note, normalize_notes, stream_notes
from chargen.codecs.midi.export import midi_bytes, write_midi
from chargen.codecs.midi.note_codec import NoteCodec
from chargen.codecs.midi.note_vocab import DEFAULT_NOTE_VOCAB, NoteVocab, note_ids_to_notes, notes_to_note_ids
from chargen.codecs.midi.texture import statistics_of, texture
from chargen.codecs.registry import CODECS, codec_from_metadata, is_music
from chargen.errors import ChargenError, CheckpointError
from tests.conftest import REPO, shared_path

V = DEFAULT_NOTE_VOCAB
DUR, SHIFT, VEL = V.duration_base, V.shift_base, V.velocity_base
BASICS = REPO / "corpora" / "midi-basics"


def test_vocabulary_layout_and_names() -> None:
    assert (DUR, SHIFT, VEL, V.size) == (128, 328, 428, 460)
    codec = NoteCodec()
    assert [codec.token_name(t) for t in (60, DUR, DUR + 49, SHIFT + 11, VEL + 20)] == \
        ["p60", "d10ms", "d500ms", "+120ms", "v20"]
    assert all(unicodedata.normalize(form, codec.symbols) == codec.symbols for form in ("NFC", "NFD", "NFKC", "NFKD"))
    assert len(set(codec.symbols)) == V.size and all(ch.isprintable() and not ch.isspace() for ch in codec.symbols)
    with pytest.raises(ChargenError):
        codec.token_name(V.size)


def test_metadata_round_trip_and_registry() -> None:
    assert CODECS["midi-notes"] is NoteCodec and is_music("midi-notes") and is_music("midi") and not is_music("text")
    codec = NoteCodec(NoteVocab(step_ms=20, max_shift_steps=50, max_duration_steps=80, velocity_bins=16))
    again = codec_from_metadata(codec.to_metadata())
    assert isinstance(again, NoteCodec) and again.vocab == codec.vocab and again.vocab_size == 128 + 80 + 50 + 16
    for change in ({"format": 99}, {"max_duration_steps": 0}, {"max_duration_steps": None}):
        with pytest.raises(CheckpointError):
            NoteCodec.from_metadata({**NoteCodec().to_metadata(), **change})
    with pytest.raises(ChargenError):
        NoteVocab(max_duration_steps=400, max_shift_steps=100, velocity_bins=32)  # 660 tokens: no room


def test_a_chord_and_a_long_note_as_tokens() -> None:
    notes = [Note(60, 0, 50, 19), Note(64, 0, 50, 19), Note(67, 10, 460, 24)]
    ids = notes_to_note_ids(notes)
    names = [NoteCodec().token_name(t) for t in ids]
    assert names == ["v19", "p60", "d500ms", "p64", "d500ms", "+100ms", "v24", "p67", "d2000ms", "d2000ms", "d500ms",
                     "+1000ms", "+1000ms", "+1000ms", "+1000ms", "+500ms"]  # the stream ends with its last note
    assert note_ids_to_notes(ids) == normalize_notes(notes)


def test_malformed_streams_read_leniently() -> None:
    # A PITCH without DURATION lasts one step; a stray DURATION is ignored; default velocity bin of 64.
    ids = [60, SHIFT + 4, DUR + 9, 62, DUR + 19, VEL + 3, DUR + 5]
    assert note_ids_to_notes(ids) == [Note(60, 0, 1, V.velocity_bin(64)), Note(62, 5, 25, V.velocity_bin(64))]
    with pytest.raises(ChargenError, match="outside the MIDI vocabulary"):
        note_ids_to_notes([V.size])


notes_strategy = st.lists(st.builds(Note, st.integers(0, 127), st.integers(0, 600), st.integers(0, 900),
                                    st.integers(0, 31)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(notes_strategy)
def test_notes_round_trip_through_ids(notes: list[Note]) -> None:
    notes = [n._replace(end=n.start + n.end) for n in notes]
    canonical = normalize_notes(notes)
    ids = notes_to_note_ids(notes)
    assert note_ids_to_notes(ids) == canonical
    assert notes_to_note_ids(canonical) == ids


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, V.size - 1), max_size=300))
def test_any_stream_reaches_a_fixed_point_after_one_decode(ids: list[int]) -> None:
    notes = note_ids_to_notes(ids)
    again = notes_to_note_ids(notes)
    assert note_ids_to_notes(again) == notes and notes_to_note_ids(note_ids_to_notes(again)) == again


def _pretty_notes(data: bytes) -> list[tuple[int, float, float]]:
    import pretty_midi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        midi = pretty_midi.PrettyMIDI(io.BytesIO(data))
    return sorted((n.pitch, round(n.start, 3), round(n.end, 3)) for i in midi.instruments for n in i.notes)


def _files() -> list[Path]:
    return sorted(BASICS.glob("*.mid"))


@pytest.mark.parametrize("path", _files()[::6], ids=lambda p: p.name)
def test_own_files_round_trip_and_match_the_event_codec(path: Path, tmp_path: Path) -> None:
    codec = NoteCodec()
    ids = codec.encode_file(path)
    events = MidiCodec().encode_file(path)
    assert stream_notes(ids, codec.vocab) == stream_notes(events)  # one file, the same notes in both codecs
    out = tmp_path / "again.mid"
    stats = write_midi(ids, out, vocab=codec.vocab)
    assert np.array_equal(codec.encode_file(out), ids)
    assert stats.notes == len(stream_notes(ids, codec.vocab))
    expected = sorted((n.pitch, round(n.start * V.step_s, 3), round(n.end * V.step_s, 3))
                      for n in stream_notes(ids, codec.vocab))
    got = _pretty_notes(out.read_bytes())
    assert len(got) == len(expected)
    assert all(g[0] == e[0] and abs(g[1] - e[1]) <= 1e-3 and abs(g[2] - e[2]) <= 1e-3 for g, e in zip(got, expected))


def test_shared_files_round_trip() -> None:
    folder = shared_path("midi")
    codec = NoteCodec()
    for path in sorted(folder.rglob("*.mid"))[:20]:
        ids = codec.encode_file(path)
        if len(ids):
            data = midi_bytes(ids, vocab=codec.vocab)
            notes = stream_notes(ids, codec.vocab)
            assert notes == stream_notes(notes_to_note_ids(notes), codec.vocab)
            assert len(_pretty_notes(data)) == len(stream_notes(ids, codec.vocab)), path


def test_transposition_moves_pitches_only_and_keeps_them_in_range() -> None:
    window = np.array([[VEL + 3, 60, DUR + 9, SHIFT, 127, DUR], [0, DUR + 99, 64, DUR + 1, SHIFT + 5, 70]])
    moved = NoteCodec().augment_window(window, np.random.default_rng(3), -3, 3)
    is_pitch = window < DUR
    assert np.array_equal(moved[~is_pitch], window[~is_pitch])
    shifts = {int(d) for d in np.unique(moved[0][is_pitch[0]] - window[0][is_pitch[0]])}
    assert len(shifts) == 1 and shifts.pop() <= 0  # row 0 holds 127: it cannot go up
    assert moved.max() < V.size and moved.min() >= 0


def test_both_codecs_give_one_texture_of_a_corpus() -> None:
    files = _files()
    notes_ids = np.concatenate([NoteCodec().encode_file(p) for p in files])
    event_ids = np.concatenate([MidiCodec().encode_file(p) for p in files])
    a, b = texture(notes_ids, V), texture(event_ids, MidiCodec().vocab)
    assert np.array_equal(a.lengths, b.lengths) and np.array_equal(a.pitches, b.pitches)
    assert np.array_equal(a.time[1:], b.time[1:])
    stats = statistics_of(a, V)
    assert stats == statistics_of(b, MidiCodec().vocab)
    assert 2.0 < stats["polyphony"] < 2.6 and stats["median_note_s"] == 0.5  # type: ignore[operator]
