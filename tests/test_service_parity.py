"""One decoder: the service over real HTTP and `chargen sample` give the same tokens, the same
log-probabilities (equal floats, so equal as printed) and the same error, whatever the settings.

The server is a real `chargen serve` process on a loopback port; the CLI runs in-process
through click's CliRunner. The vocabulary is tiny (5 symbols) so that short n-gram blocks
ban every token within a few steps, the case where the two used to part ways.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_support import ServerProcess, make_checkpoint

from chargen.cli import cli
from chargen.text_codec import TextCodec

ALPHABET = "ab c\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("parity")
    return make_checkpoint(folder / "tiny.safetensors", TextCodec(ALPHABET), seed=3, hidden=24)


@pytest.fixture(scope="module")
def server(checkpoint: Path) -> Iterator[str]:
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


def via_cli(checkpoint: Path, options: dict[str, Any]) -> tuple[str, Any]:
    args = ["sample", "-c", str(checkpoint), "--json", "--no-log", "-q", "--len", str(options["length"]),
            "--seed", str(options["seed"]), "-n", str(options["num_samples"])]
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
        assert http_result == cli_result, options  # texts and log-probabilities, float for float
    else:
        status, detail = http_result
        assert status == 400 and detail in cli_result, (detail, cli_result)  # the same rule, the same words


def test_the_rules_that_used_to_differ(server: str, checkpoint: Path) -> None:
    """The cases the issue found, spelled out: each agrees, and each does what it should."""
    base = {"length": 30, "seed": 5, "num_samples": 1, "temperature": None, "top_k": None, "top_p": None}
    ban_all = {**base, "greedy": False, "no_repeat_ngram": 1}
    kind, result = via_http(server, ban_all)
    assert kind == "ok" and (kind, result) == via_cli(checkpoint, ban_all)  # the ban yields: no 400
    greedy_ban_all = {**base, "greedy": True, "no_repeat_ngram": 1}
    kind, result = via_http(server, greedy_ban_all)
    assert kind == "ok" and (kind, result) == via_cli(checkpoint, greedy_ban_all)
    assert result[0][0] != TextCodec(ALPHABET).symbols[0] * 30  # not token 0 over and over
    greedy_hot = {**base, "greedy": True, "no_repeat_ngram": 0, "temperature": 0.5}
    assert via_http(server, greedy_hot)[0] == "error" and via_cli(checkpoint, greedy_hot)[0] == "error"
    tiny_t = {**base, "greedy": False, "no_repeat_ngram": 0, "temperature": 1e-320}
    greedy = {**base, "greedy": True, "no_repeat_ngram": 0}
    assert via_cli(checkpoint, tiny_t) == via_cli(checkpoint, greedy) == via_http(server, tiny_t)
