"""The real `chargen` command in a subprocess: happy paths and every bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from chargen.checkpoint import BEST, LAST, sha256_file
from tests.conftest import assert_one_line_error, run_cli


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
    result = run_cli("sample", "--len", "60", "-n", "3", "--seed", "1", "--json", "--top-k", "10", "--top-p", "0.9")
    data = json.loads(result.stdout)
    assert data["decoder"] == "sample" and len(data["samples"]) == 3
    assert all(len(s["text"]) == 60 and s["logprob"] < 0 for s in data["samples"])
    greedy = json.loads(run_cli("sample", "--len", "30", "--greedy", "--json").stdout)
    assert greedy["decoder"] == "greedy" and greedy["params"]["no_repeat_ngram"] == 12
    beam = json.loads(run_cli("sample", "--len", "30", "--beam-width", "4", "-n", "2", "--json").stdout)
    assert beam["decoder"] == "beam" and len(beam["samples"]) == 2
    assert beam["samples"][0]["logprob"] >= beam["samples"][1]["logprob"]


def test_newest_run_is_used_by_default_and_info_describes_it(run: Path) -> None:
    info = json.loads(run_cli("info", "--json").stdout)
    assert info["path"] == str(run / BEST)
    assert info["codec"] == "text" and info["vocab_size"] == len(info["vocabulary"])
    assert info["steps"] == 150 and info["best_val_loss_nats"] > 0 and info["parameters"] > 0
    human = run_cli("info", str(run))
    assert "LSTM" in human.stdout and "bpc" in human.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--temperature", "0"], "temperature"),
        (["--temperature", "-1"], "temperature"),
        (["--len", "-5"], "--len"),
        (["--beam-width", "0"], "beam-width"),
        (["--greedy", "--temperature", "0.5"], "--greedy"),
        (["--beam-width", "999"], "vocabulary"),
        (["--beam-width", "2", "-n", "3"], "--num-samples"),
    ],
)
def test_bad_sampling_options_are_usage_errors(run: Path, args: list[str], fragment: str) -> None:
    result = run_cli("sample", *args)
    assert result.returncode == 2
    assert_one_line_error(result, fragment)
    assert result.stdout == ""


def test_unknown_prime_characters_are_named(run: Path) -> None:
    result = run_cli("sample", "--prime", "Hello ☃ world ß")
    assert_one_line_error(result, "'☃'", "'ß'")
    assert result.stdout == ""


def test_missing_and_foreign_checkpoints(run: Path, tmp_path: Path) -> None:
    assert_one_line_error(run_cli("sample", "-c", str(tmp_path / "nope")), "no such checkpoint")
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_text("this is not a checkpoint")
    assert_one_line_error(run_cli("sample", "-c", str(foreign)), "not a chargen checkpoint")
    import torch
    from safetensors.torch import save_file

    alien = tmp_path / "alien.safetensors"
    save_file({"w": torch.zeros(2)}, str(alien), metadata={"format": "something-else"})
    assert_one_line_error(run_cli("info", str(alien)), "not a chargen checkpoint")


def test_truncated_weights_are_refused_and_nothing_is_damaged(run: Path, tmp_path: Path) -> None:
    before = sha256_file(run / LAST)
    cut = tmp_path / "cut.safetensors"
    data = (run / LAST).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli("sample", "-c", str(cut)), "truncated")
    assert sha256_file(run / LAST) == before


def test_pickle_planted_as_checkpoint_never_runs(run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    planted = run / "state.pt"
    planted.write_bytes(pickle.dumps({"step": Exploit()}))
    result = run_cli("train", "--resume", str(run), "--max-steps", "1")
    assert_one_line_error(result, "refused")
    weights = tmp_path / "evil.safetensors"
    weights.write_bytes(pickle.dumps(Exploit()))
    assert_one_line_error(run_cli("sample", "-c", str(weights)), "not a chargen checkpoint")
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
    result = run_cli("train", str(corpus), "--max-steps", "1")
    assert_one_line_error(result, fragment)
    root = isolated_home / "checkpoints"
    assert not root.exists() or not any(root.iterdir()), "a failed start leaves no half-made run behind"


def test_bad_corpus_never_touches_an_existing_run(run: Path, tmp_path: Path) -> None:
    before = {p.name: sha256_file(p) for p in run.iterdir() if p.is_file()}
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_one_line_error(run_cli("train", str(empty), "--run-name", run.name), "already holds a run")
    assert_one_line_error(run_cli("train", str(tmp_path / "missing.txt")), "no such file")
    assert {p.name: sha256_file(p) for p in run.iterdir() if p.is_file()} == before


def test_help_explains_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "sample", "info"):
        assert command in result.stdout
    assert "--temperature" in run_cli("sample", "--help").stdout
