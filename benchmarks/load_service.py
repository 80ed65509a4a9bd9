"""Load test for ``chargen serve``: concurrent clients vs one at a time; prints Markdown.

Usage (from the repository root)::

    python benchmarks/load_service.py CHECKPOINT [--clients 16] [--requests 400] [--length 200]
                                      [--sequential 100] [--database URL] [--api generate|openai|both]

Starts the service on CHECKPOINT (weights file, run folder or run name) in a
child process on a free loopback port, then

1. sends ``--sequential`` requests one at a time (one client),
2. sends ``--requests`` requests from ``--clients`` concurrent clients,

through chargen's ``POST /v1/generate`` or OpenAI's ``POST /v1/completions`` (``--api``; ``both``
runs the concurrent phase through each in turn, ``--rounds`` times alternating, and reports the
ratio of their throughputs), and reports failures, new history rows (when ``chargen.history`` is present;
a temporary SQLite database unless ``--database`` is given), aggregate
generated characters per second in both phases, latency percentiles, and the
scheduler's steps per token (how much the batching shared).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's chargen, not an installed one

from benchmarks.common import record  # noqa: E402

SERVE = """
import json, sys
from chargen.serve import Limits, serve
a = json.loads(sys.argv[1])
serve("127.0.0.1", a["port"], [a["checkpoint"]], database=a["database"], history=a["database"] is not None,
      limits=Limits(max_queue=10_000), threads=a["threads"], log_level="warning")
"""


@dataclass
class Phase:
    name: str
    clients: int
    requests: int = 0
    failures: int = 0
    chars: int = 0
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def chars_per_s(self) -> float:
        return self.chars / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_rows(url: str | None) -> int | None:
    if url is None:
        return None
    from chargen.history import History

    with History(url) as history:
        return len(history.list_generations(limit=None))


#: Each API's route, its request for seed i (from the generate-style ``body``), and the characters it returned.
APIS = {
    "generate": ("/v1/generate", lambda body, i: {**body, "seed": i},
                 lambda data: sum(len(s["text"]) for s in data["samples"])),
    "openai": ("/v1/completions", lambda body, i: {"model": body["model"], "prompt": "", "max_tokens": body["length"],
                                                   "temperature": body["temperature"], "seed": i},
               lambda data: sum(len(c["text"]) for c in data["choices"])),
}


async def run_phase(base: str, phase: Phase, total: int, body: dict[str, Any], api: str = "generate") -> Phase:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=300) as http:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                route, request, chars = APIS[api]
                try:
                    response = await http.post(route, json=request(body, i))
                    if response.status_code != 200:
                        raise RuntimeError(f"{response.status_code} {response.text[:200]}")
                    phase.chars += chars(response.json())
                    phase.latencies.append(time.perf_counter() - started)
                except Exception as exc:  # counted and reported, never fatal
                    phase.failures += 1
                    phase.errors.append(str(exc))
                phase.requests += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(phase.clients)))
    phase.wall_s = time.perf_counter() - started
    return phase


def compare_apis(base: str, args: argparse.Namespace, body: dict[str, Any]) -> dict[str, Phase]:
    """The concurrent phase through each API in alternating rounds (a drift of the machine hits both alike)."""
    totals = {api: Phase(f"{args.clients} concurrent clients, {api}", args.clients) for api in APIS}
    per_round = max(1, args.requests // args.rounds)
    asyncio.run(run_phase(base, Phase("warm-up", args.clients), per_round, body, "openai"))
    for _ in range(args.rounds):
        for api, total in totals.items():
            phase = asyncio.run(run_phase(base, Phase(api, args.clients), per_round, body, api))
            total.requests += phase.requests
            total.failures += phase.failures
            total.chars += phase.chars
            total.wall_s += phase.wall_s
            total.latencies += phase.latencies
            total.errors += phase.errors
    return totals


@dataclass
class Measured:
    """One server's run of the benchmark: its phases, its scheduler's counters and CPU time around them."""

    one: Phase
    many: Phase
    compared: dict[str, Phase] | None
    stats: tuple[dict[str, Any], dict[str, Any], dict[str, Any]]
    cpu: tuple[float | None, float | None, float | None]
    rows: tuple[int | None, int | None, int | None]


def measure(args: argparse.Namespace, weights: Path, server_repo: Path) -> Measured:
    """Start ``server_repo``'s chargen serve on ``weights`` and run both phases against it."""
    have_history = importlib.util.find_spec("chargen.history") is not None
    scratch = tempfile.TemporaryDirectory(prefix="chargen-load-")
    database = args.database or (f"sqlite:///{Path(scratch.name) / 'history.db'}" if have_history else None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(server_repo))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE, json.dumps({"port": port, "checkpoint": str(weights), "database": database,
                                          "threads": args.threads})],
        cwd=server_repo, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.2)
        name = httpx.get(base + "/v1/models").json()["models"][0]["name"]
        body = {"model": name, "length": args.length, "temperature": args.temperature}
        rows_before = count_rows(database)
        first = "generate" if args.api == "both" else args.api
        asyncio.run(run_phase(base, Phase("warm-up", 1), 3, body, first))
        stats_before = httpx.get(base + "/v1/stats").json()["models"][name]
        cpu_before = process_cpu_s(server.pid)
        one = asyncio.run(run_phase(base, Phase("one client at a time", 1), args.sequential, body, first))
        cpu_mid = process_cpu_s(server.pid)
        rows_mid = count_rows(database)
        stats_mid = httpx.get(base + "/v1/stats").json()["models"][name]
        compared = None
        if args.api == "both":
            compared = compare_apis(base, args, body)
            many = compared["generate"]
        else:
            many = asyncio.run(run_phase(base, Phase(f"{args.clients} concurrent clients", args.clients),
                                         args.requests, body, args.api))
        cpu_after = process_cpu_s(server.pid)
        stats_after = httpx.get(base + "/v1/stats").json()["models"][name]
        rows_after = count_rows(database)
    finally:
        server.terminate()
        server.wait(60)
        scratch.cleanup()
    return Measured(one, many, compared, (stats_before, stats_mid, stats_after), (cpu_before, cpu_mid, cpu_after),
                    (rows_before, rows_mid, rows_after))


