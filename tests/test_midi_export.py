"""Files written by write_midi obey the export rules, as seen by mido and pretty_midi.

Nothing here reads the written files with chargen's own code: mido gives the
raw messages, pretty_midi an independent view of the notes.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chargen.codecs.midi import DEFAULT_VOCAB as V
from chargen.codecs.midi import midi_stats
from chargen.codecs.midi.export import decode_to_midi, midi_bytes, midi_notes, write_midi
from chargen.errors import ChargenError

pretty_midi = pytest.importorskip("pretty_midi")

VEL = V.velocity_base
SHIFT = V.shift_base - 1  # SHIFT + n advances n steps
OFF = V.note_off_base


def check_export_rules(path: Path, tempo_bpm: float = 120, program: int = 0) -> list[tuple]:
    """Assert every export rule on the raw messages; return the notes (pitch, start tick, end tick)."""
    mid = mido.MidiFile(path)
    assert mid.type == 1
    assert 0 < mid.ticks_per_beat < 0x8000
    at_zero = []
    tick = 0
    for msg in mid.tracks[0]:
        tick += msg.time
        if tick == 0:
            at_zero.append(msg)
    tempos = [m for m in at_zero if m.type == "set_tempo"]
    assert [m.tempo for m in tempos] == [round(60_000_000 / tempo_bpm)]
    assert any(m.type == "time_signature" for m in at_zero)

    notes = []
    for track in mid.tracks:
        ends = [i for i, m in enumerate(track) if m.type == "end_of_track"]
        assert ends == [len(track) - 1], "exactly one end_of_track, last"
        assert all(isinstance(m.time, int) and m.time >= 0 for m in track)
        sounding: dict[tuple[int, int], int] = {}
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "program_change":
                assert msg.program == program
            if msg.type not in ("note_on", "note_off"):
                continue
            assert msg.channel != 9, "nothing on the drum channel"
            key = (msg.channel, msg.note)
            if msg.type == "note_on" and msg.velocity > 0:
                assert key not in sounding, f"same-pitch overlap at tick {tick}"
                sounding[key] = tick
            else:
                assert key in sounding, f"note-off without note-on at tick {tick}"
                start = sounding.pop(key)
                assert tick > start, "zero-length note"
                notes.append((msg.note, start, tick))
        assert not sounding, f"notes left sounding: {sorted(sounding)}"
    return notes


def pretty(path: Path) -> pretty_midi.PrettyMIDI:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pretty_midi.PrettyMIDI(str(path))


def check_with_pretty_midi(path: Path, raw_notes: list[tuple], tempo_bpm: float = 120, program: int = 0) -> None:
    pm = pretty(path)
    _, tempi = pm.get_tempo_changes()
    assert tempi[0] == pytest.approx(tempo_bpm, rel=1e-3)
    assert pm.time_signature_changes and pm.time_signature_changes[0].time == 0
    assert len(pm.instruments) == 1
    inst = pm.instruments[0]
    assert inst.program == program and not inst.is_drum
    assert len(inst.notes) == len(raw_notes)
    by_pitch: dict[int, list] = {}
    for note in inst.notes:
        assert note.end > note.start
        assert 1 <= note.velocity <= 127
        by_pitch.setdefault(note.pitch, []).append(note)
    for notes in by_pitch.values():
        notes.sort(key=lambda n: n.start)
        for a, b in itertools.pairwise(notes):
            assert b.start >= a.end - 1e-9, "same-pitch notes overlap"


token_streams = st.lists(st.integers(0, V.size - 1), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=token_streams, program=st.integers(0, 127), tempo=st.sampled_from([20, 60, 97.5, 120, 400]))
def test_random_streams_obey_export_rules(tmp_path: Path, ids: list[int], program: int, tempo: float) -> None:
    out = tmp_path / "random.mid"
    stats = midi_stats(ids)
    if stats.notes == 0:
        with pytest.raises(ChargenError, match="generated stream contains no notes"):
            write_midi(ids, out, tempo_bpm=tempo, program=program)
        return
    write_midi(ids, out, tempo_bpm=tempo, program=program)
    raw = check_export_rules(out, tempo, program)
    assert len(raw) == stats.notes
    check_with_pretty_midi(out, raw, tempo, program)
    assert pretty(out).get_end_time() == pytest.approx(stats.duration_s, abs=1e-3)


def test_seeded_random_streams(tmp_path: Path) -> None:
    # Longer, weighted streams look more like model output than uniform ids.
    rng = np.random.default_rng(7)
    weights = np.concatenate([np.full(128, 3.0), np.full(128, 3.0), np.full(V.max_shift_steps, 2.0), np.full(32, 1.0)])
    for i in range(10):
        ids = rng.choice(V.size, size=2000, p=weights / weights.sum())
        out = tmp_path / f"seeded{i}.mid"
        write_midi(ids, out, program=i)
        raw = check_export_rules(out, program=i)
        check_with_pretty_midi(out, raw, program=i)


def _notes(path: Path) -> list[tuple[int, float, float]]:
    # Rounded to the 10 ms grid: tick rounding moves notes by under 0.3 ms.
    return sorted((n.pitch, round(n.start, 2), round(n.end, 2)) for n in pretty(path).instruments[0].notes)


def test_dangling_notes_are_closed_at_the_end(tmp_path: Path) -> None:
    out = tmp_path / "dangling.mid"
    write_midi([VEL + 20, 60, 64, SHIFT + 50], out)
    check_export_rules(out)
    assert _notes(out) == [(60, 0.0, 0.5), (64, 0.0, 0.5)]
    write_midi([VEL + 20, 60], out)  # nothing after it: one step long
    assert _notes(out) == [(60, 0.0, 0.01)]


def test_note_off_without_note_on_is_dropped(tmp_path: Path) -> None:
    out = tmp_path / "orphan.mid"
    write_midi([OFF + 70, 60, SHIFT + 10, OFF + 60, OFF + 60, OFF + 71], out)
    check_export_rules(out)
    assert _notes(out) == [(60, 0.0, 0.1)]


def test_same_pitch_overlap_is_split(tmp_path: Path) -> None:
    out = tmp_path / "overlap.mid"
    write_midi([60, SHIFT + 10, 60, SHIFT + 10, OFF + 60], out)
    check_export_rules(out)
    assert _notes(out) == [(60, 0.0, 0.1), (60, 0.1, 0.2)]


def test_tempo_sets_the_grid_not_the_timing(tmp_path: Path) -> None:
    ids = [VEL + 20, 60, SHIFT + 37, OFF + 60, 62, SHIFT + 100, SHIFT + 3, OFF + 62]
    slow, fast = tmp_path / "slow.mid", tmp_path / "fast.mid"
    write_midi(ids, slow, tempo_bpm=45)
    write_midi(ids, fast, tempo_bpm=180)
    assert _notes(slow) == _notes(fast) == [(60, 0.0, 0.37), (62, 0.37, 1.4)]


@pytest.mark.parametrize("ids", [[], [SHIFT + 100, OFF + 60, VEL + 3]])
def test_no_notes_is_an_error_and_writes_nothing(tmp_path: Path, ids: list[int]) -> None:
    out = tmp_path / "empty.mid"
    with pytest.raises(ChargenError, match="^generated stream contains no notes"):
        write_midi(ids, out)
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic_and_replaces(tmp_path: Path) -> None:
    out = tmp_path / "song.mid"
    out.write_bytes(b"old")
    write_midi([60, SHIFT + 5], out)
    assert out.read_bytes()[:4] == b"MThd"
    assert [p.name for p in tmp_path.iterdir()] == ["song.mid"], "temporary file left behind"
    before = out.read_bytes()
    with pytest.raises(ChargenError):
        write_midi([SHIFT + 5], out)  # no notes: the old file stays
    assert out.read_bytes() == before


def test_write_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ChargenError, match="cannot write") as info:
        write_midi([60], tmp_path / "a-file" / "x.mid")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"program": 128}, "program"), ({"program": -1}, "program"), ({"tempo_bpm": 0}, "tempo"),
     ({"tempo_bpm": 1000}, "tempo")],
)
def test_bad_export_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ChargenError, match=message):
        decode_to_midi([60], **kwargs)


def test_out_of_vocabulary_id_is_an_error() -> None:
    with pytest.raises(ChargenError, match="outside the MIDI vocabulary"):
        decode_to_midi([60, V.size])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), tempo=st.sampled_from([45.0, 120.0, 333.0]), program=st.integers(0, 127),
       max_note_s=st.sampled_from([None, 0.5, 5.0]))
def test_written_file_is_midi_bytes_and_its_notes_are_midi_notes(tmp_path: Path, seed: int, tempo: float,
                                                                 program: int, max_note_s: float | None) -> None:
    """The service answers with midi_bytes, `chargen sample` and `history export` write with write_midi:
    for the same ids and settings the two are the same bytes."""
    rng = np.random.default_rng(seed)
    ids = [60, SHIFT + 50, 64, SHIFT + 90, OFF + 60] + rng.integers(0, V.size, 200).tolist()
    out = tmp_path / "same.mid"
    write_midi(ids, out, tempo_bpm=tempo, program=program, max_note_s=max_note_s)
    data = midi_bytes(ids, tempo_bpm=tempo, program=program, max_note_s=max_note_s)
    assert out.read_bytes() == data
    notes = midi_notes(data)  # [pitch, start_s, end_s, velocity], as pretty_midi reads the same file
    theirs = sorted((n.start, n.pitch) for i in pretty_midi.PrettyMIDI(str(out)).instruments for n in i.notes)
    assert [pitch for pitch, _, _, _ in notes] == [pitch for _, pitch in theirs]
    assert [start for _, start, _, _ in notes] == pytest.approx([start for start, _ in theirs], abs=2e-3)
    if max_note_s is not None:
        assert all(end - start <= max_note_s + 0.01 for _, start, end, _ in notes)
