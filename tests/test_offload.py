"""Generation steps on a device (issue 30), tested on the CPU: the device path is run with device "cpu".

Its steppers, the generator's and the scheduler's choice of path by batch size, the measured threshold, the
device recorded in the history, and ``--device`` on ``sample`` and ``serve``. On a machine with a GPU,
``python -m benchmarks.gpu_check`` runs the same paths on it.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

import chargen.machine.offload as offload
from chargen.codecs.text import TextCodec
from chargen.errors import ChargenError
from chargen.machine.offload import DeviceStepper, Offload, cached_threshold, generation_device, threshold
from chargen.model import CharRNN, ModelConfig
from chargen.runs.checkpoint import load_checkpoint
from chargen.sampling import DecodeConfig, Generator
from chargen.sampling.steppers import Stepper
from chargen.serve import BatchScheduler, Job, Limits, create_app
from tests.conftest import assert_one_line_error, invoke
from tests.service_support import make_checkpoint, thread_server

CPU = torch.device("cpu")
CODEC = TextCodec("abcdefghij \n")


@pytest.fixture(autouse=True)
def torch_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch-1 steps on torch's kernel, as the device path's: the two paths then agree to the bit."""
    monkeypatch.setenv("CHARGEN_MATVEC", "torch")
    monkeypatch.delenv(offload.ROWS_ENV, raising=False)


def model(cell: str = "lstm", layers: int = 2, labels: tuple[str, ...] = ()) -> CharRNN:
    torch.manual_seed(3)
    return CharRNN(ModelConfig(vocab_size=CODEC.vocab_size, cell=cell, layers=layers, hidden=24, embedding=8,
                               labels=labels))


def test_auto_is_the_cpu_without_cuda_and_cuda_is_refused_in_one_line() -> None:
    assert generation_device("cpu") == CPU
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert generation_device("auto") == CPU
    with pytest.raises(ChargenError, match="no CUDA device") as error:
        generation_device("cuda")
    assert "\n" not in str(error.value)
    with pytest.raises(ChargenError, match="unknown device 'tpu'"):
        generation_device("tpu")


@pytest.mark.parametrize("cell, labels", [("lstm", ()), ("gru", ()), ("rnn", ()), ("lstm", ("x", "y"))])
def test_the_device_stepper_steps_exactly_as_the_cpu_stepper(cell: str, labels: tuple[str, ...]) -> None:
    net = model(cell, labels=labels)
    cpu, device = Stepper(net), DeviceStepper(net, CPU)
    rows = 5
    tokens = torch.arange(rows) % CODEC.vocab_size
    bias = cpu.label_bias(1 if labels else None, rows)
    state_a, state_b = cpu.initial_state(rows), device.to_device(device.initial_state(rows))
    for _ in range(4):
        logits_a, state_a = cpu.step(tokens, state_a, bias)
        logits_b, state_b = device.step(tokens, state_b, device.label_bias(1 if labels else None, rows))
        assert logits_b.device == CPU and torch.equal(logits_a, logits_b)
        assert all(torch.equal(a, b) for a, b in zip(state_a, state_b))
        tokens = logits_a.argmax(dim=-1)


def test_threshold_is_where_the_device_wins_from_then_on() -> None:
    def cpu(rows: int) -> float:
        return 10.0 * rows

    assert threshold(cpu, lambda rows: 100.0) == 16  # the device costs the same at any size
    assert threshold(cpu, lambda rows: 1e9) is None
    assert threshold(cpu, lambda rows: 1.0) == 1
    seen: list[int] = []

    def bumpy(rows: int) -> float:
        seen.append(rows)
        return {64: 1e9}.get(rows, 1.0)

    assert threshold(cpu, bumpy) == 128 and 32 not in seen  # larger sizes first; stops where the CPU wins


def test_the_measured_threshold_is_cached_per_machine_and_model(monkeypatch: pytest.MonkeyPatch,
                                                                measuring: Path) -> None:
    monkeypatch.setattr(offload, "SIZES", (1, 8))
    monkeypatch.setattr(offload, "STEPS", 3)
    net = model()
    rows = cached_threshold(net, CPU, Stepper(net), DeviceStepper(net, CPU))
    path = measuring / "machine.json"
    cache = json.loads(path.read_text())
    (key, entry), = cache[offload.SECTION].items()
    assert entry["rows"] == rows and "8" in entry["us_per_step"]["cpu"] and "torch" in key
    entry["rows"] = 7  # a cached answer is read, not measured again
    path.write_text(json.dumps(cache))
    assert cached_threshold(net, CPU, Stepper(net), DeviceStepper(net, CPU)) == 7
    monkeypatch.setenv("CHARGEN_MEASURE", "0")
    assert cached_threshold(net, CPU, Stepper(net), DeviceStepper(net, CPU)) is None  # measuring off: never


