"""A checkpoint that lies (issue 27, items 6, 7 and 8): everything read from one is checked before use.

Config against bounds and the file's own tensors, with memory estimated before any allocation (run
under a real memory limit, RLIMIT_AS, in a child process); state.pt against the run it sits in; the
weights for finiteness; and no NaN ever comes out as data. A hypothesis property test over the
metadata (sizes, types, vocabularies, NaN) wants a one-line error or a working model, never a
traceback and never an allocation past the limit.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file
from service_support import make_checkpoint, parse_sse, thread_server

from chargen.codecs.text import TextCodec
from chargen.model import CharRNN, ModelConfig
from chargen.runs.checkpoint import load_checkpoint as load_checkpoint_file
from chargen.runs.checkpoint import save_weights
from chargen.runs.layout import STATE
from tests.conftest import REPO, invoke
from tests.test_checkpoint_faults import _one_line
from tests.test_trainer import run_main, tiny

EXAMPLES = int(os.environ.get("CHARGEN_FUZZ_EXAMPLES", "12"))
#: Bytes the child may allocate past what it holds after importing torch and chargen.
MEMORY_LIMIT = 400 << 20

# The child: loads each checkpoint path it is given under RLIMIT_AS, and uses it as `sample` and `info`
# would; answers one JSON line per path: ok, a ChargenError's message, or a crash with its traceback.
_CHILD = r"""
import json, os, resource, sys, traceback
from pathlib import Path
import torch
torch.set_num_threads(1)
from click.testing import CliRunner
from chargen.runs.checkpoint import load_checkpoint
from chargen.cli import cli
from chargen.errors import ChargenError
from chargen.sampling import DecodeConfig, Generator

used = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (used + int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_AS)[1]))
print("ready", flush=True)
for line in sys.stdin:
    path = line.strip()
    try:
        try:
            loaded = load_checkpoint(Path(path))
            result = Generator.from_checkpoint(loaded).generate(None, DecodeConfig(length=4, seed=1))
            json.dumps(result.to_dict(), allow_nan=False)
            answer = {"ok": True}
        except ChargenError as exc:
            answer = {"error": str(exc)}
        for args in (["info", path], ["info", path, "--json"], ["sample", "-c", path, "--len", "3", "--no-log"]):
            run = CliRunner().invoke(cli, args, prog_name="chargen")
            if run.exit_code not in (0, 1) or "internal error" in run.output or "Traceback" in run.output:
                answer = {"crash": f"chargen {' '.join(args)} -> {run.exit_code}: {run.output[-1500:]}"}
            elif run.exit_code == 1 and len([l for l in run.stderr.splitlines() if l.strip()]) != 1:
                answer = {"crash": f"chargen {' '.join(args)}: not one line: {run.stderr!r}"}
            elif run.exit_code == 0 and "--json" in args:
                json.loads(run.stdout, parse_constant=lambda name: 1 / 0)  # valid JSON: no NaN
            if "crash" in answer:
                break
    except BaseException:
        answer = {"crash": traceback.format_exc()}
    print(json.dumps(answer), flush=True)
"""


class Loader:
    """The child process above, spoken to one path at a time."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(MEMORY_LIMIT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready", self.proc.stderr

    def load(self, path: Path) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the loader died ({self.proc.wait()}): {self.proc.stderr.read()[-3000:]}")
        return json.loads(line)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def loader() -> Iterator[Loader]:
    child = Loader()
    yield child
    child.close()


def tensors_and_metadata(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata())


def lying(source: Path, target: Path, **config: Any) -> Path:
    """``source``'s weights under metadata whose model_config claims ``config``."""
    tensors, metadata = tensors_and_metadata(source)
    claimed = dict(json.loads(metadata["model_config"]), **config)
    save_file(tensors, str(target), metadata=dict(metadata, model_config=json.dumps(claimed)))
    return target


def assert_refused(answer: dict[str, Any], *fragments: str) -> None:
    assert "error" in answer, answer
    assert "\n" not in answer["error"] and "internal error" not in answer["error"]
    for fragment in fragments:
        assert fragment in answer["error"], answer


@pytest.mark.parametrize("claim", [{"hidden": 5000, "layers": 2}, {"hidden": 65536, "layers": 64},
                                   {"vocab_size": 10**12}, {"embedding": 2**40}])
