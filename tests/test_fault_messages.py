"""Messages that say what is wrong (issue 27, item 13): a full or read-only disk under the history,
a full stdout, score's advice on an encoding it cannot change, and `history rm` with no answer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from history_helpers import record

from chargen.history import History
from tests.conftest import REPO, assert_one_line_error, invoke


def namespaced(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``script`` (sh) as root of a user and mount namespace of its own, where it may mount a tmpfs."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -rm (user and mount namespaces) to make a small or read-only file system")
    env = dict(os.environ, PYTHONPATH=str(REPO), CHARGEN_HOME=str(tmp_path / "home"))
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def _setup(folder: Path) -> str:
    """Mount a 256 KiB tmpfs on ``folder``, and record one generation in a history there (its id: ./id)."""
    return (f"mount -t tmpfs -o size=256k tmpfs {folder} && "
            f"{sys.executable} -c 'import sys; sys.path.insert(0, \"{REPO / 'tests'}\"); "
            f"from history_helpers import record; from chargen.history import History; "
            f"h = History(\"{folder}/h.db\"); print(record(h)); h.close()' > id && ")


def test_a_full_disk_under_the_history_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "mnt"
    folder.mkdir()
    result = namespaced(_setup(folder) + f"(dd if=/dev/zero of={folder}/fill bs=4k 2>/dev/null; true) && "
                        f"{sys.executable} -m chargen history rm $(cat id) --yes --database {folder}/h.db", tmp_path)
    assert_one_line_error(result, "is full", str(folder))


def test_a_read_only_history_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "mnt"
    folder.mkdir()
    result = namespaced(_setup(folder) + f"mount -o remount,ro {folder} && "
                        f"{sys.executable} -m chargen history rm $(cat id) --yes --database {folder}/h.db", tmp_path)
    assert_one_line_error(result, "read-only", str(folder))
    fresh = namespaced(f"mount -t tmpfs -o ro tmpfs {folder} && "
                       f"{sys.executable} -c 'from chargen.history import History; History(\"{folder}/new.db\")'",
                       tmp_path)
    assert "read-only" in fresh.stderr and "unable to open database file" in fresh.stderr


@pytest.mark.parametrize("args", [["history", "path"], ["--help"], ["info", "--help"]])
def test_a_full_stdout_is_one_line(args: list[str], tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), CHARGEN_HOME=str(tmp_path))
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "chargen", *args], stdout=full, stderr=subprocess.PIPE,
                                text=True, env=env, timeout=60)
    result.stdout = ""
    assert_one_line_error(result, "cannot write the output", "No space left on device")
    assert result.returncode == 1


@pytest.mark.slow
def test_sample_to_a_full_stdout(run: Path, isolated_home: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "chargen", "sample", "--len", "3000", "--no-log"], stdout=full,
                                stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    result.stdout = ""
    assert_one_line_error(result, "cannot write the output")


def test_score_on_invalid_utf8_gives_advice_it_can_follow(run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("the café on the corner\n".encode("latin-1"))
    result = invoke("score", str(bad), "--no-log")
    assert_one_line_error(result, str(bad), "not valid utf-8", "convert the file")
    assert "--encoding" not in result.stderr


def test_history_rm_with_stdin_at_its_end(tmp_path: Path) -> None:
    db = str(tmp_path / "h.db")
    with History(db) as history:
        gid = record(history)
    result = invoke("history", "rm", gid, "--database", db, input="")
    assert_one_line_error(result, "no answer", "--yes")
    assert result.returncode == 1 and "interrupted" not in result.stderr
    env = dict(os.environ, PYTHONPATH=str(REPO))
    real = subprocess.run([sys.executable, "-m", "chargen", "history", "rm", gid, "--database", db],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60)
    assert real.returncode == 1 and "interrupted" not in real.stderr and "no answer" in real.stderr
    declined = invoke("history", "rm", gid, "--database", db, input="n\n")
    assert declined.returncode == 1 and "interrupted" not in declined.stderr
    with History(db) as history:
        assert [g.id for g in history.list_generations()] == [gid]  # kept every time
    assert invoke("history", "rm", gid, "--database", db, input="y\n").returncode == 0
