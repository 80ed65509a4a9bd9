"""Paths a user gives: what each one is, and reads that cannot run away.

Every file a command reads on a user's word (a corpus, a prime) or writes to
(``-o``) goes through here, so ``/dev/zero``, a FIFO, a folder or a socket
get an honest one-line message instead of a hang, an unbounded read, or
"no such file".
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from chargen.codecs.text import normalize_text
from chargen.errors import ChargenError

#: the most a prime file may hold (a prime is a start, not a corpus)
MAX_PRIME_BYTES = 1 << 20

_KINDS = (
    (stat.S_ISREG, "file"),
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


def path_kind(path: Path) -> str | None:
    """What ``path`` is, following symlinks: "file", "folder", "FIFO (named pipe)", ...; None if absent."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except NotADirectoryError:  # a/b where a is a file
        return None
    except OSError as exc:
        raise ChargenError(f"{path}: cannot access ({exc.strerror or exc})") from None
    except ValueError:  # an embedded NUL byte
        raise ChargenError(f"{path!s:.80}: not a valid path") from None
    return next((kind for test, kind in _KINDS if test(mode)), "special file")


def require_file(path: Path, what: str = "file") -> Path:
    """``path`` if it is a regular file (or a symlink to one); else a one-line ChargenError."""
    kind = path_kind(path)
    if kind is None:
        raise ChargenError(f"{path}: no such {what}")
    if kind != "file":
        raise ChargenError(f"{path}: is a {kind}, not a regular file; give a {what}")
    return path


def require_file_or_folder(path: Path, what: str = "file or folder") -> str:
    """"file" or "folder" for ``path``; anything else (absent, FIFO, device) is a ChargenError."""
    kind = path_kind(path)
    if kind is None:
        raise ChargenError(f"{path}: no such {what}")
    if kind not in ("file", "folder"):
        raise ChargenError(f"{path}: is a {kind}; give a {what}")
    return kind


def read_bounded(path: Path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of regular file ``path``, refusing more than ``max_bytes``."""
    require_file(path, what)
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ChargenError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ChargenError(f"{path}: larger than {_size(max_bytes)}, too big for a {what}")
    return data


def read_text_file(path: Path, max_bytes: int = MAX_PRIME_BYTES, what: str = "prime file",
                   encoding: str = "utf-8") -> str:
    """Text of a small file, decoded and normalised like a corpus (BOM dropped, CRLF as LF)."""
    data = read_bounded(path, max_bytes, what)
    try:
        return normalize_text(data.decode(encoding))
    except UnicodeDecodeError as exc:
        raise ChargenError(f"{path}: not valid {encoding} at byte offset {exc.start} ({exc.reason})") from None


def check_output_file(path: Path) -> str | None:
    """Why ``path`` cannot be written as an output file, or None when it can be."""
    kind = path_kind(path)
    if kind not in (None, "file"):
        return f"{path} is a {kind}, not a file to write"
    parent = path_kind(path.parent if str(path.parent) else Path("."))
    if parent != "folder":
        return f"{path.parent} is {'not there' if parent is None else 'a ' + parent}, so {path} cannot be written"
    return None


def check_output_folder(path: Path) -> str | None:
    """Why ``path`` cannot be a folder to write into (it may be created), or None."""
    kind = path_kind(path)
    if kind not in (None, "folder"):
        return f"{path} is a {kind}, not a folder"
    ancestor = path.parent
    while kind is None and ancestor != ancestor.parent and (kind := path_kind(ancestor)) is None:
        ancestor = ancestor.parent
    if kind not in (None, "folder"):
        return f"{ancestor} is a {kind}, so the folder {path} cannot be made"
    return None


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"
