"""One writer per run folder: an OS-level lock held for the whole life of a training session.

Two ``chargen train`` processes writing one run folder (the same ``--run-name``, two ``--resume``
of one run) would interleave ``metrics.jsonl``, overwrite each other's weights and ``run.json``,
and log each other's results. The lock is ``flock(2)`` on ``<run>/.lock``: the kernel drops it when
its holder exits, however it exits (SIGKILL, a crash, a power cut), so a lock left behind never
blocks anybody. The holder writes its PID and host into the file, for the refused writer's message.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from types import TracebackType

from chargen.errors import ChargenError
from chargen.terminal import printable

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs there are not locked
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


class RunLocked(ChargenError):
    """Another process holds the run folder's lock."""


class RunLock:
    """The exclusive lock of one run folder; :meth:`acquire` fails at once (never waits) when it is held."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise ChargenError(f"{self.run_dir}: cannot lock the run folder ({exc.strerror or exc})") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise RunLocked(f"{self.run_dir}: another chargen process is writing this run ({holder}); "
                                "wait for it to finish or stop it, or use another --run-name") from None
            except OSError as exc:
                os.close(fd)
                raise ChargenError(f"{self.run_dir}: cannot lock the run folder ({exc.strerror or exc})") from None
        try:  # who holds it: for the message of whoever is refused
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass  # the lock holds without the note (a full disk, say)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)  # no stale PID to mislead a reader; the file itself may stay
            except OSError:
                pass
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _holder(fd: int) -> str:
    """"PID 123 on host" from the lock file; its holder writes it just after locking, so wait a moment."""
    for _ in range(20):
        try:
            note = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
        except OSError:
            break
        if len(note) >= 2 and note[0].isdigit():
            return f"PID {note[0]} on {printable(note[1])}"
        time.sleep(0.01)
    return "PID unknown"
