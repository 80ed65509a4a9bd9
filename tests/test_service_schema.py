"""Schema-driven fuzzing of the running service: requests built from its own OpenAPI document, valid and
invalid ones, for every operation it documents, must never get a 5xx (nor a 500 inside an event stream);
and hostile strings (control characters, lone surrogates, NUL) in every request field get a JSON 4xx or
a proper answer, never a 5xx.

``CHARGEN_FUZZ_EXAMPLES`` (default 12) sets the examples per operation (generation gets three times as
many: it has the most parameters); a longer run: ``CHARGEN_FUZZ_EXAMPLES=500 pytest tests/test_service_schema.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from service_support import make_checkpoint, thread_server

from chargen.runs.checkpoint import load_checkpoint
from chargen.serve import Limits, create_app

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from chargen.serve.page import STATIC_DIR  # noqa: E402

EXAMPLES = int(os.environ.get("CHARGEN_FUZZ_EXAMPLES", "12"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 12, database=None,
                suppress_health_check=list(HealthCheck))
#: What the page and its assets are served at: not in the OpenAPI document, fuzzed by hand below.
UNDOCUMENTED = ("/", *(f"/static/{path.name}" for path in sorted(STATIC_DIR.iterdir())))


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("schema")
    models = {"tiny": load_checkpoint(make_checkpoint(folder / "tiny.safetensors"))}
    database = f"sqlite:///{folder / 'history.db'}"
    # Small caps keep every accepted request quick.
    limits = Limits(max_length=64, max_beam_width=4, max_samples=3, max_prime_chars=100, max_list=20)
    with thread_server(create_app(models, database, None, limits)) as base:
        assert httpx.post(base + "/v1/generate", json={"prime": "the ", "length": 10}).status_code == 200
        yield base


def _operations(url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def _check_answer(where: str, status: int, content_type: str, text: str) -> None:
    assert status < 500, where
    if content_type.startswith("application/json"):
        json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON: {where}"))
    if content_type.startswith("text/event-stream"):
        assert '"status": 500' not in text, where


@pytest.mark.slow
def test_every_operation_is_fuzzed_without_server_errors(url: str) -> None:
    operations = _operations(url)
    documented = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"POST /v1/generate", "GET /v1/generations", "GET /v1/models/{name}/curve"} <= documented
    for operation in operations:
        cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE))
        budget = EXAMPLES * (3 if operation.path == "/v1/generate" else 1)

        @settings(FUZZ, max_examples=budget)
        @given(case=cases)
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=url, timeout=30)
            event(f"{case.method} {case.path}: {response.status_code}")
            content_type = (response.headers.get("content-type") or [""])[0]  # schemathesis: header -> values
            where = f"{case.method} {case.formatted_path} {case.body!r} -> {response.status_code} {response.text[:300]}"
            _check_answer(where, response.status_code, content_type, response.text)

        check()


# ----------------------------------------------------------------------------- hostile strings in every field

HOSTILE = st.one_of(
    st.sampled_from(["\x00", "\ud800", "\udfff", "a\x00b", "\x1b[31m", "\r\n", "\x07", "\u202e", "\x9b", "",
                     "the\x00", "%00", "\\u0000", "\ufeff"]),
    st.text(st.characters(categories=["Cc", "Cs", "Cf", "Zl", "Zp", "Co"]), max_size=6),
    st.text(max_size=8),
)
BODY_FIELDS = ["model", "prime", "label", "format", "temperature", "length", "seed", "grammar", "stream"]


def _raw_json(value: Any) -> bytes:
    """JSON a client could send: lone surrogates as \\ud800 escapes (which no UTF-8 encoder writes raw)."""
    return json.dumps(value, ensure_ascii=True).encode()


@pytest.mark.slow
@FUZZ
@given(fields=st.dictionaries(st.one_of(st.sampled_from(BODY_FIELDS), HOSTILE), HOSTILE, min_size=1, max_size=3),
       stream=st.booleans())
def test_hostile_strings_in_the_generate_body(url: str, fields: dict[str, str], stream: bool) -> None:
    body = dict(fields, length=5, stream=stream) if "length" not in fields else fields
    response = httpx.post(url + "/v1/generate", content=_raw_json(body), headers={"Content-Type": "application/json"},
                          timeout=30)
    event(str(response.status_code))
    where = f"POST /v1/generate {body!r} -> {response.status_code} {response.text[:300]}"
    _check_answer(where, response.status_code, response.headers.get("content-type", ""), response.text)


@pytest.mark.slow
@FUZZ
@given(q=HOSTILE, model=HOSTILE, gen_id=HOSTILE, name=HOSTILE)
def test_hostile_strings_in_queries_and_paths(url: str, q: str, model: str, gen_id: str, name: str) -> None:
    def encode(text: str) -> str:  # percent-encoded UTF-8; a lone surrogate as its (invalid) surrogate bytes
        return "".join(f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass"))

    for path in (f"/v1/generations?q={encode(q)}", f"/v1/generations?q=x&model={encode(model)}",
                 f"/v1/generations/{encode(gen_id)}", f"/v1/generations/{encode(gen_id)}.mid",
                 f"/v1/models/{encode(name)}/curve", f"/?{encode(q)}"):
        response = httpx.get(url + path, timeout=30)
        where = f"GET {path} -> {response.status_code} {response.text[:300]}"
        _check_answer(where, response.status_code, response.headers.get("content-type", ""), response.text)


def test_the_undocumented_routes_answer(url: str) -> None:
    for path in UNDOCUMENTED:
        response = httpx.get(url + path)
        assert response.status_code == 200 and response.headers["x-content-type-options"] == "nosniff"
        assert httpx.post(url + path, content=b"\x00\xff").status_code == 405
