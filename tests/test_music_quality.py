"""benchmarks/music_quality.py and benchmarks/music: statistics on known pieces, the plateau rule, the
acceptance checks, and the script end to end on a tiny model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.music.report import within
from benchmarks.music.stats import (
    FAMILY_Z,
    Figure,
    Piece,
    Summary,
    bootstrap,
    further_than,
    pitch_class_profile,
    read_back,
    sounding_time,
    total_variation,
)
from benchmarks.music.training import plateaued
from benchmarks.music_quality import corpus_summary
from chargen.codecs.midi import DEFAULT_VOCAB
from chargen.codecs.midi.note_codec import NoteCodec
from chargen.codecs.midi.note_vocab import DEFAULT_NOTE_VOCAB
from chargen.codecs.text import TextCodec
from chargen.model import CharRNN, ModelConfig
from chargen.runs.checkpoint import save_weights
from tests.conftest import FABLES, REPO

V = DEFAULT_VOCAB
ON, OFF, SHIFT = 0, V.note_off_base, V.shift_base
BASICS = REPO / "corpora" / "midi-basics"


def piece(*notes: tuple[float, float, int], velocity: float = 80) -> Piece:
    start, end, pitch = (np.array(column, dtype=float) for column in zip(*notes))
    return Piece(start, end, pitch, np.full(len(start), velocity))


def test_polyphony_is_note_time_over_sounding_time_with_rests_left_out() -> None:
    p = piece((0, 2, 60), (1, 2, 64), (3, 4, 67))  # 1 s alone, 1 s two notes, a rest, 1 s alone
    assert sounding_time(p) == pytest.approx(3.0)
    stats = Summary([p]).statistics(pitch_class_profile(p))
    assert stats["polyphony"] == pytest.approx(4.0 / 3.0)
    assert stats["per_s"] == pytest.approx(3 / 4)
    assert stats["ioi"] == pytest.approx(1.5) and stats["median"] == pytest.approx(1.0)  # onsets 0, 1, 3
    assert stats["pcp"] == 0.0 and stats["velocity"] == 80


def test_pitch_class_profile_is_duration_weighted_and_key_normalised() -> None:
    c_major = piece((0, 3, 60), (0, 1, 64), (0, 1, 67), (3, 4, 65), (4, 5, 62))
    f_sharp = piece((0, 3, 66), (0, 1, 70), (0, 1, 73), (3, 4, 71), (4, 5, 68))
    assert pitch_class_profile(c_major)[0] == pytest.approx(3 / 7)  # the tonic, C, is class 0
    assert total_variation(pitch_class_profile(c_major), pitch_class_profile(f_sharp)) == pytest.approx(0.0)
    chromatic = piece(*((i, i + 1, 60 + i) for i in range(12)))
    assert total_variation(pitch_class_profile(c_major), pitch_class_profile(chromatic)) > 0.3


def test_read_back_exports_either_codec_and_applies_the_held_note_cap() -> None:
    ids = [ON + 60, ON + 64] + [SHIFT + 99] * 7 + [OFF + 60, SHIFT + 9, OFF + 64]  # 7 s and 7.1 s
    assert read_back(ids, V, 5.0).duration.max() == pytest.approx(5.0, abs=1e-3)
    assert read_back(ids, V, None).duration.max() == pytest.approx(7.1, abs=1e-3)
    assert len(read_back([SHIFT], V, 5.0)) == 0
    n = DEFAULT_NOTE_VOCAB
    notes = read_back([60, n.duration_base + 49, n.shift_base + 9, 64, n.duration_base + 9], n, None)
    got = sorted(zip(notes.pitch.tolist(), notes.duration.tolist()))
    assert [p for p, _ in got] == [60, 64] and [d for _, d in got] == pytest.approx([0.5, 0.1], abs=1e-3)


def test_corpus_statistics_tell_chorales_from_scales(tmp_path: Path) -> None:
    for kind in ("chorale", "scale"):
        (tmp_path / kind).mkdir()
        for path in BASICS.glob(f"{kind}-*.mid"):
            shutil.copy(path, tmp_path / kind)
    chorales, scales = corpus_summary(tmp_path / "chorale"), corpus_summary(tmp_path / "scale")
    assert len(chorales.pieces) == 12
    assert 3.5 < chorales.statistics(None)["polyphony"] <= 4.0
    assert scales.statistics(None)["polyphony"] < 1.3


def test_bootstrap_interval_holds_the_value_and_further_than_needs_a_real_difference() -> None:
    rng = np.random.default_rng(0)
    def chorale(shift: float) -> Piece:
        return piece(*((t, t + 0.5, int(60 + shift + rng.integers(-5, 6))) for t in np.arange(0, 20, 0.25)))
    corpus = Summary([chorale(0) for _ in range(12)])
    same = Summary([chorale(0) for _ in range(12)])
    high = Summary([chorale(12) for _ in range(12)])
    figures = bootstrap(same, corpus.profile(), rounds=200)
    assert all(f.low <= f.value <= f.high for f in figures.values())
    profile = corpus.profile()
    flags, z = further_than(same, same, corpus, profile, rounds=200)
    assert not any(flags.values()) and all(v < FAMILY_Z for v in z.values())  # against itself: chance only
    flags, z = further_than(high, same, corpus, profile, rounds=200)
    assert flags["pitch_mean"] and z["pitch_mean"] > FAMILY_Z  # an octave off: far beyond any chance
    flags, z = further_than(same, high, corpus, profile, rounds=200)
    assert not flags["pitch_mean"] and z["pitch_mean"] < 0


def test_plateau_rule() -> None:
    improving = [(i, 3.0 - 0.1 * i) for i in range(8)]
    assert not plateaued(improving, 3, 0.005)
    flat = [(0, 3.0), (1, 2.0), (2, 1.995), (3, 2.1), (4, 1.999)]
    assert plateaued(flat, 3, 0.005) and not plateaued(flat, 4, 0.005) and not plateaued(flat, 0, 0.005)


def test_acceptance_bounds() -> None:
    corpus = {k: Figure(v, v, v) for k, v in
              {"polyphony": 4.0, "median": 0.5, "per_s": 8.0, "pitch_sd": 8.0, "pitch_mean": 62.0}.items()}
    close = {k: Figure(v, v, v) for k, v in
             {"polyphony": 4.5, "median": 0.45, "per_s": 9.1, "pitch_sd": 7.0, "pitch_mean": 63.4}.items()}
    assert all(within(close, corpus).values())
    off = dict(close, polyphony=Figure(4.7, 4.7, 4.7), pitch_mean=Figure(63.6, 63.6, 63.6))
    assert [k for k, ok in within(off, corpus).items() if not ok] == ["polyphony", "pitch_mean"]


def _tiny_checkpoint(path: Path, codec) -> Path:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=1, hidden=32, embedding=16))
    save_weights(path, model, codec, {})
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.music_quality", *args], capture_output=True,
                          text=True, timeout=600, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))


@pytest.mark.slow
def test_script_on_one_checkpoint_end_to_end(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("chorale-01-Ab-major.mid", "chorale-02-Fs-major.mid", "scale-01-E-major.mid"):
        shutil.copy(BASICS / name, corpus)
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.safetensors", NoteCodec())
    result = _run("--checkpoint", str(checkpoint), "--corpus", str(corpus), "--length", "120", "--samples", "2",
                  "--beam-width", "2")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    names = [[cell.strip() for cell in row.split("|")[1:-1]][:2] for row in rows]
    assert ["corpus", ""] in names and ["midi-notes", "unconstrained"] in names
    assert ["midi-notes", "default"] in names and ["midi-notes", "beam 2, default"] in names
    assert ["midi-notes", "duration alone"] in names and ["midi-notes", "hold alone"] in names
    corpus_cells = next(r for r in rows if r.startswith("| corpus | |")).split("|")
    assert corpus_cells[3].strip() == "3"  # pieces


@pytest.mark.slow
def test_script_refuses_a_text_model_in_one_line(tmp_path: Path) -> None:
    checkpoint = _tiny_checkpoint(tmp_path / "text.safetensors", TextCodec.fit([FABLES]))
    result = _run("--checkpoint", str(checkpoint), "--corpus", str(BASICS))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: ") and "not a MIDI model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
