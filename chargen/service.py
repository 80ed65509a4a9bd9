"""``chargen serve``: generation over HTTP (JSON and Server-Sent Events) and a small web page.

Design
  * One :class:`BatchScheduler` thread per served model runs ONE ``Stepper.step``
    per tick for every active sampling/greedy request of that model. Requests
    join and leave the running batch between ticks; each keeps its own RNG
    (seeded from its request seed), n-gram blockers and log-probabilities, and
    picks its tokens with exactly the operations of ``Generator._sample``, so a
    seeded request returns what ``Generator.generate`` returns for it.
  * The scheduler also primes each request as it joins (recent primes come
    from the generator's cache) and draws its sampling noise NOISE_AHEAD
    ticks at a time into a batch-wide buffer, so a tick's Python work does
    not grow with one call per request.
  * Beam search runs whole through ``Generator.generate`` on a small thread
    pool: its K beams are already one batch.
  * Nothing heavy runs on the event loop: priming, stepping, history writes
    and MIDI rendering happen in threads, results come back through
    ``loop.call_soon_threadsafe`` into per-request asyncio queues. History
    writes are group-committed by one writer thread (:class:`HistoryWriter`).
  * History is reached only through :class:`GenerationLog` (implemented by
    :class:`HistoryLog` over ``chargen.history``), so one class changes if
    that API does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import importlib
import importlib.util
import io
import ipaddress
import json
import logging
import os
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol

import torch
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import chargen
from chargen.checkpoint import BEST, LAST, Checkpoint, load_checkpoint, resolve_checkpoint, sha256_file
from chargen.errors import ChargenError
from chargen.inference import expand_state, reorder_state
from chargen.model import State
from chargen.sampling import DecodeConfig, Generator, NgramBlocker, Sample, filter_logits

logger = logging.getLogger("chargen.service")

TOKEN_ENV = "CHARGEN_API_TOKEN"
#: served model names: what a request may name; never a path
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)
_ID_PATTERN = r"^[0-9A-Za-z]{1,64}$"
DEFAULT_LENGTH = 200
#: Ticks of sampling noise each request draws at once (one RNG call instead of one per tick).
NOISE_AHEAD = 32
OPEN_PATHS = frozenset({"/healthz"})
PAGE_CSP = ("default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
            "img-src 'self' data: blob:; connect-src 'self' blob:")
SHUTDOWN_MESSAGE = "server is shutting down; the generation was stopped and not recorded"


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask; exceeding one is a 4xx naming it."""

    max_length: int = 2000  # tokens generated per sample
    max_beam_width: int = 8
    max_samples: int = 8  # num_samples per request
    max_prime_chars: int = 8000
    max_body_bytes: int = 64 * 1024
    max_batch: int = 64  # sampling rows stepped together per model; more requests wait
    max_queue: int = 256  # requests running or waiting per model
    max_list: int = 200  # GET /v1/generations?limit=


class ServiceError(Exception):
    """An HTTP answer other than 200, with a one-line message (and the limit hit, if any)."""

    def __init__(self, status: int, detail: str, limit: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.limit = status, detail, limit

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **({"limit": self.limit} if self.limit else {})}


def _over_limit(what: str, value: int, limit: str, cap: int) -> ServiceError:
    return ServiceError(422, f"{what} {value} exceeds this server's limit {limit}={cap}", limit)


# --------------------------------------------------------------------------
# History, behind one small interface


class HistoryError(Exception):
    """The history database failed; generation still answers, without an id."""


class GenerationNotFound(Exception):
    pass


@dataclass
class LogEntry:
    """One generation to record."""

    checkpoint: Checkpoint
    sha256: str
    config: DecodeConfig
    prime: str
    samples: Sequence[Sample]
    duration_s: float


class GenerationLog(Protocol):
    """What the service needs from the history store."""

    def record_many(self, entries: Sequence[LogEntry]) -> list[str]:
        """Record all entries in one transaction (all or none); their ids in order."""
        ...

    def list(self, *, limit: int, query: str | None, sha256: str | None) -> list[dict[str, Any]]: ...

    def get(self, gen_id: str) -> dict[str, Any]: ...

    def close(self) -> None: ...


class HistoryLog:
    """:class:`GenerationLog` over ``chargen.history.History``: the one place that knows that API."""

    def __init__(self, url: str):
        from chargen import history  # lazily: the module is optional

        self._mod = history
        try:
            self._db = history.History(url)
        except history.HistoryUnavailable as exc:
            raise ChargenError(f"history database: {exc}") from None

    def record_many(self, entries: Sequence[LogEntry]) -> list[str]:
        # The same field conventions as chargen.records.log_generation, so that
        # `chargen history replay` works on served generations too.
        fields = [dict(checkpoint_path=str(e.checkpoint.path.resolve()), checkpoint_sha256=e.sha256,
                       model_config=e.checkpoint.config.to_dict(), codec=e.checkpoint.codec.to_metadata(),
                       decoder=e.config.decoder, params=asdict(e.config), prime=e.prime, outputs=list(e.samples),
                       duration_s=e.duration_s, seed=e.config.seed) for e in entries]
        try:
            return self._db.record_generations(fields)
        except self._mod.HistoryUnavailable as exc:
            raise HistoryError(str(exc)) from None

    def list(self, *, limit: int, query: str | None, sha256: str | None) -> list[dict[str, Any]]:
        try:
            records = self._db.list_generations(limit=limit, query=query or None, checkpoint=sha256)
        except self._mod.HistoryUnavailable as exc:
            raise HistoryError(str(exc)) from None
        return [r.to_dict() for r in records]

    def get(self, gen_id: str) -> dict[str, Any]:
        try:
            return self._db.get_generation(gen_id).to_dict()
        except self._mod.HistoryLookupError as exc:
            raise GenerationNotFound(str(exc)) from None
        except self._mod.HistoryUnavailable as exc:
            raise HistoryError(str(exc)) from None

    def close(self) -> None:
        self._db.close()


