"""Every read has a bound proportional to what it serves (issue 27, items 11 and 12).

The training curve (``/v1/models/X/curve`` and ``chargen info``) is thinned to a chart's worth of points
and read in bounded memory however long ``metrics.jsonl`` grew; primes are bounded in tokens for every
codec (and a MIDI prime file in bytes); a huge vocabulary is warned about, then refused unless
``--max-vocab`` allows it, before anything large is written; a MIDI prime without notes is an error.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import httpx
import mido
import pytest
from service_support import make_checkpoint, thread_server

from chargen.codecs.midi import MidiCodec
from chargen.runs.checkpoint import load_checkpoint
from chargen.runs.curve import read_curve, trend
from chargen.runs.layout import METRICS
from tests.conftest import FABLES, assert_one_line_error, invoke

LINES = 50_000


def curve_and_peak(run: Path) -> tuple[list, int]:
    """``read_curve(run)`` and the most memory Python held while it read (tracemalloc's peak, bytes)."""
    tracemalloc.start()
    try:
        return read_curve(run), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def long_curve(run_dir: Path, lines: int = LINES) -> None:
    """A curve of ``lines`` points (a long run logging every step), its best evaluation in the middle."""
    with open(run_dir / METRICS, "w") as handle:
        for step in range(1, lines + 1):
            val = 3.0 - step / lines if step != lines // 2 else 0.5
            handle.write(json.dumps({"step": step, "elapsed_s": step / 10, "train_loss": 2.0, "val_loss": val,
                                     "lr": 0.001, "chars_per_s": 1000.0, "precision": "fp32"}) + "\n")


@pytest.mark.slow
def test_a_long_curve_is_thinned_in_bounded_memory(run: Path) -> None:
    from chargen.runs.curve import MAX_POINTS

    long_curve(run)
    found = trend(run)
    points, peak = curve_and_peak(run)
    assert 100 <= len(points) <= MAX_POINTS
    assert [p.step for p in points] == sorted(p.step for p in points)
    assert points[0].step == 1 and points[-1].step == LINES
    assert LINES // 2 in [p.step for p in points]  # the best evaluation is always kept
    assert found is not None and found.best_step == LINES // 2 and found.best_val_loss == 0.5
    assert found.last_step == LINES and found.evaluations == LINES
    # All 50,000 points as Python objects would take tens of MiB: the thinned curve stays far below.
    assert peak < 4 << 20, f"reading the curve peaked at {peak / 2**20:.1f} MiB"


def test_an_overlong_line_is_skipped_unread(run: Path) -> None:
    with open(run / METRICS, "w") as handle:
        handle.write('{"step": 1, "val_loss": 2.0, "train_loss": 2.5}\n')
        handle.write('{"step": 2, "junk": "' + "x" * (20 << 20) + '"}\n')  # 20 MB on one line
        handle.write('{"step": 3, "val_loss": 1.5, "train_loss": 2.0}\n')
    points, peak = curve_and_peak(run)
    assert [p.step for p in points] == [1, 3] and peak < 4 << 20


def test_the_curve_endpoint_and_info_are_bounded(run: Path) -> None:
    long_curve(run)
    models = {"fables": load_checkpoint(run / "best.safetensors")}
    from chargen.serve import Limits, create_app

    with thread_server(create_app(models, None, None, Limits())) as url:
        response = httpx.get(url + "/v1/models/fables/curve", timeout=60)
    assert response.status_code == 200 and len(response.content) < 1 << 20
    curve = response.json()
    assert len(curve["points"]) <= 2000 and curve["trend"]["best_step"] == LINES // 2
    info = invoke("info", run.name)
    assert info.returncode == 0 and f"at step {LINES // 2}" in info.stdout


# ----------------------------------------------------------------------------- primes


def midi_file(path: Path, notes: int, channel: int = 0) -> Path:
    mid = mido.MidiFile()
    track = mido.MidiTrack()
    mid.tracks.append(track)
    for i in range(notes):
        track.append(mido.Message("note_on", note=40 + i % 40, velocity=64, time=24, channel=channel))
        track.append(mido.Message("note_off", note=40 + i % 40, velocity=0, time=24, channel=channel))
    mid.save(path)
    return path


@pytest.fixture
def music(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "music.safetensors", MidiCodec(), seed=3)


def test_a_midi_prime_is_bounded_in_tokens(music: Path, tmp_path: Path) -> None:
    from chargen.sampling.config import MAX_PRIME_TOKENS

    prime = midi_file(tmp_path / "long.mid", MAX_PRIME_TOKENS)  # about three tokens a note
    fits = invoke("sample", "-c", str(music), "--prime-midi", str(prime), "--prime-len", "300", "--len", "5",
                  "--format", "text", "--no-log", "-q")
    assert fits.returncode == 0, fits.stderr
    result = invoke("sample", "-c", str(music), "--prime-midi", str(prime), "--prime-len", str(10**9), "--len", "5",
                    "--format", "text", "--no-log")
    assert_one_line_error(result, "prime", f"{MAX_PRIME_TOKENS:,}")


def test_a_big_midi_prime_file_is_refused_unread(music: Path, tmp_path: Path) -> None:
    prime = tmp_path / "huge.mid"
    mid = mido.MidiFile()
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("text", text="x" * (1 << 20)),
                                      *mido.MidiFile(midi_file(tmp_path / "notes.mid", 100)).tracks[0]]))
    mid.save(prime)  # its notes at the end, past a MiB
    assert prime.stat().st_size > 1 << 20
    result = invoke("sample", "-c", str(music), "--prime-midi", str(prime), "--len", "5", "--format", "text",
                    "--no-log")
    assert_one_line_error(result, str(prime), "too big for a MIDI prime")