def test_a_config_that_lies_about_its_size_is_refused_before_allocating(loader: Loader, tmp_path: Path,
                                                                         claim: dict[str, int]) -> None:
    small = make_checkpoint(tmp_path / "small.safetensors", hidden=128)
    assert small.stat().st_size < 400_000
    assert loader.load(small) == {"ok": True}
    assert_refused(loader.load(lying(small, tmp_path / "lying.safetensors", **claim)), str(tmp_path))


def test_a_real_model_too_big_for_the_memory_is_refused_before_loading(tmp_path: Path, loader: Loader) -> None:
    """The file really holds these tensors (a sparse file): the estimate refuses it, not an allocator."""
    codec = TextCodec("ab")
    config = ModelConfig(vocab_size=codec.vocab_size, hidden=8192, layers=2, embedding=16)
    small = CharRNN(ModelConfig(vocab_size=codec.vocab_size, hidden=8, layers=1, embedding=16))
    save_weights(tmp_path / "seed.safetensors", small, codec, {})
    _, metadata = tensors_and_metadata(tmp_path / "seed.safetensors")
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in CharRNN(config).state_dict().items()}
    header: dict[str, Any] = {"__metadata__": dict(metadata, model_config=json.dumps(config.to_dict()))}
    offset = 0
    for key, shape in sorted(shapes.items()):
        size = 4 * math.prod(shape)
        header[key] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data to 8 bytes
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as handle:
        handle.write(len(raw).to_bytes(8, "little") + raw)
        handle.truncate(8 + len(raw) + offset)  # sparse: ~1.6 GB of zeros on no disk
    assert_refused(loader.load(path), "needs about", "of memory")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused_at_load(tmp_path: Path, loader: Loader, value: float) -> None:
    tensors, metadata = tensors_and_metadata(make_checkpoint(tmp_path / "good.safetensors"))
    tensors["head.weight"][3, 5] = value
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
    assert_refused(loader.load(tmp_path / "bad.safetensors"), "NaN or infinity", "head.weight")
    result = invoke("sample", "-c", str(tmp_path / "bad.safetensors"), "--len", "20", "--no-log")
    assert result.returncode == 1 and "log-prob nan" not in result.stderr and "nan" not in result.stdout.lower()


