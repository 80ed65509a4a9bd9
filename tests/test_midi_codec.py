"""MIDI codec: vocabulary, encoding rules, robustness against bad files, augmentation."""

from __future__ import annotations

import io
import struct
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import mido
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chargen.codecs.midi import (
    DEFAULT_VOCAB,
    MidiCodec,
    MidiVocab,
    Note,
    describe,
    encode_midi,
    ids_to_notes,
    midi_notes,
    midi_stats,
    normalize_notes,
    notes_to_ids,
    read_midi_bytes,
    token_name,
)
from chargen.codecs.registry import CODECS, codec_from_metadata
from chargen.errors import ChargenError, CheckpointError, CorruptFileError

V = DEFAULT_VOCAB
VEL = V.velocity_base
SHIFT = V.shift_base - 1  # SHIFT + n advances n steps
OFF = V.note_off_base

REPO = Path(__file__).resolve().parents[1]
OWN_CORPUS = REPO / "corpora" / "midi-basics"
SHARED = REPO.parent / "shared" / "corpora"
INVALID_DIR = SHARED / "midi-invalid"
INVALID_FILES = sorted(INVALID_DIR.rglob("*.mid")) if INVALID_DIR.is_dir() else []


# ---------------------------------------------------------------------------
# helpers


def smf(*tracks: list[mido.Message | mido.MetaMessage], file_type: int = 1, tpb: int = 480) -> mido.MidiFile:
    """A MidiFile from message lists whose ``time`` fields are delta ticks."""
    return mido.MidiFile(type=file_type, ticks_per_beat=tpb, tracks=[mido.MidiTrack(t) for t in tracks])


def on(note: int, time: int = 0, channel: int = 0, velocity: int = 100) -> mido.Message:
    return mido.Message("note_on", note=note, velocity=velocity, time=time, channel=channel)


def off(note: int, time: int = 0, channel: int = 0) -> mido.Message:
    return mido.Message("note_off", note=note, time=time, channel=channel)


def tempo(bpm: float, time: int = 0) -> mido.MetaMessage:
    return mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=time)


def to_bytes(mid: mido.MidiFile) -> bytes:
    buffer = io.BytesIO()
    mid.save(file=buffer)
    return buffer.getvalue()


def steps(mid: mido.MidiFile) -> list[tuple[int, int, int]]:
    return [(n.pitch, n.start, n.end) for n in midi_notes(mid)]


def canonical(ids: list[int] | np.ndarray) -> list[int]:
    return notes_to_ids(ids_to_notes(ids))


def own_files() -> list[Path]:
    return sorted(OWN_CORPUS.glob("*.mid"))


# ---------------------------------------------------------------------------
# vocabulary and codec interface


def test_vocabulary_layout() -> None:
    codec = MidiCodec()
    assert codec.vocab_size == 388 == 128 + 128 + 100 + 32
    assert [token_name(i) for i in (0, 60, 127, 128, 188, 256, 355, 356, 387)] == [
        "on0", "on60", "on127", "off0", "off60", "+10ms", "+1000ms", "v0", "v31",
    ]


def test_symbols_are_printable_single_characters_stable_under_normalisation() -> None:
    symbols = MidiCodec().symbols
    assert len(set(symbols)) == len(symbols) == 388
    for ch in symbols:
        assert ch.isprintable() and not ch.isspace()
        assert unicodedata.category(ch).startswith("L")
        for form in ("NFC", "NFD", "NFKC", "NFKD"):
            assert unicodedata.normalize(form, ch) == ch


def test_text_form_round_trips() -> None:
    codec = MidiCodec()
    ids = codec.encode_file(own_files()[0]).tolist()
    text = codec.decode(ids)
    assert len(text) == len(ids) and codec.encode(text) == ids
    assert codec.encode(codec.default_prime) == [VEL + V.velocity_bin(80)]


def test_velocity_bins() -> None:
    bins = [V.velocity_bin(v) for v in range(1, 128)]
    assert bins == sorted(bins) and set(bins) == set(range(32))
    for b in range(32):
        assert V.velocity_bin(V.bin_velocity(b)) == b


