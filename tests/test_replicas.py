"""Serving replicas end to end: two `chargen serve` processes sharing one PostgreSQL database.

Real processes started through the CLI, real loopback ports, a real server (tests/pg_support.py).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mido
import pytest
from pg_support import connect
from service_support import free_port, make_checkpoint, parse_sse

from chargen.history import SCHEMA_VERSION, History
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow  # real processes or servers: `make test-fast` leaves them out

BASICS = REPO / "corpora" / "midi-basics"


class Replica:
    """``chargen serve`` in a child process on its own free loopback port."""

    def __init__(self, models: list[str], database: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        env.pop("CHARGEN_API_TOKEN", None)
        self._log = open(log, "wb")
        self.log_path = log
        args = [arg for model in models for arg in ("-c", model)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chargen", "serve", "--port", str(self.port), "--database", database,
             "--max-length", "1000000", "--log-level", "warning", *args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"replica exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"replica not ready after {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def music_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MIDI model trained a few steps on the bundled corpus (enough to be a real checkpoint)."""
    root = tmp_path_factory.mktemp("music")
    result = run_cli("train", str(BASICS), "--size", "tiny", "--max-steps", "5", "--eval-every", "5",
                     "--batch-size", "4", "--seq-len", "32", "--threads", "1", "--run-name", "music",
                     "--out", str(root), "--quiet", "--no-log")
    assert result.returncode == 0, result.stderr
    return root / "music"


@pytest.fixture
def postgres_url(postgres_server) -> Iterator[str]:
    """A fresh database, named the way the README tells users to: ``postgresql://user@host/db``."""
    with postgres_server.database(driver="postgresql") as url:
        yield url


@pytest.fixture
def replicas(postgres_url: str, music_run: Path, tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    """Two replicas started at the same moment on an EMPTY database: both create the schema."""
    text = make_checkpoint(tmp_path / "text.safetensors", seed=1)
    models = [f"text={text}", f"music={music_run}"]
    pair = (Replica(models, postgres_url, tmp_path / "a.log"), Replica(models, postgres_url, tmp_path / "b.log"))
    try:
        for replica in pair:
            replica.wait_ready()
        yield pair
    finally:
        for replica in pair:
            replica.stop()


def _generate(base: str, **body: object) -> dict:
    response = httpx.post(base + "/v1/generate", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _assert_consistent(url: str) -> int:
    """Every generation row has all its outputs (as many as it asked for); returns the row count."""
    with History(url) as history:
        rows = history.list_generations(limit=None)
    for row in rows:
        assert len(row.outputs) == row.params["num_samples"], row
        assert [o.text for o in row.outputs] and all(isinstance(o.text, str) for o in row.outputs)
    with connect(url) as conn:
        orphans = conn.execute("SELECT count(*) FROM generation_outputs o WHERE NOT EXISTS "
                               "(SELECT 1 FROM generations g WHERE g.id = o.generation_id)").fetchone()
        empty = conn.execute("SELECT count(*) FROM generations g WHERE NOT EXISTS "
                             "(SELECT 1 FROM generation_outputs o WHERE o.generation_id = g.id)").fetchone()
    assert orphans == (0,) and empty == (0,)
    return len(rows)


def test_a_generation_made_through_one_replica_is_served_by_the_other(
        replicas: tuple[Replica, Replica], postgres_url: str, tmp_path: Path) -> None:
    a, b = replicas
    with connect(postgres_url) as conn:  # two servers started together: one schema, made once
        assert conn.execute("SELECT id, version FROM schema_version").fetchall() == [(1, SCHEMA_VERSION)]

    made = _generate(a.url, model="text", prime="the ", length=40, num_samples=2, seed=3)
    gid = made["history_id"]
    assert gid
    listed = httpx.get(b.url + "/v1/generations", params={"limit": 5}).json()["generations"]
    assert [g["id"] for g in listed] == [gid]
    assert httpx.get(b.url + "/v1/generations", params={"q": made["samples"][1]["text"][:6]}).json()[
        "generations"][0]["id"] == gid
    fetched = httpx.get(f"{b.url}/v1/generations/{gid[:12]}").json()
    assert fetched["id"] == gid and fetched["model"] == "text"
    assert [o["text"] for o in fetched["outputs"]] == [s["text"] for s in made["samples"]]
    exported = run_cli("history", "export", gid, "--sample", "2", "--database", postgres_url)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == "the " + made["samples"][1]["text"] + "\n"

    music = _generate(b.url, model="music", length=120, seed=5)  # the other way round, and music
    mid_from_a = httpx.get(f"{a.url}/v1/generations/{music['history_id']}.mid")
    assert mid_from_a.status_code == 200 and mid_from_a.headers["content-type"] == "audio/midi"
    assert mid_from_a.content == httpx.get(f"{b.url}/v1/generations/{music['history_id']}.mid").content
    midi = mido.MidiFile(file=io.BytesIO(mid_from_a.content))
    assert midi.type == 1 and midi.tracks
    assert httpx.get(f"{a.url}/v1/generations/{music['history_id']}").json()["midi_url"] == \
        f"/v1/generations/{music['history_id']}.mid"
    assert _assert_consistent(postgres_url) == 2


def test_killing_one_replica_mid_generation_leaves_the_other_serving_and_no_half_row(
        replicas: tuple[Replica, Replica], postgres_url: str) -> None:
    a, b = replicas
    before = _generate(a.url, model="text", length=20, num_samples=3, seed=1)["history_id"]
    finished: list[str] = []
    stop = threading.Event()

    def keep_a_busy() -> None:  # short requests to A, so history writes are in flight at the kill
        while not stop.is_set():
            try:
                got = httpx.post(a.url + "/v1/generate", timeout=30,
                                 json={"model": "text", "length": 5, "num_samples": 3}).json()
                finished.append(got["history_id"])
            except (httpx.HTTPError, ValueError, KeyError):
                return

    busy = threading.Thread(target=keep_a_busy, daemon=True)
    busy.start()
    tokens = 0
    with httpx.stream("POST", a.url + "/v1/generate", timeout=60,
                      json={"model": "text", "length": 1000000, "num_samples": 2, "stream": True}) as response:
        assert response.status_code == 200
        try:
            for event, _data in parse_sse(response.iter_lines()):
                if event == "token":
                    tokens += 1
                    # Well into a generation that would run for minutes yet, with A writing rows.
                    if tokens >= 20 and len(finished) >= 5 and a.proc.poll() is None:
                        a.proc.send_signal(signal.SIGKILL)
                assert event != "done"
        except httpx.HTTPError:
            pass  # the connection dies with the process
    stop.set()
    busy.join(30)
    assert a.proc.wait(30) == -signal.SIGKILL and tokens >= 20 and len(finished) >= 5

    assert httpx.get(b.url + "/healthz").status_code == 200
    after = _generate(b.url, model="text", prime="after ", length=20, seed=2)["history_id"]
    listed = {g["id"] for g in httpx.get(b.url + "/v1/generations", params={"limit": 3}).json()["generations"]}
    assert after in listed
    count = _assert_consistent(postgres_url)  # every row whole, whenever the kill came
    with History(postgres_url) as history:
        ids = {g.id for g in history.list_generations(limit=None)}
    answered = {gid for gid in finished if gid}
    assert {before, after} | answered <= ids
    # The killed stream left no row; at most one more: a request A wrote but never answered.
    assert len(answered) + 2 <= count <= len(answered) + 3
