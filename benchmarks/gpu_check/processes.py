"""The check's steps that run as processes of their own: torchrun, and ``chargen serve`` under load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from safetensors.torch import load_file

from benchmarks.gpu_check.steps import Context
from benchmarks.gpu_check.table import FAILED, FIGURE, OK, Env, Row, mib
from chargen.machine.cache import FILE as CACHE_FILE
from chargen.machine.cache import cache_folder
from chargen.machine.offload import ROWS_ENV, SECTION
from chargen.runs.layout import LAST

REPO = Path(__file__).resolve().parents[2]
CHILD = [sys.executable, "-m", "benchmarks.gpu_check.child"]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), **extra)
    env.pop("CHARGEN_DEBUG", None)
    return env


def peak_of(prefix: Path, device: torch.device) -> tuple[str, int | None]:
    """The largest peak memory the children written under ``prefix`` reported (their GPU's, else RSS)."""
    found = [json.loads(path.read_text()) for path in prefix.parent.glob(f"{prefix.name}.*.json")]
    key, kind = ("cuda_peak_bytes", "GPU") if device.type == "cuda" else ("rss_peak_bytes", "RSS")
    values = [entry[key] for entry in found if entry.get(key) is not None]
    peak = max(values) if values else None
    return (f"{mib(peak)} {kind} per process" if peak is not None else "-"), peak


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- 4: torchrun


def torchrun(ctx: Context) -> list[Row]:
    """``torchrun --nproc-per-node N`` (a process per GPU; NCCL, or gloo on the CPU) against one process with the
    global batch: the same weights."""
    cuda = ctx.device.type == "cuda"
    nproc = max(1, torch.cuda.device_count()) if cuda else 1
    preset, steps = ("small", ctx.sizes.ddp_steps) if not ctx.sizes.tiny else ("tiny", ctx.sizes.ddp_steps)
    per_rank = max(1, ctx.sizes.batch // nproc)
    common = ["--size", preset, "--precision", "fp32", "--max-steps", str(steps), "--eval-every", str(steps),
              "--seq-len", str(ctx.sizes.seq), "--seed", "5", "--device", ctx.device.type, "--threads", "1"]
    if ctx.sizes.tiny:
        common += ["--hidden", "32", "--embedding", "8"]
    prefix = ctx.work / "memory-ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "benchmarks.gpu_check.child", str(prefix), "train", str(ctx.corpus), *common,
               "--batch-size", str(per_rank), "--run-name", "ddp", "--out", str(ctx.work / "runs"), "--no-log",
               "--quiet"]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=child_env(OMP_NUM_THREADS="1"), cwd=REPO)
    try:  # the one-process reference trains meanwhile
        one = start_one(ctx, preset, steps, nproc * per_rank, {"hidden": 32, "embedding": 8} if ctx.sizes.tiny else {})
        _, stderr = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    if job.returncode != 0:
        lines = [line for line in stderr.splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith("chargen:")), lines[-1] if lines else "?")
        raise RuntimeError(f"torchrun exited {job.returncode}: {reason}")
    a, b = load_file(str(ctx.work / "runs" / "ddp" / LAST)), load_file(str(one / LAST))
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    # On CUDA the embedding's backward adds with atomics, in an order that differs from run to run: the last
    # bits differ, and Adam's steps carry that along; on the CPU the runs agree to float rounding.
    tolerance = 1e-3 if cuda else 1e-5
    memory, _ = peak_of(prefix, ctx.device)
    backend = "NCCL" if cuda else "gloo"
    return [Row("4 torchrun", f"{nproc} process(es), {backend}: weights vs one process", f"max |diff| {diff:.2e}",
                OK if diff <= tolerance else FAILED, ctx.env, memory,
                f"{steps} steps, global batch {nproc * per_rank}; tolerance {tolerance:g}",
                {"max_diff": diff, "processes": nproc, "backend": backend})]


def start_one(ctx: Context, preset: str, steps: int, batch: int, overrides: dict[str, Any]) -> Path:
    from chargen.runs.start import start_run
    from chargen.training import TrainConfig

    config = TrainConfig(batch_size=batch, seq_len=ctx.sizes.seq, max_steps=steps, eval_every=steps, seed=5,
                         device=ctx.device.type, precision="fp32", threads=1)
    return start_run([ctx.corpus], config, preset, overrides, "ddp-one", ctx.work / "runs", progress=False,
                     warn=lambda message: None).run_dir


