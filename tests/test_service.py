"""chargen serve over real HTTP: generation, streaming, batching, models, auth, limits, errors."""

from __future__ import annotations

import base64
import contextlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import ServerProcess, make_checkpoint, parse_sse, reference, thread_server

from chargen.codecs.base import Codec
from chargen.codecs.midi import MidiCodec, stream_notes
from chargen.codecs.midi.note_codec import NoteCodec
from chargen.runs.checkpoint import Checkpoint, load_checkpoint
from chargen.serve import Limits, create_app
from chargen.serve.page import INDEX, STATIC_DIR
from tests.conftest import DATABASES

LIMITS = Limits(max_length=1_000_000, max_beam_width=4, max_samples=3, max_prime_chars=200, max_body_bytes=4096,
                max_list=50)
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Checkpoint]:
    folder = tmp_path_factory.mktemp("ckpt")
    return {
        "tiny": load_checkpoint(make_checkpoint(folder / "tiny.safetensors", seed=0)),
        "gru": load_checkpoint(make_checkpoint(folder / "gru.safetensors", seed=1, cell="gru", layers=2)),
    }


@pytest.fixture(scope="module")
def url(models: dict[str, Checkpoint]) -> Iterator[str]:
    with thread_server(create_app(models, None, None, LIMITS)) as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as http:
        yield http


