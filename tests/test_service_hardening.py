"""A hostile page in the browser (issue 27, items 3, 9, 10, 12's request body, 13's token, 14).

Real servers on loopback, real HTTP clients and raw sockets: a foreign ``Host`` (DNS rebinding) is
refused while the right names work; the page's headers keep it out of frames and allow no inline
code; a body that never completes is answered 408 and does not hold its connection; what a client
sends (lone surrogates, NUL) never makes a 500 or matches what it should not.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_support import ServerProcess, free_port, make_checkpoint, thread_server

from chargen.runs.checkpoint import load_checkpoint
from chargen.serve import Limits, create_app
from tests.conftest import REPO, assert_one_line_error, invoke, run_cli

FOREIGN = "rebind.attacker.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A loopback server without a token (the default set-up), with a history holding one generation."""
    folder = tmp_path_factory.mktemp("hardening")
    models = {"tiny": load_checkpoint(make_checkpoint(folder / "tiny.safetensors"))}
    with thread_server(create_app(models, f"sqlite:///{folder / 'h.db'}", None, Limits(body_timeout_s=1.0))) as url:
        assert httpx.post(url + "/v1/generate", json={"prime": "the ", "length": 20, "seed": 1}).status_code == 200
        yield url


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# ----------------------------------------------------------------------------- item 3: DNS rebinding


@pytest.mark.parametrize("path", ["/v1/generations", "/v1/models", "/", "/healthz", "/static/page.js"])
def test_a_foreign_host_is_refused(server: str, path: str) -> None:
    response = httpx.get(server + path, headers={"Host": f"{FOREIGN}:{port_of(server)}"})
    assert response.status_code == 421
    assert FOREIGN in response.json()["detail"] and "--allowed-host" in response.json()["detail"]
    assert "generations" not in response.text.replace("/v1/generations", "")


