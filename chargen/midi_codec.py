"""MIDI codec: Standard MIDI Files as a stream of performance events.

The vocabulary follows Magenta's Performance RNN (Oore et al. 2018). With the
default settings there are 388 tokens, in this id order:

====================  =====  ===========================================
kind                  count  meaning
====================  =====  ===========================================
NOTE_ON  0..127         128  start pitch p at the current velocity
NOTE_OFF 0..127         128  stop pitch p
TIME_SHIFT 1..100       100  advance the clock by n x 10 ms (10 ms .. 1 s)
VELOCITY 0..31           32  velocity bin for the following NOTE_ONs
====================  =====  ===========================================

Decisions (also in docs/midi.md):

* Time is absolute: ticks become seconds through every tempo change
  (``mido.tick2second`` with the file's ticks_per_beat; SMPTE divisions are
  honoured too), then each event is rounded to the nearest 10 ms step. Rounding
  absolute times, not deltas, means no drift. Longer gaps are several shifts.
* Velocity 1..127 falls into 32 bins of ~4 values; a bin decodes to a velocity
  inside it, so a decoded file re-encodes to the same bins. A VELOCITY token
  is only emitted when the bin changes.
* All tracks and channels are merged into one time-ordered stream (type 0 and
  1); in type 2 files the tracks are independent songs and are played one
  after another, each with its own tempo map.
* Channel 10 (index 9) is percussion; its "pitches" are instruments, so drums
  are dropped. Program changes are ignored (export picks one instrument).
  The sustain pedal (CC 64) and all other controllers are ignored: notes keep
  their written length.
* NOTE_ON with velocity 0 is a NOTE_OFF. Note-ons and -offs pair per track,
  channel and pitch; a NOTE_OFF closes every open note of its key that did
  not start on the same tick (what pretty_midi does). Notes still open at the
  end of a track end there.
* Canonical form, so that encode -> decode -> encode is the identity after the
  first quantization: every note lasts at least one step; of two same-pitch
  notes starting on the same step only the longer is kept; a same-pitch note
  that starts while another sounds cuts the earlier one off. Within a step all
  NOTE_OFFs come first, then NOTE_ONs, each group by ascending pitch.
* Each token is one printable character: id i is ``chr(0x1401 + i)``, the
  Unified Canadian Aboriginal Syllabics block (letters only, narrow, no
  Unicode decomposition, so no normalisation form changes a stream).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import mido
import numpy as np

from chargen.codec import Codec
from chargen.errors import ChargenError, CheckpointError, CorruptFileError
from chargen.user_paths import read_bounded

SYMBOL_BASE = 0x1401
# U+1401..U+167F are printable, non-space; U+1680 is OGHAM SPACE MARK.
SYMBOL_LIMIT = 0x1680
DRUM_CHANNEL = 9
DEFAULT_TEMPO = 500_000  # microseconds per beat (120 bpm) until a set_tempo
# Guards against corrupt files that would otherwise expand into millions of
# time-shift tokens (a 28-bit delta at a slow tempo is days of silence).
MAX_DURATION_S = 24 * 3600.0
MAX_FILE_BYTES = 32 << 20
METADATA_FORMAT = 1


@dataclass(frozen=True)
class MidiVocab:
    """The event vocabulary; fixed entirely by these settings, never by data."""

    step_ms: int = 10
    max_shift_steps: int = 100
    velocity_bins: int = 32

    def __post_init__(self) -> None:
        for field, low, high in (
            ("step_ms", 1, 1000),
            ("max_shift_steps", 1, 1000),
            ("velocity_bins", 1, 127),
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ChargenError(f"MIDI {field} must be an integer in {low}..{high}, not {value!r}")
        if SYMBOL_BASE + self.size > SYMBOL_LIMIT:
            raise ChargenError(
                f"MIDI vocabulary of {self.size} tokens is too large for one character each "
                f"(at most {SYMBOL_LIMIT - SYMBOL_BASE})"
            )

    # Id layout: NOTE_ON 0..127, NOTE_OFF 128..255, TIME_SHIFT, VELOCITY.
    @property
    def note_off_base(self) -> int:
        return 128

    @property
    def shift_base(self) -> int:
        return 256

    @property
    def velocity_base(self) -> int:
        return 256 + self.max_shift_steps

    @property
    def size(self) -> int:
        return 256 + self.max_shift_steps + self.velocity_bins

    @property
    def step_s(self) -> float:
        return self.step_ms / 1000.0

    def velocity_bin(self, velocity: int) -> int:
        """Bin of a MIDI velocity 1..127 (equal-width bins over 1..127)."""
        return (min(max(velocity, 1), 127) - 1) * self.velocity_bins // 127

    def bin_velocity(self, vbin: int) -> int:
        """A velocity inside ``vbin`` (its upper median), so it re-encodes to ``vbin``."""
        members = [v for v in range(1, 128) if self.velocity_bin(v) == vbin]
        return members[len(members) // 2]


DEFAULT_VOCAB = MidiVocab()


class Note(NamedTuple):
    """A note on the quantized grid: times in steps, velocity as a bin."""

    pitch: int
    start: int
    end: int
    velocity: int


@dataclass(frozen=True)
class MidiStats:
    tokens: int
    notes: int
    duration_s: float
    lowest: int | None
    highest: int | None


# ---------------------------------------------------------------------------
# Reading MIDI files


def _is_chunk_id(cid: bytes) -> bool:
    return len(cid) == 4 and all(0x20 <= b < 0x7F for b in cid)


def _clean_smf_bytes(data: bytes) -> bytes:
    """Unwrap RIFF RMID files and drop unknown chunks before mido sees the data.

    The SMF spec tells readers to skip chunk types they do not know; mido
    instead fails with "no MTrk header". Anything not understood here is
    passed through unchanged so that mido reports it.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"RMID":
        pos = 12
        while pos + 8 <= len(data):
            cid = data[pos : pos + 4]
            (size,) = struct.unpack("<L", data[pos + 4 : pos + 8])
            if cid == b"data":
                data = data[pos + 8 : pos + 8 + size]
                break
            pos += 8 + size + (size & 1)
    if data[:4] != b"MThd" or len(data) < 8:
        return data
    (header_size,) = struct.unpack(">L", data[4:8])
    pos = 8 + header_size
    parts = [data[:pos]]
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        (size,) = struct.unpack(">L", data[pos + 4 : pos + 8])
        end = pos + 8 + size
        if end > len(data) or not _is_chunk_id(cid):
            break  # truncated or garbage: leave the rest to mido
        if cid == b"MTrk":
            parts.append(data[pos:end])
        pos = end
    parts.append(data[pos:])
    return b"".join(parts)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, EOFError):
        return "unexpected end of file" + (f" ({text})" if text else "")
    if isinstance(exc, KeyError | IndexError | TypeError | struct.error):
        # Their messages alone ("7", "list index out of range") say nothing useful.
        return f"malformed event data ({type(exc).__name__}: {text})"
    return text or type(exc).__name__