class HistoryWriter:
    """Group commit: one thread writes, in one transaction, every entry queued while it was busy.

    Each request still waits for its own entry's commit before it answers (no id is
    handed out for a row that is not there); under load one commit serves many
    requests instead of one each (0.33 instead of 1.4 ms of CPU per row at 16).
    """

    def __init__(self, log: GenerationLog, max_batch: int = 64):
        self.log, self.max_batch = log, max_batch
        self._cond = threading.Condition()
        self._queue: deque[tuple[LogEntry, Future[str]]] = deque()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="chargen-history", daemon=True)
        self._thread.start()

    def submit(self, entry: LogEntry) -> Future[str]:
        future: Future[str] = Future()
        with self._cond:
            if self._closing:
                future.set_exception(HistoryError("server is shutting down"))
            else:
                self._queue.append((entry, future))
                self._cond.notify()
        return future

    def close(self, wait: float | None = 60.0) -> None:
        """Take no more entries, write those already queued, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(wait)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._queue or self._closing):
                    self._cond.wait()
                if not self._queue:  # closing, and everything queued is written
                    return
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self._write(batch)

    def _write(self, batch: list[tuple[LogEntry, Future[str]]]) -> None:
        try:
            ids = self.log.record_many([entry for entry, _ in batch])
        except HistoryError as exc:  # the database is locked or gone: every entry gets that answer
            for _, future in batch:
                _settle(future, exception=exc)
            return
        except Exception:
            if len(batch) > 1:  # a bad entry must not cost the others their rows
                for item in batch:
                    self._write([item])
                return
            logger.exception("recording a generation failed")
            _settle(batch[0][1], exception=HistoryError("internal error while recording the generation"))
            return
        for (_, future), gen_id in zip(batch, ids):
            _settle(future, result=gen_id)


def _settle(future: Future[str], result: str | None = None, exception: BaseException | None = None) -> None:
    """Answer a waiting request; one that went away (its future cancelled) still got its row."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except InvalidStateError:
        pass


def history_available() -> bool:
    return importlib.util.find_spec("chargen.history") is not None


def default_history_url(explicit: str | None) -> str | None:
    """``--database`` or the history module's default; None when the module is absent."""
    if not history_available():
        logger.warning("chargen.history is not installed: generations will not be logged")
        return None
    from chargen.history import resolve_database_url

    return resolve_database_url(explicit)


# --------------------------------------------------------------------------
# MIDI (imported lazily: text-only servers never load mido)


def check_midi_export() -> None:
    try:
        importlib.import_module("chargen.midi_export")
    except ImportError:
        raise ServiceError(501, "MIDI export is not available in this installation (chargen.midi_export)") from None


def midi_bytes(codec: Any, ids: Sequence[int]) -> bytes:
    """A Standard MIDI File of token ids; ChargenError when they hold no notes."""
    from chargen.midi_export import decode_to_midi

    buffer = io.BytesIO()
    # The checkpoint's own vocabulary; end notes the model never released, as `chargen sample` does.
    decode_to_midi(list(ids), vocab=codec.vocab, max_note_s=5.0).save(file=buffer)
    return buffer.getvalue()


def midi_notes(data: bytes) -> list[list[float]]:
    """Notes of a MIDI file as [pitch, start_s, end_s, velocity], for the page's piano roll."""
    import mido

    mid = mido.MidiFile(file=io.BytesIO(data))
    now, notes = 0.0, []
    sounding: dict[tuple[int, int], list[tuple[float, int]]] = {}
    for message in mid:  # merged tracks, times in seconds
        now += message.time
        if message.type == "note_on" and message.velocity > 0:
            sounding.setdefault((message.channel, message.note), []).append((now, message.velocity))
        elif message.type in ("note_off", "note_on"):
            started = sounding.get((message.channel, message.note))
            if started:
                begin, velocity = started.pop(0)
                notes.append([message.note, round(begin, 4), round(now, 4), velocity])
    for (_, pitch), started in sounding.items():
        notes.extend([pitch, round(begin, 4), round(now, 4), velocity] for begin, velocity in started)
    return sorted(notes, key=lambda n: (n[1], n[0]))


# --------------------------------------------------------------------------
# The batching scheduler

Emit = Callable[[str, Any], None]


