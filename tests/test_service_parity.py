"""One decoder: the service over real HTTP and `chargen sample` give the same tokens, the same
log-probabilities and the same error, whatever the settings,
for a text model and for a music model with the MIDI grammar on and off.

Log-probabilities agree to float32's rounding: they are summed from the same kernels' logits, but two
processes may add a step's products in another order (torch promises equal sequences across runs and threads,
not equal last bits), so they are compared to 1e-6, the texts exactly.

The server is a real `chargen serve` process on a loopback port; the CLI runs in-process
through click's CliRunner. The vocabulary is tiny (5 symbols) so that short n-gram blocks
ban every token within a few steps, the case where the two used to part ways.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_support import ServerProcess, make_checkpoint

from chargen.cli import cli
from chargen.codecs.midi import MidiCodec
from chargen.codecs.text import TextCodec
from chargen.machine.kernels import KERNEL_ENV
from chargen.model import CharRNN, ModelConfig
from chargen.runs.checkpoint import save_weights
from tests.test_midi_grammar_decoding import peak

ALPHABET = "ab c\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("parity")
    return make_checkpoint(folder / "tiny.safetensors", TextCodec(ALPHABET), seed=3, hidden=24)


@pytest.fixture(scope="module", autouse=True)
def one_kernel() -> Iterator[None]:
    """Both sides on one batch-1 kernel. Each picks the faster of torch's and numpy's mat-vecs by timing them
    (cached per CHARGEN_HOME, which differs between the server and each CLI test): under load the two may
    choose differently, and the kernels' sums differ in the last bits (see tests/test_speed.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KERNEL_ENV, "torch")
        yield


@pytest.fixture(scope="module")
def server(checkpoint: Path, one_kernel: None) -> Iterator[str]:
    with ServerProcess([str(checkpoint)]) as process:
        yield process.url


decoder_settings = st.fixed_dictionaries({
    "length": st.integers(0, 40),
    "seed": st.integers(0, 2**31 - 1),
    "num_samples": st.integers(1, 3),
    "greedy": st.booleans(),
    "temperature": st.none() | st.sampled_from([1.0, 1e-320, 1e-30]) | st.floats(0.05, 5.0),
    "top_k": st.none() | st.integers(1, len(ALPHABET) + 2),
    "top_p": st.none() | st.just(1.0) | st.floats(1e-9, 1.0),
    "no_repeat_ngram": st.none() | st.integers(0, 4),  # 1 and 2 ban every token within a few steps
})


def via_cli(checkpoint: Path, options: dict[str, Any], extra: list[str] | None = None) -> tuple[str, Any]:
    args = ["sample", "-c", str(checkpoint), "--json", "--no-log", "-q", "--len", str(options["length"]),
            "--seed", str(options["seed"]), "-n", str(options["num_samples"]), *(extra or [])]
    if options["greedy"]:
        args.append("--greedy")
    for key in ("temperature", "top_k", "top_p", "no_repeat_ngram"):
        if options[key] is not None:
            args += [f"--{key.replace('_', '-')}", repr(options[key])]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    if result.exit_code != 0:
        return "error", result.output
    data = json.loads(result.stdout)
    return "ok", [(s["text"], s["logprob"]) for s in data["samples"]]


def same(first: Any, second: Any) -> bool:
    """Two results alike: the same kind, the same texts (or error), log-probabilities equal to float32's rounding."""
    (kind, value), (other_kind, other_value) = first, second
    if kind != other_kind or kind != "ok":
        return first == second
    return [t for t, _ in value] == [t for t, _ in other_value] and all(
        math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for (_, a), (_, b) in zip(value, other_value))


def via_http(url: str, options: dict[str, Any]) -> tuple[str, Any]:
    body = {key: value for key, value in options.items() if value is not None}
    response = httpx.post(url + "/v1/generate", json=body, timeout=60)
    if response.status_code != 200:
        return "error", (response.status_code, response.json()["detail"])
    return "ok", [(s["text"], s["logprob"]) for s in response.json()["samples"]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=decoder_settings)
def test_service_and_cli_decode_alike(server: str, checkpoint: Path, options: dict[str, Any]) -> None:
    cli_kind, cli_result = via_cli(checkpoint, options)
    http_kind, http_result = via_http(server, options)
    assert cli_kind == http_kind, (options, cli_result, http_result)
    if cli_kind == "ok":
        assert same((http_kind, http_result), (cli_kind, cli_result)), (options, http_result, cli_result)
    else:
        status, detail = http_result
        assert status == 400 and detail in cli_result, (detail, cli_result)  # the same rule, the same words


def test_the_rules_that_used_to_differ(server: str, checkpoint: Path) -> None:
    """The cases the issue found, spelled out: each agrees, and each does what it should."""
    base = {"length": 30, "seed": 5, "num_samples": 1, "temperature": None, "top_k": None, "top_p": None}
    ban_all = {**base, "greedy": False, "no_repeat_ngram": 1}
    kind, result = via_http(server, ban_all)
    assert kind == "ok" and same((kind, result), via_cli(checkpoint, ban_all))  # the ban yields: no 400
    greedy_ban_all = {**base, "greedy": True, "no_repeat_ngram": 1}
    kind, result = via_http(server, greedy_ban_all)
    assert kind == "ok" and same((kind, result), via_cli(checkpoint, greedy_ban_all))
    assert result[0][0] != TextCodec(ALPHABET).symbols[0] * 30  # not token 0 over and over
    greedy_hot = {**base, "greedy": True, "no_repeat_ngram": 0, "temperature": 0.5}
    assert via_http(server, greedy_hot)[0] == "error" and via_cli(checkpoint, greedy_hot)[0] == "error"
    tiny_t = {**base, "greedy": False, "no_repeat_ngram": 0, "temperature": 1e-320}
    greedy = {**base, "greedy": True, "no_repeat_ngram": 0}
    assert via_cli(checkpoint, tiny_t) == via_cli(checkpoint, greedy)  # one process: equal floats
    assert same(via_cli(checkpoint, tiny_t), via_http(server, tiny_t))


