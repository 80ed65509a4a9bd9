"""Schema-driven fuzzing of the running service: requests built from its own OpenAPI document,
valid and invalid ones, must never get a 5xx (nor a 500 inside an event stream)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from service_support import make_checkpoint, thread_server

from chargen.checkpoint import load_checkpoint
from chargen.serve import Limits, create_app

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("schema")
    models = {"tiny": load_checkpoint(make_checkpoint(folder / "tiny.safetensors"))}
    database = f"sqlite:///{folder / 'history.db'}"
    # Small caps keep every accepted request quick.
    limits = Limits(max_length=64, max_beam_width=4, max_samples=3, max_prime_chars=100, max_list=20)
    with thread_server(create_app(models, database, None, limits)) as base:
        yield base


@pytest.mark.slow
@pytest.mark.parametrize(("operation", "examples"), [("POST /v1/generate", 60), ("all", 40)])
def test_no_server_errors(url: str, operation: str, examples: int) -> None:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    if operation != "all":  # generation gets its own budget: it has the most parameters
        method, path = operation.split()
        schema = schema[path][method]
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=url, timeout=30)
        where = f"{case.method} {case.formatted_path} {case.body!r} -> {response.status_code} {response.text[:300]}"
        assert response.status_code < 500, where
        content_type = response.headers.get("content-type") or [""]  # schemathesis: header -> list of values
        if content_type[0].startswith("text/event-stream"):
            assert '"status": 500' not in response.text, where

    check()
