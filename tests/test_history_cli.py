"""`chargen history` through click's CliRunner, against real SQLite files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import mido
import pytest
from click.testing import CliRunner, Result
from history_helpers import SHA_B, record

from chargen.cli import main
from chargen.cli.history import history as history_group
from chargen.history import History, SampleRecord
from tests.conftest import run_cli

SUBCOMMANDS = ["list", "show", "export", "rm", "path", "runs", "scores"]


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CHARGEN_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def db(database_url: str) -> str:
    """``--database``: an SQLite file, then a PostgreSQL database (conftest's ``database_url``)."""
    return database_url


@pytest.fixture
def ids(db: str) -> list[str]:
    """Three generations, oldest first."""
    with History(db) as h:
        return [
            record(h, prime="Once ", outputs=[SampleRecord("upon a time\nthere was", -20.0)]),
            record(h, decoder="beam", params={"beam_width": 5, "num_samples": 2}, prime="",
                   outputs=[SampleRecord("alpha", -1.0), SampleRecord("beta", -2.0)], checkpoint_sha256=SHA_B),
            record(h, decoder="greedy", params={"length": 8}, prime="x", outputs=["你好世界 wide"]),
        ]


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(history_group, list(args), input=input, env=env, catch_exceptions=False)


def _width(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in line)


@pytest.mark.parametrize("args", [[]] + [[name] for name in SUBCOMMANDS])
def test_help(args: list[str]) -> None:
    result = run(*args, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.stdout and "--database URL" in result.stdout


def test_bare_group_lists_newest_first(db: str, ids: list[str]) -> None:
    result = run("--database", db)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert [line.split()[0] for line in lines] == [i[: len(line.split()[0])] for i, line in zip(ids[::-1], lines)]
    assert "greedy" in lines[0] and "你好世界" in lines[0]
    assert "beam w=5 ×2" in lines[1] and "alpha" in lines[1]
    assert "sample t=0.8" in lines[2] and "upon a time⏎there was" in lines[2]


def test_list_options(db: str, ids: list[str]) -> None:
    assert len(run("list", "--database", db, "-n", "2").stdout.splitlines()) == 2
    assert len(run("list", "--database", db, "-n", "0").stdout.splitlines()) == 3
    searched = run("list", "--database", db, "-q", "BETA").stdout.splitlines()
    assert len(searched) == 1 and searched[0].startswith(ids[1][:8])
    by_checkpoint = run("list", "--database", db, "--checkpoint", SHA_B).stdout.splitlines()
    assert len(by_checkpoint) == 1 and by_checkpoint[0].startswith(ids[1][:8])
    data = json.loads(run("list", "--database", db, "--json").stdout)
    assert [d["id"] for d in data] == ids[::-1]
    assert data[1]["outputs"][1]["text"] == "beta" and data[1]["params"]["beam_width"] == 5


def test_group_database_option_and_env(db: str, ids: list[str]) -> None:
    assert len(run("--database", db, "list").stdout.splitlines()) == 3
    assert len(run("list", env={"CHARGEN_DATABASE_URL": db}).stdout.splitlines()) == 3
    # on the command beats on the group
    assert run("--database", "/nonexistent/x.db", "list", "--database", db, "-n", "1").stdout.count("\n") == 1


@pytest.mark.parametrize("columns", [30, 45, 80])
def test_list_lines_fit_the_terminal(db: str, ids: list[str], columns: int) -> None:
    with History(db) as h:
        record(h, outputs=["long " * 100 + "\n" * 3])
    result = run("list", "--database", db, env={"COLUMNS": str(columns)})
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert all(_width(line) <= columns for line in lines)
    assert lines[0].endswith("…")


def test_show_text_and_json(db: str, ids: list[str]) -> None:
    result = run("show", ids[1][:12], "--database", db)
    assert result.exit_code == 0
    assert ids[1] in result.stdout and "beam_width=5" in result.stdout
    assert "--- sample 2/2, logprob -2.00 ---\nbeta" in result.stdout
    data = json.loads(run("show", ids[0], "--json", "--database", db).stdout)
    assert data["id"] == ids[0] and data["prime"] == "Once " and data["seed"] == 42
    assert data["outputs"] == [{"index": 0, "text": "upon a time\nthere was", "logprob": -20.0, "midi_path": None}]


def test_export_text(db: str, ids: list[str], tmp_path: Path) -> None:
    assert run("export", ids[0], "--database", db).stdout == "Once upon a time\nthere was\n"
    assert run("export", ids[0], "--no-prime", "--database", db).stdout == "upon a time\nthere was\n"
    out = tmp_path / "sample.txt"
    result = run("export", ids[1], "--sample", "2", "-o", str(out), "--database", db)
    assert result.exit_code == 0 and out.read_text(encoding="utf-8") == "beta"
    assert f"wrote {out}" in result.stderr
    too_far = run("export", ids[1], "--sample", "3", "--database", db)
    assert too_far.exit_code == 1 and "has 2 sample(s), not 3" in too_far.stderr


def test_export_midi_needs_an_output_file(db: str) -> None:
    with History(db) as h:
        gid = record(h, codec={"name": "midi", "resolution": 8})
    result = run("export", gid, "--database", db)
    assert result.exit_code == 1 and result.stderr == "chargen: error: exporting a MIDI generation needs -o FILE.mid\n"


def test_rm_asks_unless_yes(db: str, ids: list[str]) -> None:
    declined = run("rm", ids[0], "--database", db, input="n\n")
    assert declined.exit_code == 1 and "Delete generation" in declined.stderr
    assert len(run("list", "--database", db).stdout.splitlines()) == 3
    confirmed = run("rm", ids[0], "--database", db, input="y\n")
    assert confirmed.exit_code == 0 and f"deleted {ids[0]}" in confirmed.stdout
    assert run("rm", ids[1][:14], "--yes", "--database", db).exit_code == 0
    assert [d["id"] for d in json.loads(run("list", "--json", "--database", db).stdout)] == [ids[2]]


def test_path_follows_option_env_and_home(tmp_path: Path, db: str) -> None:
    assert run("path").stdout == f"{(tmp_path / 'home').resolve() / 'history.db'}\n"
    assert run("path", env={"CHARGEN_DATABASE_URL": "postgresql://me:secret@db/chargen"}).stdout == (
        "postgresql://me:***@db/chargen\n")
    assert run("path", "--database", db).stdout == f"{db}\n"


def test_runs_text_and_json(db: str) -> None:
    with History(db) as h:
        run_id = h.record_training_run(
            corpus_path="/data/fables.txt", corpus_sha256="c" * 64, corpus_tokens=1000, codec={"name": "text"},
            model_config={"layers": 2}, train_config={"lr": 0.003}, steps=1500, best_val_loss=1.4321,
            checkpoint_path="/ckpt/best.safetensors", checkpoint_sha256=None)
    lines = run("runs", "--database", db).stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(run_id[:8])
    assert "1500 steps" in lines[0] and "val 1.4321" in lines[0] and "fables.txt" in lines[0]
    data = json.loads(run("runs", "--json", "--database", db).stdout)
    assert data[0]["id"] == run_id and data[0]["train_config"] == {"lr": 0.003}


def test_errors_are_one_line_on_stderr(db: str, ids: list[str]) -> None:
    unknown = run("show", "ZZZZZZ", "--database", db)
    assert unknown.exit_code == 1 and unknown.stdout == ""
    assert unknown.stderr == "chargen: error: no generation with id 'ZZZZZZ'\n"
    ambiguous = run("show", ids[0][:2], "--database", db)
    assert ambiguous.exit_code == 1 and "matches more than one generation" in ambiguous.stderr


def test_reading_commands_never_create_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    assert run("list", "--database", str(missing)).stdout == ""
    assert run("list", "--json", "--database", str(missing)).stdout == "[]\n"
    assert run("runs", "--database", str(missing)).exit_code == 0
    shown = run("show", "ABC", "--database", str(missing))
    assert shown.exit_code == 1 and shown.stderr.startswith(f"chargen: error: no history database at {missing}")
    assert not missing.exists()


def test_unusable_database_is_a_clean_error(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"definitely not sqlite " * 200)
    result = run("list", "--database", str(corrupt))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("chargen: error: history database") and "not a database" in result.stderr


def test_export_midi_rebuilds_the_file(db: str, tmp_path: Path) -> None:
    from chargen.codecs.registry import codec_class

    corpus = sorted((Path(__file__).resolve().parents[1] / "corpora" / "midi-basics").glob("*.mid"))
    codec = codec_class("midi")()
    text = codec.decode(codec.encode_file(corpus[0])[:80].tolist())
    with History(db) as h:
        gid = record(h, codec=codec.to_metadata(), prime=text[:10], outputs=[text[10:]])
    out = tmp_path / "out.mid"
    result = run("export", gid, "-o", str(out), "--program", "5", "--database", db)
    assert result.exit_code == 0, result.stderr
    notes = [m for track in mido.MidiFile(out).tracks for m in track if m.type == "note_on" and m.velocity > 0]
    programs = [m.program for track in mido.MidiFile(out).tracks for m in track if m.type == "program_change"]
    assert notes and programs == [5]


def test_bare_group_takes_the_list_options(db: str, ids: list[str]) -> None:
    """`chargen history -n 3` (the README lists -n under `chargen history`) lists, like `history list -n 3`."""
    two = run("--database", db, "-n", "2")
    assert two.exit_code == 0, two.stderr
    assert two.stdout == run("list", "--database", db, "-n", "2").stdout and len(two.stdout.splitlines()) == 2
    assert run("-n", "1", "-q", "BETA", "--database", db).stdout.startswith(ids[1][:8])
    assert run("-n", "0", "--json", "--database", db).stdout == run("list", "--json", "--database", db).stdout
    bogus = CliRunner().invoke(history_group, ["--bogus"])
    assert bogus.exit_code == 2 and "No such option" in bogus.stderr
    typo = CliRunner().invoke(history_group, ["shwo"])
    assert typo.exit_code == 2 and "No such command 'shwo'" in typo.stderr


def main_exit(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """Run the console entry point in-process: its exit code and stderr."""
    monkeypatch.setattr("sys.argv", ["chargen", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, capsys.readouterr().err


@pytest.mark.parametrize("command", [["show"], ["rm", "--yes"], ["export"]])
def test_a_bad_id_exits_1_through_the_entry_point(db: str, ids: list[str], command: list[str],
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = main_exit(capsys, monkeypatch, "history", *command, "ZZZZZZ", "--database", db)
    assert (code, err) == (1, "chargen: error: no generation with id 'ZZZZZZ'\n")
    with History(db) as h:
        assert len(h.list_generations()) == 3  # rm deleted nothing


def test_an_unreadable_database_exits_1_through_the_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"definitely not sqlite " * 200)
    for args in (["history", "list"], ["history"], ["history", "-n", "3"], ["history", "runs"]):
        code, err = main_exit(capsys, monkeypatch, *args, "--database", str(corrupt))
        assert code == 1 and err.startswith("chargen: error: history database") and err.count("\n") == 1, args


def test_success_help_and_usage_errors_keep_their_codes(db: str, ids: list[str], capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert main_exit(capsys, monkeypatch, "history", "-n", "1", "--database", db) == (0, "")
    assert main_exit(capsys, monkeypatch, "history", "--help")[0] == 0
    assert main_exit(capsys, monkeypatch, "--version")[0] == 0
    code, err = main_exit(capsys, monkeypatch, "history", "show")
    assert code == 2 and "Missing argument 'ID'" in err


def test_a_bad_id_exits_1_from_the_installed_command(db: str, ids: list[str]) -> None:
    result = run_cli("history", "show", "ZZZZZZ", "--database", db)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "chargen: error: no generation with id 'ZZZZZZ'\n"


def test_starting_the_cli_imports_no_sqlalchemy() -> None:
    """The history is imported when a command uses it: SQLAlchemy costs ~0.3 s on every start otherwise."""
    probe = ("import sys\nfrom chargen.cli import main\nsys.argv = ['chargen', '--help']\n"
             "try:\n    main()\nexcept SystemExit as exc:\n"
             "    print(exc.code, sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert result.stdout.splitlines()[-1] == "0 []", result.stderr


def test_score_logs_a_row_per_file_listed_by_history_scores(db: str, trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("The fox and the crow.\nThe lion.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("A wolf met a lamb \u2603 by the river.\n", encoding="utf-8")
    files = [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    scored = run_cli("score", *files, "-c", str(trained_run), "--per-line", "1", "--json", "--database", db)
    assert scored.returncode == 0, scored.stderr
    printed = {Path(f["path"]).name: f for f in json.loads(scored.stdout)["files"]}
    listed = run("scores", "--json", "--database", db)
    assert listed.exit_code == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [Path(r["file_path"]).name for r in rows] == ["b.txt", "a.txt"]  # newest first: one row per file
    for row in rows:
        shown = printed[Path(row["file_path"]).name]
        assert row["nats_per_token"] == pytest.approx(shown["nats_per_token"])
        assert (row["tokens"], row["scored"], row["unit"]) == (shown["tokens"], shown["scored"], "char")
        assert row["file_sha256"] == shown["sha256"]
        assert row["checkpoint_sha256"] == json.loads(scored.stdout)["sha256"]
        assert row["worst_lines"] == shown["worst_lines"] and row["duration_s"] >= 0
    assert rows[0]["unknown"] == {"\u2603": 1} and rows[0]["unknown_count"] == 1
    lines = run("scores", "--database", db).stdout.splitlines()
    assert len(lines) == 2 and "nats/char" in lines[0] and "1 unknown" in lines[0]
    assert run("scores", "-n", "1", "--json", "--database", db).stdout.count('"file_path"') == 1
    skipped = run_cli("score", files[0], "-c", str(trained_run), "--no-log", "--database", db)
    assert skipped.returncode == 0 and len(json.loads(run("scores", "--json", "--database", db).stdout)) == 2