def generate(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def stats(client: httpx.Client, model: str) -> dict[str, int]:
    return client.get("/v1/stats").json()["models"][model]


def assert_same(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert got["params"] == expected["params"]
    assert [s["text"] for s in got["samples"]] == [s["text"] for s in expected["samples"]]
    # Rows batched with other requests may differ from a solo run in the last float bit.
    for mine, theirs in zip(got["samples"], expected["samples"]):
        assert mine["logprob"] == pytest.approx(theirs["logprob"], rel=1e-5)


def test_healthz(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "models": 2}


def test_models_lists_served_checkpoints(client: httpx.Client, models: dict[str, Checkpoint]) -> None:
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(listed) == {"tiny", "gru"}
    tiny = listed["tiny"]
    assert tiny["codec"] == "text"
    assert tiny["config"] == models["tiny"].config.to_dict()
    assert tiny["parameters"] == models["tiny"].model.num_parameters()
    assert tiny["best_val_loss"] == 2.5
    assert listed["gru"]["config"]["cell"] == "gru"
    assert "path" not in tiny  # no server filesystem paths in answers


@pytest.mark.parametrize("options", [
    {"seed": 7},
    {"seed": 8, "temperature": 0.7, "top_k": 5},
    {"seed": 9, "top_p": 0.8, "num_samples": 3},
    {"seed": 10, "no_repeat_ngram": 3},
    {"greedy": True, "seed": 11},
    {"greedy": True, "no_repeat_ngram": 0, "num_samples": 2, "seed": 12},
])
def test_seeded_generation_equals_generator(client: httpx.Client, models: dict[str, Checkpoint],
                                            options: dict[str, Any]) -> None:
    got = generate(client, model="tiny", prime="the ", length=60, **options)
    assert_same(got, reference(models["tiny"], "the ", length=60, **options))
    assert got["history_id"] is None  # this server has no history
    assert got["tokens"] == 60 * options.get("num_samples", 1)
    for sample in got["samples"]:
        assert len(sample["text"]) == 60 and sample["logprob"] < 0


def test_beam_search_equals_generator(client: httpx.Client, models: dict[str, Checkpoint]) -> None:
    got = generate(client, model="gru", prime="a fox", length=40, beam_width=4, num_samples=2, seed=3)
    assert got["decoder"] == "beam"
    assert_same(got, reference(models["gru"], "a fox", length=40, beam_width=4, num_samples=2, seed=3))


def test_default_prime_and_drawn_seed_are_reported(client: httpx.Client, models: dict[str, Checkpoint]) -> None:
    got = generate(client, model="tiny", length=20)
    assert got["prime"] == "" and isinstance(got["seed"], int)
    assert_same(got, reference(models["tiny"], None, length=20, seed=got["seed"]))


def test_stream_sends_tokens_then_done(client: httpx.Client, models: dict[str, Checkpoint]) -> None:
    body = {"model": "tiny", "prime": "once ", "length": 80, "seed": 21, "num_samples": 2, "stream": True}
    with client.stream("POST", "/v1/generate", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(parse_sse(response.iter_lines()))
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done" and set(names[1:-1]) == {"token"}
    assert events[0][1]["seed"] == 21
    done = events[-1][1]
    streamed = ["", ""]
    for _, data in events[1:-1]:
        streamed[data["index"]] += data["text"]
    assert streamed == [s["text"] for s in done["samples"]]
    assert "history_id" in done and all("logprob" in s for s in done["samples"])
    assert_same(done, reference(models["tiny"], "once ", length=80, seed=21, num_samples=2))


def test_stream_beam_sends_result_at_the_end(client: httpx.Client) -> None:
    body = {"model": "tiny", "length": 10, "beam_width": 2, "stream": True}
    with client.stream("POST", "/v1/generate", json=body) as response:
        events = list(parse_sse(response.iter_lines()))
    assert [name for name, _ in events] == ["start", "done"]
    assert len(events[-1][1]["samples"][0]["text"]) == 10


def test_concurrent_requests_share_model_steps(url: str, client: httpx.Client,
                                               models: dict[str, Checkpoint]) -> None:
    """A long stream keeps the batch busy; a burst of seeded requests joins it, and each still
    returns exactly what Generator.generate returns for its seed."""
    before = stats(client, "tiny")
    settings: list[dict[str, Any]] = [{"temperature": 0.9}, {"temperature": 0.9, "top_k": 5},
                                      {"top_p": 0.7, "no_repeat_ngram": 4}, {"greedy": True}]
    burst = [{"seed": 100 + i, "length": 150 + 10 * i, "num_samples": 1 + i % 3, **settings[i % 4]}
             for i in range(8)]
    results: list[dict[str, Any] | None] = [None] * len(burst)
    start = threading.Barrier(len(burst))

    def run(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            start.wait()
            results[i] = generate(http, model="tiny", prime="so ", **burst[i])

    with client.stream("POST", "/v1/generate", json={"model": "tiny", "length": 50_000, "stream": True}) as long:
        events = parse_sse(long.iter_lines())
        assert next(events)[0] == "start"
        assert next(events)[0] == "token"  # the long request is now running in the batch
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(burst))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    # Leaving the stream cancels its generation: its rows leave the batch.
    deadline = time.monotonic() + 10
    while (now := stats(client, "tiny"))["active_rows"] or now["inflight"]:
        assert time.monotonic() < deadline, now
        time.sleep(0.05)
    steps, tokens = now["steps"] - before["steps"], now["tokens"] - before["tokens"]
    assert now["max_batch_requests"] >= 2
    assert now["max_batch_rows"] >= 3
    assert steps < tokens  # one step served several requests' tokens
    for options, got in zip(burst, results):
        assert got is not None
        assert_same(got, reference(models["tiny"], "so ", **options))


def test_client_that_hangs_up_frees_its_rows(url: str, client: httpx.Client) -> None:
    before = stats(client, "tiny")["tokens"]
    with pytest.raises(httpx.ReadTimeout):  # the server would need minutes for a million tokens
        httpx.post(url + "/v1/generate", json={"model": "tiny", "length": 1_000_000}, timeout=0.5)
    deadline = time.monotonic() + 5
    while (now := stats(client, "tiny"))["active_rows"] or now["inflight"]:
        assert time.monotonic() < deadline, now
        time.sleep(0.05)
    # Stopped when the client left, not by finishing: far fewer tokens than asked were generated.
    assert now["tokens"] - before < 200_000, now


def test_unknown_model_is_404(client: httpx.Client) -> None:
    response = client.post("/v1/generate", json={"model": "nope", "length": 5})
    assert response.status_code == 404
    assert "nope" in response.json()["detail"] and "tiny" in response.json()["detail"]


def test_model_required_when_several_are_served(client: httpx.Client) -> None:
    response = client.post("/v1/generate", json={"length": 5})
    assert response.status_code == 422
    assert "model is required" in response.json()["detail"]


@pytest.mark.parametrize("name", ["../tiny", "/etc/passwd", "a/b", "..", "./tiny", "C:\\models\\x", "tiny\x00",
                                  "~/x", "%2e%2e%2ftiny", "tiny.safetensors/../../x"])
def test_path_like_model_names_are_refused(client: httpx.Client, name: str) -> None:
    response = client.post("/v1/generate", json={"model": name, "length": 5})
    assert response.status_code in (404, 422), response.text
    response = client.get("/v1/generations", params={"model": name})
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize("body", [
    {"model": "tiny", "length": "many"},
    {"model": "tiny", "length": -1},
    {"model": "tiny", "temperature": 0},
    {"model": "tiny", "top_p": 1.5},
    {"model": "tiny", "top_k": 0},
    {"model": "tiny", "seed": -5},
    {"model": "tiny", "format": "wav"},
    {"model": "tiny", "beam": 3},  # unknown field: a typo must not be silently ignored
    {"model": 5},
    [],
])
def test_bad_body_is_422(client: httpx.Client, body: Any) -> None:
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 422, response.text


def test_malformed_json_is_422(client: httpx.Client) -> None:
    response = client.post("/v1/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


@pytest.mark.parametrize(("body", "limit"), [
    ({"length": 1_000_001}, "max_length"),
    ({"beam_width": 5, "length": 5}, "max_beam_width"),
    ({"num_samples": 4, "length": 5}, "max_samples"),
    ({"prime": "a" * 201, "length": 5}, "max_prime_chars"),
])
def test_limits_answer_4xx_naming_the_limit(client: httpx.Client, body: dict[str, Any], limit: str) -> None:
    response = client.post("/v1/generate", json={"model": "tiny", **body})
    assert response.status_code == 422
    assert response.json()["limit"] == limit
    assert limit in response.json()["detail"]


def test_body_size_limit(client: httpx.Client) -> None:
    big = b'{"model": "tiny", "prime": "' + b"a" * 5000 + b'"}'
    response = client.post("/v1/generate", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "max_body_bytes=4096" in response.json()["detail"]
    # Chunked, without a Content-Length: the cap holds too.
    chunked = client.post("/v1/generate", content=iter([big[:3000], big[3000:]]),
                          headers={"content-type": "application/json"})
    assert chunked.status_code == 413


def test_history_list_limit_is_named(client: httpx.Client) -> None:
    response = client.get("/v1/generations", params={"limit": 10_000})
    assert response.status_code in (404, 422)  # 404: no history on this server; checked before the cap


@pytest.mark.parametrize(("body", "message"), [
    ({"prime": "ABC"}, "not in the model's vocabulary"),
    ({"beam_width": 2, "num_samples": 3}, "exceeds beam_width"),
    ({"greedy": True, "beam_width": 2}, "different decoders"),
    ({"format": "midi"}, "needs a music model"),
    ({"greedy": True, "temperature": 0.5}, "greedy decoding takes no temperature"),  # as `chargen sample` says
])
def test_chargen_errors_are_400_with_their_message(client: httpx.Client, body: dict[str, Any],
                                                   message: str) -> None:
    response = client.post("/v1/generate", json={"model": "tiny", "length": 5, **body})
    assert response.status_code == 400
    assert message in response.json()["detail"]


@pytest.mark.parametrize("options", [{"seed": 1}, {"greedy": True}])
def test_no_repeat_ngram_that_bans_everything_yields_as_the_cli_does(client: httpx.Client,
                                                                      models: dict[str, Checkpoint],
                                                                      options: dict[str, Any]) -> None:
    # n=1 bans every token already produced: with 30 symbols, token 31 has nowhere to go, and the
    # ban yields for that step (no 400, no token 0), exactly as in `chargen sample`.
    body = {"model": "tiny", "length": 40, "no_repeat_ngram": 1, **options}
    got = generate(client, **body)
    assert got["samples"][0]["text"] == reference(models["tiny"], None, length=40, no_repeat_ngram=1,
                                                  **options)["samples"][0]["text"]
    assert len(set(got["samples"][0]["text"][:29])) == 29  # no repeats until the ban covers everything
    with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as streamed:
        events = list(parse_sse(streamed.iter_lines()))
    assert events[-1][0] == "done"


@pytest.mark.parametrize("raw", [
    b'{"model": "tiny", "temperature": NaN}',
    b'{"model": "tiny", "temperature": Infinity}',
    b'{"model": "tiny", "top_p": -Infinity}',
    b'{"model": "tiny", "length": NaN}',
    b'{"model": "tiny", "seed": Infinity}',
    b'{"model": "tiny", "top_k": NaN}',
    b'{"model": "tiny", "no_repeat_ngram": -Infinity}',
    b'{"model": "tiny", "nonsense": NaN}',
    b'{"model": "tiny", "length": true}',
    b'{"model": "tiny", "length": 3.0}',
    b'{"model": "tiny", "num_samples": "2"}',
    b'{"model": "tiny", "greedy": 1}',
])
def test_non_finite_and_loosely_typed_values_are_422(client: httpx.Client, raw: bytes) -> None:
    response = client.post("/v1/generate", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]  # strict JSON: a non-finite value is never echoed back
    assert "NaN" not in response.text and "Infinity" not in response.text
    assert detail and all(error["loc"][0] == "body" for error in detail)


def test_zero_length(client: httpx.Client) -> None:
    got = generate(client, model="tiny", length=0, num_samples=2)
    assert [s["text"] for s in got["samples"]] == ["", ""]


def test_history_endpoints_without_history(client: httpx.Client) -> None:
    for path in ("/v1/generations", "/v1/generations/01ABC", "/v1/generations/01ABC.mid"):
        response = client.get(path)
        assert response.status_code == 404
        assert "history is not enabled" in response.json()["detail"]


def test_page_is_self_contained(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert page == INDEX.read_text()
    # Its style sheets and scripts are the files in static/, from this server: no inline code for the CSP to allow.
    linked = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(linked) == sorted(f"/static/{f.name}" for f in STATIC_DIR.iterdir() if f.suffix in (".css", ".js"))
    assets = {}
    for path in linked:
        answer = assets[path] = client.get(path)
        kind = "text/css" if path.endswith(".css") else "text/javascript"
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind), path
        assert answer.text == (STATIC_DIR / path.removeprefix("/static/")).read_text()
    assert client.get("/static/../page.py").status_code == 404 and client.get("/static/nothing.js").status_code == 404
    assert "<style" not in page and " style=" not in page and " on" + "click=" not in page
    assert re.findall(r"<script[^>]*>", page) == [f'<script src="{path}">' for path in linked if path.endswith(".js")]
    for needle in ('id="model"', 'id="generate"', 'id="gen"', "<canvas"):
        assert needle in page
    script = "".join(answer.text for path, answer in assets.items() if path.endswith(".js"))
    assert "getReader()" in script
    for text in (page, *(answer.text for answer in assets.values())):
        assert "http://" not in text and "https://" not in text  # no external assets
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self' blob:" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    # Every API path the page's script calls is one this server serves.
    served = {re.match(r"/v1/[a-z]+", route).group(0) for route in client.get("/openapi.json").json()["paths"]
              if route.startswith("/v1/")}
    called = set(re.findall(r"/v1/[a-z]+", script))
    assert called and called <= served, called - served


def test_openapi_schema_documents_generate(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/v1/models", "/v1/generate", "/v1/generations", "/v1/generations/{gen_id}", "/healthz"} <= set(
        schema["paths"])


# -- auth ------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_url(models: dict[str, Checkpoint]) -> Iterator[str]:
    with thread_server(create_app({"tiny": models["tiny"]}, None, TOKEN, LIMITS)) as base:
        yield base


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/"), ("GET", "/v1/models"), ("POST", "/v1/generate"), ("GET", "/v1/generations"),
    ("GET", "/v1/generations/01ABC"), ("GET", "/v1/stats"), ("GET", "/openapi.json"), ("GET", "/nope"),
])
def test_token_required_everywhere_but_healthz(token_url: str, method: str, path: str) -> None:
    with httpx.Client(base_url=token_url, timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": "Basic !!!"}):
            response = http.request(method, path, headers=headers, json={"length": 3})
            assert response.status_code == 401, (headers, response.text)
            assert "www-authenticate" in response.headers
        assert http.get("/healthz").status_code == 200


def test_token_accepted_as_bearer_or_basic(token_url: str) -> None:
    with httpx.Client(base_url=token_url, timeout=30) as http:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert http.get("/v1/models", headers=bearer).status_code == 200
        got = http.post("/v1/generate", json={"length": 7}, headers=bearer)
        assert got.status_code == 200 and len(got.json()["samples"][0]["text"]) == 7
        basic = {"Authorization": "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()}
        page = http.get("/", headers=basic)
        assert page.status_code == 200 and "chargen" in page.text
        assert http.get("/", headers={}).headers["www-authenticate"].startswith("Basic")


def test_body_limit_applies_after_auth(token_url: str) -> None:
    with httpx.Client(base_url=token_url, timeout=30) as http:
        big = b"x" * 10_000
        assert http.post("/v1/generate", content=big).status_code == 401
        assert http.post("/v1/generate", content=big, headers={"Authorization": f"Bearer {TOKEN}"}).status_code \
            == 413


# -- music -----------------------------------------------------------------


@pytest.mark.parametrize("codec", [MidiCodec(), NoteCodec()], ids=["midi", "midi-notes"])
def test_midi_format_returns_a_midi_file(tmp_path: Path, codec: Codec) -> None:
    import io

    import mido

    ckpt = load_checkpoint(make_checkpoint(tmp_path / "music.safetensors", codec, seed=4))
    with thread_server(create_app({"music": ckpt}, None, None, LIMITS)) as base, \
            httpx.Client(base_url=base, timeout=60) as http:
        model = http.get("/v1/models").json()["models"][0]
        assert model["codec"] == codec.name and model["music"] is True
        got = generate(http, length=200, seed=5, format="midi")
        sample = got["samples"][0]
        midi = mido.MidiFile(file=io.BytesIO(base64.b64decode(sample["midi_base64"])))
        assert midi.length >= 0
        # The piano roll's notes are the notes the model's own codec reads from its tokens.
        expected = stream_notes(codec.encode(sample["text"]), codec.vocab)  # type: ignore[attr-defined]
        assert [(p, round(s, 2), round(e, 2)) for p, s, e, _ in sample["notes"]] == \
            [(n.pitch, round(n.start * 0.01, 2), round(min(n.end - n.start, 500) * 0.01 + n.start * 0.01, 2))
             for n in expected]
        for pitch, start, end, velocity in sample["notes"]:
            assert 0 <= pitch < 128 and 0 <= start <= end and 0 < velocity < 128
        assert_same(got, reference(ckpt, None, length=200, seed=5))
        primed = generate(http, prime=ckpt.codec.default_prime * 2, length=20, seed=6, format="text")
        assert len(primed["samples"][0]["text"]) == 20


# -- history -----------------------------------------------------------------


@pytest.fixture(scope="module", params=DATABASES)
def history_url(request: pytest.FixtureRequest, models: dict[str, Checkpoint],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server whose history is an SQLite file, then a PostgreSQL database."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            database = f"sqlite:///{tmp_path_factory.mktemp('history') / 'history.db'}"
        else:
            database = stack.enter_context(request.getfixturevalue("postgres_server").database())
        yield stack.enter_context(thread_server(create_app(models, database, None, LIMITS)))


def test_generations_are_recorded_and_searchable(history_url: str, models: dict[str, Checkpoint]) -> None:
    with httpx.Client(base_url=history_url, timeout=60) as http:
        first = generate(http, model="tiny", prime="the cat ", length=30, seed=1, num_samples=2)
        second = generate(http, model="gru", prime="a dog ", length=20, greedy=True)
        assert first["history_id"] and second["history_id"]
        with http.stream("POST", "/v1/generate", json={"model": "tiny", "prime": "bird ", "length": 10,
                                                        "stream": True}) as response:
            done = list(parse_sse(response.iter_lines()))[-1]
        assert done[0] == "done" and done[1]["history_id"]

        listed = http.get("/v1/generations").json()["generations"]
        assert [g["id"] for g in listed[:3]] == [done[1]["history_id"], second["history_id"], first["history_id"]]
        assert http.get("/v1/generations", params={"limit": 1}).json()["generations"][0]["id"] == \
            done[1]["history_id"]
        found = http.get("/v1/generations", params={"q": "THE CAT"}).json()["generations"]
        assert [g["id"] for g in found] == [first["history_id"]]
        by_model = http.get("/v1/generations", params={"model": "gru"}).json()["generations"]
        assert [g["id"] for g in by_model] == [second["history_id"]]
        over = http.get("/v1/generations", params={"limit": 51})
        assert over.status_code == 422 and over.json()["limit"] == "max_list"

        record = http.get(f"/v1/generations/{first['history_id']}").json()
        assert record["model"] == "tiny" and record["prime"] == "the cat " and record["seed"] == 1
        assert [o["text"] for o in record["outputs"]] == [s["text"] for s in first["samples"]]
        assert [o["logprob"] for o in record["outputs"]] == pytest.approx([s["logprob"] for s in first["samples"]])
        assert http.get(f"/v1/generations/{first['history_id'][:12]}").json()["id"] == first["history_id"]
        assert http.get("/v1/generations/0000000000000000000000000Z").status_code == 404
        assert http.get(f"/v1/generations/{first['history_id']}.mid").status_code == 404  # text, not music


def test_midi_download_from_history(tmp_path: Path, database_url: str) -> None:
    import io

    import mido

    ckpt = load_checkpoint(make_checkpoint(tmp_path / "music.safetensors", MidiCodec(), seed=4))
    database = database_url
    with thread_server(create_app({"music": ckpt}, database, None, LIMITS)) as base, \
            httpx.Client(base_url=base, timeout=60) as http:
        got = generate(http, length=200, seed=5, format="midi", num_samples=2)
        url = got["samples"][1]["midi_url"]
        response = http.get(url)
        assert response.status_code == 200 and response.headers["content-type"] == "audio/midi"
        assert response.content == base64.b64decode(got["samples"][1]["midi_base64"])
        mido.MidiFile(file=io.BytesIO(response.content))
        assert http.get(f"/v1/generations/{got['history_id']}.mid", params={"index": 2}).status_code == 404


@pytest.mark.parametrize("prime, codec", [(None, MidiCodec()), ("primed", MidiCodec()), ("primed", NoteCodec())],
                         ids=["midi", "midi-primed", "midi-notes-primed"])
@pytest.mark.slow
def test_history_export_of_a_served_midi_generation_is_the_served_file(tmp_path: Path, prime: str | None,
                                                                       codec: Codec) -> None:
    """`chargen history export ID -o x.mid` writes, byte for byte, the .mid the service answered with."""
    from click.testing import CliRunner

    from chargen.cli import cli

    path = make_checkpoint(tmp_path / "music.safetensors", codec, seed=4)
    database = f"sqlite:///{tmp_path / 'history.db'}"
    body: dict[str, Any] = {"length": 300, "seed": 5, "format": "midi", "num_samples": 2}
    export_args = []
    if prime:  # the service's .mid holds the generated part only: export that part
        body["prime"] = codec.default_prime * 3
        export_args = ["--no-prime"]
    with ServerProcess([str(path)], database=database) as server:
        got = httpx.post(server.url + "/v1/generate", json=body, timeout=120)
        assert got.status_code == 200, got.text
        got = got.json()
        downloaded = httpx.get(server.url + got["samples"][1]["midi_url"], timeout=60).content
    served = [base64.b64decode(s["midi_base64"]) for s in got["samples"]]
    assert downloaded == served[1]
    for number, expected in enumerate(served, start=1):
        out = tmp_path / f"export-{number}.mid"
        result = CliRunner().invoke(cli, ["history", "export", got["history_id"], "-o", str(out),
                                          "--sample", str(number), "--database", database, *export_args])
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == expected


def test_served_generation_replays_from_history(database_url: str, models: dict[str, Checkpoint]) -> None:
    from chargen import records

    database = database_url
    with thread_server(create_app(models, database, None, LIMITS)) as base, \
            httpx.Client(base_url=base, timeout=60) as http:
        got = generate(http, model="tiny", prime="the ", length=40, temperature=0.9, top_k=10, num_samples=2)
    outcome = records.replay(database, got["history_id"])  # what `chargen history replay ID` runs
    assert outcome.identical, outcome.first_difference()
    assert outcome.recorded == [s["text"] for s in got["samples"]]