def test_the_generator_steps_enough_rows_on_the_device_with_the_same_text() -> None:
    net = model()
    plain = Generator(net, CODEC)
    assert plain.offload is None and plain.steps_for(64) is plain.stepper  # the CPU: nothing to decide
    device = Generator(net, CODEC, device="cpu", device_rows=4)
    assert isinstance(device.steps_for(4), DeviceStepper) and device.steps_for(3) is device.stepper
    for config in (DecodeConfig(length=60, num_samples=6, seed=5, temperature=0.8, top_k=5),
                   DecodeConfig(length=40, num_samples=4, greedy=True), DecodeConfig(length=30, seed=2)):
        want, got = plain.generate("ab", config), device.generate("ab", config)
        assert [s.text for s in got.samples] == [s.text for s in want.samples]
        assert [s.logprob for s in got.samples] == [s.logprob for s in want.samples]
    assert len({s.text for s in want.samples}) > 1 or config.num_samples == 1


def test_the_environment_forces_the_device_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(offload.ROWS_ENV, "2")
    generator = Generator(model(), CODEC)
    assert generator.offload is not None and generator.offload.rows() == 2
    monkeypatch.setenv(offload.ROWS_ENV, "many")
    with pytest.raises(ChargenError, match="CHARGEN_DEVICE_ROWS"):
        Generator(model(), CODEC)


class CountingStepper(DeviceStepper):
    """The device stepper, counting the rows of each of its steps."""

    def __init__(self, net: CharRNN) -> None:
        super().__init__(net, CPU)
        self.rows: list[int] = []

    def step(self, tokens: torch.Tensor, state: Any, bias: torch.Tensor | None = None) -> Any:
        self.rows.append(len(tokens))
        return super().step(tokens, state, bias)


def test_the_scheduler_moves_the_batch_to_the_device_and_back_as_rows_come_and_go() -> None:
    net = model(labels=("x", "y"))
    generator = Generator(net, CODEC, device="cpu", device_rows=4)
    assert isinstance(generator.offload, Offload)
    counting = CountingStepper(net)
    generator.offload._stepper = counting
    scheduler = BatchScheduler("m", generator, max_batch=64)
    done: dict[int, Any] = {}
    plan = {0: [DecodeConfig(length=30, seed=1, label="x")],  # 1 row: the CPU
            5: [DecodeConfig(length=10, seed=2, num_samples=3, label="y")],  # 4 rows: the device
            20: [DecodeConfig(length=6, seed=3, top_k=3)]}  # joins the CPU batch again
    configs: list[DecodeConfig] = []
    with torch.inference_mode():
        for tick in range(40):
            for config in plan.get(tick, []):
                slot = len(configs)
                configs.append(config.resolved())
                scheduler._admit(Job(configs[-1], CODEC.encode("ab"),
                                     lambda kind, payload, slot=slot: done.__setitem__(slot, (kind, payload)), False))
            scheduler._tick()
    assert sorted(done) == [0, 1, 2]
    reference = Generator(net, CODEC)
    for slot, config in enumerate(configs):
        kind, (samples, _, device) = done[slot]
        assert kind == "done"
        want = reference.generate("ab", config).samples
        assert [s.ids for s in samples] == [s.ids for s in want]
        # Rows batched with other requests may differ from a solo run in the last float bit (as on the CPU).
        assert [s.logprob for s in samples] == pytest.approx([s.logprob for s in want], rel=1e-6)
        assert device == "cpu"  # the device "cpu" here; a GPU's name on a GPU
    assert counting.rows and set(counting.rows) == {4}  # the device stepped exactly the 4-row ticks
    assert len(counting.rows) == 9  # ticks 6..14 (the prime gives the first token of 10)


def test_a_cpu_scheduler_has_no_device_path() -> None:
    scheduler = BatchScheduler("m", Generator(model(), CODEC), max_batch=8)
    assert scheduler._offload is None


def test_the_history_records_the_device_of_sample_and_serve(tmp_path: Path) -> None:
    weights = make_checkpoint(tmp_path / "tiny.safetensors")
    db = f"sqlite:///{tmp_path / 'history.db'}"
    result = invoke("sample", "-c", str(weights), "--len", "8", "-n", "3", "--seed", "4", "--device", "cpu",
                    "--database", db, "--json")
    assert result.returncode == 0, result.stderr
    shown = invoke("history", "--json", "--database", db)
    assert json.loads(shown.stdout)[0]["params"]["device"] == "cpu"
    app = create_app({"tiny": load_checkpoint(weights)}, db, None, Limits(), device="cpu")
    with thread_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        body = http.post("/v1/generate", json={"prime": "ab", "length": 8, "seed": 4, "num_samples": 2}).json()
        record = http.get(f"/v1/generations/{body['history_id']}").json()
    assert record["params"]["device"] == "cpu"


def test_device_cuda_without_cuda_is_one_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    weights = make_checkpoint(tmp_path / "tiny.safetensors")
    assert_one_line_error(invoke("sample", "-c", str(weights), "--len", "5", "--device", "cuda", "--no-log"),
                          "no CUDA device")
    assert invoke("sample", "-c", str(weights), "--len", "5", "--device", "tpu").returncode == 2


def test_concurrent_generations_share_one_lazily_built_device_stepper() -> None:
    generator = Generator(model(), CODEC, device="cpu", device_rows=2)
    assert generator.offload is not None
    built: list[DeviceStepper] = []
    threads = [threading.Thread(target=lambda: built.append(generator.offload.stepper)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(stepper) for stepper in built}) == 1
