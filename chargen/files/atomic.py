"""File helpers every writer shares: a content hash and the one atomic write.

One atomic writer means one file mode: temporary files are created with 0o666
and the umask decides (as for any file a user's program writes), not
``tempfile``'s private 0o600 that would make a run's files unreadable to the
group that shares a checkpoint folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

from chargen.errors import ChargenError

BLOCK_BYTES = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of one file's bytes."""
    return sha256_files([path])


def sha256_files(paths: Iterable[str | os.PathLike[str]]) -> str:
    """Hex SHA-256 of several files' bytes, concatenated in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(BLOCK_BYTES), b""):
                digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a new file beside ``path``, then rename it over ``path``.

    Readers see the old file or the whole new one, never half of it; the
    temporary file is removed when ``write`` fails (or is interrupted). A folder
    that cannot be written (read-only, full, removed) is a ChargenError naming the file.
    """
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise ChargenError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # the folder may refuse this too
            tmp.unlink()
        if isinstance(exc, OSError):
            raise ChargenError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk too.
    with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
