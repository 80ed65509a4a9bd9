"""The codec interface: how a corpus becomes token ids and ids become output.

Every codec maps each token to exactly one printable character, so any token
stream (text or MIDI events) can be shown, primed, stored and searched as text.
Training, sampling, beam search and the history only ever see this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from chargen.errors import UnknownTokensError


class Codec(ABC):
    """A reversible mapping between tokens and their one-character forms."""

    name: ClassVar[str]
    #: file suffixes (lower case, with dot) this codec reads as a corpus
    suffixes: ClassVar[tuple[str, ...]]

    @property
    @abstractmethod
    def symbols(self) -> str:
        """Printable form of every token, indexed by token id."""

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    @property
    def default_prime(self) -> str:
        """What generation starts from when the user gives no prime."""
        return self.symbols[0]

    @abstractmethod
    def to_metadata(self) -> dict[str, Any]:
        """JSON-serialisable settings that rebuild this codec exactly."""

    @classmethod
    @abstractmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Codec:
        """Inverse of :meth:`to_metadata`."""

    @classmethod
    def fit(cls, paths: Sequence[Path], encoding: str = "utf-8") -> Codec:
        """The codec for a corpus of ``paths``: text learns its alphabet from them;
        a fixed vocabulary (MIDI) ignores them."""
        return cls()

    @abstractmethod
    def encode_file(self, path: Path) -> np.ndarray:
        """Token ids of one corpus file (1-D integer array).

        Raises CorruptFileError for a file that cannot be read; the corpus
        loader decides whether to skip it.
        """

    def encode_pieces(self, path: Path) -> Iterator[np.ndarray]:
        """Token ids of one corpus file in consecutive pieces (the whole file by default).

        Codecs of big corpora (text) override this so that a file never has to
        be one array in memory.
        """
        yield self.encode_file(path)

    #: whether :meth:`augment_window` does anything (training refuses --transpose otherwise)
    supports_transpose: ClassVar[bool] = False
    #: music: token ids are notes (a ``vocab`` with ``notes(ids)``), written as .mid and decoded under a grammar
    music: ClassVar[bool] = False

    def augment_window(self, window: np.ndarray, rng: np.random.Generator, low: int, high: int) -> np.ndarray:
        """Training-time augmentation of a batch window [B, T+1]; identity by default."""
        return window

    def _index(self) -> dict[str, int]:
        cached = getattr(self, "_symbol_index", None)
        if cached is None:
            cached = {s: i for i, s in enumerate(self.symbols)}
            self._symbol_index = cached
        return cached

    def encode(self, text: str) -> list[int]:
        """Token ids of a printable string; unknown symbols are an error naming them."""
        index = self._index()
        missing = sorted({ch for ch in text if ch not in index})
        if missing:
            shown = ", ".join(repr(ch) for ch in missing[:20])
            more = f" (and {len(missing) - 20} more)" if len(missing) > 20 else ""
            raise UnknownTokensError(
                f"prime contains {len(missing)} character(s) not in the model's vocabulary: {shown}{more}"
            )
        return [index[ch] for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        """Printable string of token ids."""
        symbols = self.symbols
        return "".join(symbols[i] for i in ids)