def compare_versions(args: argparse.Namespace, weights: Path) -> int:
    """This checkout's server against ``--compare-with``'s, in alternating rounds: the ratios at 1 and N clients."""
    other = args.compare_with.resolve()
    runs: dict[str, list[Measured]] = {"before": [], "now": []}
    for number in range(args.rounds):
        runs["before"].append(measure(args, weights, other))
        runs["now"].append(measure(args, weights, REPO))
        before, now = runs["before"][-1], runs["now"][-1]
        print(f"round {number + 1}: 1 client {before.one.chars_per_s:,.0f} -> {now.one.chars_per_s:,.0f}, "
              f"{args.clients} clients {before.many.chars_per_s:,.0f} -> {now.many.chars_per_s:,.0f}", file=sys.stderr)
    figures = {}
    for version, measured in runs.items():
        figures[version] = {"one": statistics.median(m.one.chars_per_s for m in measured),
                            "many": statistics.median(m.many.chars_per_s for m in measured)}
    ratio_one = figures["now"]["one"] / figures["before"]["one"]
    ratio_many = figures["now"]["many"] / figures["before"]["many"]
    command = "python benchmarks/load_service.py " + " ".join(sys.argv[1:])
    print(f"### chargen serve, this checkout against {other} ({args.rounds} alternating rounds, medians)\n")
    print(f"| version | 1 client chars/s | {args.clients} clients chars/s |")
    print("|---|---:|---:|")
    for version in ("before", "now"):
        print(f"| {version} | {figures[version]['one']:,.0f} | {figures[version]['many']:,.0f} |")
    print(f"\nnow / before: **{ratio_one:.3f}** at 1 client, **{ratio_many:.3f}** at {args.clients} clients.")
    if args.record:
        record(args.record, [
            {"figure": "serving chars/s now / before, 1 client", "value": round(ratio_one, 3), "target": ">= 1"},
            {"figure": f"serving chars/s now / before, {args.clients} clients", "value": round(ratio_many, 3),
             "target": ">= 1"}], command, figures)
    failures = sum(m.one.failures + m.many.failures for measured in runs.values() for m in measured)
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="weights file, run folder or run name")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400, help="requests in the concurrent phase")
    parser.add_argument("--sequential", type=int, default=100, help="requests in the one-client phase")
    parser.add_argument("--length", type=int, default=200, help="tokens per request")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--database", help="history database URL [default: a temporary SQLite file]")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server (serve's --threads)")
    parser.add_argument("--api", choices=["generate", "openai", "both"], default="generate",
                        help="the route clients use; both: the concurrent phase through each, alternating")
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating rounds (--api both: of each API; --compare-with: of each version)")
    parser.add_argument("--compare-with", type=Path, metavar="CHECKOUT",
                        help="another chargen checkout (an earlier commit): its server and this one's, back to back")
    parser.add_argument("--record", metavar="NAME", help="also write the headline to benchmarks/results/NAME.json")
    args = parser.parse_args()

    from chargen.runs.checkpoint import load_checkpoint
    from chargen.runs.lookup import resolve_checkpoint

    weights = resolve_checkpoint(args.checkpoint)
    loaded = load_checkpoint(weights)
    if args.compare_with is not None:
        return compare_versions(args, weights)
    measured = measure(args, weights, REPO)
    one, many, compared = measured.one, measured.many, measured.compared
    stats_before, stats_mid, stats_after = measured.stats
    cpu_before, cpu_mid, cpu_after = measured.cpu
    rows_before, rows_mid, rows_after = measured.rows

    cfg = loaded.config
    per_round = max(1, args.requests // args.rounds)  # --api both: a warm-up round, then each API's rounds
    concurrent = per_round * (1 + len(APIS) * args.rounds) if args.api == "both" else args.requests
    expected_rows = 3 + args.sequential + concurrent
    new_rows = "n/a (chargen.history not installed)" if rows_before is None else \
        f"{rows_after - rows_before} (of {expected_rows} requests), {rows_after - rows_mid} in the concurrent " \
        f"phase (of {concurrent})"
    print(f"### chargen serve load test: {weights.name} of {weights.parent.name} (`{' '.join(sys.argv[1:])}`)\n")
    print(f"{cfg.layers}x{cfg.hidden} {cfg.cell.upper()}, vocab {cfg.vocab_size}; {args.length} tokens per request, "
          f"temperature {args.temperature}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {args.threads} torch thread(s) in the server, server and clients on one machine"
          f" (load average {os.getloadavg()[0]:.1f} at the end).\n")
    print("| phase | requests | failures | wall s | chars/s | p50 latency s | p95 latency s | tokens per model step "
          "| server CPU ms per request |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    phases = ((one, (stats_before, stats_mid), (cpu_before, cpu_mid)),
              (many, (stats_mid, stats_after), (cpu_mid, cpu_after)))
    for phase, (a, b), (cpu_a, cpu_b) in phases:
        steps = b["steps"] - a["steps"]
        per_step = (b["tokens"] - a["tokens"]) / steps if steps else float("nan")
        cpu = "n/a" if cpu_a is None or cpu_b is None else f"{(cpu_b - cpu_a) / phase.requests * 1e3:.1f}"
        print(f"| {phase.name} | {phase.requests} | {phase.failures} | {phase.wall_s:.2f} | "
              f"{phase.chars_per_s:,.0f} | {phase.percentile(0.5):.3f} | {phase.percentile(0.95):.3f} | "
              f"{per_step:.2f} | {cpu} |")
    speedup = many.chars_per_s / one.chars_per_s if one.chars_per_s else float("nan")
    print(f"\nConcurrent / sequential throughput: **{speedup:.1f}x**; largest batch "
          f"{stats_after['max_batch_requests']} requests ({stats_after['max_batch_rows']} rows); "
          f"new history rows: {new_rows}.")
    if args.api == "both":
        generate, openai = compared["generate"], compared["openai"]
        rounds = f"{args.rounds} alternating rounds of {args.requests // args.rounds} requests each"
        print(f"\n{args.clients} concurrent clients, {rounds}: /v1/generate {generate.chars_per_s:,.0f} chars/s, "
              f"/v1/completions {openai.chars_per_s:,.0f} chars/s: "
              f"**{openai.chars_per_s / generate.chars_per_s:.3f}** of /v1/generate's ({openai.failures} failures).")
        many.failures += openai.failures
        if args.record:
            record(args.record, [{"figure": f"/v1/completions / /v1/generate chars/s, {args.clients} clients",
                                  "value": round(openai.chars_per_s / generate.chars_per_s, 3), "target": ">= 0.95"}],
                   "python benchmarks/load_service.py " + " ".join(sys.argv[1:]),
                   {"generate_chars_per_s": generate.chars_per_s, "openai_chars_per_s": openai.chars_per_s,
                    "one_client_chars_per_s": one.chars_per_s})
    errors = one.errors + many.errors
    if errors:
        print(f"\nFirst errors: {statistics.multimode(errors)[:3]}")
    return 1 if one.failures or many.failures else 0


if __name__ == "__main__":
    sys.exit(main())