def read_midi_bytes(data: bytes) -> mido.MidiFile:
    """Parse SMF bytes with mido; any failure becomes CorruptFileError (no file name)."""
    try:
        return mido.MidiFile(file=io.BytesIO(_clean_smf_bytes(data)))
    except Exception as exc:  # noqa: BLE001 - see the comment below
        # Deliberately broad: on untrusted bytes mido raises OSError, EOFError,
        # ValueError, KeyError, IndexError, struct.error and even its own
        # KeySignatureError (a bare Exception); all mean "unreadable file".
        raise CorruptFileError(f"not a readable MIDI file: {_one_line(exc)}") from None


def read_midi_file(path: Path | str) -> mido.MidiFile:
    """mido.MidiFile of ``path``; CorruptFileError names the file and the problem."""
    try:
        data = read_bounded(Path(path), MAX_FILE_BYTES, "MIDI file")
    except ChargenError as exc:
        raise CorruptFileError(str(exc)) from None
    try:
        return read_midi_bytes(data)
    except CorruptFileError as exc:
        raise CorruptFileError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------
# MIDI -> notes


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
    """Quantized, normalized notes of a parsed MIDI file (see the module docstring)."""
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


# ---------------------------------------------------------------------------
# notes <-> token ids


def notes_to_ids(notes: Iterable[Note], vocab: MidiVocab = DEFAULT_VOCAB) -> list[int]:
    """Token ids of notes (normalized first, so the result is canonical)."""
    events: list[tuple[int, int, int, int]] = []
    for note in normalize_notes(notes):
        events.append((note.start, 1, note.pitch, note.velocity))
        events.append((note.end, 0, note.pitch, 0))
    events.sort()  # per step: offs (kind 0) before ons, each by pitch
    ids: list[int] = []
    now = 0
    velocity = -1
    shift_base = vocab.shift_base - 1  # TIME_SHIFT n has id shift_base + n
    for time, kind, pitch, vbin in events:
        gap = time - now
        while gap > 0:
            step = min(gap, vocab.max_shift_steps)
            ids.append(shift_base + step)
            gap -= step
        now = time
        if kind:
            if vbin != velocity:
                ids.append(vocab.velocity_base + vbin)
                velocity = vbin
            ids.append(pitch)
        else:
            ids.append(vocab.note_off_base + pitch)
    return ids