class _Job:
    """One sampling/greedy request inside a scheduler: n rows of the batch."""

    def __init__(self, config: DecodeConfig, prime_ids: list[int], emit: Emit, stream: bool):
        # No torch calls here: this runs on the event loop, and every torch call there
        # waits for the GIL behind the scheduler thread.
        n = config.num_samples
        self.config, self.n, self.emit, self.stream = config, n, emit, stream
        self.prime_ids = prime_ids
        self.logits: torch.Tensor | None = None  # [n, V], set by prime() in the scheduler thread
        self.state: State = ()
        self.rng: torch.Generator | None = None
        self.vocab = 0
        self.blocking = bool(config.no_repeat_ngram)
        self.blockers = [NgramBlocker(config.no_repeat_ngram or 0, prime_ids) for _ in range(n)] \
            if self.blocking else []
        self.ids: list[list[int]] = [[] for _ in range(n)]
        # Python floats add in IEEE double exactly like Generator's float64 tensor.
        self.total = [0.0] * n
        self.remaining = config.length  # tokens still to choose
        self.cancelled = False
        self.started = 0.0
        # Requests with equal keys share the batch-wide filtering ops of each tick.
        self.key: tuple[Any, ...] = ("greedy",) if config.greedy else \
            ("sample", config.temperature, config.top_k, config.top_p)

    @property
    def done(self) -> bool:
        return self.remaining <= 0

    def prime(self, generator: Generator) -> None:
        # As Generator._sample: expand the batch-1 primed state to n identical rows.
        logits, state = generator.prime_state(self.prime_ids)
        self.vocab = logits.shape[-1]
        self.logits, self.state = logits.expand(self.n, -1), expand_state(state, self.n)
        self.rng = torch.Generator().manual_seed(self.config.seed)

    def draw_noise(self, ticks: int, skip: int = 0) -> torch.Tensor:
        """[ticks, n, V] noise for draw_one's rule; rows before ``skip`` are left unset, not drawn.

        One ``exponential_`` call for many ticks fills the same stream as one call per
        tick (tests/test_service_scheduler.py checks), so a seed gives the CLI's output.
        Greedy requests draw nothing. Rows past the request's end are not drawn either.
        """
        block = torch.empty(ticks, self.n, self.vocab)
        if not self.config.greedy:
            assert self.rng is not None  # set by prime()
            block[skip : skip + min(ticks - skip, self.remaining)].exponential_(1, generator=self.rng)
        return block


@dataclass
class SchedulerStats:
    steps: int = 0  # Stepper.step calls, one per tick
    tokens: int = 0  # tokens chosen, all rows together
    requests: int = 0
    max_batch_rows: int = 0
    max_batch_requests: int = 0