def overflowing(tmp_path: Path) -> Path:
    """Finite weights whose logits overflow to infinity: every log-probability is NaN."""
    tensors, metadata = tensors_and_metadata(make_checkpoint(tmp_path / "good.safetensors", hidden=8))
    tensors["head.weight"][:] = 3e38
    tensors["head.weight"][::2] = -3e38
    tensors["rnn.weight_ih_l0"][:] = 3e38  # saturate the gates: hidden values of +-1 times 3e38, summed: inf
    path = tmp_path / "overflow.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_non_finite_output_is_an_error_never_data(tmp_path: Path, loader: Loader) -> None:
    path = overflowing(tmp_path)
    for args in (["sample", "-c", str(path), "--len", "20", "--no-log"],
                 ["sample", "-c", str(path), "--len", "20", "--no-log", "--json"],
                 ["sample", "-c", str(path), "--len", "20", "--no-log", "--beam-width", "2"]):
        result = invoke(*args)
        assert result.returncode == 1, (args, result)
        assert "non-finite" in result.stderr and "NaN" not in result.stdout and "nan" not in result.stderr.split(
            "(")[0], result
    (tmp_path / "some.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 4)
    scored = invoke("score", str(tmp_path / "some.txt"), "-c", str(path), "--json", "--no-log")
    assert scored.returncode == 1 and "internal error" not in scored.stderr and "NaN" not in scored.stdout
    assert "not a usable number" in scored.stderr


def test_the_service_never_sends_nan(tmp_path: Path) -> None:
    from chargen.runs.checkpoint import load_checkpoint
    from chargen.serve import Limits, create_app

    models = {"bad": load_checkpoint(overflowing(tmp_path))}
    with thread_server(create_app(models, f"sqlite:///{tmp_path / 'h.db'}", None, Limits())) as url:
        with httpx.stream("POST", url + "/v1/generate", json={"length": 10, "stream": True}, timeout=30) as response:
            events = list(parse_sse_strict(response.iter_lines()))
        plain = httpx.post(url + "/v1/generate", json={"length": 10}, timeout=30)
        beam = httpx.post(url + "/v1/generate", json={"length": 10, "beam_width": 2}, timeout=30)
        listed = httpx.get(url + "/v1/generations", timeout=30).json()["generations"]
    assert [name for name, _ in events][-1] == "error" and "done" not in [name for name, _ in events]
    assert "non-finite" in events[-1][1]["detail"]
    for answer in (plain, beam):
        assert answer.status_code >= 400 and "non-finite" in json.loads(answer.text, parse_constant=_no_nan)["detail"]
    assert listed == []  # nothing recorded


def _no_nan(name: str) -> Any:
    raise AssertionError(f"{name} in JSON")


def parse_sse_strict(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    for name, data in parse_sse(lines):
        json.dumps(data, allow_nan=False)  # what parse_sse read was JSON without NaN
        yield name, data


# ----------------------------------------------------------------------------- item 7: a foreign state.pt


def test_a_foreign_state_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tiny(tmp_path, "victim").run_dir
    other = tiny(tmp_path, "other", seed=9, max_steps=9).run_dir  # the same vocabulary, another run
    shutil.copy(other / STATE, victim / STATE)
    before = {name: (victim / name).read_bytes() for name in ("run.json", "last.safetensors", "metrics.jsonl")}
    code, err = run_main(["train", "--resume", str(victim), "--max-steps", "12", "--quiet", "--no-log"], capsys,
                         monkeypatch)
    _one_line(code, err, str(victim / STATE), "another run")
    assert {name: (victim / name).read_bytes() for name in before} == before  # nothing rewritten


def test_a_state_of_another_vocabulary_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A run.json without a run id (an older run): the state's weights are checked against the config."""
    victim = tiny(tmp_path, "victim").run_dir
    other_corpus = tmp_path / "upper.txt"
    other_corpus.write_text((tmp_path / "fables.txt").read_text().upper())
    other = tiny(tmp_path, "other", corpus=other_corpus).run_dir
    shutil.copy(other / STATE, victim / STATE)
    meta = json.loads((victim / "run.json").read_text())
    meta.pop("run_id", None)
    (victim / "run.json").write_text(json.dumps(meta))
    code, err = run_main(["train", "--resume", str(victim), "--max-steps", "12", "--quiet", "--no-log"], capsys,
                         monkeypatch)
    _one_line(code, err, str(victim / STATE))


# ----------------------------------------------------------------------------- the property test

SCALARS = st.one_of(st.integers(-3, 40), st.integers(-(2**63), 2**63), st.floats(allow_nan=True),
                    st.booleans(), st.none(), st.text(max_size=6), st.lists(st.integers(0, 3), max_size=3))
HUGE = st.sampled_from([5000, 65536, 2**31, 10**12, 2**64])


@st.composite
def claims(draw: st.DrawFn) -> tuple[dict[str, Any], Any, Any]:
    """(model_config, codec, training) as a forger might write them: mostly a real small model's, with a
    field or two changed to anything (a huge size, a wrong type, NaN, another vocabulary)."""
    midi = draw(st.integers(0, 4)) == 0
    alphabet = draw(st.text(st.characters(codec="utf-8"), min_size=1, max_size=30))
    codec: Any = ({"name": "midi", "format": 1, "symbol_base": 0x1401, "step_ms": 10, "max_shift_steps": 100,
                   "velocity_bins": 32} if midi else {"name": "text", "alphabet": alphabet})
    real_codec = dict(codec)
    vocab = 388 if midi else len(set(alphabet))
    config: dict[str, Any] = {"vocab_size": vocab, "cell": draw(st.sampled_from(["lstm", "gru", "rnn"])),
                              "layers": draw(st.integers(1, 3)), "hidden": draw(st.integers(1, 24)),
                              "embedding": draw(st.integers(1, 12)), "dropout": draw(st.floats(0, 0.9))}
    if draw(st.booleans()):
        config.update(labels=draw(st.lists(st.text(min_size=1, max_size=4), max_size=3, unique=True)),
                      label_embedding=draw(st.integers(1, 8)))
    training: Any = {"step": draw(st.integers(0, 10**6)), "best_val_loss": draw(st.floats(0, 9)),
                     "corpus_paths": ["a.txt"], "corpus_tokens": 100, "train_config": {"seq_len": 16}}
    real_training = dict(training)
    for _ in range(draw(st.integers(0, 2))):  # what the forger changes
        where = draw(st.sampled_from(["config", "config", "codec", "training"]))
        if where == "config":
            key = draw(st.sampled_from(["vocab_size", "cell", "layers", "hidden", "embedding", "dropout",
                                        "weight_drop", "labels", "label_embedding", "extra"]))
            config[key] = draw(st.one_of(SCALARS, HUGE))
        elif where == "codec":
            codec = draw(st.one_of(SCALARS, st.fixed_dictionaries({"name": st.sampled_from(["text", "midi", "x"])}),
                                   st.dictionaries(st.sampled_from(list(real_codec)), SCALARS, max_size=3).map(
                                       lambda changes: dict(real_codec, **changes))))
        else:
            training = draw(st.one_of(SCALARS, st.dictionaries(st.sampled_from(
                ["best_val_loss", "step", "corpus_tokens", "corpus_paths", "corpus_sha256", "train_config", "parent",
                 "polyphony_cap", "max_hold_s", "chargen_version"]), SCALARS, max_size=3).map(
                lambda changes: dict(real_training, **changes))))
    return config, codec, training


def dump(value: Any) -> str:
    return json.dumps(value, allow_nan=True)  # NaN and Infinity, as a forger would write them


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 12, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_checkpoint_metadata_property(loader: Loader, tmp_path_factory: pytest.TempPathFactory,
                                      data: st.DataObject) -> None:
    """Whatever the metadata says (sizes, types, vocabularies, NaN): a working model or one line."""
    folder = tmp_path_factory.mktemp("property")
    config, codec, training = data.draw(claims(), label="metadata")
    weights = data.draw(st.sampled_from(["claimed", "claimed", "claimed", "small", "none", "nan"]), label="weights")
    tensors: dict[str, torch.Tensor] = {"embed.weight": torch.zeros(3, 2)}
    if weights in ("claimed", "nan"):
        try:  # the tensors the claim needs, where it is small enough to build (10**12 layers is not)
            claimed = ModelConfig.from_dict(config)
            assert claimed.layers <= 8 and max(claimed.hidden, claimed.embedding, claimed.vocab_size) <= 5000
            with torch.device("meta"):
                shapes = {k: tuple(v.shape) for k, v in CharRNN(claimed).state_dict().items()}
        except Exception:  # noqa: BLE001 - the config is unusable or huge: any tensors will do
            shapes = {}
        if 0 < sum(math.prod(s) for s in shapes.values()) < 200_000:
            tensors = {k: torch.randn(s) * 0.1 for k, s in shapes.items()}
            if weights == "nan":
                next(iter(tensors.values())).view(-1)[0] = data.draw(st.sampled_from([math.nan, math.inf]))
    elif weights == "small":
        small = ModelConfig(vocab_size=5, hidden=4, layers=1, embedding=2)
        tensors = {k: v.clone() for k, v in CharRNN(small).state_dict().items()}
    metadata = {"format": "chargen-checkpoint", "format_version": "1", "model_config": dump(config),
                "codec": dump(codec), "training": dump(training)}
    path = folder / "claim.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    answer = loader.load(path)
    event("loaded" if answer.get("ok") else "refused: " + str(answer.get("error", "crash")).split(": ", 1)[-1][:40])
    assert "crash" not in answer, answer["crash"]
    if "error" in answer:
        assert answer["error"] and "\n" not in answer["error"], answer


@pytest.mark.parametrize("width", [1, 3])
def test_a_stochastic_beam_at_a_tiny_temperature_keeps_its_beams(tmp_path: Path, width: int) -> None:
    """Found by the long service fuzz: with every tempered chance on a token the n-gram block bans, the
    beam drew any token, banned ones too, and died; the answer was no sample at all, silently."""
    from chargen.sampling import DecodeConfig, Generator

    checkpoint = load_checkpoint_file(make_checkpoint(tmp_path / "tiny.safetensors"))
    result = Generator(checkpoint.model, checkpoint.codec).generate(None, DecodeConfig(
        length=300, temperature=5e-324, beam_sample=True, beam_width=width, num_samples=width, seed=1))
    assert len(result.samples) == width and all(math.isfinite(s.logprob) for s in result.samples)
    assert all(len(s.ids) == 300 for s in result.samples)
