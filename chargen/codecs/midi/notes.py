"""Parsed MIDI files -> quantized, canonical notes (tempo maps, note pairing, normal form)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import mido
import numpy as np

from chargen.codecs.midi.vocab import DEFAULT_VOCAB, MidiVocab, Note
from chargen.errors import CorruptFileError

DRUM_CHANNEL = 9
DEFAULT_TEMPO = 500_000  # microseconds per beat (120 bpm) until a set_tempo
# Guards against corrupt files that would otherwise expand into millions of
# time-shift tokens (a 28-bit delta at a slow tempo is days of silence).
MAX_DURATION_S = 24 * 3600.0


def _tick_converter(ticks_per_beat: int, tempos: list[tuple[int, int]]) -> Callable[[Any], np.ndarray]:
    """Vectorised ticks -> seconds through every tempo change of one segment."""
    if ticks_per_beat < 0:
        # SMPTE division: high byte is -frames/s, low byte ticks per frame; no tempo.
        fps = -(ticks_per_beat >> 8)
        per_frame = ticks_per_beat & 0xFF
        if fps not in (24, 25, 29, 30) or per_frame == 0:
            raise CorruptFileError(f"invalid SMPTE division ({fps} frames/s, {per_frame} ticks/frame)")
        rate = (29.97 if fps == 29 else fps) * per_frame
        return lambda ticks: np.asarray(ticks, dtype=np.float64) / rate
    if ticks_per_beat == 0:
        raise CorruptFileError("header gives 0 ticks per beat")
    tempos = sorted(tempos, key=lambda item: item[0])  # stable: file order within a tick
    bp_ticks = [0]
    bp_tempo = [DEFAULT_TEMPO]
    for tick, tempo in tempos:
        if tick == bp_ticks[-1]:
            bp_tempo[-1] = tempo  # the last tempo set on a tick wins
        else:
            bp_ticks.append(tick)
            bp_tempo.append(tempo)
    ticks_arr = np.asarray(bp_ticks, dtype=np.float64)
    tempo_arr = np.asarray(bp_tempo, dtype=np.float64)
    seconds_arr = np.concatenate(
        ([0.0], np.cumsum(mido.tick2second(np.diff(ticks_arr), ticks_per_beat, tempo_arr[:-1])))
    )

    def convert(ticks: Any) -> np.ndarray:
        t = np.asarray(ticks, dtype=np.float64)
        idx = np.searchsorted(ticks_arr, t, side="right") - 1
        return seconds_arr[idx] + mido.tick2second(t - ticks_arr[idx], ticks_per_beat, tempo_arr[idx])

    return convert


def _track_notes(
    track: Iterable[Any], drop_drums: bool, tempos: list[tuple[int, int]]
) -> tuple[list[tuple[int, int, int, int]], int]:
    """Raw (pitch, start_tick, end_tick, velocity) of one track, and its last tick."""
    notes: list[tuple[int, int, int, int]] = []
    open_notes: dict[tuple[int, int], list[tuple[int, int]]] = {}
    tick = 0
    for msg in track:
        tick += msg.time
        kind = msg.type
        if kind == "note_on" or kind == "note_off":
            if drop_drums and msg.channel == DRUM_CHANNEL:
                continue
            key = (msg.channel, msg.note)
            if kind == "note_on" and msg.velocity > 0:
                open_notes.setdefault(key, []).append((tick, msg.velocity))
            elif key in open_notes:
                # Close every open note of this key except one started on this
                # very tick (an off+on pair written in the "wrong" order).
                keep = []
                for start, velocity in open_notes.pop(key):
                    if start == tick:
                        keep.append((start, velocity))
                    else:
                        notes.append((msg.note, start, tick, velocity))
                if keep:
                    open_notes[key] = keep
        elif kind == "set_tempo":
            tempos.append((tick, msg.tempo))
    for (_, pitch), pending in open_notes.items():
        notes.extend((pitch, start, tick, velocity) for start, velocity in pending)
    return notes, tick


def normalize_notes(notes: Iterable[Note]) -> list[Note]:
    """Canonical notes: at least one step long, no same-pitch overlaps.

    Same-pitch notes on one step collapse to the longest (then loudest); a
    note starting while another of its pitch sounds cuts that one off. The
    result is sorted by (start, pitch) and is a fixed point of this function.
    """
    ordered = sorted(notes, key=lambda n: (n.pitch, n.start, -n.end, -n.velocity))
    out: list[Note] = []
    for note in ordered:
        note = note._replace(end=max(note.end, note.start + 1))
        if out and out[-1].pitch == note.pitch:
            prev = out[-1]
            if note.start == prev.start:
                continue
            if note.start < prev.end:
                out[-1] = prev._replace(end=note.start)
        out.append(note)
    out.sort(key=lambda n: (n.start, n.pitch))
    return out


def midi_notes(mid: mido.MidiFile, vocab: MidiVocab = DEFAULT_VOCAB, drop_drums: bool = True) -> list[Note]:
    """Quantized, normalized notes of a parsed MIDI file (see :mod:`chargen.codecs.midi`)."""
    segments = [[track] for track in mid.tracks] if mid.type == 2 else [list(mid.tracks)]
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    pitches: list[int] = []
    velocities: list[int] = []
    offset = 0.0
    for tracks in segments:
        tempos: list[tuple[int, int]] = []
        raw: list[tuple[int, int, int, int]] = []
        last_tick = 0
        for track in tracks:
            notes, end_tick = _track_notes(track, drop_drums, tempos)
            raw.extend(notes)
            last_tick = max(last_tick, end_tick)
        convert = _tick_converter(mid.ticks_per_beat, tempos)
        if raw:
            columns = np.asarray(raw, dtype=np.int64)
            starts.append(offset + convert(columns[:, 1]))
            ends.append(offset + convert(columns[:, 2]))
            pitches.extend(columns[:, 0].tolist())
            velocities.extend(columns[:, 3].tolist())
        offset += float(convert(last_tick))
        if not offset <= MAX_DURATION_S:  # also catches NaN
            raise CorruptFileError(f"implausible length ({offset / 3600:.0f} hours); corrupt delta times?")
    if not pitches:
        return []
    per_step = 1000.0 / vocab.step_ms
    start_steps = np.floor(np.concatenate(starts) * per_step + 0.5).astype(np.int64).tolist()
    end_steps = np.floor(np.concatenate(ends) * per_step + 0.5).astype(np.int64).tolist()
    bins = [vocab.velocity_bin(v) for v in range(128)]
    return normalize_notes(
        Note(p, s, e, bins[v]) for p, s, e, v in zip(pitches, start_steps, end_steps, velocities, strict=True)
    )