class BatchScheduler:
    """Continuous batching for one model: one thread, one ``Stepper.step`` per tick."""

    def __init__(self, name: str, generator: Generator, max_batch: int):
        self.name, self.generator, self.max_batch = name, generator, max_batch
        self.stats = SchedulerStats()
        self._cond = threading.Condition()
        self._pending: deque[_Job] = deque()
        self._active: list[_Job] = []  # owned by the worker thread
        self._logits: torch.Tensor | None = None  # [rows, V]
        self._state: State | None = None  # each [layers, rows, hidden]
        # Sampling noise for the coming ticks of the cycle, row for row with the batch: each
        # request draws from its own RNG once per NOISE_AHEAD ticks, and a tick reads one slice.
        self._noise: torch.Tensor | None = None  # [NOISE_AHEAD, rows, V]
        self._phase = 0  # this tick's slice of _noise
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"chargen-batch-{name}", daemon=True)

    @property
    def active_rows(self) -> int:
        return sum(job.n for job in self._active)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: _Job) -> None:
        with self._cond:
            if self._stopping:
                raise ServiceError(503, "server is shutting down")
            self._pending.append(job)
            self._cond.notify()

    def stop(self, wait: float | None = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if wait is not None and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(wait)

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    with self._cond:
                        while not (self._pending or self._active or self._stopping):
                            self._cond.wait()
                        if self._stopping:
                            return
                        admitted = self._take_admissible()
                    for job in admitted:
                        self._admit(job)
                    self._tick()
        except Exception:  # a bug: fail the requests, never hang them
            logger.exception("scheduler for %s failed", self.name)
            self._fail_all("internal error in the generation scheduler")
            with self._cond:
                self._stopping = True
        finally:
            self._fail_all(SHUTDOWN_MESSAGE, status=503)

    def _take_admissible(self) -> list[_Job]:
        rows, taken = self.active_rows, []
        while self._pending:
            job = self._pending[0]
            if job.cancelled:
                self._pending.popleft()
                continue
            if rows and rows + job.n > self.max_batch:
                break  # waits for rows to free up; the queue keeps arrival order
            taken.append(self._pending.popleft())
            rows += job.n
        return taken

    def _admit(self, job: _Job) -> None:
        job.started = time.perf_counter()
        self.stats.requests += 1
        if job.config.length == 0:
            self._finish(job)
            return
        # Primed here rather than on a worker thread: one thread hop less per request, and the
        # common primes (the default above all) come from the generator's cache.
        try:
            job.prime(self.generator)
        except Exception:  # a bug: fail this request, keep the others going
            logger.exception("priming failed for a request on %s", self.name)
            job.emit("error", (500, "internal error while priming"))
            return
        assert job.logits is not None
        noise = job.draw_noise(NOISE_AHEAD, skip=self._phase)  # from this tick to the cycle's end
        if self._logits is None or self._state is None or self._noise is None:
            self._logits, self._state, self._noise = job.logits.contiguous(), job.state, noise
        else:
            self._logits = torch.cat([self._logits, job.logits])
            self._state = tuple(torch.cat([a, b], dim=1) for a, b in zip(self._state, job.state))
            self._noise = torch.cat([self._noise, noise], dim=1)
        job.logits, job.state = None, ()  # the batch holds them now
        self._active.append(job)

    def _retain(self, keep: list[_Job]) -> torch.Tensor | None:
        """Drop the rows of every active job not in ``keep``; the kept row index, None if all stay."""
        if len(keep) == len(self._active):
            return None
        rows, offset, kept = [], 0, set(map(id, keep))
        for job in self._active:
            if id(job) in kept:
                rows.extend(range(offset, offset + job.n))
            offset += job.n
        self._active = keep
        index = torch.tensor(rows, dtype=torch.long)
        if not rows:
            self._logits = self._state = self._noise = None
            return index
        assert self._logits is not None and self._state is not None and self._noise is not None
        self._logits = self._logits.index_select(0, index)
        self._state = reorder_state(self._state, index)
        self._noise = self._noise.index_select(1, index)
        return index

    def _tick(self) -> None:
        """Choose every active row's next token, then step all rows that go on, once.

        Per row this is exactly Generator._sample: log_softmax, n-gram bans, then argmax
        or temperature / top-k / top-p / softmax and a draw. The row-wise ops, the draw
        included, run once per group of requests with the same settings; only the draw's
        noise is per request, from its own RNG.
        """
        self._retain([job for job in self._active if not job.cancelled])
        if not self._active:
            return
        assert self._logits is not None and self._state is not None and self._noise is not None
        logprobs = torch.log_softmax(self._logits.float(), dim=-1)  # [B, V], the model's own
        noise = self._noise[self._phase]  # [B, V]
        scores = self._logits.float()
        starts: list[int] = []
        failed: dict[int, tuple[int, str]] = {}
        groups: dict[tuple[Any, ...], list[tuple[_Job, int]]] = {}
        cloned = False
        start = 0
        for job in self._active:
            starts.append(start)
            for i, blocker in enumerate(job.blockers if job.blocking else ()):
                banned = blocker.banned()
                if banned:
                    if not cloned:
                        scores, cloned = scores.clone(), True  # never write into the batch logits
                    scores[start + i, list(banned)] = float("-inf")
                    if not job.config.greedy and not bool(torch.isfinite(scores[start + i]).any()):
                        failed[id(job)] = (400, f"no_repeat_ngram={job.config.no_repeat_ngram} bans every token "
                                                f"after {len(job.ids[i])} tokens; use a larger value or 0")
            if id(job) not in failed:
                groups.setdefault(job.key, []).append((job, start))
            start += job.n
        tokens: torch.Tensor | None = None  # [B]
        for key, members in groups.items():
            whole = len(members) == len(self._active)  # the usual case: one group, no gathering
            if not whole:
                index = torch.tensor([r for job, first in members for r in range(first, first + job.n)])
            try:
                group = scores if whole else scores.index_select(0, index)
                if key[0] == "greedy":
                    chosen = group.argmax(dim=-1)
                else:
                    # draw_one's rule, argmax(p / q) with q ~ Exp(1), for the whole group at once; each
                    # request's q comes from its own RNG, so a seed reproduces the CLI's output.
                    _, temperature, top_k, top_p = key
                    probs = torch.softmax(filter_logits(group / temperature, top_k, top_p), dim=-1)  # [G, V]
                    chosen = (probs / (noise if whole else noise.index_select(0, index))).argmax(dim=-1)
            except RuntimeError:  # a bug: fail these requests, keep the others going
                logger.exception("sampling failed for requests on %s", self.name)
                failed.update((id(job), (500, "internal error while decoding")) for job, _ in members)
                continue
            if whole:
                tokens = chosen
            else:  # failed rows keep the placeholder token 0: they leave the batch before the step
                tokens = torch.zeros(len(scores), dtype=torch.long) if tokens is None else tokens
                tokens.index_copy_(0, index, chosen)
        if tokens is None:  # every request failed
            tokens = torch.zeros(len(scores), dtype=torch.long)
        token_list = tokens.tolist()
        gained = logprobs.gather(1, tokens[:, None]).view(-1).tolist()  # float32 -> Python float: exact
        symbols = self.generator.codec.symbols
        going: list[_Job] = []
        for job, first in zip(self._active, starts):
            if failed and id(job) in failed:
                job.emit("error", failed[id(job)])
                continue
            if job.n == 1:  # the usual request: no inner loop
                token = token_list[first]
                job.ids[0].append(token)
                job.total[0] += gained[first]
                if job.blocking:
                    job.blockers[0].push(token)
            else:
                for i in range(job.n):
                    token = token_list[first + i]
                    job.ids[i].append(token)
                    job.total[i] += gained[first + i]
                    if job.blocking:
                        job.blockers[i].push(token)
            self.stats.tokens += job.n
            if job.stream:
                job.emit("tokens", [symbols[token] for token in token_list[first : first + job.n]])
            job.remaining -= 1
            if job.remaining <= 0:
                self._finish(job)
            else:
                going.append(job)
        index = self._retain(going)
        self._phase += 1
        if going:
            if self._phase == NOISE_AHEAD:  # next cycle: every request draws its next NOISE_AHEAD ticks
                self._noise = torch.cat([job.draw_noise(NOISE_AHEAD) for job in going], dim=1)
            step_tokens = tokens if index is None else tokens.index_select(0, index)
            self._logits, self._state = self.generator.stepper.step(step_tokens, self._state)
            self.stats.steps += 1
            self.stats.max_batch_rows = max(self.stats.max_batch_rows, len(step_tokens))
            self.stats.max_batch_requests = max(self.stats.max_batch_requests, len(going))
        self._phase %= NOISE_AHEAD

    def _finish(self, job: _Job) -> None:
        codec = self.generator.codec
        samples = [Sample(ids=row, text=codec.decode(row), logprob=total) for row, total in zip(job.ids, job.total)]
        job.emit("done", (samples, time.perf_counter() - job.started))

    def _fail_all(self, message: str, status: int = 500) -> None:
        with self._cond:
            jobs = list(self._pending) + self._active
            self._pending.clear()
        self._active, self._logits, self._state, self._noise = [], None, None, None
        for job in jobs:
            job.emit("error", (status, message))


# --------------------------------------------------------------------------
# Requests and the service state


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, min_length=1, max_length=128,
                              description="Name of a served model (GET /v1/models); optional when one is served.")
    prime: str | None = Field(None, description="Text to continue; for music models, MIDI tokens in their "
                              "printable form. Default: the model's default prime.")
    length: int | None = Field(None, ge=0, description=f"Tokens to generate per sample (capped by max_length). "
                               f"Default: {DEFAULT_LENGTH}, or max_length if that is smaller.")
    temperature: float = Field(1.0, ge=0.01, le=100.0, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=1, le=1_000_000)
    # Not below 1e-6: filter_logits compares in float32, where a tinier top_p is 0 and drops every token.
    top_p: float | None = Field(None, ge=1e-6, le=1.0, allow_inf_nan=False)
    greedy: bool = False
    beam_width: int | None = Field(None, ge=1, description="Beam search with this many beams; given at all "
                                   "(even 1) means beam search. Capped by max_beam_width.")
    beam_sample: bool = False
    num_samples: int = Field(1, ge=1, description="Samples generated together (capped by max_samples).")
    no_repeat_ngram: int | None = Field(None, ge=0, le=10_000)
    seed: int | None = Field(None, ge=0, lt=2**63)
    format: Literal["text", "midi"] = "text"
    stream: bool = Field(False, description="Answer with Server-Sent Events: token, then done (or error).")


