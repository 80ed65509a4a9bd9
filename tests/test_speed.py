"""Issue 14: precision chosen by measurement (cached), threads from the free cores, the budget's model size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from chargen.errors import ChargenWarning
from chargen.files.atomic import sha256_file
from chargen.machine.cache import FILE as CACHE_FILE
from chargen.machine.calibrate import CANDIDATES_ENV, choose_precision
from chargen.machine.kernels import KERNEL_ENV, KERNELS, FusedStepper, NumpyStepper, batch1_stepper, choose_kernel
from chargen.machine.native import build as native_build
from chargen.machine.native import lstm_library
from chargen.machine.sizing import (
    choose_size,
    dropout_for,
    evaluation_slowdown,
    parameters,
    size_for_budget,
    weight_drop_for,
)
from chargen.machine.threads import ThreadTuner, candidate_counts, free_cores, pick
from chargen.model import CharRNN, ModelConfig
from chargen.runs.checkpoint import load_checkpoint
from chargen.runs.layout import LAST, RUN_JSON
from chargen.runs.start import start_run
from chargen.sampling.steppers import Stepper
from chargen.training import StepBudget, TrainConfig
from chargen.training.data import split_tokens
from tests.conftest import FABLES, run_cli


def tiny_setup() -> tuple[ModelConfig, TrainConfig, object]:
    ids = np.frombuffer(FABLES.read_bytes()[:6000], dtype=np.uint8) % 40
    config = TrainConfig(batch_size=4, seq_len=16, max_steps=10, seed=3, threads=1)
    return ModelConfig(vocab_size=40, layers=1, hidden=24, embedding=8), config, split_tokens(
        ids.astype(np.int64), config.val_fraction, config.batch_size, config.seq_len)


# ----------------------------------------------------------------------------- precision


def section(cache: Path, name: str) -> dict:
    """One section of the machine's cache (chargen.machine.cache)."""
    return json.loads((cache / CACHE_FILE).read_text()).get(name, {})


def test_calibration_is_cached_and_a_failing_candidate_is_dropped(measuring: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CANDIDATES_ENV, "fp32,fp16")  # fp16 raises on a CPU: it must be dropped, not fatal
    model_config, config, data = tiny_setup()
    device = torch.device("cpu")
    first = choose_precision(model_config, config, data, device)
    assert first.precision == "fp32" and not first.cached
    assert "fp16" in first.dropped and "fp32" in first.speeds
    cache = section(measuring, "precision")
    assert len(cache) == 1 and next(iter(cache.values()))["precision"] == "fp32"
    again = choose_precision(model_config, config, data, device)
    assert again.cached and again.speeds == first.speeds and again.seconds == 0  # nothing measured
    # the median step's rate (what sizing uses) is cached too, and no burst can beat the best step
    assert again.steady == first.steady and 0 < first.steady["fp32"] <= first.speeds["fp32"]
    other = choose_precision(ModelConfig(vocab_size=40, layers=1, hidden=16, embedding=8), config, data, device,
                             )
    assert not other.cached  # another model shape is calibrated on its own
    assert len(section(measuring, "precision")) == 2


def test_a_corrupt_cache_is_ignored_with_a_warning(measuring: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CANDIDATES_ENV, "fp32,fp16")
    measuring.mkdir(mode=0o700)
    (measuring / CACHE_FILE).write_text("{not json")
    model_config, config, data = tiny_setup()
    result = choose_precision(model_config, config, data, torch.device("cpu"))
    assert result.precision == "fp32" and not result.cached
    assert any("damaged" in note for note in result.notes)
    assert section(measuring, "precision")  # rewritten whole


def test_one_candidate_measures_nothing(measuring: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CANDIDATES_ENV, "fp32")  # a CPU without native bf16
    model_config, config, data = tiny_setup()
    result = choose_precision(model_config, config, data, torch.device("cpu"))
    assert result.precision == "fp32" and not result.speeds and not (measuring / CACHE_FILE).exists()