# ----------------------------------------------------------------------------- 6: chargen serve under load


def serving(ctx: Context) -> list[Row]:
    """``chargen serve`` on the CPU and on the device: characters per second at each number of streams.

    Both servers start at once (their start-up overlaps); each is then loaded alone.
    """
    run_dir = ctx.checkpoint_run()
    places = [("cpu", torch.device("cpu"), {}), ("device", ctx.device,
                                                {ROWS_ENV: "1"} if ctx.device.type == "cpu" else {})]
    servers = [Server(ctx, run_dir, place, device, extra) for place, device, extra in places]
    rows = []
    try:
        for server in servers:
            try:
                rows += server.rows(ctx)
            except Exception as exc:  # noqa: BLE001 - this server's rows fail; the other's still run
                rows.append(Row(f"6 serve ({server.place})", "chars/s", "", FAILED, server.env,
                                note=one_line(exc)))
    finally:
        for server in servers:
            server.stop()
    return rows


class Server:
    """One ``chargen serve`` child on a free port, its log and its peak memory."""

    def __init__(self, ctx: Context, run_dir: Path, place: str, device: torch.device, extra: dict[str, str]):
        self.place, self.device, self.env = place, device, Env.of(device)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.prefix = ctx.work / f"memory-serve-{place}"
        self.log_path = ctx.work / f"serve-{place}.log"
        command = [*CHILD, str(self.prefix), "serve", "-c", str(run_dir), "--port", str(self.port), "--device",
                   device.type, "--max-batch", str(max(ctx.sizes.streams)), "--max-queue", "4096",
                   "--max-samples", "1", "--no-log", "--log-level", "warning"]
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=REPO, env=child_env(**extra), stdout=self.log,
                                        stderr=subprocess.STDOUT)

    def rows(self, ctx: Context) -> list[Row]:
        wait_until_up(self.base, self.process, self.log_path)
        body = {"prime": "\n", "length": ctx.sizes.stream_len, "temperature": 0.8}
        asyncio.run(load(self.base, body, 1))  # warm-up: the first request builds the steppers
        measured = []
        for streams in ctx.sizes.streams:
            chars, seconds = asyncio.run(load(self.base, body, streams))
            measured.append((streams, chars / seconds, chars))
        self.stop()
        memory, _ = peak_of(self.prefix, self.device)
        note = "one server, peak over all its streams"
        if self.place == "device":
            note += "; " + device_rows_note(ctx, self.device)
        return [Row(f"6 serve ({self.place})", f"{streams} concurrent streams", f"{speed:,.0f} chars/s", FIGURE,
                    self.env, memory, f"{streams} x {ctx.sizes.stream_len} chars; {note}",
                    {"streams": streams, "chars_per_s": speed, "chars": chars})
                for streams, speed, chars in measured]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def device_rows_note(ctx: Context, device: torch.device) -> str:
    if device.type == "cpu":
        return f"the device path forced on the CPU (${ROWS_ENV}=1)"
    try:
        cache = json.loads((cache_folder() / CACHE_FILE).read_text())[SECTION]
        rows = [entry["rows"] for key, entry in cache.items() if str(device.type) in key]
    except (OSError, ValueError, KeyError):
        rows = []
    if not rows:
        return "the device's threshold was not recorded"
    return "steps on the device from " + (f"{rows[-1]} rows (measured)" if rows[-1] else "no batch size (measured)")


def wait_until_up(base: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"the server exited {server.returncode}: {tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer within {timeout:.0f} s")
        time.sleep(0.2)


async def load(base: str, body: dict[str, Any], streams: int) -> tuple[int, float]:
    """``streams`` requests at once, each its own seed: (characters generated, seconds)."""
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as http:
        async def one(seed: int) -> int:
            response = await http.post("/v1/generate", json={**body, "seed": seed})
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            return sum(len(s["text"]) for s in response.json()["samples"])

        began = time.perf_counter()
        counts = await asyncio.gather(*(one(seed) for seed in range(streams)))
        return sum(counts), time.perf_counter() - began


def tail(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]

