"""``GET /metrics``: the service's counters in Prometheus' text format (``prometheus_client``).

Each app has its own registry (tests and embedders run several apps in one process).
The scheduler and the history writer report through small observer objects, so they
know nothing of Prometheus; requests are counted by an ASGI middleware that sees
every answer, the token guard's 401s and 413s included. With ``--token`` the
endpoint needs the token like every other (Prometheus: ``authorization:
{credentials: TOKEN}`` in the scrape config).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chargen.serve.observers import HistoryObserver, SchedulerObserver


class ServedModels(Protocol):
    """What the gauges read: each served model's requests in flight and its scheduler's rows."""

    models: Mapping[str, Any]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
FIRST_TOKEN_BUCKETS = LATENCY_BUCKETS + (5.0, 10.0, 30.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)
COMMIT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServiceMetrics:
    """The registry of one app and every metric in it."""

    def __init__(self, service: ServedModels):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("chargen_http_requests", "HTTP requests answered, by route and status",
                                ["route", "method", "status"], registry=r)
        self.tokens = Counter("chargen_tokens_generated", "Tokens generated (finished generations)", ["model"],
                              registry=r)
        # Observed every scheduler step: lock-light histograms of our own (prometheus_client's cost ~8 us a step).
        self.batch_rows = StepHistogram("chargen_batch_rows", "Rows stepped together in each scheduler step",
                                        ROWS_BUCKETS)
        self.first_token = Histogram("chargen_time_to_first_token_seconds", "From a request's arrival at its "
                                     "scheduler to its first token", ["model"], buckets=FIRST_TOKEN_BUCKETS,
                                     registry=r)
        self.token_latency = StepHistogram("chargen_token_latency_seconds", "Seconds per scheduler step: each "
                                           "active stream gets one token per step", LATENCY_BUCKETS)
        self.queue_wait = Histogram("chargen_queue_wait_seconds", "From a request's arrival at its scheduler to its "
                                    "admission into the running batch", ["model"], buckets=WAIT_BUCKETS, registry=r)
        self.history_rows = Counter("chargen_history_rows_written", "Generations recorded in the history",
                                    registry=r)
        self.history_commits = Histogram("chargen_history_commit_rows", "Rows written per history commit (group "
                                         "commit)", buckets=COMMIT_BUCKETS, registry=r)
        self.history_failures = Counter("chargen_history_write_failures", "Generations the history could not "
                                        "record", registry=r)
        self.registry.register(_ServiceState(service))
        self.registry.register(self.batch_rows)
        self.registry.register(self.token_latency)

    def scheduler(self, model: str) -> SchedulerObserver:
        return _SchedulerMetrics(self, model)

    def history(self) -> HistoryObserver:
        return _HistoryMetrics(self)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SchedulerMetrics(SchedulerObserver):
    def __init__(self, metrics: ServiceMetrics, model: str):
        self.wait = metrics.queue_wait.labels(model)
        self.first = metrics.first_token.labels(model)
        self.rows = metrics.batch_rows.labels(model)
        self.latency = metrics.token_latency.labels(model)

    def admitted(self, wait_s: float) -> None:
        self.wait.observe(wait_s)

    def first_token(self, seconds: float) -> None:
        self.first.observe(seconds)

    def stepped(self, rows: int, seconds: float) -> None:
        self.rows.observe(rows)
        self.latency.observe(seconds)


class StepHistogram:
    """A histogram per model, observed by its scheduler's thread at every step and read at scrape time: a
    bisect and two additions per observation, no lock (one writer per model; a scrape copies the counts, and
    its buckets are made cumulative from them, so they never decrease; the sum may trail by one step)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]):
        self.name, self.documentation, self.bounds = name, documentation, list(buckets)
        self.lock = threading.Lock()  # guards adding a model (its counts and sum), not the observations
        self.counts: dict[str, list[int]] = {}  # per model: one count per bucket, the last for +Inf
        self.sums: dict[str, float] = {}

    def labels(self, model: str) -> StepSeries:
        with self.lock:
            self.counts.setdefault(model, [0] * (len(self.bounds) + 1))
            self.sums.setdefault(model, 0.0)
        return StepSeries(self, model)

    def describe(self) -> Iterator[Any]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=["model"])

    def collect(self) -> Iterator[Any]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["model"])
        with self.lock:
            models = list(self.counts)
        snapshot = {model: (list(self.counts[model]), self.sums[model]) for model in models}
        for model, (counts, total) in snapshot.items():
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, self.bounds), "+Inf"], counts):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([model], buckets, total)
        yield family


class StepSeries:
    """One model's series of a :class:`StepHistogram`."""

    def __init__(self, histogram: StepHistogram, model: str):
        self.histogram, self.counts = histogram, histogram.counts[model]
        self.model = model

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.histogram.bounds, value)] += 1  # le: a value on a bound is in
        self.histogram.sums[self.model] += value


class _HistoryMetrics(HistoryObserver):
    def __init__(self, metrics: ServiceMetrics):
        self.metrics = metrics

    def committed(self, rows: int) -> None:
        self.metrics.history_rows.inc(rows)
        self.metrics.history_commits.observe(rows)

    def failed(self, rows: int) -> None:
        self.metrics.history_failures.inc(rows)


class _ServiceState:
    """Gauges read from the service when scraped: streams in flight and rows in each running batch."""

    def __init__(self, service: ServedModels):
        self.service = service

    def collect(self) -> Iterator[Any]:
        active = GaugeMetricFamily("chargen_active_streams", "Generations running or waiting, per model",
                                   labels=["model"])
        rows = GaugeMetricFamily("chargen_batch_active_rows", "Rows in the model's running batch", labels=["model"])
        for name, served in self.service.models.items():
            active.add_metric([name], served.inflight)
            rows.add_metric([name], served.scheduler.active_rows)
        yield active
        yield rows


class RequestCounter:
    """ASGI middleware: every HTTP answer counted by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, routes: list[Any]):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app fails before answering

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.requests.labels(self._route(scope), scope["method"], str(status)).inc()

    def _route(self, scope: Scope) -> str:
        """The route's template (``/v1/generations/{gen_id}``), never the raw path: bounded label values."""
        route = scope.get("route")
        if route is None:  # answered before routing (the token guard): find the route it was meant for
            route = next((r for r in self.routes if r.matches(scope)[0] == Match.FULL), None)
        return getattr(route, "path", None) or "unmatched"