def test_a_text_prime_is_bounded_in_tokens(run: Path, tmp_path: Path) -> None:
    prime = tmp_path / "prime.txt"
    prime.write_text("the fox " * 5000)  # 40,000 characters: within the file bound, past the token bound
    result = invoke("sample", "--prime-file", str(prime), "--len", "5", "--no-log")
    assert_one_line_error(result, "prime")
    assert result.stdout == ""


@pytest.mark.parametrize("kind", ["drums", "no tracks"])
def test_a_midi_prime_without_notes_is_an_error(music: Path, tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.mid"
    if kind == "drums":
        midi_file(path, 50, channel=9)
    else:  # a header claiming 65,535 tracks, none of them there
        path.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\xff\xff\x00\x60")
    assert MidiCodec().encode_file(path).size == 0
    primed = invoke("sample", "-c", str(music), "--prime-midi", str(path), "--len", "5", "--format", "text",
                    "--no-log")
    assert_one_line_error(primed, str(path), "no notes")
    shown = invoke("midi", "tokens", str(path))
    assert_one_line_error(shown, str(path), "no notes")
    assert shown.stdout == ""


# ----------------------------------------------------------------------------- the vocabulary


def many_symbols(path: Path, count: int) -> Path:
    symbols = "".join(chr(0x20000 + i) for i in range(count))  # CJK ideographs (extension B): one token each
    path.write_text((FABLES.read_text()[:20_000] + symbols) * 2, encoding="utf-8")
    return path


TRAIN = ["--size", "tiny", "--max-steps", "1", "--batch-size", "2", "--seq-len", "8", "--threads", "1", "--quiet",
         "--no-log"]


def test_a_huge_vocabulary_is_refused_before_anything_is_written(tmp_path: Path, isolated_home: Path) -> None:
    corpus = many_symbols(tmp_path / "wide.txt", 40_000)
    result = invoke("train", str(corpus), "--run-name", "wide", *TRAIN)
    assert_one_line_error(result, "40,", "distinct symbols", "--max-vocab")
    assert not (isolated_home / "checkpoints" / "wide").exists()


def test_max_vocab_allows_it_and_a_large_one_is_warned_about(tmp_path: Path, isolated_home: Path) -> None:
    corpus = many_symbols(tmp_path / "wide.txt", 5000)
    result = invoke("train", str(corpus), "--run-name", "wide", *TRAIN)
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "distinct symbols" in result.stderr
    refused = invoke("train", str(corpus), "--run-name", "narrow", "--max-vocab", "1000", *TRAIN)
    assert_one_line_error(refused, "--max-vocab 1,000")


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_score_refuses_what_is_not_a_regular_file(run: Path, tmp_path: Path, special: str) -> None:
    """A FIFO would block score forever and /dev/zero never end (found by the CLI fuzz)."""
    import os

    from tests.conftest import run_cli

    path = special
    if special == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    result = run_cli("score", path, "-c", str(run), "--no-log", timeout=60)
    assert_one_line_error(result, path, "not a regular file")
