"""The note codec (``midi-notes``): files -> one PITCH and DURATION per note (:mod:`chargen.codecs.midi.note_vocab`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from chargen.codecs.base import Codec
from chargen.codecs.midi.codec import transpose_rows
from chargen.codecs.midi.note_vocab import DEFAULT_NOTE_VOCAB, NoteVocab, note_token_name, notes_to_note_ids
from chargen.codecs.midi.notes import midi_notes
from chargen.codecs.midi.smf import read_midi_file
from chargen.codecs.midi.vocab import SYMBOL_BASE
from chargen.errors import ChargenError, CheckpointError, CorruptFileError

METADATA_FORMAT = 1


class NoteCodec(Codec):
    """MIDI files as notes with explicit durations: a model cannot forget to end one."""

    name: ClassVar[str] = "midi-notes"
    suffixes: ClassVar[tuple[str, ...]] = (".mid", ".midi")
    supports_transpose: ClassVar[bool] = True
    music: ClassVar[bool] = True

    def __init__(self, vocab: NoteVocab = DEFAULT_NOTE_VOCAB):
        self.vocab = vocab
        self._symbols = "".join(chr(SYMBOL_BASE + i) for i in range(vocab.size))

    @classmethod
    def fit(cls, paths: Sequence[Path] = (), encoding: str = "utf-8") -> NoteCodec:
        """Same shape as TextCodec.fit; the vocabulary never depends on the data."""
        return cls()

    @property
    def symbols(self) -> str:
        return self._symbols

    @property
    def default_prime(self) -> str:
        # A mezzo-forte velocity token: what almost every encoded file starts with.
        return self._symbols[self.vocab.velocity_base + self.vocab.velocity_bin(80)]

    def augment_window(self, window: np.ndarray, rng: np.random.Generator, low: int, high: int) -> np.ndarray:
        """Each row of a batch window [B, T+1] transposed by its own random shift in [low, high]."""
        return transpose_rows(window, self.vocab.duration_base, rng, low, high)

    def to_metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": METADATA_FORMAT,
            "step_ms": self.vocab.step_ms,
            "max_shift_steps": self.vocab.max_shift_steps,
            "max_duration_steps": self.vocab.max_duration_steps,
            "velocity_bins": self.vocab.velocity_bins,
            "drums": "dropped",
            "symbol_base": SYMBOL_BASE,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> NoteCodec:
        if meta.get("format") != METADATA_FORMAT or meta.get("symbol_base") != SYMBOL_BASE:
            raise CheckpointError(
                f"checkpoint's MIDI note codec (format {meta.get('format')!r}) is not supported by this version"
            )
        try:
            vocab = NoteVocab(meta["step_ms"], meta["max_shift_steps"], meta["max_duration_steps"],
                              meta["velocity_bins"])
        except (KeyError, ChargenError) as exc:
            raise CheckpointError(f"checkpoint has invalid MIDI note codec settings: {exc}") from None
        return cls(vocab)

    def token_name(self, token: int) -> str:
        """Readable name of one id (``p60``, ``d500ms``, ``+120ms``, ``v20``)."""
        return note_token_name(token, self.vocab)

    def encode_file(self, path: Path) -> np.ndarray:
        mid = read_midi_file(path)
        try:
            ids = notes_to_note_ids(midi_notes(mid, self.vocab), self.vocab)  # type: ignore[arg-type]
        except CorruptFileError as exc:
            raise CorruptFileError(f"{path}: {exc}") from None
        return np.asarray(ids, dtype=np.int64)