def test_an_explicit_precision_is_not_calibrated(measuring: Path) -> None:
    model_config, config, data = tiny_setup()
    config.precision = "fp32"
    result = choose_precision(model_config, config, data, torch.device("cpu"))
    assert result.requested == "fp32" and result.message() is None and not (measuring / CACHE_FILE).exists()


def test_the_choice_is_printed_and_recorded(tmp_path: Path, measuring: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CANDIDATES_ENV, "fp32,fp16")
    corpus = tmp_path / "fables.txt"
    corpus.write_text(FABLES.read_text()[:8000])
    said: list[str] = []
    result = start_run([corpus], TrainConfig(batch_size=4, seq_len=16, max_steps=4, eval_every=2, threads=1),
                       "tiny", {"hidden": 24, "embedding": 8}, "calibrated", progress=False, warn=said.append)
    assert sum("precision fp32 (calibrated" in line for line in said) == 1, said
    speed = json.loads((result.run_dir / RUN_JSON).read_text())["speed"]
    assert speed["precision_used"] == "fp32" and "fp16" in speed["calibration"]["dropped"]
    training = load_checkpoint(result.run_dir / LAST).training["train_config"]
    assert training["precision_used"] == "fp32" and training["calibration"]["speeds"]
    said.clear()
    start_run([corpus], TrainConfig(batch_size=4, seq_len=16, max_steps=2, eval_every=2, threads=1), "tiny",
              {"hidden": 24, "embedding": 8}, "again", progress=False, warn=said.append)
    assert any("cached calibration" in line for line in said), said


# ----------------------------------------------------------------------------- threads


def test_free_cores_subtracts_the_load() -> None:
    assert free_cores(cores=2, load=0.1) == 2
    assert free_cores(cores=2, load=1.2) == 1
    assert free_cores(cores=2, load=7.0) == 1  # never below one
    assert free_cores(cores=16, load=3.6) == 12
    assert candidate_counts(1) == [1] and candidate_counts(2) == [1, 2] and candidate_counts(16) == [1, 8, 16]


def test_pick_prefers_fewer_threads_unless_clearly_faster() -> None:
    assert pick({1: 1.0, 2: 0.7}, current=1) == 2
    assert pick({1: 1.0, 2: 0.98}, current=2) == 1  # within the margin: fewer threads
    assert pick({1: 1.0, 2: 3.0}, current=2) == 1  # a busy neighbour: one thread
    assert pick({}, current=2) == 2


def test_the_tuner_probes_each_count_and_keeps_the_fastest() -> None:
    saved = torch.get_num_threads()
    try:
        tuner = ThreadTuner(cores=2, others=lambda: 0.0)  # quiet: both counts are tried
        assert tuner.threads == 2
        tuner.revisit()
        seen = []
        step = 0
        while tuner.probing:
            tuner.before_step()
            seen.append(torch.get_num_threads())
            step += 1
            tuner.after_step(0.5 if torch.get_num_threads() == 1 else 2.0, step)  # 1 thread is faster
        assert set(seen) == {1, 2} and tuner.threads == 1 and torch.get_num_threads() == 1
        assert tuner.history == [(step, 1)]
        busy = ThreadTuner(cores=2, others=lambda: 2.1)  # a neighbour... and another
        assert busy.threads == 1
        busy.revisit(5)
        assert not busy.probing and busy.threads == 1 and torch.get_num_threads() == 1
        assert ThreadTuner(cores=2, others=lambda: None).threads == 2  # nothing measured: all cores
        fixed = ThreadTuner(fixed=2, cores=2)
        fixed.revisit()
        assert not fixed.probing and torch.get_num_threads() == 2  # --threads N wins
    finally:
        torch.set_num_threads(saved)


