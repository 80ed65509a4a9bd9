"""The `chargen` command: happy paths and every bad input.

One test runs the real console entry point in a subprocess; the rest go
in-process through click's CliRunner, which calls the same ChargenGroup.main.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
from pathlib import Path

import click
import pytest

from chargen.cli.types import FiniteFloat
from chargen.errors import ChargenError
from chargen.files.atomic import sha256_file
from chargen.runs.layout import BEST, LAST
from tests.conftest import FABLES, assert_one_line_error, invoke, run_cli


def test_sample_streams_only_text_and_is_reproducible_with_a_seed(run: Path) -> None:
    first = run_cli("sample", "--len", "120", "--seed", "42", "--prime", "The ")
    second = run_cli("sample", "--len", "120", "--seed", "42", "--prime", "The ")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout.startswith("The ") and len(first.stdout) == len("The ") + 120 + 1
    assert "seed 42" in first.stderr
    other = run_cli("sample", "--len", "120", "--seed", "43", "--prime", "The ")
    assert other.stdout != first.stdout


def test_sample_json_num_samples_and_decoders(run: Path) -> None:
    result = invoke("sample", "--len", "60", "-n", "3", "--seed", "1", "--json", "--top-k", "10", "--top-p", "0.9")
    data = json.loads(result.stdout)
    assert data["decoder"] == "sample" and len(data["samples"]) == 3
    assert all(len(s["text"]) == 60 and s["logprob"] < 0 for s in data["samples"])
    greedy = json.loads(invoke("sample", "--len", "30", "--greedy", "--json").stdout)
    assert greedy["decoder"] == "greedy" and greedy["params"]["no_repeat_ngram"] == 12
    beam = json.loads(invoke("sample", "--len", "30", "--beam-width", "4", "-n", "2", "--json").stdout)
    assert beam["decoder"] == "beam" and len(beam["samples"]) == 2
    assert beam["samples"][0]["logprob"] >= beam["samples"][1]["logprob"]


def test_newest_run_is_used_by_default_and_info_describes_it(run: Path) -> None:
    info = json.loads(invoke("info", "--json").stdout)
    assert info["path"] == str(run / BEST)
    assert info["codec"] == "text" and info["vocab_size"] == len(info["vocabulary"])
    assert info["steps"] == 150 and info["best_val_loss_nats"] > 0 and info["parameters"] > 0
    human = invoke("info", str(run))
    assert "LSTM" in human.stdout and "bpc" in human.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--temperature", "0"], "temperature"),
        (["--temperature", "-1"], "temperature"),
        (["--len", "-5"], "--len"),
        (["--beam-width", "0"], "beam-width"),
        (["--greedy", "--temperature", "0.5"], "greedy"),
        (["--beam-width", "999"], "vocabulary"),
        (["--beam-width", "2", "-n", "3"], "num_samples"),
    ],
)
def test_bad_sampling_options_are_usage_errors(run: Path, args: list[str], fragment: str) -> None:
    result = invoke("sample", *args)
    assert result.returncode == 2
    assert_one_line_error(result, fragment)
    assert result.stdout == ""


def test_unknown_prime_characters_are_named(run: Path) -> None:
    result = invoke("sample", "--prime", "Hello ☃ world ß")
    assert_one_line_error(result, "'☃'", "'ß'")
    assert result.stdout == ""


def test_missing_and_foreign_checkpoints(run: Path, tmp_path: Path) -> None:
    assert_one_line_error(invoke("sample", "-c", str(tmp_path / "nope")), "no such checkpoint")
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_text("this is not a checkpoint")
    assert_one_line_error(invoke("sample", "-c", str(foreign)), "not a chargen checkpoint")
    import torch
    from safetensors.torch import save_file

    alien = tmp_path / "alien.safetensors"
    save_file({"w": torch.zeros(2)}, str(alien), metadata={"format": "something-else"})
    assert_one_line_error(invoke("info", str(alien)), "not a chargen checkpoint")


def test_truncated_weights_are_refused_and_nothing_is_damaged(run: Path, tmp_path: Path) -> None:
    before = sha256_file(run / LAST)
    cut = tmp_path / "cut.safetensors"
    data = (run / LAST).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert_one_line_error(invoke("sample", "-c", str(cut)), "truncated")
    assert sha256_file(run / LAST) == before


def test_pickle_planted_as_checkpoint_never_runs(run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    planted = run / "state.pt"
    planted.write_bytes(pickle.dumps({"step": Exploit()}))
    result = invoke("train", "--resume", str(run), "--max-steps", "1")
    assert_one_line_error(result, "refused")
    weights = tmp_path / "evil.safetensors"
    weights.write_bytes(pickle.dumps(Exploit()))
    assert_one_line_error(invoke("sample", "-c", str(weights)), "not a chargen checkpoint")
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "empty"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00" * 50, "binary"),
        ("caf\u00e9 au lait ".encode("latin-1") * 300, "byte offset 3"),
        (b"tiny corpus\n", "corpus too small"),
    ],
)
def test_bad_corpora_are_one_line_errors(tmp_path: Path, isolated_home: Path, content: bytes, fragment: str) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    result = invoke("train", str(corpus), "--max-steps", "1")
    assert_one_line_error(result, fragment)
    root = isolated_home / "checkpoints"
    assert not root.exists() or not any(root.iterdir()), "a failed start leaves no half-made run behind"


def test_bad_corpus_never_touches_an_existing_run(run: Path, tmp_path: Path) -> None:
    before = {p.name: sha256_file(p) for p in run.iterdir() if p.is_file()}
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_one_line_error(invoke("train", str(empty), "--run-name", run.name), "already holds a run")
    assert_one_line_error(invoke("train", str(tmp_path / "missing.txt")), "no such file")
    assert {p.name: sha256_file(p) for p in run.iterdir() if p.is_file()} == before


def test_help_explains_commands() -> None:
    result = invoke("--help")
    assert result.returncode == 0
    for command in ("train", "sample", "info"):
        assert command in result.stdout
    assert "--temperature" in invoke("sample", "--help").stdout


def test_the_console_entry_point_reports_usage_errors_in_one_line() -> None:
    result = run_cli("sample", "--temperature", "nan", process=True)  # the real console entry point
    assert result.returncode == 2
    assert_one_line_error(result, "chargen sample: error:", "--temperature", "not a finite number")


def _all_options() -> list[tuple[str, click.Command, click.Parameter]]:
    """(command path, command, parameter) for every option and argument of every chargen command."""
    from chargen.cli import cli

    found = []

    def walk(command: click.Command, path: str) -> None:
        found.extend((path, command, param) for param in command.params)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(cli, "chargen")
    return found


FLOAT_OPTIONS = [(path, param) for path, _, param in _all_options()
                 if isinstance(param.type, click.FloatRange) or param.type is click.FLOAT]


def test_every_float_option_is_a_finite_float_and_every_int_option_has_a_range() -> None:
    assert len(FLOAT_OPTIONS) == 15  # train 8, sample 5, history export 1, serve 1
    for path, param in FLOAT_OPTIONS:
        assert isinstance(param.type, FiniteFloat), (path, param.name)
    for path, _, param in _all_options():
        if param.type is click.INT or isinstance(param.type, click.IntRange):
            assert isinstance(param.type, click.IntRange) and param.type.min is not None, (path, param.name)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999"])
@pytest.mark.parametrize("path, param", FLOAT_OPTIONS, ids=[f"{p}:{o.name}" for p, o in FLOAT_OPTIONS])
def test_non_finite_numbers_are_usage_errors_everywhere(path: str, param: click.Option, value: str) -> None:
    args = path.split()[1:]
    if "export" in args or "replay" in args or "show" in args:
        args.append("some-id")
    result = invoke(*args, param.opts[0], value)
    assert result.returncode == 2, result
    assert_one_line_error(result, "not a finite number", param.opts[0])


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "x.txt", "--hidden", "10000000"], "--hidden"),
        (["train", "x.txt", "--layers", "1000"], "--layers"),
        (["train", "x.txt", "--seed", "-1"], "--seed"),
        (["train", "x.txt", "--minutes", "1e12"], "--minutes"),
        (["train", "x.txt", "--threads", "100000"], "--threads"),
        (["train", "x.txt", "--lr", "1e300"], "--lr"),  # found by test_cli_fuzz: torch's float overflow
        (["train", "x.txt", "--weight-decay", "1e300"], "--weight-decay"),
        (["sample", "--seed", str(2**64)], "--seed"),
        (["sample", "--len", str(10**12)], "--len"),
        (["sample", "-n", "100000"], "--num-samples"),
        (["history", "list", "-n", str(10**30)], "--count"),
    ],
)
def test_huge_or_negative_counts_are_usage_errors(args: list[str], fragment: str) -> None:
    result = invoke(*args)
    assert result.returncode == 2
    assert_one_line_error(result, fragment)


def _test_group() -> click.Group:
    """A group with chargen's failure path and commands that fail in each way."""
    from chargen.cli.failures import ChargenGroup

    @click.group(cls=ChargenGroup)
    def group() -> None:
        pass

    @group.command()
    @click.argument("kind")
    @click.pass_context
    def fail(ctx: click.Context, kind: str) -> None:
        if kind == "chargen":
            raise ChargenError("the corpus is\nempty")
        if kind == "oserror":
            open("/nonexistent-folder/x", "w")  # noqa: SIM115 - the real OSError
        if kind == "bug":
            raise ValueError("a bug\nover two lines")
        if kind == "ctrl-c":
            raise KeyboardInterrupt
        if kind == "exit":
            ctx.exit(3)

    return group


