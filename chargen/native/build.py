"""Compile chargen's C kernels on first use, once per machine, and load them.

The kernel is built with ``-march=native`` (AVX2, AVX-512: whatever this CPU
has), so it is built here rather than shipped: the shared library is cached in
``$CHARGEN_HOME/native/`` (or ``$CHARGEN_NATIVE_DIR``: one folder several homes
share) under a name that hashes the source, the compiler's version and the CPU's
flags, and is written atomically (a concurrent first use builds twice, never
loads half a file). No C compiler, a failed build or an unwritable folder:
``None``, and chargen keeps its torch/numpy kernels. ``CC`` chooses the compiler
(default ``cc``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from chargen.errors import ChargenError
from chargen.fileio import atomic_write
from chargen.paths import chargen_home

SOURCE = Path(__file__).with_name("lstm_step.c")
FOLDER_ENV = "CHARGEN_NATIVE_DIR"
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fPIC", "-shared")
#: Seconds a build may take (it takes ~0.3 s); a hung compiler must not hang sampling.
BUILD_TIMEOUT_S = 60


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


def library_path(folder: Path, compiler: str) -> Path | None:
    """Where this source, built by ``compiler`` for this CPU, is cached; None without a working compiler."""
    version = _compiler_version(compiler)
    if version is None:
        return None
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, " ".join(FLAGS), _cpu_flags()]).encode())
    return folder / f"lstm_step-{key.hexdigest()[:16]}.so"


def _build(compiler: str, target: Path) -> None:
    done = subprocess.run([compiler, *FLAGS, "-o", str(target), str(SOURCE)], capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S)
    if done.returncode != 0:
        raise OSError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "compiler failed")


@functools.cache
def _load(folder: Path, compiler: str) -> ctypes.CDLL | None:
    path = library_path(folder, compiler)
    if path is None:
        return None
    try:
        if not path.is_file():
            atomic_write(path, lambda tmp: _build(compiler, tmp))
        return ctypes.CDLL(str(path))
    except (OSError, ChargenError, subprocess.SubprocessError):
        return None


def lstm_library() -> ctypes.CDLL | None:
    """The compiled LSTM step kernel (``chargen_lstm_step``, ``chargen_matvec``), or None where it cannot be built."""
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        return None
    configured = os.environ.get(FOLDER_ENV)
    if configured:
        return _load(Path(configured).expanduser(), compiler)
    try:
        home = chargen_home()
    except ChargenError:
        return None
    return _load(home / "native", compiler)
