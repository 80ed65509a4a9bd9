"""The Trainer's pieces: validated config, the step budget, step-by-step driving, resume limits, run status."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from chargen.cli import main
from chargen.errors import ChargenError, CheckpointError
from chargen.machine.calibrate import choose_precision
from chargen.model import CharRNN
from chargen.runs.checkpoint import checkpoint_codec, load_state
from chargen.runs.layout import FAILED, FINISHED, LAST, RUN_JSON
from chargen.runs.lookup import resolve_checkpoint
from chargen.runs.metrics import FIELDS, read_metrics
from chargen.runs.start import check_run_name, model_config_for, resume_run, start_run
from chargen.training import StepBudget, TrainConfig, Trainer
from chargen.training.budget import MIN_MEASURED_STEPS, REFIT_EVERY, WARMUP_STEPS
from chargen.training.data import load_tokens, split_tokens
from tests.conftest import FABLES


def quiet(message: str) -> None:
    pass


def small_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "fables.txt"
    corpus.write_text(FABLES.read_text()[:12000])
    return corpus


def tiny(tmp_path: Path, name: str, corpus: Path | None = None, **config: object):
    settings = dict(batch_size=4, seq_len=16, max_steps=6, eval_every=3, seed=2, threads=1)
    settings.update(config)
    return start_run([corpus or small_corpus(tmp_path)], TrainConfig(**settings), "tiny",
                     {"hidden": 32, "embedding": 8}, name, progress=False, warn=quiet)


def run_main(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
             ) -> tuple[int, str]:
    """The real console entry point, in-process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["chargen", *args])
    capsys.readouterr()  # only what this command prints
    try:
        main()
    except SystemExit as exited:
        return int(exited.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().err


# ----------------------------------------------------------------------------- issue 15 item 2

@pytest.mark.parametrize("field, value", [
    ("lr", math.nan), ("lr", math.inf), ("lr", -1e-3), ("lr", 0.0), ("minutes", math.nan), ("minutes", math.inf),
    ("minutes", -1.0), ("epochs", math.nan), ("epochs", -2.0), ("val_fraction", math.nan), ("val_fraction", 1.0),
    ("weight_decay", math.nan), ("weight_decay", -0.1), ("weight_decay", math.inf), ("grad_clip", math.nan),
    ("min_lr_ratio", 2.0), ("batch_size", 0), ("max_steps", 0), ("eval_every", -1), ("threads", 0),
])
def test_config_refuses_non_finite_and_out_of_range_values(field: str, value: float) -> None:
    with pytest.raises(ChargenError) as error:
        TrainConfig(**{field: value})
    message = str(error.value)
    assert "\n" not in message and field in message


@pytest.mark.parametrize("option", ["--minutes", "--lr", "--epochs", "--val-fraction", "--weight-decay"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_cli_refuses_nan_and_inf_and_leaves_no_run_folder(option: str, value: str, isolated_home: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = run_main(["train", str(FABLES), option, value, "--size", "tiny", "--max-steps", "1"], capsys,
                         monkeypatch)
    assert code in (1, 2), err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "internal error" not in lines[0], err
    root = isolated_home / "checkpoints"
    assert not root.exists() or not any(root.iterdir())


# ----------------------------------------------------------------------------- the step budget

class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drive(budget: StepBudget, clock: FakeClock, seconds_per_step, steps: int) -> list[tuple[int, int]]:
    """Advance ``steps`` steps at the given pace; returns every (step, fitted total)."""
    fits = []
    for step in range(steps):
        total = budget.observe(step, 0.0, 0)
        if total is not None:
            fits.append((step, total))
        clock.now += seconds_per_step(step)
    return fits


def test_budget_fits_the_schedule_to_the_measured_pace() -> None:
    clock = FakeClock()
    budget = StepBudget(minutes=1, start_step=0, eval_every=10**9, val_tokens=0, tokens_per_step=100, fit=True,
                        clock=clock)
    fits = drive(budget, clock, lambda step: 2.0 if step < WARMUP_STEPS else 0.05, 60)
    first_step, first_total = fits[0]
    assert first_step == WARMUP_STEPS + MIN_MEASURED_STEPS  # the slow first steps are not measured
    remaining = 60 - (clock.now - budget.start - (60 - first_step) * 0.05)
    assert first_total == pytest.approx(first_step + remaining / 0.05, abs=2)


def test_budget_refits_when_the_machine_slows_down() -> None:
    clock = FakeClock()
    budget = StepBudget(minutes=2, start_step=0, eval_every=10**9, val_tokens=0, tokens_per_step=100, fit=True,
                        clock=clock)
    fits = drive(budget, clock, lambda step: 0.05 if step < 400 else 0.2, 700)
    early = next(total for step, total in fits if step >= 300)
    late = fits[-1]
    assert all(step % REFIT_EVERY == 0 for step, _ in fits[1:])
    # after the slowdown the plan follows the new pace instead of the first steps' speed
    spent = sum(0.05 if step < 400 else 0.2 for step in range(late[0]))
    expected = late[0] + (budget.deadline - budget.start - spent) / 0.2
    assert late[1] < early and late[1] == pytest.approx(expected, rel=0.1)


def test_budget_does_not_fit_a_fixed_schedule() -> None:
    clock = FakeClock()
    budget = StepBudget(minutes=1, start_step=0, eval_every=10, val_tokens=10, tokens_per_step=10, fit=False,
                        clock=clock)
    assert drive(budget, clock, lambda step: 0.01, 100) == []
    clock.now = budget.deadline
    assert budget.expired()


# ----------------------------------------------------------------------------- the Trainer, step by step

def test_trainer_stepped_by_hand_equals_a_training_run(tmp_path: Path) -> None:
    """What benchmarks/run.py does (Trainer.step in a loop) is exactly chargen train's training."""
    result = tiny(tmp_path, "whole", eval_every=10**6)
    config = TrainConfig(batch_size=4, seq_len=16, max_steps=6, eval_every=10**6, seed=2, threads=1)
    ids = load_tokens(result.run_dir / "tokens.npy")
    vocab_size = checkpoint_codec(result.run_dir / LAST).vocab_size
    model_config = model_config_for(vocab_size, "tiny", hidden=32, embedding=8)
    data = split_tokens(ids, config.val_fraction, 4, 16)
    # The run resolved precision auto by measuring (cached); whoever builds a Trainer resolves it.
    precision = choose_precision(model_config, config, data, torch.device("cpu")).precision
    trainer = Trainer(model_config, config, data, precision=precision)
    losses = [trainer.step() for _ in range(6)]
    assert losses[-1] == result.last_train_loss
    saved = load_file(str(result.run_dir / LAST))
    for key, value in trainer.evaluated_model.state_dict().items():  # the weight average (--ema) is saved
        assert torch.equal(value, saved[key]), key
    assert trainer.evaluate() == result.last_val_loss


def test_the_weight_average_is_what_is_evaluated_and_saved(tmp_path: Path) -> None:
    """--ema: evaluations and weights files hold the ramped moving average; training goes on from the raw
    weights, which state.pt keeps beside the average (resume is exact: tests/test_train.py)."""
    ids = np.frombuffer(FABLES.read_bytes()[:8000], dtype=np.uint8).astype(np.int64) % 40
    data = split_tokens(ids, 0.1, 4, 16)
    model_config = model_config_for(40, "tiny", hidden=32, embedding=8)
    raw = Trainer(model_config, TrainConfig(batch_size=4, seq_len=16, max_steps=3, seed=2, threads=1, ema=0.0), data)
    averaged = Trainer(model_config, TrainConfig(batch_size=4, seq_len=16, max_steps=3, seed=2, threads=1, ema=0.9),
                       data)
    assert raw.evaluated_model is raw.model and averaged.evaluated_model is averaged.model  # before any step
    start = {k: v.clone() for k, v in averaged.model.state_dict().items()}
    averaged.step()
    raw.step()
    first = {k: v.clone() for k, v in averaged.model.state_dict().items()}
    averaged.step()
    raw.step()
    for key, value in averaged.model.state_dict().items():
        assert torch.equal(value, raw.model.state_dict()[key]), key  # the average never feeds back into training
        # ramped: decay min(0.9, (1 + n) / (10 + n)) after n updates -> 0.1, then 2/11
        once = torch.lerp(start[key], first[key], 0.9)
        assert torch.allclose(averaged.evaluated_model.state_dict()[key], torch.lerp(once, value, 1 - 2 / 11),
                              atol=1e-6), key
    assert averaged.evaluate() != raw.evaluate()
    # With weight drop (a masked forward through torch.func) the average still scores as its own weights do.
    dropped = Trainer(model_config_for(40, "tiny", hidden=32, embedding=8, weight_drop=0.5),
                      TrainConfig(batch_size=4, seq_len=16, max_steps=3, seed=2, threads=1, ema=0.9), data)
    for _ in range(3):
        dropped.step()
    fresh = CharRNN(dropped.average.module.config)
    fresh.load_state_dict(dropped.average.module.state_dict())
    probe = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(dropped.evaluated_model.eval()(probe)[0], fresh.eval()(probe)[0])
    with pytest.raises(ChargenError, match="ema must be"):
        TrainConfig(ema=1.0)
    assert TrainConfig.from_dict({"lr": 1e-3}).ema == 0.0  # a run saved before averaging resumes without it


def test_progress_reaches_the_callback_and_metrics_jsonl(tmp_path: Path) -> None:
    result = tiny(tmp_path, "curve")
    records = read_metrics(result.run_dir)
    assert [r["step"] for r in records] == [3, 6]
    assert all(set(r) == set(FIELDS) for r in records)
    assert records[-1]["val_loss"] == pytest.approx(result.last_val_loss)
    assert records[0]["precision"] == "fp32" and records[0]["lr"] > 0 and records[0]["chars_per_s"] > 0


# ----------------------------------------------------------------------------- issue 15 item 3

def test_resume_extends_a_finished_run_to_a_new_step_limit(tmp_path: Path) -> None:
    finished = tiny(tmp_path, "extend")
    assert finished.step == 6 and not finished.interrupted
    said: list[str] = []
    extended = resume_run("extend", TrainConfig(max_steps=9, threads=1), progress=False, warn=said.append)
    assert extended.step == 9 and extended.total_steps == 9
    assert any("new limit: 9 steps" in line for line in said), said
    assert load_state(extended.run_dir / "state.pt")["step"] == 9
    steps = [r["step"] for r in read_metrics(extended.run_dir)]
    assert steps == sorted(steps) and steps[-1] == 9, "resume appends to the same curve"


def test_resume_with_minutes_extends_a_finished_run(tmp_path: Path) -> None:
    tiny(tmp_path, "more")
    said: list[str] = []
    extended = resume_run("more", TrainConfig(minutes=0.01, threads=1), progress=False, warn=said.append)
    assert extended.step > 6 and any("0.01 minutes" in line for line in said), said


def test_resume_without_a_limit_keeps_the_runs_end(tmp_path: Path) -> None:
    tiny(tmp_path, "same")
    again = resume_run("same", TrainConfig(threads=1), progress=False, warn=quiet)
    assert again.step == 6


# ----------------------------------------------------------------------------- issue 15 item 5

def test_a_failed_run_is_marked_and_never_the_default_model(tmp_path: Path, isolated_home: Path) -> None:
    good = tiny(tmp_path, "good")
    assert json.loads((good.run_dir / RUN_JSON).read_text())["status"] == FINISHED
    with pytest.raises(ChargenError, match="diverged"):
        tiny(tmp_path, "diverged", lr=10.0, weight_decay=10.0, max_steps=60)
    failed = isolated_home / "checkpoints" / "diverged"
    assert (failed / LAST).exists(), "weights were written before it failed: the folder stays, marked"
    assert json.loads((failed / RUN_JSON).read_text())["status"] == FAILED
    assert resolve_checkpoint(None).parent == good.run_dir  # although the failed run is newer
    assert resolve_checkpoint("diverged").parent == failed  # by name, still reachable
    import shutil

    shutil.rmtree(good.run_dir)
    with pytest.raises(CheckpointError, match="failed"):
        resolve_checkpoint(None)


def test_a_run_failing_before_its_first_weights_leaves_no_folder(tmp_path: Path, isolated_home: Path) -> None:
    with pytest.raises(ChargenError, match="corpus too small"):
        tiny(tmp_path, "toolarge", batch_size=4000)
    assert not (isolated_home / "checkpoints" / "toolarge").exists()


# ----------------------------------------------------------------------------- issue 15 item 6

@pytest.mark.parametrize("name", ["..", ".", "../escape", "a/b", "/tmp/abs", "", "  ", "a\\b", ".hidden", "x\ny"])
def test_run_names_that_could_leave_the_root_are_refused(name: str) -> None:
    with pytest.raises(ChargenError) as error:
        check_run_name(name)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["..", "../escape", ".", "/tmp/chargen-escape-test"])
def test_cli_refuses_bad_run_names_and_writes_nothing(name: str, isolated_home: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    before = set(isolated_home.rglob("*"))
    code, err = run_main(["train", str(FABLES), "--run-name", name, "--size", "tiny", "--max-steps", "1"], capsys,
                         monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "run_name" in err, err
    assert set(isolated_home.rglob("*")) == before
    assert not Path("/tmp/chargen-escape-test").exists()


def test_plain_run_names_pass() -> None:
    assert check_run_name("fables-2024_1.v2") == "fables-2024_1.v2"


def test_info_reports_the_run_status_and_its_curve(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    result = tiny(tmp_path, "described")
    monkeypatch.setattr(sys, "argv", ["chargen", "info", "described", "--json"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == FINISHED
    curve = data["trend"]
    assert curve["evaluations"] == 2 and curve["last_step"] == 6
    assert curve["best_val_loss"] == pytest.approx(result.best_val_loss)


def test_benchmarks_drive_the_trainer_and_copy_no_loop() -> None:
    """benchmarks/run.py measures chargen's own Trainer.step, imports nothing private from training."""
    import ast

    from tests.conftest import REPO

    source = (REPO / "benchmarks" / "run.py").read_text()
    imported = [(node.module, alias.name) for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chargen.train")
                for alias in node.names]
    assert ("chargen.training", "Trainer") in imported
    assert not [name for _, name in imported if name.startswith("_")]
    chargen_side = source.split("class PlainLoop")[0]  # the plain nn.* baseline is its own, on purpose
    for loop_piece in ("clip_grad_norm_", "lr_at", "optimizer.step", "param_groups"):
        assert loop_piece not in chargen_side, loop_piece


def test_a_bf16_carried_state_resumes_into_an_fp32_step(tmp_path: Path) -> None:
    """A run trained under bf16 autocast carries (and saves) its hidden state in bf16; resumed under fp32
    (precision auto can choose either), oneDNN's LSTM refused that state: it is carried as float32."""
    from chargen.model import CharRNN, detach_state
    from chargen.training import TrainingState

    model_config = model_config_for(20, "tiny", hidden=16, embedding=8)
    config = TrainConfig(batch_size=2, seq_len=8, max_steps=2, threads=1, precision="fp32")
    ids = np.random.default_rng(0).integers(0, 20, 400)
    trainer = Trainer(model_config, config, split_tokens(ids, 0.1, 2, 8), precision="fp32")
    bf16_state = tuple(torch.rand(1, 2, 16).to(torch.bfloat16) for _ in range(2))
    assert all(s.dtype == torch.float32 for s in detach_state(bf16_state))
    saved = TrainingState(step=1, hidden=bf16_state).to_state_dict(
        trainer.model, trainer.optimizer, torch.device("cpu"), model_config, config, 0.0)
    restored = TrainingState.restore(saved, CharRNN(model_config), trainer.optimizer, torch.device("cpu"))
    assert restored.hidden is not None and all(h.dtype == torch.float32 for h in restored.hidden)
    trainer.state = restored
    assert np.isfinite(trainer.step())  # the fp32 step takes the restored state
