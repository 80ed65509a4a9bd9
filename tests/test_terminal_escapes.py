"""Text from outside never drives the terminal (issue 27, item 5): stored text, primes and paths are
printed through one function, chargen.terminal.printable, which escapes control characters.

The sequences planted here would, printed raw, recolour the terminal (ESC [31m), set its title (ESC ]0;),
ring it (BEL), hide what came before on the line (CR) or reorder it (RLO). Generated text going to
stdout as `chargen sample`'s product stays raw: that is the user's choice.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from history_helpers import record

from chargen.history import History, SampleRecord
from tests.conftest import FABLES, invoke

PLANTED = "A\x1b[31mred\x1b]0;owned\x07\rB\x00\x9b2J\u202eevil"  # what the history can store
RAW = ("\x1b", "\x07", "\r", "\x00", "\x9b", "\u202e", "\ud800")


def assert_escaped(text: str) -> None:
    for ch in RAW:
        assert ch not in text, (ch, text)
    assert "\\x1b" in text


def test_printable() -> None:
    from chargen.terminal import printable

    assert printable("plain text, é, 你好, ♫") == "plain text, é, 你好, ♫"
    assert printable(PLANTED + "\ud800") == "A\\x1b[31mred\\x1b]0;owned\\x07\\x0dB\\x00\\x9b2J\\u202eevil\\ud800"
    assert printable("two\nlines\tand tab") == "two\\x0alines\\x09and tab"
    assert printable("two\nlines\tand tab", keep_newlines=True) == "two\nlines\tand tab"
    assert printable("x\u2028y") == "x\\u2028y" and printable(123) == "123"
    assert printable(printable(PLANTED)) == printable(PLANTED)  # escapes are themselves printable


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "h.db")


def test_history_show_escapes_unless_raw(db: str) -> None:
    with History(db) as history:
        gid = record(history, prime="P\x1b[2J", outputs=[SampleRecord(PLANTED + "\nsecond line", -3.0)],
                     checkpoint_path="/ckpt/\x1b]0;t\x07/best.safetensors")
    shown = invoke("history", "show", gid, "--database", db)
    assert shown.returncode == 0
    assert_escaped(shown.stdout)
    assert "\nsecond line" in shown.stdout  # newlines of the text itself are kept
    raw = invoke("history", "show", gid, "--raw", "--database", db)
    assert raw.returncode == 0 and "P\x1b[2J" + "A\x1b[31mred" in raw.stdout


def test_history_list_and_runs_escape(db: str) -> None:
    with History(db) as history:
        record(history, prime="\x1b[31m", outputs=[SampleRecord(PLANTED, -3.0)])
        history.record_training_run(
            corpus_path="/data/\x1b[31mfables\x07.txt", corpus_sha256="c" * 64, corpus_tokens=10,
            codec={"name": "text"}, model_config={"layers": 1}, train_config={}, steps=5, best_val_loss=None,
            checkpoint_path="/ckpt/\x1b]0;x\x07/best.safetensors", checkpoint_sha256=None)
    for command in ("list", "runs"):
        result = invoke("history", command, "--database", db)
        assert result.returncode == 0 and result.stdout.strip()
        assert_escaped(result.stdout)


def test_info_escapes_the_corpus_paths(run: Path, tmp_path: Path) -> None:
    odd = tmp_path / "co\x1b[31mrpus\x07\r.txt"
    shutil.copy(FABLES, odd)
    trained = invoke("train", str(odd), "--size", "tiny", "--max-steps", "2", "--batch-size", "4", "--seq-len", "16",
                     "--threads", "1", "--quiet", "--run-name", "odd", "--no-log")
    assert trained.returncode == 0, trained.stderr
    info = invoke("info", "odd")
    assert info.returncode == 0
    assert_escaped(info.stdout)
    assert "corpus" in info.stdout and "co\\x1b[31mrpus\\x07\\x0d.txt" in info.stdout
    assert json.loads(invoke("info", "odd", "--json").stdout)["corpus_paths"] == [str(odd)]  # JSON keeps the data


def test_score_escapes_the_file_name(run: Path, tmp_path: Path) -> None:
    odd = tmp_path / "no\x1b[31mtes\x07.txt"
    odd.write_text(FABLES.read_text()[:2000])
    result = invoke("score", str(odd), "-c", run.name, "--no-log", "--per-line", "2")
    assert result.returncode == 0, result.stderr
    assert_escaped(result.stdout + result.stderr)
    assert "no\\x1b[31mtes\\x07.txt:" in result.stdout


def test_midi_skipping_warnings_escape_the_file_name(tmp_path: Path) -> None:
    from tests.conftest import REPO

    folder = tmp_path / "midi"
    shutil.copytree(REPO / "corpora" / "midi-basics", folder)
    (folder / "bad\x1b]0;owned\x07\r.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    result = invoke("train", str(folder), "--size", "tiny", "--max-steps", "1", "--batch-size", "2", "--seq-len",
                    "16", "--threads", "1", "--quiet", "--no-log", "--run-name", "m")
    assert "skipping" in result.stderr
    for ch in RAW[:3]:
        assert ch not in result.stderr
    assert "bad\\x1b]0;owned\\x07\\x0d.mid" in result.stderr


def test_errors_escape_what_they_echo(tmp_path: Path) -> None:
    result = invoke("info", str(tmp_path / "mi\x1b[31mssing\x07"))
    assert result.returncode == 1 and "mi\\x1b[31mssing\\x07" in result.stderr
    assert_escaped(result.stderr)


def test_generated_text_stays_raw_on_stdout(run: Path) -> None:
    """The product of `chargen sample` is the user's to have as it is (here a prime with a newline)."""
    result = invoke("sample", "--prime", "The fox\n", "--len", "5", "--seed", "1", "--no-log", "-q")
    assert result.returncode == 0 and result.stdout.startswith("The fox\n")


@pytest.mark.parametrize("name", ["\u202eevil", "a\ud800", "x\x85y", "t\x1b[31m"])
def test_names_with_controls_are_refused(name: str, tmp_path: Path) -> None:
    """Run names and labels become folders and stored names: refused, not escaped at every later use."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(FABLES.read_text()[:5000])
    for option in ("--run-name", "--label"):
        result = invoke("train", str(corpus), option, name, "--size", "tiny", "--max-steps", "1", "--quiet",
                        "--no-log")
        assert result.returncode == 2 and "control characters" in result.stderr, (option, result.stderr)
