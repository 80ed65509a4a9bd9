"""``chargen sample -o piece.wav``: MIDI rendered through FluidSynth is real, non-silent audio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import mido
import numpy as np
import pytest

from chargen.codecs.midi.audio import find_synth, render_wav
from chargen.errors import ChargenError
from tests.conftest import REPO, assert_one_line_error, run_cli

BASICS = REPO / "corpora" / "midi-basics"
#: 16-bit RMS; a rendered piano piece is in the hundreds, digital silence is 0
RMS_FLOOR = 20.0


def synth_or_skip():  # type: ignore[no-untyped-def]
    try:
        return find_synth()
    except ChargenError as exc:
        pytest.skip(f"no General MIDI synthesizer here ({exc}); `make test` installs it as root")


def wav_rms(path: Path) -> tuple[float, float]:
    """(RMS of the 16-bit samples, duration in seconds)."""
    with wave.open(str(path)) as audio:
        assert audio.getsampwidth() == 2 and audio.getframerate() == 44100
        frames = audio.readframes(audio.getnframes())
        seconds = audio.getnframes() / audio.getframerate()
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float64)
    return (float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0), seconds


@pytest.fixture(scope="module")
def midi_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audio-ck")
    result = run_cli("train", str(BASICS), "--size", "tiny", "--max-steps", "60", "--eval-every", "30",
                     "--batch-size", "8", "--seq-len", "64", "--lr", "0.01", "--threads", "1",
                     "--run-name", "basics", "--out", str(root), "--quiet", "--no-log")
    assert result.returncode == 0, result.stderr
    return root / "basics"


def test_a_sampled_piece_renders_to_non_silent_wav(midi_run: Path, tmp_path: Path) -> None:
    synth_or_skip()
    out = tmp_path / "piece.wav"
    result = run_cli("sample", "-c", str(midi_run), "--len", "400", "--seed", "5", "-o", str(out), "--json",
                     "--no-log")
    assert result.returncode == 0, result.stderr
    sample = json.loads(result.stdout)["samples"][0]
    assert sample["wav_path"] == str(out) and sample["midi_path"] == str(tmp_path / "piece.mid")
    rms, seconds = wav_rms(out)
    assert seconds > 0.5 and rms > RMS_FLOOR, (rms, seconds)
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_floor_tells_music_from_silence(tmp_path: Path) -> None:
    synth = synth_or_skip()
    piece = sorted(BASICS.glob("*.mid"))[0]
    render_wav(piece, tmp_path / "piece.wav", synth)
    assert wav_rms(tmp_path / "piece.wav")[0] > RMS_FLOOR
    silent = tmp_path / "silent.mid"
    track = mido.MidiTrack([mido.Message("program_change", program=0, time=0),
                            mido.MetaMessage("end_of_track", time=960)])  # two seconds of no notes
    mido.MidiFile(tracks=[track], ticks_per_beat=480).save(silent)
    render_wav(silent, tmp_path / "silent.wav", synth)
    assert wav_rms(tmp_path / "silent.wav")[0] < RMS_FLOOR


@pytest.mark.slow
def test_without_fluidsynth_the_error_names_what_to_install(midi_run: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with python but without fluidsynth
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python3")
    env = dict(os.environ, PATH=str(bin_dir), PYTHONPATH=str(REPO))
    env.pop("CHARGEN_DEBUG", None)
    out = tmp_path / "piece.wav"
    result = subprocess.run([sys.executable, "-m", "chargen", "sample", "-c", str(midi_run), "--len", "50",
                             "-o", str(out), "--no-log"], capture_output=True, text=True, env=env, timeout=120)
    assert_one_line_error(result, "apt-get install fluidsynth fluid-soundfont-gm")
    assert not out.exists() and not (tmp_path / "piece.mid").exists()  # failed before writing anything


def test_a_missing_soundfont_is_one_line(midi_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synth_or_skip()
    monkeypatch.setenv("CHARGEN_SOUNDFONT", str(tmp_path / "none.sf2"))
    result = run_cli("sample", "-c", str(midi_run), "--len", "50", "-o", str(tmp_path / "p.wav"), "--no-log")
    assert_one_line_error(result, "CHARGEN_SOUNDFONT", "none.sf2")


def test_a_text_model_refuses_wav(trained_run: Path, tmp_path: Path) -> None:
    result = run_cli("sample", "-c", str(trained_run), "--len", "20", "-o", str(tmp_path / "x.wav"), "--no-log")
    assert_one_line_error(result, ".wav", "MIDI model")
    assert not (tmp_path / "x.wav").exists()
