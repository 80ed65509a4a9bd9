"""The service's history tests (tests/test_service.py) again, with the server's history on PostgreSQL."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import mido
import pytest
from service_support import make_checkpoint, thread_server
from test_service import (  # noqa: F401  (models: a fixture; the test: run again here)
    LIMITS,
    generate,
    models,
    test_generations_are_recorded_and_searchable,
)

from chargen import records
from chargen.midi import MidiCodec
from chargen.runs.checkpoint import Checkpoint, load_checkpoint
from chargen.serve import create_app


@pytest.fixture(scope="module")
def history_url(models: dict[str, Checkpoint], postgres_server) -> Iterator[str]:  # noqa: F811
    with postgres_server.database() as database, \
            thread_server(create_app(models, database, None, LIMITS)) as base:
        yield base


# test_service's other two history tests name their SQLite file inline: their counterparts.


def test_midi_download_from_history_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    ckpt = load_checkpoint(make_checkpoint(tmp_path / "music.safetensors", MidiCodec(), seed=4))
    with thread_server(create_app({"music": ckpt}, postgres_url, None, LIMITS)) as base, \
            httpx.Client(base_url=base, timeout=60) as http:
        got = generate(http, length=200, seed=5, format="midi", num_samples=2)
        response = http.get(got["samples"][1]["midi_url"])
        assert response.status_code == 200 and response.headers["content-type"] == "audio/midi"
        assert response.content == base64.b64decode(got["samples"][1]["midi_base64"])
        mido.MidiFile(file=io.BytesIO(response.content))
        assert http.get(f"/v1/generations/{got['history_id']}.mid", params={"index": 2}).status_code == 404


def test_served_generation_replays_from_history_on_postgresql(models: dict[str, Checkpoint],  # noqa: F811
                                                               postgres_url: str) -> None:
    with thread_server(create_app(models, postgres_url, None, LIMITS)) as base, \
            httpx.Client(base_url=base, timeout=60) as http:
        got = generate(http, model="tiny", prime="the ", length=40, temperature=0.9, top_k=10, num_samples=2)
    outcome = records.replay(postgres_url, got["history_id"])  # what `chargen history replay ID` runs
    assert outcome.identical, outcome.first_difference()
    assert outcome.recorded == [s["text"] for s in got["samples"]]
