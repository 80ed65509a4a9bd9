"""OpenAI's completions API on ``chargen serve``, driven by the official ``openai`` package over loopback."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import mido
import pytest
from conftest import invoke
from service_support import make_checkpoint, thread_server

import chargen
from chargen.codecs.midi import MidiCodec
from chargen.runs.checkpoint import load_checkpoint
from chargen.serve import Limits, create_app

openai = pytest.importorskip("openai")
TOKEN = "sekret-token"


@pytest.fixture(scope="module")
def server(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real server (text: the session's trained run; music: a small MIDI model) and its history URL."""
    folder = tmp_path_factory.mktemp("openai")
    music = make_checkpoint(folder / "music.safetensors", MidiCodec(), seed=3, hidden=32)
    models = {"text": load_checkpoint(trained_run / "best.safetensors"), "music": load_checkpoint(music)}
    database = f"sqlite:///{folder / 'history.db'}"
    with thread_server(create_app(models, database, TOKEN, Limits(max_samples=4, max_length=400))) as url:
        yield url, database


def client(url: str, key: str = TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_models_list_in_openais_shape_beside_chargens(server: tuple[str, str]) -> None:
    url, _ = server
    assert {model.id for model in client(url).models.list()} == {"text", "music"}
    raw = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert raw["object"] == "list" and {m["name"] for m in raw["models"]} == {"text", "music"}
    assert all(m["object"] == "model" and m["owned_by"] == "chargen" for m in raw["data"])


def test_completion_plain_and_streamed_are_the_same_text(server: tuple[str, str]) -> None:
    url, _ = server
    made = client(url).completions.create(model="text", prompt="The ", max_tokens=40, seed=4, temperature=0.9)
    choice = made.choices[0]
    assert made.object == "text_completion" and made.model == "text" and made.id.startswith("cmpl-")
    assert len(choice.text) == 40 and choice.finish_reason == "length" and choice.index == 0
    assert made.usage.prompt_tokens == 4 and made.usage.completion_tokens == 40 and made.usage.total_tokens == 44
    chunks = list(client(url).completions.create(model="text", prompt="The ", max_tokens=40, seed=4,
                                                 temperature=0.9, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_n_logprobs_and_seed_give_the_clis_text(server: tuple[str, str], trained_run: Path) -> None:
    url, _ = server
    made = client(url).completions.create(model="text", prompt="Once ", max_tokens=30, n=2, logprobs=3, seed=7,
                                          top_p=0.95)
    cli = invoke("sample", "-c", str(trained_run), "--prime", "Once ", "--len", "30", "-n", "2", "--seed", "7",
                 "--top-p", "0.95", "--json", "--no-log")
    samples = json.loads(cli.stdout)["samples"]
    assert [c.text for c in made.choices] == [s["text"] for s in samples]
    for choice, sample in zip(made.choices, samples):
        logprobs = choice.logprobs
        assert "".join(logprobs.tokens) == choice.text and logprobs.text_offset == list(range(30))
        assert sum(logprobs.token_logprobs) == pytest.approx(sample["logprob"], rel=1e-4)
        assert all(len(top) == 3 and max(top.values()) >= lp - 1e-9
                   for top, lp in zip(logprobs.top_logprobs, logprobs.token_logprobs))
    greedy = client(url).completions.create(model="text", prompt="Once ", max_tokens=30, temperature=0)
    cli_greedy = invoke("sample", "-c", str(trained_run), "--prime", "Once ", "--len", "30", "--greedy", "--no-log",
                        "-q")
    assert cli_greedy.stdout == "Once " + greedy.choices[0].text + "\n"


def test_stop_echo_and_several_prompts(server: tuple[str, str]) -> None:
    url, _ = server
    free = client(url).completions.create(model="text", prompt="A", max_tokens=80, seed=1).choices[0].text
    stop = next(c for c in free[3:] if c.isalpha())
    stopped = client(url).completions.create(model="text", prompt="A", max_tokens=80, seed=1, stop=[stop])
    assert stopped.choices[0].text == free[: free.index(stop)] and stopped.choices[0].finish_reason == "stop"
    echoed = client(url).completions.create(model="text", prompt="A", max_tokens=10, seed=1, echo=True, logprobs=0)
    assert echoed.choices[0].text == "A" + free[:10]
    assert echoed.choices[0].logprobs.token_logprobs[0] is None and len(echoed.choices[0].logprobs.tokens) == 11
    both = client(url).completions.create(model="text", prompt=["A", "The "], max_tokens=10, seed=1, n=2)
    alone = client(url).completions.create(model="text", prompt="The ", max_tokens=10, seed=1, n=2)
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    assert [c.text for c in both.choices[2:]] == [c.text for c in alone.choices]  # each prompt its own generation


def test_chargens_own_options_go_as_extra_body_and_completions_are_logged_and_replayable(
        server: tuple[str, str]) -> None:
    url, database = server
    made = client(url).completions.create(model="text", prompt="The ", max_tokens=30, seed=2,
                                          extra_body={"top_k": 5, "no_repeat_ngram": 4})
    history_id = made.id.removeprefix("cmpl-")
    record = chargen.generation(history_id, database=database)
    assert record.params["top_k"] == 5 and record.params["no_repeat_ngram"] == 4 and record.seed == 2
    assert record.outputs[0].text == made.choices[0].text
    assert chargen.replay(history_id, database=database).identical


def test_a_music_models_completion_is_its_event_tokens_with_a_midi_url(server: tuple[str, str]) -> None:
    url, database = server
    made = client(url).completions.create(model="music", prompt="", max_tokens=300, seed=5)
    text = made.choices[0].text
    symbols = set(MidiCodec().symbols)
    assert len(text) == 300 and set(text) <= symbols
    midi_url = made.model_extra["chargen"]["midi_urls"][0]
    answer = httpx.get(url + midi_url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "audio/midi"
    notes = [m for m in mido.MidiFile(file=io.BytesIO(answer.content)) if m.type == "note_on" and m.velocity]
    assert notes
    assert chargen.replay(made.id.removeprefix("cmpl-"), database=database).identical


def test_openais_errors_for_an_unknown_model_and_a_wrong_token(server: tuple[str, str]) -> None:
    url, _ = server
    with pytest.raises(openai.NotFoundError):
        client(url).completions.create(model="nope", prompt="x")
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong").completions.create(model="text", prompt="x")
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong").models.list()


@pytest.mark.parametrize("body", [
    '{"model": "text", "prompt": "a", "temperature": NaN}',
    '{"model": "text", "prompt": "a", "top_p": Infinity}',
    '{"model": "text", "prompt": "a", "n": 99}',
    '{"model": "text", "prompt": []}',
    '{"model": "text", "prompt": [1, 2, 3]}',
    '{"model": "text", "prompt": "a", "bogus": {"x": 1}}',
    '{"model": "text", "prompt": "a", "max_tokens": "3"}',
    '{"model": "text", "prompt": "a", "max_tokens": 100000}',
    '{"model": "text", "prompt": "a", "presence_penalty": 0.5}',
    '{"model": "text", "prompt": "a", "logprobs": 9}',
    '{"model": "text", "prompt": "a", "stream": true, "logprobs": 1}',
    '{"model": "text", "prompt": "\\u00ff\\u0101"}',
    '{"model": "\\ud800", "prompt": "a"}',
    '{"model": "text", "prompt": "a", "label": "\\ud800"}',
    '{"model": "text", "prompt": "a", "\\ud800": 1}',
    '{"model": "text", "prompt": "a", "greedy": true, "temperature": 0.5}',
    '[1, 2]',
])
def test_bad_requests_get_a_4xx_with_an_openai_error_object(server: tuple[str, str], body: str) -> None:
    url, _ = server
    answer = httpx.post(f"{url}/v1/completions", content=body.encode(),
                        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
    error = answer.json()["error"]
    assert error["message"] and error["type"] and "\n" not in error["message"]