@pytest.mark.slow
def test_a_minutes_run_beside_a_busy_neighbour_ends_with_its_schedule(tmp_path: Path, measuring: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CANDIDATES_ENV, "fp32")
    corpus = tmp_path / "fables.txt"
    corpus.write_text(FABLES.read_text()[:8000])
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        result = start_run([corpus], TrainConfig(batch_size=4, seq_len=16, minutes=0.1, eval_every=50),
                           "tiny", {"hidden": 24, "embedding": 8}, "busy", progress=False, warn=lambda m: None)
    finally:
        busy.kill()
        busy.wait()
    assert not result.interrupted and result.total_steps > 0
    assert result.step >= 0.9 * result.total_steps  # the cosine ran (nearly) to its floor
    speed = json.loads((result.run_dir / RUN_JSON).read_text())["speed"]
    assert speed["threads_used"] >= 1


def test_budget_shortens_its_schedule_when_the_tail_slows_down() -> None:
    from tests.test_trainer import FakeClock, drive

    clock = FakeClock()
    budget = StepBudget(minutes=1, start_step=0, eval_every=10**9, val_tokens=0, tokens_per_step=100, fit=True,
                        clock=clock)
    # 0.05 s a step until 57 s into the minute (in the tail, where refits stop), then a neighbour: 0.5 s
    slow_from = int(57 / 0.05)
    fits = drive(budget, clock, lambda step: 0.05 if step < slow_from else 0.5, 2000)
    tail = [total for step, total in fits if step > slow_from]
    assert tail and all(later < earlier for earlier, later in zip(tail, tail[1:]))  # only ever shorter
    final_total = fits[-1][1]
    step_at_deadline = next(step for step in range(slow_from, 2000)
                            if slow_from * 0.05 + (step - slow_from) * 0.5 >= 60)
    assert final_total <= step_at_deadline + 1  # the schedule ends by the deadline


# ----------------------------------------------------------------------------- the budget's model size


PARAMS = {"tiny": 90_000, "small": 850_000, "medium": 3_400_000, "large": 12_000_000}


def test_a_small_budget_gets_a_smaller_model() -> None:
    speeds = {"tiny": 60_000.0, "small": 20_000.0, "medium": 8_000.0, "large": 2_500.0}
    corpus = 10_000_000
    picks = {minutes: choose_size(minutes, speeds, PARAMS, corpus).preset for minutes in (0.05, 1, 10, 60, 600)}
    # tokens per parameter: small sees 1.4 at 1 min; medium 1.4 at 10 min; large 0.75 at 60, 7.5 at 600 (1 needed)
    assert picks == {0.05: "tiny", 1: "small", 10: "medium", 60: "medium", 600: "large"}
    assert choose_size(600, speeds, PARAMS, 50_000).preset == "large"  # a small corpus gets dropout, not a cap
    faster = {name: speed * 3 for name, speed in speeds.items()}
    assert choose_size(3, speeds, PARAMS, corpus).preset == "small"
    assert choose_size(3, faster, PARAMS, corpus).preset == "medium"  # a faster machine buys more
    slow = choose_size(0.001, speeds, PARAMS, corpus)
    assert slow.preset == "tiny" and "smallest" in slow.reason
    assert choose_size(1, speeds, PARAMS, corpus).lr == pytest.approx(5e-3 * 2 ** 0.5)  # small: 256 wide


def test_a_budget_of_many_passes_over_its_corpus_gets_dropout() -> None:
    assert [dropout_for(epochs, 1) for epochs in (0.5, 8, 12, 16, 24, 32, 33, 400)] == [0, 0, .1, .1, .2, .2, .3, .3]
    assert dropout_for(4, 0.87) == 0 and dropout_for(6, 3.4) == 0.2  # small at 2 minutes, medium at 10
    speeds = {"tiny": 60_000.0, "small": 20_000.0, "medium": 8_000.0, "large": 2_500.0}
    # medium (3.4 parameters per token of a 1M-token corpus): 4.8 passes in 10 minutes, 14.4 in 30
    short, long = choose_size(10, speeds, PARAMS, 1_000_000), choose_size(30, speeds, PARAMS, 1_000_000)
    assert (short.preset, short.dropout, round(short.epochs, 1)) == ("medium", 0.2, 4.8)
    assert (long.preset, long.dropout) == ("medium", 0.3)
    assert choose_size(1, speeds, PARAMS, 1_000_000).dropout == 0.0  # small: 1.2 passes, 0.85 per token
    assert choose_size(600, speeds, PARAMS, 100_000_000).dropout == 0.2
    assert choose_size(1, speeds, PARAMS, 100_000_000).dropout == 0.0
    # weight drop only far past where dropout is at its most: not for medium on 1M tokens, even for 30 minutes
    assert (short.weight_drop, long.weight_drop) == (0.0, 0.0)
    assert choose_size(2, speeds, PARAMS, 60_000).weight_drop == 0.25  # a corpus like the fables
    assert [weight_drop_for(epochs, 1) for epochs in (8, 64, 256, 257, 4000)] == [0, 0, 0, 0.25, 0.25]


