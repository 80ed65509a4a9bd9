"""Training: overfitting, exact resume, crash safety, every cell type."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from chargen.runs.checkpoint import load_checkpoint, load_state
from chargen.runs.layout import BEST, FINISHED, INTERRUPTED, LAST, RUN_JSON, STATE, TOKENS
from chargen.runs.metrics import read_metrics
from chargen.runs.start import model_config_for, resume_run, start_run
from chargen.sampling import DecodeConfig, Generator
from chargen.training import TrainConfig, train
from chargen.training.data import build_corpus
from tests.conftest import FABLES, REPO, run_cli

PASSAGE = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, "
    "it was the age of foolishness, it was the epoch of belief, it was the epoch of "
    "incredulity, it was the season of Light."
)


def quiet(message: str) -> None:
    pass


def test_overfit_a_short_passage_and_reproduce_it(tmp_path: Path) -> None:
    corpus = tmp_path / "passage.txt"
    corpus.write_text((PASSAGE + "\n") * 12)
    # Memorising is the point here, so no weight decay: the default 0.3 is tuned for held-out loss, and
    # with it the greedy replay falls into "it was the worst of times" loops at this size and step count.
    config = TrainConfig(batch_size=4, seq_len=50, lr=1e-2, warmup_steps=10, max_steps=300, eval_every=100,
                         weight_decay=0.0, seed=1, threads=1)
    result = start_run([corpus], config, preset="tiny", model_overrides={"hidden": 128}, out=tmp_path / "ck",
                       run_name="overfit", progress=False, warn=quiet)
    assert result.last_train_loss < 0.05, result
    loaded = load_checkpoint(result.run_dir / LAST)
    prime = PASSAGE[:20]
    out = Generator(loaded.model, loaded.codec).generate(
        prime, DecodeConfig(length=len(PASSAGE) - 20, greedy=True, no_repeat_ngram=0)
    )
    assert out.samples[0].text == PASSAGE[20:]


def _small_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "fables.txt"
    corpus.write_text(FABLES.read_text()[:20000])
    return corpus


def test_resume_continues_exactly(tmp_path: Path) -> None:
    """N steps straight == N/2 steps, stop, resume N/2 (same data, schedule and RNG streams)."""
    corpus = _small_corpus(tmp_path)
    config = TrainConfig(batch_size=8, seq_len=32, max_steps=40, eval_every=10, seed=3, threads=1)
    overrides = {"dropout": 0.1, "layers": 2}  # dropout makes the RNG stream matter
    straight = start_run([corpus], config, "tiny", overrides, "straight", tmp_path / "ck", progress=False, warn=quiet)

    run_dir = tmp_path / "ck" / "paused"
    codec, info = build_corpus([corpus], run_dir / TOKENS)
    paused = train(run_dir, codec, info, model_config_for(codec.vocab_size, "tiny", **overrides), config,
                   progress=False, report=quiet, pause_at_step=20)
    assert paused.interrupted and paused.step == 20
    resumed = resume_run(run_dir, progress=False, warn=quiet)

    assert resumed.step == straight.step == 40
    assert resumed.last_train_loss == pytest.approx(straight.last_train_loss, abs=1e-5)
    assert resumed.last_val_loss == pytest.approx(straight.last_val_loss, abs=1e-5)
    a = load_state(straight.run_dir / STATE)["model"]
    b = load_state(run_dir / STATE)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_train_and_sample(tmp_path: Path, cell: str) -> None:
    corpus = _small_corpus(tmp_path)
    config = TrainConfig(batch_size=8, seq_len=32, max_steps=30, eval_every=15, threads=1)
    result = start_run([corpus], config, "tiny", {"cell": cell, "layers": 2}, cell, tmp_path / "ck",
                       progress=False, warn=quiet)
    assert result.best_val_loss < 3.5
    loaded = load_checkpoint(result.run_dir / BEST)
    assert loaded.config.cell == cell
    out = Generator(loaded.model, loaded.codec).generate("The ", DecodeConfig(length=40, seed=1))
    assert len(out.samples[0].text) == 40


def _train_process(tmp_path: Path, *extra: str) -> subprocess.Popen:
    corpus = _small_corpus(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "chargen", "train", str(corpus), "--size", "tiny", "--batch-size", "8",
         "--seq-len", "32", "--eval-every", "2", "--max-steps", "100000", "--threads", "1", "--run-name", "crash",
         "--quiet", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues(tmp_path: Path) -> None:
    run_dir = Path(os.environ["CHARGEN_CHECKPOINTS"]) / "crash"
    proc = _train_process(tmp_path)
    _wait_for_new_state(run_dir, 0)  # the step-0 checkpoint, written before the loop...
    _wait_for_new_state(run_dir, (run_dir / STATE).stat().st_mtime)  # ...then one from inside it
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    assert json.loads((run_dir / RUN_JSON).read_text())["status"] == INTERRUPTED
    step = load_state(run_dir / STATE)["step"]
    assert step > 0
    # A step limit, not a few seconds of --minutes: on a slow CPU the start-up alone (torch's import, ~2 s)
    # could spend such a budget before the first step (test_trainer covers --minutes on resume).
    resumed = run_cli("train", "--resume", "crash", "--max-steps", str(step + 4), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert load_state(run_dir / STATE)["step"] == step + 4
    assert json.loads((run_dir / RUN_JSON).read_text())["status"] == FINISHED


def _wait_for_new_state(run_dir: Path, since: float, timeout: float = 90) -> None:
    """Until the process under test has written state.pt after ``since`` (it is really training)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run_dir / STATE).exists() and (run_dir / STATE).stat().st_mtime > since:
            return
        time.sleep(0.05)
    raise AssertionError("training process wrote no checkpoint in time")


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_a_loadable_resumable_run(tmp_path: Path) -> None:
    run_dir = Path(os.environ["CHARGEN_CHECKPOINTS"]) / "crash"
    started = time.time() - 1
    proc = _train_process(tmp_path)
    rng = random.Random(0)
    for _ in range(3):  # checkpoints are written every 2 steps: kills often land mid-write
        _wait_for_new_state(run_dir, started)
        time.sleep(rng.uniform(0.0, 0.8))
        proc.kill()
        proc.wait()
        load_checkpoint(run_dir / LAST)
        load_checkpoint(run_dir / BEST)
        step = load_state(run_dir / STATE)["step"]
        started = (run_dir / STATE).stat().st_mtime
        proc = subprocess.Popen(
            [sys.executable, "-m", "chargen", "train", "--resume", "crash", "--quiet", "--no-log"],
            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    _wait_for_new_state(run_dir, started)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert load_state(run_dir / STATE)["step"] > step  # the last resume went on from where the kill left it
    assert not list(run_dir.glob(".*.tmp")), "a resumed run clears temp files of killed writes"


def test_a_short_corpus_is_evaluated_once_per_pass(tmp_path: Path) -> None:
    """--eval-every left at 200 on a corpus of fewer steps per pass: evaluated each pass (>= 20 steps), said
    once, recorded; an explicit interval is kept, and a long corpus keeps 200."""
    assert TrainConfig().with_eval_interval(18).eval_every == 20
    assert TrainConfig().with_eval_interval(57).eval_every == 57
    assert TrainConfig().with_eval_interval(313).eval_every == 200
    assert TrainConfig(eval_every=7).with_eval_interval(57).eval_every == 7
    corpus = tmp_path / "fables.txt"
    corpus.write_text(FABLES.read_text()[:20_000])  # ~18 k training tokens: ~62 steps a pass at 18 x 16
    said: list[str] = []
    result = start_run([corpus], TrainConfig(batch_size=18, seq_len=16, max_steps=70, threads=1), "tiny",
                       {"hidden": 16, "embedding": 8}, "per-pass", progress=False, warn=said.append)
    recorded = json.loads((result.run_dir / RUN_JSON).read_text())["train_config"]["eval_every"]
    assert 20 <= recorded < 200
    assert sum(f"evaluating every {recorded} steps" in line for line in said) == 1, said
    evaluated = [m["step"] for m in read_metrics(result.run_dir) if m.get("val_loss") is not None]
    assert evaluated[:1] == [recorded] and evaluated[-1] == 70, evaluated
    kept = start_run([corpus], TrainConfig(batch_size=18, seq_len=16, max_steps=10, eval_every=5, threads=1),
                     "tiny", {"hidden": 16, "embedding": 8}, "kept", progress=False, warn=said.append)
    assert json.loads((kept.run_dir / RUN_JSON).read_text())["train_config"]["eval_every"] == 5


def test_train_option_defaults_are_the_train_configs() -> None:
    """`chargen train`'s defaults are TrainConfig's (the engine's), so the CLI and the library train alike:
    weight decay, averaging, learning rate, batch, sequence length, evaluation interval, seed."""
    from chargen.cli.train import train as train_command

    defaults = TrainConfig.__dataclass_fields__
    options = {p.name: p for p in train_command.params}
    shared = ["weight_decay", "ema", "batch_size", "seq_len", "eval_every", "val_fraction", "seed",
              "device", "precision"]
    for name in shared:  # not given: None, and the library's default applies; --help shows that default
        default = defaults[name].default
        assert options[name].default is None
        assert f"[default: {default:g}]" in options[name].help if isinstance(default, float) \
            else f"[default: {default}]" in options[name].help
    assert TrainConfig().weight_decay > 0  # measured better at both budgets (BENCHMARKS.md)
    # A run saved before weight decay became a default resumes without it.
    assert TrainConfig.from_dict({k: v for k, v in TrainConfig().to_dict().items() if k != "weight_decay"}
                                 ).weight_decay == 0.0