@dataclass
class Served:
    name: str
    checkpoint: Checkpoint
    sha256: str
    generator: Generator
    scheduler: BatchScheduler
    inflight: int = 0

    def describe(self) -> dict[str, Any]:
        ckpt = self.checkpoint
        return {
            "name": self.name,
            "codec": ckpt.codec.name,
            "vocab_size": ckpt.codec.vocab_size,
            "config": ckpt.config.to_dict(),
            "parameters": ckpt.model.num_parameters(),
            "best_val_loss": ckpt.training.get("best_val_loss"),
            "steps": ckpt.training.get("step"),
            "sha256": self.sha256,
            "default_prime": ckpt.codec.default_prime,
        }


@dataclass
class _Handle:
    """One running generation as the event loop sees it."""

    served: Served
    queue: asyncio.Queue[tuple[str, Any]]
    job: _Job | None = None
    closed: bool = False
    release: Callable[[], None] = field(default=lambda: None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.job is not None:
                self.job.cancelled = True  # the scheduler drops its rows next tick
            self.release()


class Service:
    def __init__(self, models: Mapping[str, Checkpoint], log: GenerationLog | None, limits: Limits):
        if not models:
            raise ChargenError("no models to serve")
        self.limits, self.log = limits, log
        self.closing = False
        self.models: dict[str, Served] = {}
        for name, ckpt in models.items():
            if not _NAME_RE.match(name):
                raise ChargenError(f"model name {name!r} must match {NAME_PATTERN}")
            generator = Generator(ckpt.model, ckpt.codec)
            self.models[name] = Served(name, ckpt, sha256_file(ckpt.path), generator,
                                       BatchScheduler(name, generator, limits.max_batch))
        workers = max(1, min(4, (os.cpu_count() or 2) // 2))
        self.beam_pool = ThreadPoolExecutor(workers, thread_name_prefix="chargen-beam")
        # One writer thread (SQLite takes one writer at a time anyway), committing in groups.
        self.history = HistoryWriter(log) if log is not None else None

    def start(self) -> None:
        for served in self.models.values():
            served.scheduler.start()

    def begin_shutdown(self) -> None:
        """Refuse new work and stop running generations (their clients get an error, no history row)."""
        self.closing = True
        for served in self.models.values():
            served.scheduler.stop(wait=None)

    def stop(self) -> None:
        self.begin_shutdown()
        for served in self.models.values():
            served.scheduler.stop()
        self.beam_pool.shutdown(wait=True, cancel_futures=True)
        if self.history is not None:
            self.history.close()  # writes what is queued: finished generations keep their rows
        if self.log is not None:
            self.log.close()

    def lookup(self, name: str | None) -> Served:
        if name is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise ServiceError(422, f"model is required; served models: {', '.join(self.models)}")
        if not _NAME_RE.match(name) or ".." in name:
            raise ServiceError(422, "model must be the name of a served model (GET /v1/models), not a path")
        served = self.models.get(name)
        if served is None:
            raise ServiceError(404, f"unknown model {name!r}; served models: {', '.join(self.models)}")
        return served

    def prepare(self, served: Served, body: GenerateRequest) -> tuple[DecodeConfig, list[int]]:
        """Validate against the limits and the model; the resolved config (seed drawn) and prime ids."""
        limits, codec = self.limits, served.checkpoint.codec
        if body.length is None:  # a default that always fits this server's cap
            body.length = min(DEFAULT_LENGTH, limits.max_length)
        if body.length > limits.max_length:
            raise _over_limit("length", body.length, "max_length", limits.max_length)
        if body.beam_width is not None and body.beam_width > limits.max_beam_width:
            raise _over_limit("beam_width", body.beam_width, "max_beam_width", limits.max_beam_width)
        if body.num_samples > limits.max_samples:
            raise _over_limit("num_samples", body.num_samples, "max_samples", limits.max_samples)
        if body.prime is not None and len(body.prime) > limits.max_prime_chars:
            raise _over_limit("prime length", len(body.prime), "max_prime_chars", limits.max_prime_chars)
        if body.format == "midi":
            if codec.name != "midi":
                raise ServiceError(400, f"format 'midi' needs a music model; {served.name} uses the "
                                   f"{codec.name} codec")
            check_midi_export()
        # beam_width is passed only when given: set at all (even to 1) means beam search.
        beam = {} if body.beam_width is None else {"beam_width": body.beam_width}
        config = DecodeConfig(length=body.length, temperature=body.temperature, top_k=body.top_k,
                              top_p=body.top_p, greedy=body.greedy, beam_sample=body.beam_sample,
                              num_samples=body.num_samples, no_repeat_ngram=body.no_repeat_ngram,
                              seed=body.seed, **beam)
        config.validate(codec.vocab_size)
        prime_ids = codec.encode(body.prime if body.prime else codec.default_prime)
        return config.resolved(), prime_ids

    async def start_generation(self, served: Served, config: DecodeConfig, prime: str | None,
                               prime_ids: list[int], stream: bool) -> _Handle:
        if self.closing:
            raise ServiceError(503, "server is shutting down")
        if served.inflight >= self.limits.max_queue:
            raise ServiceError(503, f"too many requests for {served.name}: max_queue={self.limits.max_queue}",
                               "max_queue")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def emit(kind: str, payload: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, payload))
            except RuntimeError:  # loop closed: nobody is listening any more
                pass

        served.inflight += 1
        handle = _Handle(served, queue, release=lambda: setattr(served, "inflight", served.inflight - 1))
        try:
            if config.decoder == "beam":
                future = loop.run_in_executor(self.beam_pool, served.generator.generate, prime, config)
                future.add_done_callback(partial(_beam_done, emit))
            else:
                handle.job = _Job(config, prime_ids, emit, stream)
                served.scheduler.submit(handle.job)
        except BaseException:
            handle.close()
            raise
        return handle

    async def record(self, served: Served, config: DecodeConfig, prime: str, samples: list[Sample],
                     duration_s: float) -> tuple[str | None, str | None]:
        """History id (or None) and the history error message (or None)."""
        if self.history is None:
            return None, None
        entry = LogEntry(served.checkpoint, served.sha256, config, prime, samples, duration_s)
        try:
            return await asyncio.wrap_future(self.history.submit(entry)), None
        except HistoryError as exc:
            logger.warning("history: %s", exc)
            return None, str(exc)

    async def result_body(self, served: Served, body: GenerateRequest, config: DecodeConfig,
                          samples: list[Sample], duration_s: float) -> dict[str, Any]:
        history_id, history_error = await self.record(served, config, body.prime or "", samples, duration_s)
        tokens = sum(len(s.ids) for s in samples)
        out: dict[str, Any] = {
            "history_id": history_id,
            "model": served.name,
            "decoder": config.decoder,
            "params": asdict(config),
            "seed": config.seed,
            "prime": body.prime or "",
            "format": body.format,
            "duration_s": duration_s,
            "tokens": tokens,
            "samples": [{"index": i, "text": s.text, "logprob": s.logprob, "nats_per_token": s.nats_per_token}
                        for i, s in enumerate(samples)],
        }
        if history_error:
            out["history_error"] = history_error
        if body.format == "midi":
            codec = served.checkpoint.codec
            for item, sample in zip(out["samples"], samples):
                try:
                    data = await run_in_threadpool(midi_bytes, codec, sample.ids)
                except ChargenError as exc:  # e.g. no notes at all: still a valid generation
                    item.update(midi_base64=None, notes=[], midi_error=str(exc))
                    continue
                item["midi_base64"] = base64.b64encode(data).decode("ascii")
                item["notes"] = await run_in_threadpool(midi_notes, data)
                if history_id:
                    item["midi_url"] = f"/v1/generations/{history_id}.mid?index={item['index']}"
        return out


def _beam_done(emit: Emit, future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        emit("error", (503, SHUTDOWN_MESSAGE))
    elif isinstance(future.exception(), ChargenError):
        emit("error", (400, str(future.exception())))
    elif future.exception() is not None:
        logger.error("beam search failed", exc_info=future.exception())
        emit("error", (500, "internal error in beam search"))
    else:
        result = future.result()
        emit("done", (result.samples, result.duration_s))


async def _cancel_on_disconnect(request: Request, handle: _Handle, every_s: float = 0.5) -> None:
    """A client that hung up (a timeout, say) frees its batch rows instead of waiting for the end."""
    while not handle.closed:
        await asyncio.sleep(every_s)
        if await request.is_disconnected():
            handle.close()
            handle.queue.put_nowait(("error", (499, "client disconnected")))
            return


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


# --------------------------------------------------------------------------
# ASGI guard: token and body size, before any route runs


class _Guard:
    """Bearer token (or Basic with the token as password, for browsers) and the body-size cap."""

    def __init__(self, app: ASGIApp, token: str | None, max_body: int):
        self.app, self.max_body = app, max_body
        self.token = token.encode() if token else None

    def _authorized(self, scope: Scope) -> bool:
        assert self.token is not None
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, value = header.partition(b" ")
        value = value.strip()
        if scheme.lower() == b"basic":
            try:
                value = base64.b64decode(value, validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                return False
        elif scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(value, self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
            # The page gets a Basic challenge so a browser can prompt for the token.
            challenge = b'Basic realm="chargen"' if scope["path"] == "/" else b'Bearer realm="chargen"'
            await _send_json(send, 401, {"detail": "missing or wrong API token (Authorization: Bearer TOKEN)"},
                             [(b"www-authenticate", challenge)])
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            declared = dict(scope["headers"]).get(b"content-length")
            too_big = {"detail": f"request body exceeds this server's limit max_body_bytes={self.max_body}",
                       "limit": "max_body_bytes"}
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                await _send_json(send, 413, too_big)
                return
            # Read the (small, JSON) body here so a chunked upload cannot pass the cap either.
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.max_body:
                    await _send_json(send, 413, too_big)
                    return
                if not message.get("more_body", False):
                    break
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                return await receive()  # later calls wait for the disconnect, as streaming needs

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)


async def _send_json(send: Send, status: int, body: dict[str, Any],
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


# --------------------------------------------------------------------------
# The application


def create_app(models: dict[str, Checkpoint], history_url: str | None, api_token: str | None,
               limits: Limits | None = None) -> FastAPI:
    """The ASGI app serving ``models`` by name. ``history_url`` None: no history (its endpoints say so)."""
    limits = limits or Limits()
    log: GenerationLog | None = None
    if history_url is not None:
        if history_available():
            log = HistoryLog(history_url)
        else:
            logger.warning("chargen.history is not installed: generations will not be logged")
    service = Service(models, log, limits)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    # No /docs: Swagger UI loads its assets from a CDN. The schema stays at /openapi.json.
    app = FastAPI(title="chargen", version=chargen.__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.service = service

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _document_served(schema, sorted(service.models), limits)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(ChargenError)
    async def _chargen_error(_: Request, exc: ChargenError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        status = "shutting down" if service.closing else "ok"
        return JSONResponse({"status": status, "models": len(service.models)}, status_code=503 if service.closing
                            else 200)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        from chargen.service_page import PAGE

        # Nothing but this page's own inline code and this server: no third-party assets can load.
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"models": [served.describe() for served in service.models.values()]}

    @app.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        """Scheduler counters per model: steps vs tokens shows how much batching happened."""
        return {"models": {name: {**asdict(served.scheduler.stats), "active_rows": served.scheduler.active_rows,
                                  "inflight": served.inflight} for name, served in service.models.items()}}

    @app.post("/v1/generate", responses={400: {}, 404: {}, 413: {}, 422: {}, 503: {}})
    async def generate(body: GenerateRequest, request: Request) -> Any:
        served = service.lookup(body.model)
        config, prime_ids = service.prepare(served, body)
        handle = await service.start_generation(served, config, body.prime, prime_ids, body.stream)
        if body.stream:
            events = _events(service, handle, body, config)
            # A client gone before the stream starts never runs its finally: release on collection too.
            weakref.finalize(events, handle.close)
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        watcher = asyncio.create_task(_cancel_on_disconnect(request, handle))
        try:
            while True:
                kind, payload = await handle.queue.get()
                if kind == "done":
                    return await service.result_body(served, body, config, *payload)
                if kind == "error":
                    status, detail = payload
                    raise ServiceError(status, detail)
        finally:
            watcher.cancel()
            handle.close()

    def _require_log() -> GenerationLog:
        if service.log is None:
            # 404, not 5xx: on this server there are no generation records to find.
            raise ServiceError(404, "history is not enabled on this server (start it with a database)")
        return service.log

    async def _read(call: Callable[[], Any]) -> Any:
        try:
            return await run_in_threadpool(call)
        except GenerationNotFound as exc:
            raise ServiceError(404, str(exc)) from None
        except HistoryError as exc:
            raise ServiceError(503, f"history database unavailable: {exc}") from None

    def _decorate(record: dict[str, Any]) -> dict[str, Any]:
        names = {s.sha256: s.name for s in service.models.values()}
        record["model"] = names.get(record.get("checkpoint_sha256", ""))
        if (record.get("codec") or {}).get("name") == "midi":
            record["midi_url"] = f"/v1/generations/{record['id']}.mid"
        return record

    @app.get("/v1/generations")
    async def list_generations(q: str | None = Query(None, max_length=500),
                               limit: int = Query(20, ge=1),
                               model: str | None = Query(None, max_length=128)) -> dict[str, Any]:
        log = _require_log()
        if limit > limits.max_list:
            raise _over_limit("limit", limit, "max_list", limits.max_list)
        sha = service.lookup(model).sha256 if model is not None else None
        records = await _read(partial(log.list, limit=limit, query=q, sha256=sha))
        return {"generations": [_decorate(r) for r in records]}

    # Before /{gen_id}: that pattern would also match "ID.mid".
    @app.get("/v1/generations/{gen_id}.mid", response_class=Response,
             responses={200: {"content": {"audio/midi": {}}}})
    async def generation_midi(gen_id: str = PathParam(pattern=_ID_PATTERN), index: int = Query(0, ge=0)) -> Response:
        log = _require_log()
        record = await _read(partial(log.get, gen_id))
        if (record.get("codec") or {}).get("name") != "midi":
            raise ServiceError(404, f"generation {gen_id} is not music: it has no .mid")
        outputs = record.get("outputs") or []
        if index >= len(outputs):
            raise ServiceError(404, f"generation {gen_id} has {len(outputs)} output(s); no index {index}")
        from chargen.codec import codec_from_metadata

        codec = codec_from_metadata(record["codec"])
        data = await run_in_threadpool(midi_bytes, codec, codec.encode(outputs[index]["text"]))
        return Response(data, media_type="audio/midi",
                        headers={"Content-Disposition": f'attachment; filename="{record["id"]}-{index}.mid"'})

    @app.get("/v1/generations/{gen_id}")
    async def get_generation(gen_id: str = PathParam(pattern=_ID_PATTERN)) -> dict[str, Any]:
        log = _require_log()
        return _decorate(await _read(partial(log.get, gen_id)))

    app.add_middleware(_Guard, token=api_token, max_body=limits.max_body_bytes)
    return app


def _document_served(schema: dict[str, Any], names: list[str], limits: Limits) -> None:
    """Put this server's model names and limits into its OpenAPI document, so clients
    (and schema-driven fuzzers) know the valid values; requests are still checked in code."""

    def branch(prop: dict[str, Any], kind: str) -> dict[str, Any]:
        return next((b for b in prop.get("anyOf", []) if b.get("type") == kind), prop)

    props = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    branch(props["model"], "string").update(enum=names)
    branch(props["prime"], "string")["maxLength"] = limits.max_prime_chars
    branch(props["length"], "integer")["maximum"] = limits.max_length
    props["num_samples"]["maximum"] = limits.max_samples
    branch(props["beam_width"], "integer")["maximum"] = limits.max_beam_width
    for param in schema["paths"]["/v1/generations"]["get"].get("parameters", []):
        if param["name"] == "model":
            branch(param["schema"], "string").update(enum=names)
        elif param["name"] == "limit":
            param["schema"]["maximum"] = limits.max_list


async def _events(service: Service, handle: _Handle, body: GenerateRequest,
                  config: DecodeConfig) -> AsyncIterator[bytes]:
    """SSE: start, token (per sample, coalesced), then done or error. Leaving cancels the generation."""
    served = handle.served
    try:
        yield _sse("start", {"model": served.name, "decoder": config.decoder, "seed": config.seed,
                             "prime": body.prime or "", "num_samples": config.num_samples})
        held: tuple[str, Any] | None = None
        while True:
            kind, payload = held or await handle.queue.get()
            held = None
            if kind == "tokens":
                texts = [[symbol] for symbol in payload]
                while not handle.queue.empty():  # a slow reader gets fewer, bigger events
                    held = handle.queue.get_nowait()
                    if held[0] != "tokens":
                        break
                    for parts, symbol in zip(texts, held[1]):
                        parts.append(symbol)
                    held = None
                for index, parts in enumerate(texts):
                    yield _sse("token", {"index": index, "text": "".join(parts)})
            elif kind == "done":
                try:
                    result = await service.result_body(served, body, config, *payload)
                except (ServiceError, ChargenError) as exc:
                    status, detail = (exc.status, exc.detail) if isinstance(exc, ServiceError) else (400, str(exc))
                    yield _sse("error", {"status": status, "detail": detail})
                    return
                yield _sse("done", result)
                return
            else:
                status, detail = payload
                yield _sse("error", {"status": status, "detail": detail})
                return
    finally:
        handle.close()


# --------------------------------------------------------------------------
# Loading and running


def model_name_for(path: Path) -> str:
    """A run's name for its best/last weights, the file's stem otherwise; made URL-safe."""
    raw = path.parent.name if path.name in (BEST, LAST) else path.stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).lstrip(".-_")[:128]
    return name or "model"


def load_models(specs: Sequence[str]) -> dict[str, Checkpoint]:
    """``NAME=PATH|RUN`` or ``PATH|RUN`` each (none: the newest run), loaded on the CPU."""
    models: dict[str, Checkpoint] = {}
    for spec in specs or [None]:
        name: str | None = None
        if spec is not None and "=" in spec and _NAME_RE.match(spec.split("=", 1)[0]):
            name, spec = spec.split("=", 1)
        path = resolve_checkpoint(spec)
        name = name or model_name_for(path)
        if name in models:
            raise ChargenError(f"two checkpoints would be served as {name!r}; name them with NAME=PATH")
        models[name] = load_checkpoint(path)
    return models


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(host: str = "127.0.0.1", port: int = 8000, checkpoints: Sequence[str] = (), *,
          token: str | None = None, database: str | None = None, history: bool = True,
          limits: Limits | None = None, threads: int | None = 1, log_level: str = "info",
          graceful_timeout_s: float = 10.0) -> None:
    """Run the service with uvicorn until SIGINT/SIGTERM. ``token`` defaults to ``$CHARGEN_API_TOKEN``."""
    token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
    # One intra-op thread by default: a generation step is a few small matrix products, and
    # OpenMP workers spinning beside the scheduler and the event loop slow it down (16 ms
    # instead of 0.07 ms per step for a 1x128 LSTM on a busy 2-core machine). Batching is
    # the parallelism here; --threads N for big models on idle many-core machines.
    torch.set_num_threads(threads or 1)
    models = load_models(checkpoints)
    url = default_history_url(database) if history else None
    app = create_app(models, url, token, limits or Limits())
    if not _is_loopback(host) and not token:
        logger.warning("serving on %s without an API token: anyone who can reach it can use it", host)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="chargen: %(message)s")
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=graceful_timeout_s, server_header=False)
    _Server(config, app.state.service).run()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Service):
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Stop running generations too, or uvicorn waits for their streams to end. In a
        # thread: this is a signal handler and may have interrupted a holder of the scheduler lock.
        threading.Thread(target=self.service.begin_shutdown, daemon=True).start()
        super().handle_exit(sig, frame)
