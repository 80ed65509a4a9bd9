"""A UTF-8 text file as arrays of normalised code points, at disk speed and in bounded memory.

The corpus reader of :mod:`chargen.codecs.text` for UTF-8, the common case: the file is
read in chunks of a fixed size, looked at in blocks of BLOCK_BYTES; a block of ASCII
bytes (most of most corpora) is never decoded at all: its bytes are its code points
(a ``uint8`` array), and the vocabulary pass and the encoder index lookup tables with
it. Other blocks are decoded by CPython's UTF-8 decoder, in C, into ``uint32`` code points.

The result is exactly what decoding the whole file and applying
:func:`chargen.codecs.text.normalize_text` gives (a byte-order mark at the start
dropped, CRLF as LF, a lone CR kept), whatever the chunking, and a bad file is
the same one-line error at the same byte offset as the general reader's
(``text_codec.iter_text_chunks``): the chunks are cut at the same offsets, and
each chunk is checked for NUL bytes before it is decoded, as there.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from chargen.errors import CorpusError

CR, LF, BOM_POINT = 13, 10, 0xFEFF
#: Code points there are (U+0000..U+10FFFF): the size of a table indexed by code point.
CODE_POINTS = 0x110000


def fast_encoding(encoding: str) -> bool:
    """Whether ``encoding`` is UTF-8 spelled as the general reader's NUL check spells it."""
    return encoding.replace("-", "").lower() == "utf8"


def binary_file_error(path: Path, offset: int) -> CorpusError:
    return CorpusError(f"{path}: looks like a binary file (NUL byte at offset {offset}); "
                       "give a text file or a folder of .mid files")


def invalid_text_error(path: Path, encoding: str, offset: int, reason: str,
                       advice: str = "give its encoding to read it as another one") -> CorpusError:
    return CorpusError(f"{path}: not valid {encoding} at byte offset {offset} ({reason}); {advice}")


def read_error(path: Path, exc: OSError) -> CorpusError:
    return CorpusError(f"{path}: cannot read ({exc.strerror or exc})")


#: Chunks are looked at in blocks of this size: an ASCII block (of a chunk with a few other characters)
#: still takes the fast path, and a decoded block's code points take 4 bytes a character only this long.
BLOCK_BYTES = 1 << 20


def utf8_code_points(path: Path, chunk_bytes: int, encoding: str = "utf-8") -> Iterator[np.ndarray]:
    """Normalised code points of the UTF-8 file ``path``, in pieces of at most BLOCK_BYTES characters.

    Pieces are ``uint8`` (an ASCII block: its bytes) or ``uint32`` arrays; empty pieces are skipped.
    ``encoding`` is only the name errors give.
    """
    normal = _Normaliser()
    carry = b""  # the start of a character cut by a block's end (at most 3 bytes)
    consumed = 0  # bytes before this block
    try:
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(chunk_bytes)
                final = not chunk
                nul = chunk.find(b"\x00")
                if nul >= 0:
                    raise binary_file_error(path, consumed + nul)
                for start in range(0, max(1, len(chunk)), BLOCK_BYTES):
                    block = chunk[start : start + BLOCK_BYTES]
                    if not carry and block.isascii():
                        points = np.frombuffer(block, dtype=np.uint8)
                        has_cr = b"\r" in block
                    else:
                        data = carry + block
                        try:
                            text, used = codecs.utf_8_decode(data, "strict", final)
                        except UnicodeDecodeError as exc:
                            raise invalid_text_error(path, encoding, consumed - len(carry) + exc.start,
                                                     exc.reason) from None
                        carry = data[used:]
                        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
                        has_cr = "\r" in text
                    consumed += len(block)
                    piece = normal.piece(points, has_cr, final)
                    if len(piece):
                        yield piece
                if final:
                    return
    except OSError as exc:
        raise read_error(path, exc) from None


class _Normaliser:
    """BOM and CRLF across chunks: a BOM only at the start of the first text, a CR held over a chunk's end
    (it may be half of a CRLF). Dropping every CR right before an LF is what ``str.replace("\\r\\n", "\\n")``
    does: the pattern cannot overlap itself."""

    def __init__(self) -> None:
        self.first = True
        self.held_cr = False

    def piece(self, points: np.ndarray, has_cr: bool, final: bool) -> np.ndarray:
        if self.first and len(points):
            self.first = False
            if points[0] == BOM_POINT:
                points = points[1:]
        if self.held_cr:
            points = np.concatenate([np.array([CR], dtype=points.dtype), points])
            has_cr, self.held_cr = True, False
        if not has_cr:
            return points
        self.held_cr = not final and len(points) > 0 and points[-1] == CR
        if self.held_cr:
            points = points[:-1]
        cr = points[:-1] == CR
        cr &= points[1:] == LF
        if not cr.any():
            return points
        keep = np.ones(len(points), dtype=bool)
        keep[:-1] = ~cr
        return points[keep]


def seen_code_points(pieces: Iterator[np.ndarray]) -> np.ndarray:
    """Sorted distinct code points (``uint32``) of ``pieces``: a count per byte value for ASCII pieces,
    a table of every code point for the others (no sort of the text)."""
    seen = np.zeros(256, dtype=bool)
    for piece in pieces:
        if piece.dtype == np.uint8:
            seen[:256] |= np.bincount(piece, minlength=256).astype(bool)
        else:
            if len(seen) < CODE_POINTS:
                seen = np.concatenate([seen, np.zeros(CODE_POINTS - len(seen), dtype=bool)])
            seen[piece] = True
    return np.flatnonzero(seen).astype(np.uint32)


def lookup_table(points: np.ndarray, order: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """A table from every code point to its token id (``points[i]`` has id ``order[i]``), and the value it
    holds for a code point outside the vocabulary: ``dtype``'s largest, never an id (``dtype`` holds one more)."""
    missing = int(np.iinfo(dtype).max)
    table = np.full(CODE_POINTS, missing, dtype=dtype)
    table[points] = order
    return table, missing


def lookup(table: np.ndarray, missing: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Ids of ``points`` through ``table``, and the code points outside the vocabulary (None when all are in)."""
    ids = np.take(table[:256] if points.dtype == np.uint8 else table, points)
    if not len(ids) or ids.max() != missing:  # the largest value: one pass finds whether any is missing
        return ids, None
    return ids, points[ids == missing]
