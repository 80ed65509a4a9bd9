"""The MIDI codecs' common part (``MusicCodec``) and the event codec (``midi``): files -> token ids, and the
vocabulary's settings in a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from chargen.codecs.base import Codec
from chargen.codecs.midi.events import encode_midi, token_name
from chargen.codecs.midi.smf import read_midi_file
from chargen.codecs.midi.vocab import DEFAULT_VOCAB, SYMBOL_BASE, MidiVocab
from chargen.errors import ChargenError, CheckpointError, CorruptFileError

METADATA_FORMAT = 1
_Self = TypeVar("_Self", bound="MusicCodec")


def transpose_rows(window: np.ndarray, note_limit: int, rng: np.random.Generator, low: int, high: int) -> np.ndarray:
    """Each row of ``window`` [B, T+1] with its note tokens (ids below ``note_limit``; pitch = id % 128)
    moved by its own random shift in [low, high].

    The shift is narrowed per row so that every note stays in 0..127, which
    keeps this a pure token map (no tokens appear or vanish) and so keeps
    the window's shape and the inputs/targets alignment.
    """
    out = np.array(window, dtype=np.int64)
    is_note = out < note_limit  # [B, T+1]
    pitch = out % 128
    for row in range(out.shape[0]):
        notes = pitch[row][is_note[row]]
        lo = max(low, -int(notes.min())) if notes.size else low
        hi = min(high, 127 - int(notes.max())) if notes.size else high
        shift = int(rng.integers(lo, hi + 1)) if lo <= hi else 0
        out[row][is_note[row]] += shift
    return out


class MusicCodec(Codec):
    """What both MIDI codecs share: a fixed vocabulary of printable symbols, files read by mido, transposition.

    A subclass names its vocabulary's pitch-carrying tokens (``note_limit``), how a read file becomes ids
    (``encode_midi``) and how its settings are stored (``vocab_metadata``/``from_metadata``).
    """

    suffixes: ClassVar[tuple[str, ...]] = (".mid", ".midi")
    supports_transpose: ClassVar[bool] = True
    music: ClassVar[bool] = True
    what: ClassVar[str] = "MIDI"  # how errors name the codec

    def __init__(self, vocab: Any):
        self.vocab = vocab
        self._symbols = "".join(chr(SYMBOL_BASE + i) for i in range(vocab.size))

    @classmethod
    def fit(cls: type[_Self], paths: Sequence[Path] = (), encoding: str = "utf-8") -> _Self:
        """Same shape as TextCodec.fit; a MIDI vocabulary never depends on the data."""
        return cls()

    @property
    def symbols(self) -> str:
        return self._symbols

    @property
    def default_prime(self) -> str:
        # A mezzo-forte velocity token: what almost every encoded file starts with.
        return self._symbols[self.vocab.velocity_base + self.vocab.velocity_bin(80)]

    @property
    def note_limit(self) -> int:
        """Ids below this carry a pitch (``id % 128``): what transposition moves."""
        raise NotImplementedError

    def augment_window(self, window: np.ndarray, rng: np.random.Generator, low: int, high: int) -> np.ndarray:
        """Each row of a batch window [B, T+1] transposed by its own random shift in [low, high]."""
        return transpose_rows(window, self.note_limit, rng, low, high)

    def encode_midi(self, mid: Any) -> list[int]:
        """The ids of a read file (``mido.MidiFile``)."""
        raise NotImplementedError

    def encode_file(self, path: Path) -> np.ndarray:
        mid = read_midi_file(path)
        try:
            ids = self.encode_midi(mid)
        except CorruptFileError as exc:
            raise CorruptFileError(f"{path}: {exc}") from None
        return np.asarray(ids, dtype=np.int64)

    def vocab_metadata(self) -> dict[str, Any]:
        """The vocabulary's settings as stored (beside the name, format and symbol base)."""
        raise NotImplementedError

    def to_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "format": METADATA_FORMAT, **self.vocab_metadata(), "drums": "dropped",
                "symbol_base": SYMBOL_BASE}

    @classmethod
    def check_format(cls, meta: dict[str, Any]) -> None:
        """CheckpointError unless ``meta`` is this version's format of the codec's metadata."""
        if meta.get("format") != METADATA_FORMAT or meta.get("symbol_base") != SYMBOL_BASE:
            raise CheckpointError(
                f"checkpoint's {cls.what} codec (format {meta.get('format')!r}) is not supported by this version"
            )


class MidiCodec(MusicCodec):
    """MIDI files as Performance-RNN events: NOTE_ON, NOTE_OFF, TIME_SHIFT, VELOCITY."""

    name = "midi"

    def __init__(self, vocab: MidiVocab = DEFAULT_VOCAB):
        super().__init__(vocab)

    @property
    def note_limit(self) -> int:
        return self.vocab.shift_base  # note-ons and note-offs

    def encode_midi(self, mid: Any) -> list[int]:
        return encode_midi(mid, self.vocab)

    def vocab_metadata(self) -> dict[str, Any]:
        return {"step_ms": self.vocab.step_ms, "max_shift_steps": self.vocab.max_shift_steps,
                "velocity_bins": self.vocab.velocity_bins}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> MidiCodec:
        cls.check_format(meta)
        try:
            vocab = MidiVocab(meta["step_ms"], meta["max_shift_steps"], meta["velocity_bins"])
        except (KeyError, ChargenError) as exc:
            raise CheckpointError(f"checkpoint has invalid MIDI codec settings: {exc}") from None
        return cls(vocab)

    def token_name(self, token: int) -> str:
        """Readable name of one id (``on60``, ``off60``, ``+120ms``, ``v20``)."""
        return token_name(token, self.vocab)
