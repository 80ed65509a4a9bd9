"""The one cache of what chargen measured on this machine, and the one switch that turns measuring off.

``$CHARGEN_CACHE`` (default: ``$CHARGEN_HOME/cache``) is a private folder (mode 0700, owned by the user):
``machine.json`` holds every measurement, one section each (``precision``: the calibration of
``--precision auto``; ``kernels``: the batch-1 kernel; ``device_rows``: from how many rows a GPU pays;
``native``: the hashes of the C kernels built), each keyed by the machine and the model's shape; ``native/``
holds those builds. ``CHARGEN_MEASURE=0`` turns every measurement off: torch's kernel, the device's default
precision, all the cores, no offload, a nominal speed for ``--minutes`` sizing (the test suite runs so,
except in the tests of the measurements themselves).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from chargen.errors import ChargenError
from chargen.files.atomic import atomic_write
from chargen.files.home import chargen_home

CACHE_ENV = "CHARGEN_CACHE"
MEASURE_ENV = "CHARGEN_MEASURE"
FILE = "machine.json"


def measuring() -> bool:
    """Whether chargen may measure this machine (``CHARGEN_MEASURE``: on unless 0, off, false or no)."""
    return os.environ.get(MEASURE_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def cache_folder() -> Path:
    """The private cache folder, made (0700) where missing; ChargenError where it cannot be, or where another
    user could write to it (code is loaded from it: chargen.machine.native)."""
    configured = os.environ.get(CACHE_ENV)
    folder = Path(configured).expanduser() if configured else chargen_home() / "cache"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ChargenError(f"cannot create the cache folder {folder}: {exc.strerror or exc}") from None
    return require_private(folder)


def require_private(path: Path) -> Path:
    """``path`` if it is owned by this user and nobody else may write to it; else a ChargenError saying why."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ChargenError(f"{path}: cannot check it ({exc.strerror or exc})") from None
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise ChargenError(f"{path} belongs to another user (uid {info.st_uid}); chargen will not use it")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ChargenError(f"{path} is writable by others (mode {stat.filemode(info.st_mode)}); chargen will not "
                           "use it: chmod go-w it, or set $CHARGEN_CACHE to a private folder")
    return path


class Measurements:
    """One section of ``machine.json``: entries by key (the machine and the model's shape)."""

    def __init__(self, section: str):
        self.section = section
        self.notes: list[str] = []  # warnings: a damaged cache, an unusable folder

    def _path(self) -> Path | None:
        try:
            return cache_folder() / FILE
        except ChargenError as exc:
            self.notes.append(f"warning: measurements not cached ({exc})")
            return None

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.notes.append(f"warning: ignoring the damaged cache {path} ({type(exc).__name__})")
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry measured before for ``key``, None where there is none (or the cache is unreadable)."""
        path = self._path()
        section = self._read(path).get(self.section) if path is not None else None
        entry = section.get(key) if isinstance(section, dict) else None
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Keep ``entry`` for ``key`` (a cache that cannot be written costs a measurement next time, no more)."""
        path = self._path()
        if path is None:
            return
        data = self._read(path)
        section = data.get(self.section) if isinstance(data.get(self.section), dict) else {}
        data[self.section] = {**section, key: entry}
        try:
            atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n"))
        except ChargenError as exc:
            self.notes.append(f"warning: measurements not cached ({exc})")
