"""Reading Standard MIDI Files: RIFF unwrapping, unknown chunks skipped, one-line errors."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import mido

from chargen.errors import ChargenError, CorruptFileError
from chargen.files.user_paths import read_bounded

MAX_FILE_BYTES = 32 << 20


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