@pytest.mark.parametrize(
    "kind, code, fragment",
    [
        ("chargen", 1, "chargen: error: the corpus is empty"),
        ("oserror", 1, "chargen: error: /nonexistent-folder/x: No such file or directory"),
        ("bug", 1, "chargen: internal error: ValueError: a bug over two lines (set CHARGEN_DEBUG=1"),
        ("ctrl-c", 130, "chargen: interrupted"),
        ("exit", 3, None),
        ("usage", 2, "error: Got unexpected extra argument"),
    ],
)
def test_every_failure_leaves_through_one_path(kind: str, code: int, fragment: str | None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    monkeypatch.delenv("CHARGEN_DEBUG", raising=False)
    args = ["fail", kind] + (["extra"] if kind == "usage" else [])
    result = CliRunner().invoke(_test_group(), args)
    assert result.exit_code == code
    assert "Traceback" not in result.output
    if fragment:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_chargen_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    monkeypatch.setenv("CHARGEN_DEBUG", "1")
    result = CliRunner().invoke(_test_group(), ["fail", "bug"])
    assert result.exit_code == 1 and "Traceback" in result.stderr and "internal error" in result.stderr


def test_prime_file_that_is_a_device_fifo_or_folder_is_refused_at_once(run: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, what in (("/dev/zero", "character device"), (str(fifo), "FIFO"), (str(tmp_path), "folder")):
        result = invoke("sample", "--prime-file", path, "--len", "5")
        assert result.returncode == 2
        assert_one_line_error(result, "--prime-file", what)


def test_prime_file_is_read_with_a_bound_and_normalised_like_a_corpus(run: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * ((1 << 20) + 1))
    assert_one_line_error(invoke("sample", "--prime-file", str(big), "--len", "5"), "larger than 1 MiB")
    windows = tmp_path / "windows.txt"
    windows.write_bytes(b"\xef\xbb\xbfThe fox\r\nThe ")
    result = invoke("sample", "--prime-file", str(windows), "--len", "20", "--seed", "5", "--json", "--no-log")
    assert result.returncode == 0, result.stderr
    plain = invoke("sample", "--prime", "The fox\nThe ", "--len", "20", "--seed", "5", "--json", "--no-log")
    assert json.loads(result.stdout)["samples"] == json.loads(plain.stdout)["samples"]
    assert json.loads(result.stdout)["prime"] == "The fox\nThe "


def test_output_file_with_a_text_model_is_a_usage_error(run: Path, tmp_path: Path) -> None:
    result = invoke("sample", "--len", "10", "-o", str(tmp_path / "out.txt"))
    assert result.returncode == 2
    assert_one_line_error(result, "-o/--output", "stdout")
    assert result.stdout == "" and not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize("target, fragment", [("folder", "is a folder"), ("missing/x.mid", "not there"),
                                              ("/dev/null", "character device")])
def test_output_paths_are_checked_for_what_they_are(tmp_path: Path, target: str, fragment: str) -> None:
    (tmp_path / "folder").mkdir()
    path = target if target.startswith("/") else str(tmp_path / target)
    result = invoke("sample", "-o", path)
    assert result.returncode == 2
    assert_one_line_error(result, fragment)


def test_train_out_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = invoke("train", str(FABLES), "--out", str(tmp_path / "file" / "sub"), "--max-steps", "1")
    assert result.returncode == 2
    assert_one_line_error(result, "is a file")


def test_corpus_that_is_a_fifo_or_device_says_so(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    assert_one_line_error(invoke("train", str(fifo), "--max-steps", "1"), "FIFO")
    assert_one_line_error(invoke("train", "/dev/zero", "--max-steps", "1"), "character device")


def test_serve_on_a_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("serve", "--port", str(port))
    assert result.returncode == 1
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}: the port is already in use")


@pytest.mark.parametrize("args", [["info", "{}"], ["sample", "-c", "{}"], ["train", "--resume", "{}"],
                                  ["serve", "-c", "music={}"]])
def test_checkpoint_given_as_a_device_or_fifo_says_what_it_is(tmp_path: Path, args: list[str]) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, what in (("/dev/zero", "character device"), (str(fifo), "FIFO")):
        result = invoke(*(arg.format(path) for arg in args))
        assert result.returncode == 2
        assert_one_line_error(result, what)


def test_history_export_output_is_checked_like_every_output(tmp_path: Path) -> None:
    result = invoke("history", "export", "some-id", "-o", "/dev/null")
    assert result.returncode == 2
    assert_one_line_error(result, "character device")
