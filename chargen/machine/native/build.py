"""Compile chargen's C LSTM step on first use, once per machine, and load it only from a private folder.

The kernel is built for this CPU (``-march=native``: AVX2, AVX-512, whatever it has; portable flags where
that fails, as on ARM), so it is built here rather than shipped. The library goes into the private cache
folder (:mod:`chargen.machine.cache`: mode 0700 and owned by the user; a folder or file that another user
can write to is refused, since code is loaded from it) under a name that hashes the source, the
compiler's version, the flags and the CPU's flags. It is compiled to a temporary name and renamed
(``atomic_write``), its sha256 recorded in the cache, and loaded only while it still has that hash.
No C compiler, a failed build, an unsafe folder: ``None`` (said once, as a ChargenWarning), and chargen
keeps its torch and numpy kernels. ``CC`` chooses the compiler (default ``cc``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import warnings
from pathlib import Path

from chargen.errors import ChargenError, ChargenWarning
from chargen.files.atomic import atomic_write, sha256_file
from chargen.machine.cache import Measurements, cache_folder, require_private

SOURCE = Path(__file__).with_name("lstm_step.c")
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fPIC", "-shared")
#: Where -march=native fails (a compiler or CPU that lacks it): what any C compiler takes.
PORTABLE_FLAGS = ("-O3", "-fPIC", "-shared")
#: Seconds a build may take (it takes ~0.3 s); a hung compiler must not hang sampling.
BUILD_TIMEOUT_S = 60
SECTION = "native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def _compiler_version(compiler: str) -> str | None:
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def library_path(folder: Path, version: str, flags: tuple[str, ...]) -> Path:
    """Where this source, built by a compiler of ``version`` with ``flags`` for this CPU, is cached."""
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, " ".join(flags), _cpu_flags()]).encode())
    return folder / f"lstm_step-{key.hexdigest()[:16]}.so"


class BuildFailed(Exception):
    """The compiler could not build the library with these flags (another set may do)."""


def _build(compiler: str, flags: tuple[str, ...], target: Path) -> None:
    try:
        done = subprocess.run([compiler, *flags, "-o", str(target), str(SOURCE)], capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildFailed(str(exc)) from None
    if done.returncode != 0:
        raise BuildFailed(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "compiler failed")


def _verified(path: Path, built: Measurements) -> Path:
    """``path`` if it is private and has the hash recorded when it was built; else a ChargenError."""
    require_private(path)
    entry = built.get(path.name)
    if entry is None or entry.get("sha256") != sha256_file(path):
        raise ChargenError(f"{path} is not the library chargen built (its sha256 differs from the one recorded)")
    return path


def _library(folder: Path, compiler: str, version: str, flags: tuple[str, ...]) -> ctypes.CDLL:
    """Build (once) and load the library of ``flags``: BuildFailed where the compiler cannot, ChargenError where
    what is there may not be loaded (another user could write it, it is not what was built), OSError else."""
    path = library_path(folder, version, flags)
    built = Measurements(SECTION)
    if not path.is_file() or built.get(path.name) is None:  # never built here, or built before hashes were kept
        atomic_write(path, lambda tmp: _build(compiler, flags, tmp))
        os.chmod(path, 0o700)  # not the umask's: code is loaded from it
        built.put(path.name, {"sha256": sha256_file(path), "flags": " ".join(flags)})
    return ctypes.CDLL(str(_verified(path, built)))


@functools.cache
def _load(compiler: str, folder: Path) -> ctypes.CDLL | None:
    version = _compiler_version(compiler)
    if version is None:
        return _without(f"the C compiler {compiler!r} does not run")
    reasons = []
    for flags in (FLAGS, PORTABLE_FLAGS):
        try:
            library = _library(folder, compiler, version, flags)
        except BuildFailed as exc:  # another set of flags may do
            reasons.append(f"{' '.join(flags)}: {exc}")
            continue
        except (OSError, ChargenError) as exc:  # unsafe, or unreadable: nothing of it is loaded
            return _without(str(exc))
        if flags is not FLAGS:
            warnings.warn(f"the fused LSTM kernel is built without -march=native ({reasons[0]})", ChargenWarning,
                          stacklevel=2)
        return library
    return _without("; ".join(reasons))


def _without(reason: str) -> None:
    warnings.warn(f"the fused LSTM kernel is off, torch's and numpy's kernels remain ({reason})", ChargenWarning,
                  stacklevel=3)
    return None


def lstm_library() -> ctypes.CDLL | None:
    """The compiled LSTM step kernel (``chargen_lstm_step``, ``chargen_matvec``), or None where it cannot be
    built or loaded safely (no C compiler: None, quietly: nothing was expected of it)."""
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        return None
    try:
        folder = cache_folder() / "native"
        folder.mkdir(mode=0o700, exist_ok=True)
        require_private(folder)
    except (OSError, ChargenError) as exc:
        return _unsafe(str(exc))
    return _load(compiler, folder)


@functools.cache
def _unsafe(reason: str) -> None:
    return _without(reason)
