"""chargen.files.atomic: the one content hash and the one atomic writer."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from chargen.files.atomic import atomic_write, sha256_file, sha256_files


def test_sha256_of_one_and_several_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 3_000_000)
    b.write_bytes(b"tail")
    assert sha256_file(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    assert sha256_files([a, b]) == hashlib.sha256(a.read_bytes() + b"tail").hexdigest()


def test_atomic_write_lets_the_umask_decide_the_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "out.bin", lambda tmp: tmp.write_bytes(b"data"))
    finally:
        os.umask(old)
    target = tmp_path / "out.bin"
    assert target.read_bytes() == b"data"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not tempfile's 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"old"))

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]