def test_metadata_round_trip_and_registry() -> None:
    assert CODECS["midi"] is MidiCodec
    codec = MidiCodec(MidiVocab(step_ms=20, max_shift_steps=50, velocity_bins=16))
    again = codec_from_metadata(codec.to_metadata())
    assert isinstance(again, MidiCodec) and again.vocab == codec.vocab
    assert again.symbols == codec.symbols and again.vocab_size == 256 + 50 + 16
    assert MidiCodec.fit(own_files()).to_metadata() == MidiCodec().to_metadata()


@pytest.mark.parametrize(
    "change", [{"format": 99}, {"symbol_base": 0x100}, {"step_ms": 0}, {"velocity_bins": None}]
)
def test_foreign_metadata_is_a_checkpoint_error(change: dict) -> None:
    meta = {**MidiCodec().to_metadata(), **change}
    with pytest.raises(CheckpointError):
        MidiCodec.from_metadata(meta)


@pytest.mark.parametrize(
    "kwargs", [{"step_ms": 0}, {"velocity_bins": 128}, {"max_shift_steps": 1000, "velocity_bins": 127}]
)
def test_bad_vocab_settings(kwargs: dict) -> None:
    with pytest.raises(ChargenError):
        MidiVocab(**kwargs)


# ---------------------------------------------------------------------------
# encoding rules


def test_absolute_time_through_tempo_changes() -> None:
    # 120 bpm: beat = 0.5 s; from tick 480 on 60 bpm: beat = 1 s.
    mid = smf([tempo(120), on(60), off(60, 480), tempo(60), on(62), off(62, 480), on(64, 240), off(64, 240)])
    assert steps(mid) == [(60, 0, 50), (62, 50, 150), (64, 200, 250)]


def test_tempo_map_applies_to_all_tracks() -> None:
    # The conductor track's tempo change moves the other track's note:
    # tick 960 = 480 ticks at 120 bpm (0.5 s) + 480 at 60 bpm (1 s).
    mid = smf([tempo(120), tempo(60, 480)], [on(60, 960), off(60, 480)])
    assert steps(mid) == [(60, 150, 250)]


def test_type2_tracks_play_one_after_another() -> None:
    first = [on(60), off(60, 480), mido.MetaMessage("end_of_track", time=480)]  # 1 s long
    second = [tempo(60), on(62), off(62, 480)]  # its own tempo: 1 s note
    assert steps(smf(first, second, file_type=2)) == [(60, 0, 50), (62, 100, 200)]


def test_tracks_and_channels_merge_and_drums_are_dropped() -> None:
    mid = smf([on(60), off(60, 480)], [on(64, channel=3), on(36, channel=9), off(64, 480, 3), off(36, 0, 9)])
    assert steps(mid) == [(60, 0, 50), (64, 0, 50)]
    assert encode_midi(smf([on(36, channel=9), off(36, 480, 9)])) == []


def test_note_on_velocity_zero_is_note_off() -> None:
    assert steps(smf([on(60), on(60, 240, velocity=0)])) == [(60, 0, 25)]


def test_note_off_closes_all_open_notes_of_its_key() -> None:
    # Two note-ons before one note-off: both end there (as pretty_midi reads it),
    # then the earlier is cut by the later onset.
    assert steps(smf([on(60), on(60, 240), off(60, 240)])) == [(60, 0, 25), (60, 25, 50)]


def test_same_pitch_overlap_across_channels_is_resolved() -> None:
    # Unison doubling: one note (the longer); re-attack while sounding: cut.
    unison = smf([on(60), on(60, 0, 1), off(60, 240), off(60, 240, 1)])
    assert steps(unison) == [(60, 0, 50)]
    reattack = smf([on(60), on(60, 240, 1), off(60, 240), off(60, 240, 1)])
    assert steps(reattack) == [(60, 0, 25), (60, 25, 75)]


def test_short_notes_last_one_step_and_leading_silence_is_kept() -> None:
    assert steps(smf([on(60, 960), off(60, 1)])) == [(60, 100, 101)]


def test_dangling_note_ends_with_its_track() -> None:
    mid = smf([on(60), mido.MetaMessage("end_of_track", time=960)])
    assert steps(mid) == [(60, 0, 100)]


def test_velocity_token_only_when_the_bin_changes() -> None:
    # 100 and 99 share bin 24; 40 is bin 9. Within a step, note-ons go by pitch.
    chord = [on(67, velocity=40), on(60, velocity=100), on(64, velocity=99), off(60, 480), off(64), off(67)]
    assert describe(encode_midi(smf(chord))) == "v24 on60 on64 v9 on67 +500ms off60 off64 off67"