# ---------------------------------------------------------------------------
# A music model: the MIDI grammar (on by default, the learnt cap, overridden, off) decodes alike.

MUSIC_CAP = 3


@pytest.fixture(scope="module")
def music_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained MIDI model made eager for notes, with a learnt cap in its metadata as a run stores it."""
    codec = MidiCodec()
    torch.manual_seed(4)
    model = CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=1, hidden=24, embedding=8))
    with torch.no_grad():
        model.head.weight.mul_(8.0)
        model.head.bias[: codec.vocab.note_off_base] += 1.0
    path = tmp_path_factory.mktemp("music") / "music.safetensors"
    save_weights(path, model, codec, {"best_val_loss": 2.5, "step": 0, "polyphony_cap": MUSIC_CAP})
    return path


@pytest.fixture(scope="module")
def music_server(music_checkpoint: Path) -> Iterator[str]:
    with ServerProcess([str(music_checkpoint)]) as process:
        yield process.url


def _music_options(decoder: str, seed: int, grammar: bool | None, max_polyphony: int | None,
                   no_repeat_ngram: int | None, temperature: float | None,
                   max_hold_s: float | None = None) -> dict[str, Any]:
    options: dict[str, Any] = {"length": 60, "seed": seed, "num_samples": 2, "greedy": decoder == "greedy",
                               "temperature": temperature if decoder == "sample" else None, "top_k": None,
                               "top_p": None, "no_repeat_ngram": no_repeat_ngram, "grammar": grammar,
                               "max_polyphony": max_polyphony, "max_hold_s": max_hold_s}
    if decoder == "beam":
        options["beam_width"] = 2
    return options


def via_cli_music(checkpoint: Path, options: dict[str, Any]) -> tuple[str, Any]:
    extra = ["--format", "text"]
    if options["grammar"] is not None:
        extra.append("--grammar" if options["grammar"] else "--no-grammar")
    for key in ("max_polyphony", "max_hold_s", "beam_width"):
        if options.get(key) is not None:
            extra += [f"--{key.replace('_', '-')}", str(options[key])]
    plain = {k: v for k, v in options.items() if k not in ("grammar", "max_polyphony", "max_hold_s", "beam_width")}
    return via_cli(checkpoint, plain, extra)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(decoder=st.sampled_from(["sample", "greedy", "beam"]), seed=st.integers(0, 2**31 - 1),
       grammar=st.sampled_from([None, True, False]), max_polyphony=st.sampled_from([None, 0, 1, 2, 5]),
       no_repeat_ngram=st.none() | st.integers(0, 3), temperature=st.none() | st.floats(0.5, 2.0),
       max_hold_s=st.sampled_from([None, 0.0, 0.2]))
def test_service_and_cli_decode_music_alike_with_the_grammar_on_and_off(
        music_server: str, music_checkpoint: Path, decoder: str, seed: int, grammar: bool | None,
        max_polyphony: int | None, no_repeat_ngram: int | None, temperature: float | None,
        max_hold_s: float | None) -> None:
    options = _music_options(decoder, seed, grammar, max_polyphony, no_repeat_ngram, temperature, max_hold_s)
    cli_kind, cli_result = via_cli_music(music_checkpoint, options)
    http_kind, http_result = via_http(music_server, options)
    assert cli_kind == http_kind, (options, cli_result, http_result)
    if cli_kind == "error":  # settings for a switched-off grammar: the same rule, the same words
        assert grammar is False and (max_polyphony or max_hold_s)
        status, detail = http_result
        assert status == 400 and detail in cli_result, (detail, cli_result)
        return
    assert same((http_kind, http_result), (cli_kind, cli_result)), (options, http_result, cli_result)


def test_music_defaults_are_the_grammar_with_the_learnt_cap_on_both_sides(music_server: str,
                                                                         music_checkpoint: Path) -> None:
    options = _music_options("sample", 11, None, None, None, None)
    body = {key: value for key, value in options.items() if value is not None}
    response = httpx.post(music_server + "/v1/generate", json=body, timeout=60).json()
    assert (response["params"]["grammar"], response["params"]["max_polyphony"]) == (True, MUSIC_CAP)
    codec = MidiCodec()
    for sample in response["samples"]:
        ids = codec.encode(sample["text"])
        assert peak(ids) <= MUSIC_CAP
    free = via_http(music_server, {**options, "grammar": False})
    assert max(peak(codec.encode(text)) for text, _ in free[1]) > MUSIC_CAP  # the grammar did that
    assert via_cli_music(music_checkpoint, options) == via_http(music_server, options)
    models = httpx.get(music_server + "/v1/models", timeout=10).json()["models"]
    assert models[0]["polyphony_cap"] == MUSIC_CAP