def _check_ids(ids: Sequence[int] | np.ndarray, vocab: MidiVocab) -> list[int]:
    values = np.asarray(ids, dtype=np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() >= vocab.size):
        bad = int(values[(values < 0) | (values >= vocab.size)][0])
        raise ChargenError(f"token id {bad} is outside the MIDI vocabulary (0..{vocab.size - 1})")
    return values.tolist()


def ids_to_notes(ids: Sequence[int] | np.ndarray, vocab: MidiVocab = DEFAULT_VOCAB) -> list[Note]:
    """Normalized notes of any token stream (a model's output need not be well formed).

    NOTE_OFF without an open note is dropped; a repeated NOTE_ON of a sounding
    pitch restarts it; notes still open at the end close when the stream ends
    (at least one step after they start). NOTE_ONs before any VELOCITY token
    use the bin of velocity 64.
    """
    values = _check_ids(ids, vocab)
    notes: list[Note] = []
    open_notes: dict[int, tuple[int, int]] = {}
    now = 0
    velocity = vocab.velocity_bin(64)
    off_base, shift_base, vel_base = vocab.note_off_base, vocab.shift_base, vocab.velocity_base
    for token in values:
        if token < off_base:
            started = open_notes.pop(token, None)
            if started is not None:
                notes.append(Note(token, started[0], now, started[1]))
            open_notes[token] = (now, velocity)
        elif token < shift_base:
            started = open_notes.pop(token - off_base, None)
            if started is not None:
                notes.append(Note(token - off_base, started[0], now, started[1]))
        elif token < vel_base:
            now += token - shift_base + 1
        else:
            velocity = token - vel_base
    for pitch, (start, vbin) in open_notes.items():
        notes.append(Note(pitch, start, now, vbin))
    return normalize_notes(notes)


def encode_midi(mid: mido.MidiFile, vocab: MidiVocab = DEFAULT_VOCAB) -> list[int]:
    """Token ids of a parsed MIDI file; empty when it has no (non-drum) notes."""
    return notes_to_ids(midi_notes(mid, vocab), vocab)


def token_name(token: int, vocab: MidiVocab = DEFAULT_VOCAB) -> str:
    """Readable name of one id: ``on60``, ``off60``, ``+120ms``, ``v20``."""
    if not 0 <= token < vocab.size:
        raise ChargenError(f"token id {token} is outside the MIDI vocabulary (0..{vocab.size - 1})")
    if token < vocab.note_off_base:
        return f"on{token}"
    if token < vocab.shift_base:
        return f"off{token - vocab.note_off_base}"
    if token < vocab.velocity_base:
        return f"+{(token - vocab.shift_base + 1) * vocab.step_ms}ms"
    return f"v{token - vocab.velocity_base}"


