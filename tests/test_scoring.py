"""``chargen score``: the validation split scores exactly the loss training recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chargen.codecs.text import TextCodec
from chargen.runs.checkpoint import load_checkpoint, load_state
from chargen.runs.layout import BEST, LAST, RUN_JSON, STATE, TOKENS
from chargen.scoring.files import score_files, tokenize_text
from chargen.training.data import load_tokens, split_tokens
from tests.conftest import REPO, assert_one_line_error, run_cli


def write_validation_text(run: Path, target: Path) -> Path:
    """The run's validation split (the last val_fraction of its tokens), decoded, as a text file."""
    config = json.loads((run / RUN_JSON).read_text())["train_config"]
    split = split_tokens(load_tokens(run / TOKENS), config["val_fraction"], config["batch_size"], config["seq_len"])
    codec = load_checkpoint(run / LAST).codec
    target.write_bytes(codec.decode(split.val.tolist()).encode("utf-8"))  # bytes: no newline translation
    return target


def test_score_of_the_validation_split_is_the_recorded_best_val_loss(run: Path, tmp_path: Path) -> None:
    val_text = write_validation_text(run, tmp_path / "val.txt")
    recorded = load_checkpoint(run / BEST).training["best_val_loss"]  # best.safetensors is saved at that eval
    result = run_cli("score", str(val_text), "--checkpoint", str(run / BEST), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    (scored,) = data["files"]
    assert scored["nats_per_token"] == pytest.approx(recorded, abs=1e-4)
    assert scored["bits_per_token"] == pytest.approx(recorded / np.log(2), abs=1e-4)
    assert scored["perplexity"] == pytest.approx(np.exp(recorded), rel=1e-4)
    assert scored["unknown_count"] == 0 and result.stderr == ""


def test_score_of_the_last_weights_is_the_final_evaluation(run: Path, tmp_path: Path) -> None:
    val_text = write_validation_text(run, tmp_path / "val.txt")
    final_eval = load_state(run / STATE)["evals"][-1]  # last.safetensors is saved right after it
    (scored,) = score_files(load_checkpoint(run / LAST), [val_text])
    assert scored.nats_per_token == pytest.approx(final_eval["val_loss"], abs=1e-4)


def test_unknown_characters_are_removed_counted_and_reported(run: Path, tmp_path: Path) -> None:
    odd = tmp_path / "odd.txt"
    odd.write_text("The fox ☃ saw the crow ☃☃ on a branch, ✓\nand said nothing.\n", encoding="utf-8")
    result = run_cli("score", str(odd), "-c", str(run), "--json")
    assert result.returncode == 0, result.stderr
    (scored,) = json.loads(result.stdout)["files"]
    assert scored["unknown"] == {"☃": 3, "✓": 1} and scored["unknown_count"] == 4
    assert "removed 4 character(s)" in result.stderr and "'☃' x3" in result.stderr
    assert "Traceback" not in result.stderr
    plain = run_cli("score", str(odd), "-c", str(run))
    assert plain.returncode == 0 and "nats/char" in plain.stdout and "bits/char" in plain.stdout


def test_tokenize_text_keeps_positions_of_known_characters() -> None:
    codec = TextCodec("abc\n")
    tokens = tokenize_text("a☃b\nxc", codec)
    assert codec.decode(tokens.ids.tolist()) == "ab\nc"
    assert tokens.positions.tolist() == [0, 2, 3, 5]
    assert tokens.unknown == {"☃": 1, "x": 1}


def test_per_line_ranks_the_gibberish_line_worst(run: Path, tmp_path: Path) -> None:
    fables = (REPO / "corpora" / "fables.txt").read_text().splitlines()
    prose = [line for line in fables if len(line) > 40][:30]
    gibberish = "qzxqj vvkq zzxw qqjx kkzv xjqz"
    text = "\n".join(prose[:15] + [gibberish] + prose[15:]) + "\n"
    path = tmp_path / "mixed.txt"
    path.write_text(text)
    (scored,) = score_files(load_checkpoint(run / BEST), [path], per_line=3)
    assert len(scored.worst_lines) == 3
    worst = scored.worst_lines[0]
    assert worst.line == 16 and worst.text == gibberish
    assert worst.chars == len(gibberish) + 1  # its characters and its newline
    assert worst.nats_per_char > scored.worst_lines[1].nats_per_char > 0
    shown = run_cli("score", str(path), "-c", str(run), "--per-line", "1")
    assert "line 16:" in shown.stdout, shown.stdout


def test_bad_input_is_one_line(run: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("T")
    assert_one_line_error(run_cli("score", str(short), "-c", str(run)), "too short to score")
    midi = sorted((REPO / "corpora" / "midi-basics").glob("*.mid"))[0]
    assert_one_line_error(run_cli("score", str(midi), "-c", str(run)), "MIDI file", "text codec")
    assert_one_line_error(run_cli("score", str(tmp_path / "absent.txt"), "-c", str(run)), "absent.txt")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"abc\x00\x01")
    assert_one_line_error(run_cli("score", str(binary), "-c", str(run)), "binary")


@pytest.mark.parametrize("codec", ["auto", "midi"])  # auto: the note codec
def test_a_midi_file_is_scored_with_a_midi_model(tmp_path: Path, codec: str) -> None:
    from chargen.runs.start import start_run
    from chargen.training import TrainConfig

    basics = REPO / "corpora" / "midi-basics"
    config = TrainConfig(batch_size=8, seq_len=32, lr=1e-2, max_steps=20, eval_every=10, seed=2, threads=1)
    result = start_run([basics], config, preset="tiny", run_name="m", out=tmp_path / "ck", progress=False,
                       warn=lambda message: None, codec_name=codec)
    assert load_checkpoint(result.run_dir / LAST).codec.name == ("midi-notes" if codec == "auto" else codec)
    piece = sorted(basics.glob("*.mid"))[0]
    out = run_cli("score", str(piece), "-c", str(result.run_dir), "--json")
    assert out.returncode == 0, out.stderr
    (scored,) = json.loads(out.stdout)["files"]
    assert scored["unit"] == "token" and scored["scored"] > 0
    assert 0 < scored["nats_per_token"] < np.log(load_checkpoint(result.run_dir / LAST).codec.vocab_size) + 1