def test_smpte_division() -> None:
    # 25 frames/s x 40 ticks/frame = 1000 ticks per second, tempo irrelevant.
    (division,) = struct.unpack(">h", bytes([256 - 25, 40]))
    mid = read_midi_bytes(to_bytes(smf([tempo(30), on(60, 100), off(60, 500)], tpb=division)))
    assert steps(mid) == [(60, 10, 60)]


def test_unknown_chunks_are_skipped_and_rmid_is_unwrapped() -> None:
    data = to_bytes(smf([on(60), off(60, 480)]))
    expected = encode_midi(read_midi_bytes(data))
    junk = b"XFIH" + struct.pack(">L", 5) + b"hello"
    with_junk = data[:14] + junk + data[14:] + junk
    assert encode_midi(read_midi_bytes(with_junk)) == expected
    riff_body = b"RMID" + b"data" + struct.pack("<L", len(data)) + data
    rmid = b"RIFF" + struct.pack("<L", len(riff_body)) + riff_body
    assert encode_midi(read_midi_bytes(rmid)) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x00\xff\x59\x02\x14\x00", "Could not decode key"),  # mido's own KeySignatureError
        (b"\x00\xff\x51\x01\x07", "malformed event data"),  # set_tempo one byte long
        (b"\x00\xff\x54\x05\xff\x00\x00\x00\x00", "malformed event data"),  # SMPTE rate bits 3
        (b"\x00\x90\x80\x40", "data byte"),  # data byte > 127
        (b"\x00\x40\x40", "running status"),  # data with no status yet
    ],
)
def test_bad_events_become_corrupt_file_errors(tmp_path: Path, body: bytes, message: str) -> None:
    body += b"\x00\xff\x2f\x00"
    path = tmp_path / "bad.mid"
    path.write_bytes(b"MThd" + struct.pack(">Lhhh", 6, 0, 1, 96) + b"MTrk" + struct.pack(">L", len(body)) + body)
    with pytest.raises(CorruptFileError, match=message):
        MidiCodec().encode_file(path)


def test_corrupt_delta_times_do_not_explode(tmp_path: Path) -> None:
    # A 28-bit delta at 16.7 s per beat and 1 tick per beat is ~140 years of silence.
    slow = mido.MetaMessage("set_tempo", tempo=0xFFFFFF)
    path = tmp_path / "long.mid"
    smf([slow, on(60), off(60, 0x0FFFFFFF)], tpb=1).save(path)
    with pytest.raises(CorruptFileError, match="long.mid: implausible length"):
        MidiCodec().encode_file(path)


@pytest.mark.parametrize("make", ["missing", "directory", "huge"])
def test_unreadable_paths(tmp_path: Path, make: str) -> None:
    path = tmp_path / "x.mid"
    if make == "directory":
        path.mkdir()
    elif make == "huge":
        with open(path, "wb") as handle:
            handle.truncate((32 << 20) + 1)  # sparse: cheap to make
    with pytest.raises(CorruptFileError, match="x.mid"):
        MidiCodec().encode_file(path)


# ---------------------------------------------------------------------------
# token streams


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, V.size - 1), max_size=200))
def test_canonical_form_is_a_fixed_point(ids: list[int]) -> None:
    once = canonical(ids)
    assert canonical(once) == once
    notes = ids_to_notes(once)
    assert normalize_notes(notes) == notes


def test_stream_edge_cases() -> None:
    # Stray off dropped; a re-attack ends the sounding note; the dangling note at
    # the very end lasts one step; no VELOCITY yet means the bin of velocity 64.
    assert ids_to_notes([OFF + 60, 60, SHIFT + 5, 60]) == [
        Note(60, 0, 5, V.velocity_bin(64)),
        Note(60, 5, 6, V.velocity_bin(64)),
    ]
    stats = midi_stats([VEL, 60, 72, SHIFT + 100, OFF + 60])
    assert (stats.notes, stats.duration_s, stats.lowest, stats.highest, stats.tokens) == (2, 1.0, 60, 72, 5)
    with pytest.raises(ChargenError, match="outside the MIDI vocabulary"):
        ids_to_notes([-1])


# ---------------------------------------------------------------------------
# bad input files


