"""Damaged run folders and checkpoints: one line naming the file and what is wrong, never an internal error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from chargen.runs.layout import LAST, RUN_JSON, TOKENS
from tests.test_trainer import run_main, tiny


def _one_line(code: int, err: str, *fragments: str) -> str:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "internal error" not in lines[0] and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    return tiny(tmp_path, "victim").run_dir


@pytest.mark.parametrize("damage", ["truncated", "foreign", "truncated-old-run", "foreign-old-run"])
def test_resume_refuses_a_tokens_file_that_is_not_the_runs_corpus(
        damage: str, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = finished / TOKENS
    if damage.startswith("truncated"):
        data = tokens.read_bytes()
        tokens.write_bytes(data[: len(data) // 2])
    else:  # another run's encoded corpus, of the same length: only its content differs
        other_corpus = tmp_path / "other" / "reversed.txt"
        other_corpus.parent.mkdir()
        other_corpus.write_text((tmp_path / "fables.txt").read_text()[::-1])
        other = tiny(tmp_path, "other", corpus=other_corpus).run_dir
        shutil.copy(other / TOKENS, tokens)
    if damage.endswith("old-run"):  # a run from before run.json recorded the tokens' hash
        meta = json.loads((finished / RUN_JSON).read_text())
        del meta["tokens_sha256"]
        (finished / RUN_JSON).write_text(json.dumps(meta))
    code, err = run_main(["train", "--resume", str(finished), "--max-steps", "8", "--quiet", "--no-log"], capsys,
                         monkeypatch)
    if damage == "foreign-old-run":
        # Without the recorded hash a same-length, same-vocabulary file cannot be told apart: it trains.
        assert code == 0, err
        return
    _one_line(code, err, str(tokens))


def _rewrite_metadata(source: Path, target: Path, **changes: str) -> Path:
    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    metadata.update(changes)
    save_file(tensors, str(target), metadata=metadata)
    return target


@pytest.mark.parametrize("change, fragment", [
    ("short-alphabet", "symbols but the model's vocabulary is"),
    ("codec-list", "'codec' is a list"),
    ("model-config-list", "'model_config' is a list"),
    ("codec-not-json", "'codec' is not JSON"),
])
@pytest.mark.parametrize("command", ["sample", "info"])
def test_inconsistent_checkpoint_metadata_is_named(change: str, fragment: str, command: str, finished: Path,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with safe_open(str(finished / LAST), framework="pt") as handle:
        codec = json.loads(handle.metadata()["codec"])
    changes = {
        "short-alphabet": {"codec": json.dumps(dict(codec, alphabet=codec["alphabet"][:-5]))},
        "codec-list": {"codec": json.dumps([codec])},
        "model-config-list": {"model_config": "[1, 2]"},
        "codec-not-json": {"codec": "{not json"},
    }[change]
    damaged = _rewrite_metadata(finished / LAST, tmp_path / "damaged.safetensors", **changes)
    args = ["sample", "-c", str(damaged), "--len", "5", "--no-log"] if command == "sample" else ["info", str(damaged)]
    code, err = run_main(args, capsys, monkeypatch)
    _one_line(code, err, str(damaged), fragment)


def test_resume_with_a_damaged_codec_in_the_weights_is_named(finished: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _rewrite_metadata(finished / LAST, finished / LAST, codec='["text"]')
    code, err = run_main(["train", "--resume", str(finished), "--quiet", "--no-log"], capsys, monkeypatch)
    _one_line(code, err, str(finished / LAST), "is a list")
