"""Write the project's own small MIDI corpus (corpora/midi-basics/).

Deterministic: one seeded random.Random drives every choice and mido writes
no dates, so running it again gives byte-identical files (a test checks).
Everything is generated from simple rules, so the corpus is free of
third-party rights. Usage::

    python scripts/make_midi_corpus.py [OUT_DIR]   # default corpora/midi-basics
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from pathlib import Path

import mido

SEED = 20240611
TPB = 480  # ticks per quarter note
OUT_DIR = Path(__file__).resolve().parents[1] / "corpora" / "midi-basics"

NAMES = ["C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
MINOR_KEYS = ["Cm", "C#m", "Dm", "Ebm", "Em", "Fm", "F#m", "Gm", "G#m", "Am", "Bbm", "Bm"]
MAJOR = [0, 2, 4, 5, 7, 9, 11]
MINOR = [0, 2, 3, 5, 7, 8, 11]  # harmonic minor: a real leading tone for cadences

# (start beat, length in beats, midi pitch, velocity, channel)
Event = tuple[float, float, int, int, int]


def degree_pitch(tonic: int, scale: list[int], degree: int) -> int:
    """Pitch of a scale degree counted from ``tonic`` (degree 7 is the octave)."""
    octave, step = divmod(degree, 7)
    return tonic + 12 * octave + scale[step]


def triad(tonic: int, scale: list[int], root_degree: int, seventh: bool = False) -> list[int]:
    """Pitch classes of the triad (or seventh chord) on a scale degree."""
    degrees = [root_degree, root_degree + 2, root_degree + 4] + ([root_degree + 6] if seventh else [])
    return [degree_pitch(tonic, scale, d) % 12 for d in degrees]


def to_midi(
    parts: list[list[Event]],
    bpm: float,
    key: str,
    meter: tuple[int, int] = (4, 4),
    file_type: int = 1,
    programs: list[int] | None = None,
    ritardando: bool = False,
) -> mido.MidiFile:
    """Type-0 or type-1 file: conductor data plus one track (or channel) per part."""
    conductor: list[tuple[int, mido.Message | mido.MetaMessage]] = [
        (0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))),
        (0, mido.MetaMessage("time_signature", numerator=meter[0], denominator=meter[1])),
        (0, mido.MetaMessage("key_signature", key=key)),
    ]
    end_beat = max(start + length for part in parts for start, length, *_ in part)
    if ritardando:  # slow down over the last two bars: exercises tempo maps
        bar = meter[0] * 4 / meter[1]
        for i, factor in enumerate((0.9, 0.8, 0.7, 0.6)):
            beat = end_beat - 2 * bar + i * bar / 2
            conductor.append((round(beat * TPB), mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm * factor))))
    tracks: list[list[tuple[int, mido.Message | mido.MetaMessage]]] = []
    for index, part in enumerate(parts):
        channel = part[0][4] if part else index
        program = (programs or [0] * len(parts))[index]
        events: list[tuple[int, mido.Message | mido.MetaMessage]] = [
            (0, mido.Message("program_change", channel=channel, program=program))
        ]
        for start, length, pitch, velocity, ch in part:
            on, off = round(start * TPB), round((start + length) * TPB)
            events.append((on, mido.Message("note_on", channel=ch, note=pitch, velocity=velocity)))
            # Odd programs end notes with note_on velocity 0, as many real files do.
            if program % 2:
                off_msg = mido.Message("note_on", channel=ch, note=pitch, velocity=0)
            else:
                off_msg = mido.Message("note_off", channel=ch, note=pitch, velocity=64)
            events.append((off, off_msg))
        tracks.append(events)
    if file_type == 0:
        tracks = [conductor + [e for t in tracks for e in t]]
    else:
        tracks = [conductor] + tracks
    mid = mido.MidiFile(type=file_type, ticks_per_beat=TPB)
    for events in tracks:
        # Within one tick, note-offs first, so a repeated pitch ends before it restarts.
        events.sort(key=lambda item: (item[0], not _is_off(item[1])))
        track = mido.MidiTrack()
        now = 0
        for tick, msg in events:
            track.append(msg.copy(time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        mid.tracks.append(track)
    return mid


def _is_off(msg: mido.Message | mido.MetaMessage) -> bool:
    return msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0)


def scale_piece(rng: random.Random, tonic: int, minor: bool) -> list[list[Event]]:
    scale = MINOR if minor else MAJOR
    unit = rng.choice([0.5, 0.25, 0.5, 1.0])
    octaves = 1 if unit == 1.0 else 2
    legato = rng.choice([0.95, 0.5, 0.8])
    degrees = list(range(7 * octaves + 1)) + list(range(7 * octaves - 1, -1, -1))
    base = rng.randint(58, 72)
    events = []
    for i, degree in enumerate(degrees):
        accent = 12 if i % 4 == 0 else 0
        velocity = max(1, min(127, base + accent + rng.randint(-4, 4)))
        events.append((i * unit, unit * legato, degree_pitch(tonic, scale, degree), velocity, 0))
    last = len(degrees) * unit
    events.append((last, 2.0, tonic, base, 0))
    return [events]


def arpeggio_piece(rng: random.Random, tonic: int, minor: bool) -> list[list[Event]]:
    scale = MINOR if minor else MAJOR
    progression = rng.choice([[0, 5, 3, 4], [0, 3, 4, 0], [0, 1, 4, 0], [0, 4, 5, 3]])
    pattern = rng.choice(["up", "updown", "alberti"])
    right: list[Event] = []
    left: list[Event] = []
    beat = 0.0
    for repeat in range(2):
        for degree in progression:
            tones = triad(tonic, scale, degree, seventh=(degree == 4 and repeat == 1))
            low = [48 + (pc - 48) % 12 for pc in tones]
            low.sort()
            chord = low + [p + 12 for p in low]
            if pattern == "up":
                seq = chord
            elif pattern == "updown":
                seq = chord + chord[-2:0:-1]
            else:  # Alberti bass: low, high, middle, high
                seq = [low[0], low[-1], low[1], low[-1]] * 2
            unit = 4.0 / len(seq) if len(seq) <= 8 else 0.5
            block = 4.0 * math.ceil(len(seq) * unit / 4.0)  # whole bars
            for i, pitch in enumerate(seq):
                right.append((beat + i * unit, unit, pitch + 12, 60 + rng.randint(0, 20), 0))
            root = 36 + (tones[0] - 36) % 12
            left.append((beat, block, root, 70, 1))
            beat += block
    right.append((beat, 4.0, tonic + 12, 75, 0))
    left.append((beat, 4.0, 36 + (tonic - 36) % 12, 70, 1))
    return [right, left]


def voice(previous: list[int] | None, tones: list[int], rng: random.Random) -> list[int]:
    """Soprano, alto, tenor for chord ``tones``: the candidate nearest the last chord."""
    candidates = []
    for tenor in range(52, 68):
        for alto in range(tenor + 1, tenor + 13):
            for soprano in range(alto + 1, min(alto + 13, 80)):
                classes = {tenor % 12, alto % 12, soprano % 12}
                # Chord tones only, root and third present (the bass doubles the root).
                if classes <= set(tones) and {tones[0], tones[1]} <= classes and soprano >= 64:
                    candidates.append([soprano, alto, tenor])
    if previous is None:
        return rng.choice(sorted(candidates, key=lambda v: abs(v[0] - 72))[:6])
    return min(candidates, key=lambda v: (sum(abs(a - b) for a, b in zip(v, previous, strict=True)), v))


def chorale_piece(rng: random.Random, tonic: int, minor: bool) -> list[list[Event]]:
    scale = MINOR if minor else MAJOR
    phrases = [[0, 3, 4, 0], [0, 5, 1, 4], [5, 3, 4, 0], [0, 3, 0, 4], [3, 4, 0, 0]]
    degrees = [d for _ in range(2) for d in rng.choice(phrases)] + [3, 4, 0]
    voices: list[list[Event]] = [[], [], [], []]
    previous = None
    beat = 0.0
    for i, degree in enumerate(degrees):
        tones = triad(tonic, scale, degree)
        upper = voice(previous, tones, rng)
        previous = upper
        bass = 40 + (tones[0] - 40) % 12
        length = 4.0 if i == len(degrees) - 1 else rng.choice([1.0, 1.0, 2.0])
        dynamic = 64 + 8 * (i % 4 == 0) + rng.randint(-3, 3)
        for part, pitch in enumerate([*upper, bass]):
            voices[part].append((beat, length, pitch, dynamic + (6 if part == 0 else 0), part))
        beat += length
    return voices


RHYTHMS_4 = [
    [1, 1, 1, 1], [0.5, 0.5, 1, 1, 1], [1.5, 0.5, 1, 1], [2, 1, 1], [1, 0.5, 0.5, 2],
    [0.75, 0.25, 1, 0.75, 0.25, 1], [3, 1], [0.5, 0.5, 0.5, 0.5, 2], [1, -1, 1, 1],
]
RHYTHMS_3 = [[1, 1, 1], [2, 1], [1.5, 0.5, 1], [0.5, 0.5, 1, 1], [3], [1, -0.5, 0.5, 1]]


def melody_piece(rng: random.Random, tonic: int, minor: bool, meter: tuple[int, int]) -> list[list[Event]]:
    scale = MINOR if minor else MAJOR
    rhythms = RHYTHMS_3 if meter[0] == 3 else RHYTHMS_4
    bar_beats = float(meter[0])
    bars = rng.choice([8, 8, 12, 16])
    degree = rng.choice([0, 2, 4])
    melody: list[Event] = []
    bass: list[Event] = []
    harmony = [0, 3, 4, 0, 5, 1, 4, 0]
    base = rng.randint(62, 88)
    for bar in range(bars):
        start = bar * bar_beats
        pattern = [bar_beats] if bar == bars - 1 else rng.choice(rhythms)
        offset = 0.0
        for j, length in enumerate(pattern):
            if length < 0:  # a rest
                offset += -length
                continue
            if bar == bars - 1:
                degree = 0
            else:
                degree += rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3])
                degree = max(-3, min(9, degree))
            accent = 10 if j == 0 else 0
            velocity = max(1, min(127, base + accent + rng.randint(-6, 6)))
            melody.append((start + offset, length * 0.9, degree_pitch(tonic + 12, scale, degree), velocity, 0))
            offset += length
        chord = harmony[bar % len(harmony)] if bar != bars - 1 else 0
        root = 36 + (degree_pitch(tonic, scale, chord) - 36) % 12
        bass.append((start, bar_beats, root, base - 15, 1))
    return [melody, bass]


def build_corpus(seed: int = SEED) -> dict[str, mido.MidiFile]:
    rng = random.Random(seed)
    files: dict[str, mido.MidiFile] = {}

    def key_name(tonic: int, minor: bool) -> str:
        return MINOR_KEYS[tonic % 12] if minor else NAMES[tonic % 12]

    def add(kind: str, count: int, make: Callable[[int, bool], tuple[list[list[Event]], dict]]) -> None:
        for i in range(1, count + 1):
            tonic = 60 + rng.randrange(-5, 7)
            minor = rng.random() < 0.35
            parts, options = make(tonic, minor)
            key = key_name(tonic, minor)
            label = key.removesuffix("m").replace("#", "s")
            name = f"{kind}-{i:02d}-{label}-{'minor' if minor else 'major'}.mid"
            files[name] = to_midi(parts, key=key, **options)

    add("scale", 10, lambda t, m: (scale_piece(rng, t, m), {"bpm": rng.choice([72, 90, 108, 120, 144])}))
    add("arpeggio", 10, lambda t, m: (
        arpeggio_piece(rng, t, m),
        {"bpm": rng.choice([80, 96, 112, 132]), "file_type": rng.choice([0, 1]), "programs": [0, 32]},
    ))
    add("chorale", 12, lambda t, m: (
        chorale_piece(rng, t, m),
        {"bpm": rng.choice([56, 63, 72, 80]), "ritardando": rng.random() < 0.5, "programs": [19, 19, 19, 19]},
    ))

    def melody(t: int, m: bool) -> tuple[list[list[Event]], dict]:
        meter = rng.choice([(4, 4), (4, 4), (3, 4)])
        return melody_piece(rng, t, m, meter), {
            "bpm": rng.choice([66, 84, 100, 116, 132, 152]),
            "meter": meter,
            "file_type": rng.choice([0, 1]),
            "programs": [rng.choice([0, 40, 73, 71]), 33],
            "ritardando": rng.random() < 0.3,
        }

    add("melody", 16, melody)
    return files


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    files = build_corpus()
    for name, mid in files.items():
        mid.save(out / name)
    total = sum((out / name).stat().st_size for name in files)
    print(f"wrote {len(files)} files ({total / 1024:.1f} KiB) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