def test_the_right_names_still_work(server: str) -> None:
    port = port_of(server)
    for host in ("127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        response = httpx.get(server + "/v1/generations", headers={"Host": host})
        assert response.status_code == 200 and len(response.json()["generations"]) == 1, host


def test_a_missing_or_odd_host_is_refused(server: str) -> None:
    port = port_of(server)
    for raw in (b"GET /v1/generations HTTP/1.0\r\n\r\n",
                f"GET /v1/generations HTTP/1.1\r\nHost: 127.0.0.1.{FOREIGN}:{port}\r\n\r\n".encode(),
                f"GET /v1/generations HTTP/1.1\r\nHost: localhost@{FOREIGN}\r\n\r\n".encode()):
        assert raw_request(port, raw).startswith(b"HTTP/1.1 421"), raw


def raw_request(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.slow
def test_allowed_host_adds_names_to_a_real_server(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "tiny.safetensors")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "chargen", "serve", "-c", f"tiny={checkpoint}", "--port", str(port),
                             "--no-log", "--allowed-host", "chargen.lan", "--log-level", "warning"],
                            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        assert httpx.get(url + "/v1/models", headers={"Host": f"chargen.lan:{port}"}).status_code == 200
        assert httpx.get(url + "/v1/models", headers={"Host": f"localhost:{port}"}).status_code == 200
        assert httpx.get(url + "/v1/models", headers={"Host": f"{FOREIGN}:{port}"}).status_code == 421
    finally:
        proc.terminate()
        proc.wait(30)


# ----------------------------------------------------------------------------- item 14: page hardening


def test_security_headers(server: str) -> None:
    page = httpx.get(server + "/")
    csp = page.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    for response in (page, httpx.get(server + "/v1/models"), httpx.get(server + "/static/page.js"),
                     httpx.get(server + "/v1/generations/NOPE"), httpx.post(server + "/v1/generate", json={"x": 1})):
        assert response.headers["x-frame-options"] == "DENY", response.request.url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


# ----------------------------------------------------------------------------- item 12: a body that never ends


def test_a_body_that_never_completes_is_answered_408(server: str) -> None:
    port = port_of(server)
    began = time.monotonic()
    answer = raw_request(port, b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 100\r\n\r\n{\"prime\": ")
    assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout_s" in answer
    assert time.monotonic() - began < 5  # body_timeout_s=1, and the connection closed after


@pytest.mark.slow
def test_many_stalled_bodies_do_not_pile_up(tmp_path: Path) -> None:
    """500 clients that send half a body and wait: each is answered 408 and its connection closed within
    the timeout (a real server process), and the server keeps answering throughout."""
    make_checkpoint(tmp_path / "tiny.safetensors")
    with ServerProcess([f"tiny={tmp_path / 'tiny.safetensors'}"], limits={"body_timeout_s": 2}) as server:
        head = (b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{\"prime\": \"the")
        socks = []
        began = time.monotonic()
        for _ in range(500):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(head)
            socks.append(sock)
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        answers = []
        for sock in socks:
            data = b""
            while chunk := sock.recv(65536):  # until the server closes it
                data += chunk
            answers.append(data.split(b"\r\n", 1)[0])
            sock.close()
        took = time.monotonic() - began
        assert answers == [b"HTTP/1.1 408 Request Timeout"] * 500
        assert took < 30, took
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


# ----------------------------------------------------------------------------- item 9: lone surrogates


@pytest.mark.parametrize("body", ['{"model": "\\ud800"}', '{"label": "\\ud800", "length": 3}',
                                  '{"\\ud800": 1}', '{"prime": "\\udfff\\ud800"}', '{"model": "a\\udc80b"}',
                                  '{"format": "\\ud800"}', '{"temperature": "\\ud800"}'])
def test_lone_surrogates_are_4xx_never_500(server: str, body: str) -> None:
    response = httpx.post(server + "/v1/generate", content=body.encode(),
                          headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    json.loads(response.text)  # a JSON answer, naming the field


def test_surrogates_in_query_parameters(server: str) -> None:
    for query in ("q=%ED%A0%80", "model=%ED%A0%80", "q=%FF%FE", "limit=%ED%A0%80"):
        response = httpx.get(f"{server}/v1/generations?{query}")
        assert response.status_code < 500, (query, response.text)


# ----------------------------------------------------------------------------- item 10: NUL in q


def test_a_nul_in_the_search_does_not_match_every_row(server: str) -> None:
    assert len(httpx.get(server + "/v1/generations", params={"q": "the"}).json()["generations"]) == 1
    assert httpx.get(server + "/v1/generations", params={"q": "zzzz"}).json()["generations"] == []
    response = httpx.get(server + "/v1/generations?q=%00zzzz")
    assert response.status_code == 400 and "NUL" in response.json()["detail"]


def test_a_nul_in_the_cli_search(tmp_path: Path) -> None:
    from history_helpers import record

    from chargen.history import History

    db = str(tmp_path / "h.db")
    with History(db) as history:
        record(history)
    assert len(json.loads(invoke("history", "list", "--json", "--database", db).stdout)) == 1
    result = invoke("history", "list", "-q", "\x00zzzz", "--json", "--database", db)
    assert_one_line_error(result, "NUL")


# ----------------------------------------------------------------------------- item 13: a token a browser can send


@pytest.mark.parametrize("token", ["tökén", "secret token", "tab\there", "\u2028"])
def test_a_token_the_page_could_never_send_is_refused_at_start(tmp_path: Path, token: str) -> None:
    make_checkpoint(tmp_path / "tiny.safetensors")
    # A real process: were the token accepted, the server would run (and the timeout fail the test).
    result = run_cli("serve", "-c", str(tmp_path / "tiny.safetensors"), "--port", str(free_port()), "--token", token,
                     timeout=60)
    assert_one_line_error(result, "--token must be printable ASCII")
    with pytest.raises(Exception, match="printable ASCII"):
        create_app({"tiny": load_checkpoint(tmp_path / "tiny.safetensors")}, None, token, Limits())


def test_an_ascii_token_works_with_basic_from_a_browser(tmp_path: Path) -> None:
    models = {"tiny": load_checkpoint(make_checkpoint(tmp_path / "tiny.safetensors"))}
    with thread_server(create_app(models, None, "s3cr3t-T0ken!", Limits())) as url:
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models", auth=("", "s3cr3t-T0ken!")).status_code == 200
        assert httpx.get(url + "/static/page.js", auth=("", "s3cr3t-T0ken!")).status_code == 200


def test_serve_refuses_a_token_from_the_environment_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_checkpoint(tmp_path / "tiny.safetensors")
    monkeypatch.setenv("CHARGEN_API_TOKEN", "pässword")
    result = run_cli("serve", "-c", str(tmp_path / "tiny.safetensors"), "--port", str(free_port()), timeout=60)
    assert_one_line_error(result, "printable ASCII")