def test_sizing_measures_only_presets_that_could_pass() -> None:
    measured: list[int] = []

    def measure(model_config: ModelConfig) -> float:
        measured.append(model_config.hidden)
        return {128: 60_000.0, 256: 20_000.0, 512: 8_000.0, 768: 2_500.0}[model_config.hidden]

    choice = size_for_budget(65, TrainConfig(minutes=2), 10_000_000, "lstm", measure)
    assert choice.preset == "small" and measured == [128, 256]  # medium could not pass even at 2x its estimate
    assert parameters(ModelConfig(vocab_size=65, layers=1, hidden=8, embedding=4)) == sum(
        p.numel() for p in CharRNN(ModelConfig(vocab_size=65, layers=1, hidden=8, embedding=4)).parameters())


def test_sizing_counts_the_evaluations_a_run_will_make() -> None:
    # tiny-shakespeare: 1.0 M training tokens, 111 k validation tokens, an evaluation every 200 steps of 3,200
    assert evaluation_slowdown(TrainConfig(), 1_003_854, 111_540) == pytest.approx(1 + 111_540 / 3 / 640_000)
    # a corpus of 30 steps per pass is evaluated once per pass: a larger share of its time
    small = evaluation_slowdown(TrainConfig(), 96_000, 10_667)
    assert small == pytest.approx(1 + 10_667 / 3 / 96_000)
    assert evaluation_slowdown(TrainConfig(eval_every=1000), 96_000, 10_667) == pytest.approx(
        1 + 10_667 / 3 / 3_200_000)  # an explicit --eval-every is what the run will do


@pytest.mark.slow
def test_minutes_without_a_size_chooses_one_and_explicit_sizes_win(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CANDIDATES_ENV, "fp32")
    said: list[str] = []
    config = TrainConfig(minutes=0.02, batch_size=4, seq_len=16, eval_every=1000, threads=1)
    result = start_run([FABLES], config, None, {}, "sized", progress=False, warn=said.append)
    run = json.loads((result.run_dir / RUN_JSON).read_text())
    assert run["sizing"]["preset"] == "tiny" and run["model_config"]["hidden"] == 128  # a corpus this small
    assert any(line.startswith("size tiny for 0.02 minutes") for line in said), said
    assert run["sizing"]["weight_drop"] == run["model_config"].get("weight_drop", 0.0)
    said.clear()
    result = start_run([FABLES], config, None, {"dropout": 0.05, "weight_drop": 0.15}, "regularised",
                       progress=False, warn=said.append)
    run = json.loads((result.run_dir / RUN_JSON).read_text())  # a given regulariser wins over the budget's
    assert (run["sizing"]["dropout"], run["sizing"]["weight_drop"]) == (0.05, 0.15)
    assert (run["model_config"]["dropout"], run["model_config"]["weight_drop"]) == (0.05, 0.15)
    assert any("dropout 0.05 (given), weight drop 0.15 (given)" in line for line in said), said
    said.clear()
    start_run([FABLES], config, None, {"hidden": 16}, "explicit", progress=False, warn=said.append)
    assert not any(line.startswith("size ") for line in said)