def describe(ids: Sequence[int] | np.ndarray, vocab: MidiVocab = DEFAULT_VOCAB) -> str:
    """Space-separated readable names of a token stream."""
    return " ".join(token_name(t, vocab) for t in _check_ids(ids, vocab))


def midi_stats(ids: Sequence[int] | np.ndarray, vocab: MidiVocab = DEFAULT_VOCAB) -> MidiStats:
    """Note count, sounding length and pitch range of a token stream as it would be written."""
    notes = ids_to_notes(ids, vocab)
    pitches = [n.pitch for n in notes]
    return MidiStats(
        tokens=len(ids),
        notes=len(notes),
        duration_s=max((n.end for n in notes), default=0) * vocab.step_s,
        lowest=min(pitches, default=None),
        highest=max(pitches, default=None),
    )


# ---------------------------------------------------------------------------
# The codec


class MidiCodec(Codec):
    name = "midi"
    suffixes = (".mid", ".midi")

    supports_transpose = True

    def augment_window(self, window: np.ndarray, rng: np.random.Generator, low: int, high: int) -> np.ndarray:
        """Transpose each row of a batch window [B, T+1] by its own random shift in [low, high].

        The shift is narrowed per row so that every note stays in 0..127, which
        keeps this a pure token map (no tokens appear or vanish) and so keeps
        the window's shape and the inputs/targets alignment.
        """
        out = np.array(window, dtype=np.int64)
        is_note = out < self.vocab.shift_base  # [B, T+1]
        pitch = out % 128
        for row in range(out.shape[0]):
            notes = pitch[row][is_note[row]]
            lo = max(low, -int(notes.min())) if notes.size else low
            hi = min(high, 127 - int(notes.max())) if notes.size else high
            shift = int(rng.integers(lo, hi + 1)) if lo <= hi else 0
            out[row][is_note[row]] += shift
        return out

    def __init__(self, vocab: MidiVocab = DEFAULT_VOCAB):
        self.vocab = vocab
        self._symbols = "".join(chr(SYMBOL_BASE + i) for i in range(vocab.size))

    @classmethod
    def fit(cls, paths: Sequence[Path] = (), encoding: str = "utf-8") -> MidiCodec:
        """Same shape as TextCodec.fit; the MIDI vocabulary never depends on the data."""
        return cls()

    @property
    def symbols(self) -> str:
        return self._symbols

    @property
    def default_prime(self) -> str:
        # A mezzo-forte velocity token: what almost every encoded file starts with.
        return self._symbols[self.vocab.velocity_base + self.vocab.velocity_bin(80)]

    def to_metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": METADATA_FORMAT,
            "step_ms": self.vocab.step_ms,
            "max_shift_steps": self.vocab.max_shift_steps,
            "velocity_bins": self.vocab.velocity_bins,
            "drums": "dropped",
            "symbol_base": SYMBOL_BASE,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> MidiCodec:
        if meta.get("format") != METADATA_FORMAT or meta.get("symbol_base") != SYMBOL_BASE:
            raise CheckpointError(
                f"checkpoint's MIDI codec (format {meta.get('format')!r}) is not supported by this version"
            )
        try:
            vocab = MidiVocab(meta["step_ms"], meta["max_shift_steps"], meta["velocity_bins"])
        except (KeyError, ChargenError) as exc:
            raise CheckpointError(f"checkpoint has invalid MIDI codec settings: {exc}") from None
        return cls(vocab)

    def encode_file(self, path: Path) -> np.ndarray:
        mid = read_midi_file(path)
        try:
            ids = encode_midi(mid, self.vocab)
        except CorruptFileError as exc:
            raise CorruptFileError(f"{path}: {exc}") from None
        return np.asarray(ids, dtype=np.int64)
