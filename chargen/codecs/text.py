"""Text codec: one token per Unicode code point (é and 你 are one token each).

Text read from a file (a corpus or a prime) follows one rule, :func:`normalize_text`:
a byte-order mark at the start of the file is dropped and CRLF line ends become
LF, so a file saved on Windows and the same text saved elsewhere train the same
vocabulary and prime the same way. A lone CR (old Mac line ends, progress bars)
is kept: it is a character the file really uses.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chargen.codecs.base import Codec
from chargen.codecs.text_scan import (
    binary_file_error,
    fast_encoding,
    invalid_text_error,
    lookup,
    lookup_table,
    read_error,
    seen_code_points,
    utf8_code_points,
)
from chargen.errors import CorpusError

CHUNK_BYTES = 8 << 20  # decode big corpora in pieces, never as one Python str
BOM = "\ufeff"
#: What an encoding error suggests; a caller without --encoding (score) gives its own advice.
ENCODING_ADVICE = "give its encoding to read it as another one"


def normalize_text(text: str) -> str:
    """The rule for a whole file's text: no byte-order mark at the start, CRLF as LF."""
    return text.removeprefix(BOM).replace("\r\n", "\n")


def iter_text_chunks(path: Path, encoding: str = "utf-8", advice: str = ENCODING_ADVICE) -> Iterator[str]:
    """Decoded, normalised text of ``path`` in chunks; errors name the file and byte offset.

    The chunks joined equal :func:`normalize_text` of the whole file.
    """
    first = True
    held_cr = ""  # a CR at a chunk's end may be half of a CRLF split across chunks
    for text in _decoded_chunks(path, encoding, advice):
        if first:
            text, first = text.removeprefix(BOM), False
        text = (held_cr + text).replace("\r\n", "\n")
        held_cr = "\r" if text.endswith("\r") else ""
        text = text[: len(text) - len(held_cr)]
        if text:
            yield text
    if held_cr:
        yield held_cr


def _decoded_chunks(path: Path, encoding: str, advice: str) -> Iterator[str]:
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    except (LookupError, ValueError):  # ValueError: a name holding a NUL or a lone surrogate
        raise CorpusError(f"unknown encoding {encoding!r}") from None
    consumed = 0
    try:
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(CHUNK_BYTES)
                final = not chunk
                pending = len(decoder.getstate()[0])
                if b"\x00" in chunk and encoding.replace("-", "").lower() in ("utf8", "ascii", "latin1"):
                    raise binary_file_error(path, consumed + chunk.index(b"\x00"))
                try:
                    text = decoder.decode(chunk, final=final)
                except UnicodeDecodeError as exc:
                    raise invalid_text_error(path, encoding, consumed - pending + exc.start, exc.reason,
                                             advice) from None
                except UnicodeError as exc:  # a decoder's own complaint, e.g. utf-16 without a BOM
                    raise CorpusError(
                        f"{path}: cannot be read as {encoding} ({exc}); {advice}"
                    ) from None
                consumed += len(chunk)
                if text:
                    yield text
                if final:
                    return
    except OSError as exc:
        raise read_error(path, exc) from None


def iter_code_points(path: Path, encoding: str = "utf-8") -> Iterator[np.ndarray]:
    """The code points of :func:`iter_text_chunks`'s text in pieces (``uint8`` or ``uint32`` arrays).

    UTF-8 files go through :mod:`chargen.codecs.text_scan` (ASCII chunks are never decoded);
    other encodings through the incremental decoder.
    """
    if fast_encoding(encoding):
        return utf8_code_points(path, CHUNK_BYTES, encoding)
    return (code_points(text) for text in iter_text_chunks(path, encoding))


def code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


class TextCodec(Codec):
    name = "text"
    suffixes = (".txt",)

    def __init__(self, alphabet: str, encoding: str = "utf-8", keep_order: bool = False):
        """``alphabet``'s distinct characters, sorted; or, with ``keep_order``, in the given order
        (a fine-tuned model's vocabulary: its parent's ids first, new characters appended)."""
        if not alphabet:
            raise CorpusError("the corpus is empty: no characters to learn")
        self._alphabet = "".join(dict.fromkeys(alphabet)) if keep_order else "".join(sorted(set(alphabet)))
        self.encoding = encoding
        points = code_points(self._alphabet)
        self._order = np.argsort(points, kind="stable")  # sorted position -> token id
        self._points = points[self._order]  # sorted
        self._table: tuple[np.ndarray, int] | None = None

    @classmethod
    def fit(cls, paths: Sequence[Path] = (), encoding: str = "utf-8") -> TextCodec:
        """Vocabulary of every code point that occurs in ``paths``."""
        seen = seen_code_points(piece for path in paths for piece in iter_code_points(path, encoding))
        alphabet = seen.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")
        return cls(alphabet, encoding)

    @property
    def symbols(self) -> str:
        return self._alphabet

    @property
    def default_prime(self) -> str:
        return "\n" if "\n" in self._alphabet else self._alphabet[0]

    def to_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "alphabet": self._alphabet, "encoding": self.encoding}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> TextCodec:
        return cls(meta["alphabet"], meta.get("encoding", "utf-8"), keep_order=True)

    def extended(self, characters: str) -> TextCodec:
        """This vocabulary with ``characters`` it lacks appended: every known id keeps its value."""
        return TextCodec(self._alphabet + characters, self.encoding, keep_order=True)

    def _lookup(self) -> tuple[np.ndarray, int]:
        """The code point -> id table (built on first use: sampling never needs it)."""
        if self._table is None:
            size = len(self._alphabet)
            dtype = np.dtype(np.uint8 if size < 256 else np.uint16 if size < 65536 else np.int32)
            self._table = lookup_table(self._points, self._order, dtype)
        return self._table

    def encode_points(self, points: np.ndarray) -> np.ndarray:
        """Ids of code points (in the smallest integer dtype that holds every id and one more); a CorpusError
        naming the characters outside the vocabulary."""
        ids, bad = lookup(*self._lookup(), points)
        if bad is not None:
            missing = sorted({chr(p) for p in bad[:1000].tolist()})
            raise CorpusError(f"text contains characters outside the vocabulary: {missing[:10]}")
        return ids

    def encode_chunk(self, text: str) -> np.ndarray:
        return self.encode_points(code_points(text)).astype(np.int64)

    def encode_pieces(self, path: Path) -> Iterator[np.ndarray]:
        """Ids of ``path`` in bounded pieces, in a compact dtype (``encode_points``)."""
        for points in iter_code_points(path, self.encoding):
            yield self.encode_points(points)

    def encode_file(self, path: Path) -> np.ndarray:
        parts = list(self.encode_pieces(path))
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