def _invalid_params() -> list:
    if not INVALID_FILES:
        reason = (f"shared invalid MIDI files not found at {INVALID_DIR} "
                  "(expected <repo>/../shared/corpora/midi-invalid)")
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(p, id=p.name) for p in INVALID_FILES]


def assert_ids_or_corrupt(path: Path) -> np.ndarray | None:
    """encode_file either gives valid ids or a one-line CorruptFileError naming the file."""
    try:
        ids = MidiCodec().encode_file(path)
    except CorruptFileError as exc:
        message = str(exc)
        assert str(path) in message and "\n" not in message
        return None
    assert ids.ndim == 1 and ids.dtype.kind == "i"
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < V.size)
    return ids


@pytest.mark.parametrize("path", _invalid_params())
def test_invalid_files_encode_or_raise_corrupt(path: Path) -> None:
    ids = assert_ids_or_corrupt(path)
    # Readable despite their flaws (the spec says to skip unknown chunks):
    readable = {
        "test-2-tracks-type-0.mid", "test-corrupt-file-extra-byte.mid", "test-non-midi-track.mid",
        "test-running-status-metaevent.mid", "MIDIBadHeaderFormat.mid",
    }
    assert (ids is not None) == (path.name in readable)


# ---------------------------------------------------------------------------
# fuzzing: nothing but ids or CorruptFileError, whatever the bytes


def _seed_files() -> list[bytes]:
    small = own_files()[::6]
    if (SHARED / "midi").is_dir():
        small += sorted(p for p in (SHARED / "midi").rglob("*.mid") if p.stat().st_size < 4000)[::3]
    return [p.read_bytes() for p in small]


SEEDS = _seed_files()


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder) / "fuzz.mid"


def _encode_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    assert_ids_or_corrupt(path)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_fuzz_random_bytes(scratch: Path, data: bytes) -> None:
    _encode_bytes(scratch, data)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300), division=st.integers(-0x8000, 0x7FFF), ntracks=st.integers(0, 3))
def test_fuzz_after_a_valid_header(scratch: Path, body: bytes, division: int, ntracks: int) -> None:
    header = b"MThd" + struct.pack(">Lhhh", 6, 1, ntracks, division)
    _encode_bytes(scratch, header + b"MTrk" + struct.pack(">L", len(body)) + body)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_truncated_real_files(scratch: Path, data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(SEEDS))
    cut = data.draw(st.integers(0, len(original)))
    _encode_bytes(scratch, original[:cut])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_flipped_bytes_in_real_files(scratch: Path, data: st.DataObject) -> None:
    buffer = bytearray(data.draw(st.sampled_from(SEEDS)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(buffer) - 1), st.integers(0, 255)), min_size=1, max_size=4))
    for position, value in flips:
        buffer[position] = value
    _encode_bytes(scratch, bytes(buffer))


# ---------------------------------------------------------------------------
# augmentation


def _own_streams() -> list[np.ndarray]:
    codec = MidiCodec()
    return [codec.encode_file(p) for p in own_files()]


OWN_STREAMS = _own_streams()


@settings(max_examples=100, deadline=None)
@given(index=st.integers(0, len(OWN_STREAMS) - 1), low=st.integers(-24, 0), high=st.integers(0, 24),
       seed=st.integers(0, 2**32 - 1))
def test_augment_window_transposes_each_row_within_range(index: int, low: int, high: int, seed: int) -> None:
    """--transpose's augmentation: one shift per row, no token appears or vanishes, pitches stay in 0..127."""
    ids = OWN_STREAMS[index]
    width = min(len(ids) // 4, 65) - 1
    window = np.stack([ids[i * width : i * width + width + 1] for i in range(4)])
    out = MidiCodec().augment_window(window, np.random.default_rng(seed), low, high)
    assert out.shape == window.shape
    is_note = window < V.shift_base
    assert np.array_equal(out[~is_note], window[~is_note])  # shifts and velocities untouched
    assert ((out < V.shift_base) == is_note).all()
    assert ((out % 128)[is_note] == (out - window + window % 128)[is_note]).all()  # never wraps
    for row in range(4):
        shifts = set((out[row] - window[row])[is_note[row]].tolist())
        assert len(shifts) <= 1 and all(low <= k <= high or k == 0 for k in shifts)