# ----------------------------------------------------------------------------- batch-1 kernels


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_numpy_steps_agree_with_torch_steps(cell: str) -> None:
    torch.manual_seed(4)
    model = CharRNN(ModelConfig(vocab_size=30, cell=cell, layers=2, hidden=48, embedding=8)).eval()
    plain, fast = Stepper(model), NumpyStepper(model)
    state_a, state_b = plain.initial_state(1), fast.initial_state(1)
    with torch.inference_mode():
        for token in [3, 7, 1, 29, 0, 12] * 5:
            want, state_a = plain.step(torch.tensor([token]), state_a)
            got, state_b = fast.step(torch.tensor([token]), state_b)
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)  # only the BLAS's order of additions differs
        rows = torch.tensor([1, 2])  # several rows: torch's products, exactly
        assert torch.equal(fast.step(rows, plain.initial_state(2))[0], plain.step(rows, plain.initial_state(2))[0])


def need_compiler() -> None:
    if lstm_library() is None:
        pytest.skip("no working C compiler (cc or $CC): the fused kernel cannot be built here")


@pytest.mark.parametrize(("layers", "hidden"), [(1, 45), (2, 48), (3, 17)])  # odd widths: the loops' tails
def test_fused_steps_agree_with_torch_steps(layers: int, hidden: int) -> None:
    need_compiler()
    torch.manual_seed(layers)
    model = CharRNN(ModelConfig(vocab_size=30, layers=layers, hidden=hidden, embedding=8, labels=["a", "b"])).eval()
    plain, fast = Stepper(model), FusedStepper(model, lstm_library())
    for label in (None, 1):
        state_a, state_b = plain.initial_state(1), fast.initial_state(1)
        bias = plain.label_bias(label)
        with torch.inference_mode():
            for token in [3, 7, 1, 29, 0, 12] * 5:
                want, state_a = plain.step(torch.tensor([token]), state_a, bias)
                got, state_b = fast.step(torch.tensor([token]), state_b, bias)
                assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)  # order of additions, exp's last bit
                for a, b in zip(state_a, state_b):
                    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    rows = torch.tensor([1, 2])  # several rows: torch's products, exactly
    assert torch.equal(fast.step(rows, plain.initial_state(2))[0], plain.step(rows, plain.initial_state(2))[0])
    with pytest.raises(IndexError):
        fast.step(torch.tensor([30]), fast.initial_state(1))  # the C side must never read past the table


def test_the_kernel_choice_is_cached_and_can_be_forced(monkeypatch: pytest.MonkeyPatch, measuring: Path) -> None:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, layers=1, hidden=16, embedding=4)).eval()
    kernel = choose_kernel(model)
    entry = next(iter(section(measuring, "kernels").values()))
    assert kernel in KERNELS and entry["kernel"] == kernel
    assert set(entry["us_per_step"]) == ({"torch", "numpy", "fused"} if lstm_library() else {"torch", "numpy"})
    assert isinstance(batch1_stepper(model), NumpyStepper) == (kernel == "numpy")
    assert isinstance(batch1_stepper(model), FusedStepper) == (kernel == "fused")
    monkeypatch.setenv(KERNEL_ENV, "numpy")
    assert isinstance(batch1_stepper(model), NumpyStepper)
    monkeypatch.setenv(KERNEL_ENV, "fused")
    assert isinstance(batch1_stepper(model), FusedStepper) == (lstm_library() is not None)
    gru = CharRNN(ModelConfig(vocab_size=20, cell="gru", layers=1, hidden=16, embedding=4)).eval()
    assert type(batch1_stepper(gru)) is Stepper  # fused is an LSTM kernel: others step through torch


