"""benchmarks/music_quality.py: its statistics on known pieces, and the script end to end on a tiny model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.music_quality import (
    Notes,
    Row,
    corpus_row,
    pitch_class_profile,
    read_back,
    sounding_time,
    total_variation,
)
from chargen.codecs.midi import DEFAULT_VOCAB, MidiCodec
from chargen.codecs.text import TextCodec
from chargen.model import CharRNN, ModelConfig
from chargen.runs.checkpoint import save_weights
from tests.conftest import FABLES, REPO

V = DEFAULT_VOCAB
ON, OFF, SHIFT = 0, V.note_off_base, V.shift_base
BASICS = REPO / "corpora" / "midi-basics"


def notes(*triples: tuple[float, float, int]) -> Notes:
    start, end, pitch = (np.array(column, dtype=float) for column in zip(*triples))
    return Notes(start, end, pitch)


def test_polyphony_is_note_time_over_sounding_time_with_rests_left_out() -> None:
    piece = notes((0, 2, 60), (1, 2, 64), (3, 4, 67))  # 1 s alone, 1 s two notes, a rest, 1 s alone
    assert sounding_time(piece) == pytest.approx(3.0)
    stats = Row("x", "", "", [piece]).stats(pitch_class_profile(piece))
    assert stats["polyphony"] == pytest.approx(4.0 / 3.0)
    assert stats["per_s"] == pytest.approx(3 / 4)
    assert stats["pcp"] == 0.0


def test_pitch_class_profile_is_duration_weighted_and_key_invariant() -> None:
    c_major = notes((0, 3, 60), (0, 1, 64), (0, 1, 67))
    f_sharp = notes((0, 3, 66), (0, 1, 70), (0, 1, 73))
    assert pitch_class_profile(c_major)[:3].tolist() == pytest.approx([0.6, 0.2, 0.2])
    assert total_variation(pitch_class_profile(c_major), pitch_class_profile(f_sharp)) == 0.0
    drone = notes((0, 5, 60))
    assert total_variation(pitch_class_profile(c_major), pitch_class_profile(drone)) == pytest.approx(0.4)


def test_read_back_counts_the_notes_the_held_note_cap_ends() -> None:
    ids = [ON + 60, ON + 64] + [SHIFT + 99] * 7 + [OFF + 60, SHIFT + 9, OFF + 64]  # 7 s and 7.1 s
    capped = read_back(ids, V, 5.0, 5.0)
    assert capped.cut == 2 and capped.duration.max() == pytest.approx(5.0, abs=1e-3)
    whole = read_back(ids, V, None, 5.0)
    assert whole.cut == 2 and whole.duration.max() == pytest.approx(7.1, abs=1e-3)
    assert read_back([SHIFT], V, 5.0, 5.0).pitch.size == 0


def test_corpus_polyphony_tells_chorales_from_scales() -> None:
    codec = MidiCodec()
    chorales, ids = corpus_row(sorted(BASICS.glob("chorale-*.mid")), codec, 5.0)
    scales, _ = corpus_row(sorted(BASICS.glob("scale-*.mid")), codec, 5.0)
    assert len(chorales.pieces) == 12 and len(ids) > 1000
    assert 3.5 < chorales.stats(chorales.profile())["polyphony"] <= 4.0
    assert scales.stats(scales.profile())["polyphony"] < 1.3


def _tiny_checkpoint(path: Path, codec) -> Path:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=1, hidden=32, embedding=16))
    save_weights(path, model, codec, {})
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.music_quality", *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))


@pytest.mark.slow
def test_script_end_to_end_on_a_tiny_model(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("chorale-01-Ab-major.mid", "chorale-02-Fs-major.mid", "scale-01-E-major.mid"):
        shutil.copy(BASICS / name, corpus)
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.safetensors", MidiCodec())
    out = tmp_path / "table.md"
    result = _run(str(checkpoint), str(corpus), "--length", "200", "--samples", "2", "--temperatures", "0.8",
                  "1.2", "--beam-width", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 1 + 3 * 3  # header, corpus, (two temperatures + beam) x (grammar off, cap, cap + hold)
    corpus_cells = [cell.strip() for cell in lines[1].split("|")[1:-1]]
    assert corpus_cells[:4] == ["corpus", "", "", "3"] and corpus_cells[7] == "0.000"
    free = [cell.strip() for cell in lines[2].split("|")[1:-1]]
    assert free[1:4] == ["sample T=0.8", "off", "2"] and float(free[5]) > 0  # figures for the samples
    assert "Polyphony cap 4 (the corpus's 99th percentile of simultaneous notes over time)" in result.stdout
    assert "longest hold 5 s (the export's held-note cap (older checkpoint" in result.stdout  # none stored
    assert [cell.strip() for cell in lines[4].split("|")[1:-1]][2] == "on, cap 4, hold <= 5 s"
    assert out.read_text() == result.stdout


@pytest.mark.slow
def test_script_refuses_a_text_model_in_one_line(tmp_path: Path) -> None:
    checkpoint = _tiny_checkpoint(tmp_path / "text.safetensors", TextCodec.fit([FABLES]))
    result = _run(str(checkpoint), str(BASICS))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: ") and "not a MIDI model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
