"""Writing token streams as Standard MIDI Files.

The stream's timing is absolute (steps of ``vocab.step_ms``), so ``tempo_bpm``
does not change how the file sounds: it sets the tempo meta event, i.e. the
beat grid a notation program or DAW shows. The file is type 1: a conductor
track (tempo, 4/4 time signature, both at tick 0) and one note track on
channel 1 with a program change to ``program``. Ticks are chosen fine enough
(at least 4 per step) that reading the file back lands on the same steps.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mido
import numpy as np

from chargen.codecs.midi.streams import midi_stats, stream_notes
from chargen.codecs.midi.vocab import DEFAULT_VOCAB, MidiStats, MidiVocab
from chargen.errors import ChargenError
from chargen.files.atomic import atomic_write

BASE_TICKS_PER_BEAT = 960
MAX_TICKS_PER_BEAT = 0x7FFF  # 15 bits: the top bit would mean an SMPTE division
MIN_BPM, MAX_BPM = 20.0, 400.0
DEFAULT_TEMPO_BPM = 120.0
DEFAULT_PROGRAM = 0
#: Where `chargen sample` and `chargen serve` end a held note (Magenta's performance models use 5 s).
DEFAULT_MAX_NOTE_S = 5.0


def _ticks_per_beat(tempo_us: int, step_us: int) -> int:
    # A tick at most a quarter step keeps rounding error far below half a step.
    tpb = BASE_TICKS_PER_BEAT
    while tempo_us > tpb * step_us // 4:
        tpb *= 2
    if tpb > MAX_TICKS_PER_BEAT:
        raise ChargenError(f"time step too fine for a MIDI file at this tempo ({step_us} us)")
    return tpb


def decode_to_midi(
    ids: Sequence[int] | np.ndarray,
    tempo_bpm: float = DEFAULT_TEMPO_BPM,
    program: int = DEFAULT_PROGRAM,
    vocab: MidiVocab = DEFAULT_VOCAB,
    max_note_s: float | None = None,
) -> mido.MidiFile:
    """A type-1 MidiFile playing ``ids``; raises ChargenError if no note results.

    ``max_note_s`` ends any note held longer (Magenta's performance models use
    5 s): a model that never releases a key must not leave it sounding to the end.
    """
    if not (isinstance(tempo_bpm, int | float) and MIN_BPM <= tempo_bpm <= MAX_BPM):
        raise ChargenError(f"tempo must be between {MIN_BPM:g} and {MAX_BPM:g} bpm, not {tempo_bpm!r}")
    if not (isinstance(program, int) and not isinstance(program, bool) and 0 <= program <= 127):
        raise ChargenError(f"MIDI program must be an integer 0..127, not {program!r}")
    notes = stream_notes(ids, vocab)  # closes dangling notes, drops stray offs, resolves overlaps
    if max_note_s is not None:
        longest = max(1, round(max_note_s * 1000 / vocab.step_ms))
        notes = [n._replace(end=min(n.end, n.start + longest)) for n in notes]
    if not notes:
        raise ChargenError(
            f"generated stream contains no notes ({len(ids)} tokens); nothing to write as MIDI"
        )
    tempo_us = round(60_000_000 / tempo_bpm)
    step_us = vocab.step_ms * 1000
    tpb = _ticks_per_beat(tempo_us, step_us)

    def tick(step: int) -> int:  # exact integer rounding of step * step_us / (tempo_us / tpb)
        return (2 * step * step_us * tpb + tempo_us) // (2 * tempo_us)

    velocities = [vocab.bin_velocity(b) for b in range(vocab.velocity_bins)]
    events: list[tuple[int, int, int, int]] = []
    for note in notes:
        events.append((tick(note.start), 1, note.pitch, velocities[note.velocity]))
        events.append((tick(note.end), 0, note.pitch, 0))
    events.sort()  # on one tick, offs first: a repeated pitch ends before it restarts

    conductor = mido.MidiTrack(
        [
            mido.MetaMessage("track_name", name="chargen", time=0),
            mido.MetaMessage("set_tempo", tempo=tempo_us, time=0),
            mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0),
            mido.MetaMessage("end_of_track", time=0),
        ]
    )
    track = mido.MidiTrack(
        [
            mido.MetaMessage("track_name", name=f"program {program}", time=0),
            mido.Message("program_change", channel=0, program=program, time=0),
        ]
    )
    now = 0
    for at, is_on, pitch, velocity in events:
        kind = "note_on" if is_on else "note_off"
        track.append(mido.Message(kind, channel=0, note=pitch, velocity=velocity, time=at - now))
        now = at
    track.append(mido.MetaMessage("end_of_track", time=0))
    return mido.MidiFile(type=1, ticks_per_beat=tpb, tracks=[conductor, track])


def midi_bytes(ids: Sequence[int] | np.ndarray, **settings: Any) -> bytes:
    """The Standard MIDI File of ``ids``, as bytes: what :func:`write_midi` writes and the service returns.

    ``settings``: :func:`decode_to_midi`'s (tempo_bpm, program, vocab, max_note_s).
    """
    buffer = io.BytesIO()
    decode_to_midi(ids, **settings).save(file=buffer)
    return buffer.getvalue()


def midi_notes(data: bytes) -> list[list[float]]:
    """Notes of a MIDI file as [pitch, start_s, end_s, velocity], sorted by start (the service's piano roll)."""
    mid = mido.MidiFile(file=io.BytesIO(data))
    now, notes = 0.0, []
    sounding: dict[tuple[int, int], list[tuple[float, int]]] = {}
    for message in mid:  # merged tracks, times in seconds
        now += message.time
        if message.type == "note_on" and message.velocity > 0:
            sounding.setdefault((message.channel, message.note), []).append((now, message.velocity))
        elif message.type in ("note_off", "note_on"):
            started = sounding.get((message.channel, message.note))
            if started:
                begin, velocity = started.pop(0)
                notes.append([message.note, round(begin, 4), round(now, 4), velocity])
    for (_, pitch), started in sounding.items():
        notes.extend([pitch, round(begin, 4), round(now, 4), velocity] for begin, velocity in started)
    return sorted(notes, key=lambda n: (n[1], n[0]))


def write_midi(
    ids: Sequence[int] | np.ndarray,
    path: Path | str,
    tempo_bpm: float = DEFAULT_TEMPO_BPM,
    program: int = DEFAULT_PROGRAM,
    vocab: MidiVocab = DEFAULT_VOCAB,
    max_note_s: float | None = None,
) -> MidiStats:
    """Write ``ids`` to ``path`` atomically (chargen.files.atomic); returns what was written.

    The bytes are :func:`midi_bytes`'s, so a file written here and one the service
    returned for the same ids and settings are identical.
    """
    data = midi_bytes(ids, tempo_bpm=tempo_bpm, program=program, vocab=vocab, max_note_s=max_note_s)
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))
    return midi_stats(ids, vocab)


def output_paths(output: Path | None, count: int) -> list[Path]:
    """Where ``count`` generated pieces go: ``output`` (numbered when several) or a timestamped name."""
    import time

    base = output or Path(f"chargen-{time.strftime('%Y%m%d-%H%M%S')}.mid")
    if base.suffix.lower() not in (".mid", ".midi"):
        base = base.with_name(base.name + ".mid")
    if count == 1:
        return [base]
    return [base.with_name(f"{base.stem}-{i + 1}{base.suffix}") for i in range(count)]
