"""Helpers for the service tests: tiny checkpoints, real servers on loopback ports, SSE parsing.

Every server here listens on a real socket and is talked to over HTTP; nothing
calls the ASGI app in-process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import torch

from chargen.codecs.base import Codec
from chargen.codecs.text import TextCodec
from chargen.model import CharRNN, ModelConfig
from chargen.runs.checkpoint import save_weights

REPO_ROOT = Path(__file__).resolve().parent.parent
# As chargen.serve.serve does: in-thread test servers step tiny models, where OpenMP
# workers only spin against the scheduler thread on a busy machine.
torch.set_num_threads(1)
ALPHABET = "abcdefghijklmnopqrstuvwxyz .,\n"


def make_checkpoint(path: Path, codec: Codec | None = None, *, seed: int = 0, hidden: int = 32,
                    layers: int = 1, cell: str = "lstm", best_val_loss: float | None = 2.5) -> Path:
    """An untrained tiny model saved as a real checkpoint (weights drawn from ``seed``)."""
    codec = codec or TextCodec(ALPHABET)
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(vocab_size=codec.vocab_size, cell=cell, layers=layers, hidden=hidden,
                                embedding=16))
    save_weights(path, model, codec, {"best_val_loss": best_val_loss, "step": 0})
    return path


@contextmanager
def thread_server(app: Any) -> Iterator[str]:
    """uvicorn serving ``app`` from a thread on a free loopback port; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_SERVE = """
import json, sys
from chargen.serve import Limits, serve
args = json.loads(sys.argv[1])
serve(args["host"], args["port"], args["checkpoints"], token=args["token"], database=args["database"],
      history=args["database"] is not None, limits=Limits(**args["limits"]), log_level="warning")
"""


class ServerProcess:
    """``chargen.serve.serve`` in a child process (so signals reach a real server)."""

    def __init__(self, checkpoints: list[str], *, database: str | None = None, token: str | None = None,
                 limits: dict[str, int] | None = None, log_path: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = {"host": "127.0.0.1", "port": self.port, "checkpoints": checkpoints, "token": token,
                "database": database, "limits": limits or {}}
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
        env.pop("CHARGEN_API_TOKEN", None)
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVE, json.dumps(args)], cwd=REPO_ROOT, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path else ""

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """(event, decoded JSON data) for each Server-Sent Event in ``lines``."""
    event, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def reference(checkpoint: Any, prime: str | None, **options: Any) -> dict[str, Any]:
    """What ``Generator.generate`` returns for these options, as the service reports it."""
    from chargen.sampling import DecodeConfig, Generator

    result = Generator(checkpoint.model, checkpoint.codec).generate(prime, DecodeConfig(**options))
    return {"params": asdict(result.config),
            "samples": [{"text": s.text, "logprob": s.logprob} for s in result.samples]}
