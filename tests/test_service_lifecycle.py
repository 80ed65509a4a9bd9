"""Stopping a real server process mid-generation, then restarting it on the same database."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import ServerProcess, make_checkpoint, parse_sse

pytestmark = pytest.mark.slow  # real processes or servers: `make test-fast` leaves them out

LONG = 1_000_000  # tokens: far more than the test waits for


def wait_inflight(http: httpx.Client, count: int) -> None:
    deadline = time.monotonic() + 20
    while http.get("/v1/stats").json()["models"]["tiny"]["inflight"] < count:
        assert time.monotonic() < deadline, "requests never started"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_generation_then_restart(tmp_path: Path, sig: signal.Signals) -> None:
    weights = make_checkpoint(tmp_path / "tiny.safetensors")
    database = f"sqlite:///{tmp_path / 'history.db'}"
    args: dict[str, Any] = {"database": database, "limits": {"max_length": LONG}}
    first = ServerProcess([f"tiny={weights}"], log_path=tmp_path / "first.log", **args).wait_ready()
    plain: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=first.url, timeout=60) as http:
            complete = http.post("/v1/generate", json={"prime": "ab", "length": 50, "seed": 1}).json()

            def blocking() -> None:  # a non-streaming request in flight when the signal comes
                response = httpx.post(first.url + "/v1/generate", json={"length": LONG}, timeout=60)
                plain.update(status=response.status_code, body=response.json())

            waiter = threading.Thread(target=blocking)
            waiter.start()
            with http.stream("POST", "/v1/generate", json={"length": LONG, "stream": True}) as response:
                events = parse_sse(response.iter_lines())
                seen = [next(events), next(events)]
                assert [name for name, _ in seen] == ["start", "token"]  # generating now
                wait_inflight(http, 2)
                signalled = time.monotonic()
                first.signal(sig)
                seen.extend(events)
            waiter.join(30)
        returncode = first.proc.wait(30)
        stopped_in = time.monotonic() - signalled
    finally:
        first.stop()
    assert returncode in (0, -sig), first.log()
    assert stopped_in < 8, f"took {stopped_in:.1f}s to stop"
    name, data = seen[-1]
    assert name == "error" and data["status"] == 503 and "shutting down" in data["detail"], seen[-3:]
    assert plain["status"] == 503 and "shutting down" in plain["body"]["detail"]

    with ServerProcess([f"tiny={weights}"], log_path=tmp_path / "second.log", **args) as second, \
            httpx.Client(base_url=second.url, timeout=60) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        again = http.post("/v1/generate", json={"prime": "ab", "length": 50, "seed": 1}).json()
        assert again["samples"] == complete["samples"]
        rows = http.get("/v1/generations", params={"limit": 50}).json()["generations"]
        # The finished generation and the new one; nothing from the two that were stopped.
        assert [row["id"] for row in rows] == [again["history_id"], complete["history_id"]]
        for row in rows:
            assert [len(o["text"]) for o in row["outputs"]] == [50]
            assert row["outputs"][0]["text"] == complete["samples"][0]["text"]
