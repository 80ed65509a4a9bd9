"""The MIDI codec: files -> token ids, and the vocabulary's settings in a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chargen.codecs.base import Codec
from chargen.codecs.midi.events import encode_midi, token_name
from chargen.codecs.midi.smf import read_midi_file
from chargen.codecs.midi.vocab import DEFAULT_VOCAB, SYMBOL_BASE, MidiVocab
from chargen.errors import ChargenError, CheckpointError, CorruptFileError

METADATA_FORMAT = 1


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


class MidiCodec(Codec):
    name = "midi"
    suffixes = (".mid", ".midi")

    supports_transpose = True
    music = True

    def augment_window(self, window: np.ndarray, rng: np.random.Generator, low: int, high: int) -> np.ndarray:
        """Each row of a batch window [B, T+1] transposed by its own random shift in [low, high]."""
        return transpose_rows(window, self.vocab.shift_base, rng, low, high)

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

    def token_name(self, token: int) -> str:
        """Readable name of one id (``on60``, ``off60``, ``+120ms``, ``v20``)."""
        return token_name(token, self.vocab)

    def encode_file(self, path: Path) -> np.ndarray:
        mid = read_midi_file(path)
        try:
            ids = encode_midi(mid, self.vocab)
        except CorruptFileError as exc:
            raise CorruptFileError(f"{path}: {exc}") from None
        return np.asarray(ids, dtype=np.int64)