def test_the_fused_kernel_is_built_once_per_machine_and_missing_compilers_fall_back(
        tmp_path: Path, measuring: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    native_build._load.cache_clear()
    need_compiler()
    native = measuring / "native"
    built = list(native.glob("*.so"))
    assert len(built) == 1 and built[0].stat().st_mode & 0o077 == 0 and native.stat().st_mode & 0o077 == 0
    assert section(measuring, "native")[built[0].name]["sha256"] == sha256_file(built[0])
    stamp = built[0].stat().st_mtime_ns
    native_build._load.cache_clear()  # a new process: finds the cached build, compiles nothing
    assert lstm_library() is not None and built[0].stat().st_mtime_ns == stamp
    assert list(native.iterdir()) == built  # no temporary files left beside it

    monkeypatch.setenv("CC", "no-such-compiler")
    assert lstm_library() is None
    fake = tmp_path / "failing-cc"  # a compiler that runs but cannot build: no half-written library
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo fake 1.0 && exit 0\necho 'error: broken' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with pytest.warns(ChargenWarning, match="fused LSTM kernel is off"):
        assert lstm_library() is None
    assert list(native.iterdir()) == built
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, layers=1, hidden=16, embedding=4)).eval()
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    assert choose_kernel(model) in ("torch", "numpy")  # measured without it, and sampling still works


@pytest.mark.parametrize("unsafe", ["folder", "library", "swapped"])
def test_the_fused_kernel_is_never_loaded_from_what_another_user_could_write(
        measuring: Path, unsafe: str) -> None:
    """Code is loaded from the cache: a folder or library others can write to, or a library that is not the
    one built (its hash differs), is refused with a warning, never loaded."""
    native_build._load.cache_clear()
    need_compiler()
    library = next((measuring / "native").glob("*.so"))
    if unsafe == "folder":
        measuring.chmod(0o777)
    elif unsafe == "library":
        library.chmod(0o766)
    else:  # a new file renamed over it: the library loaded above keeps its own pages
        planted = library.with_name("planted")
        planted.write_bytes(library.read_bytes() + b"planted")
        planted.chmod(0o700)
        planted.replace(library)
    native_build._load.cache_clear()
    native_build._unsafe.cache_clear()
    with pytest.warns(ChargenWarning, match="fused LSTM kernel is off"):
        assert lstm_library() is None


def test_seeded_samples_are_the_same_text_with_every_kernel(trained_run: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    need_compiler()
    texts = {}
    for kernel in KERNELS:
        monkeypatch.setenv(KERNEL_ENV, kernel)
        result = run_cli("sample", "-c", str(trained_run), "--len", "400", "--seed", "11", "-n", "3", "--json")
        assert result.returncode == 0, result.stderr
        texts[kernel] = [s["text"] for s in json.loads(result.stdout)["samples"]]
    assert texts["torch"] == texts["numpy"] == texts["fused"] and len(texts["torch"][0]) == 400
    single = {}
    for kernel in ("torch", "fused"):  # batch 1: -n 1 steps through the C kernel itself
        monkeypatch.setenv(KERNEL_ENV, kernel)
        result = run_cli("sample", "-c", str(trained_run), "--len", "400", "--seed", "11", "--json")
        single[kernel] = json.loads(result.stdout)["samples"][0]
    assert single["fused"]["text"] == single["torch"]["text"]
    assert single["fused"]["logprob"] == pytest.approx(single["torch"]["logprob"], rel=1e-6)  # last bits only


def test_the_budget_counts_from_the_set_up() -> None:
    from tests.test_trainer import FakeClock

    clock = FakeClock()
    budget = StepBudget(minutes=1, start_step=0, eval_every=10**9, val_tokens=0, tokens_per_step=100, fit=True,
                        clock=clock, started=clock.now - 20)  # 20 s spent sizing and calibrating
    assert budget.deadline == clock.now + 40
    clock.now += 40
    assert budget.expired()


def test_calibration_ignores_augmentation(measuring: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CANDIDATES_ENV, "fp32,fp16")
    model_config, config, data = tiny_setup()
    config.transpose = (-2, 2)  # a MIDI run's setting: the probe has no codec to transpose with
    result = choose_precision(model_config, config, data, torch.device("cpu"))
    assert "fp32" in result.speeds and "fp32" not in result.dropped
