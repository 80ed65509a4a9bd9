"""Continuous batching: one thread per served model steps every active sampling/greedy request at once.

Requests join and leave the running batch between ticks. Each keeps its own
RNG (seeded from its request seed) and constraints (MIDI grammar, n-gram block,
as ``Generator`` builds them); its tokens are chosen by
``chargen.sampling.choose_tokens``, the function ``Generator`` uses, so a seeded
request returns what ``chargen sample`` returns for it, log-probabilities included.
The scheduler owns no sampling rule: it only batches, primes, and hands out noise.
Where the generator has a device (``chargen.machine.offload``), a tick of enough rows steps
them there, the batch's state moving with it; tokens are still chosen on the CPU.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from chargen.model import State
from chargen.sampling import DecodeConfig, Generator, MusicRules, choose_tokens, sequence_constraints
from chargen.sampling.config import NonFiniteOutput, check_finite
from chargen.sampling.steppers import Stepper, expand_state, reorder_state
from chargen.sampling.stop import RowTexts
from chargen.serve.limits import SHUTDOWN_MESSAGE, ServiceError
from chargen.serve.observers import SchedulerObserver

logger = logging.getLogger("chargen.service")

#: Ticks of sampling noise each request draws at once (one RNG call instead of one per tick).
NOISE_AHEAD = 32

Emit = Callable[[str, Any], None]


class Job:
    """One sampling/greedy request inside a scheduler: n rows of the batch."""

    def __init__(self, config: DecodeConfig, prime_ids: list[int], emit: Emit, stream: bool,
                 music: MusicRules | None = None):
        # No torch calls here: this runs on the event loop, and every torch call there
        # waits for the GIL behind the scheduler thread.
        n = config.num_samples
        self.config, self.n, self.emit, self.stream = config, n, emit, stream
        self.prime_ids = prime_ids
        self.logits: torch.Tensor | None = None  # [n, V], set by prime() in the scheduler thread
        self.state: State = ()
        self.bias: torch.Tensor | None = None  # [n, G*H]: a labelled model's label bias (Stepper.label_bias)
        self.rng: torch.Generator | None = None
        self.vocab = 0
        # ``config`` is resolved (Service.prepare), with ``music`` the model's: as Generator._sample's rows.
        self.blockers = sequence_constraints(config, music, prime_ids, n)
        self.blocking = bool(self.blockers)
        self.rows = RowTexts(n, config.stop)  # ids and totals (summed in order from 0.0), as Generator keeps them
        self.remaining = config.length  # tokens still to choose
        self.submitted = time.perf_counter()  # when it reached the scheduler (queue wait, time to first token)
        self.cancelled = False
        self.started = 0.0
        self.device = "cpu"  # the device's name once one of its steps ran there (chargen.machine.offload)
        # Requests with equal keys choose their tokens in one choose_tokens call per tick.
        self.key: tuple[Any, ...] = ("greedy",) if config.greedy else \
            ("sample", config.temperature, config.top_k, config.top_p)

    @property
    def done(self) -> bool:
        return self.remaining <= 0

    def prime(self, generator: Generator) -> None:
        # As Generator._sample: expand the batch-1 primed state to n identical rows.
        label = generator.label_id(self.config.label)  # checked when the request was prepared
        logits, state = generator.prime_state(self.prime_ids, label)
        self.bias = generator.stepper.label_bias(label, self.n)
        self.vocab = logits.shape[-1]
        self.logits, self.state = logits.expand(self.n, -1), expand_state(state, self.n)
        self.rng = torch.Generator().manual_seed(self.config.seed)

    def bans(self) -> list[tuple[int, ...]]:
        """This tick's bans (MIDI grammar, n-gram block), one per row."""
        return [blocker.banned() for blocker in self.blockers] if self.blocking else [()] * self.n

    def draw_noise(self, ticks: int, skip: int = 0) -> torch.Tensor:
        """[ticks, n, V] noise for the draw (exponential_noise's); rows before ``skip`` are left unset.

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

    def __init__(self, name: str, generator: Generator, max_batch: int, observer: SchedulerObserver | None = None):
        self.name, self.generator, self.max_batch = name, generator, max_batch
        self.observer = observer or SchedulerObserver()  # metrics: queue wait, first token, each step
        self.stats = SchedulerStats()
        self._cond = threading.Condition()  # guards _pending and _stopping
        self._pending: deque[Job] = deque()
        self._active: list[Job] = []  # owned by the worker thread
        self._logits: torch.Tensor | None = None  # [rows, V]
        self._state: State | None = None  # each [layers, rows, hidden]
        self._bias: torch.Tensor | None = None  # [rows, G*H]: labelled models only, each row its request's label
        # Sampling noise for the coming ticks of the cycle, row for row with the batch: each
        # request draws from its own RNG once per NOISE_AHEAD ticks, and a tick reads one slice.
        self._noise: torch.Tensor | None = None  # [NOISE_AHEAD, rows, V]
        self._phase = 0  # this tick's slice of _noise
        self._offload = generator.offload  # None on the CPU: then nothing below is done per tick
        self._on_device = False  # where _state and _bias are
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"chargen-batch-{name}", daemon=True)

    @property
    def active_rows(self) -> int:
        return sum(job.n for job in self._active)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
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
            if self._offload is not None:
                self._offload.rows()  # measured (or read from the cache) before the first request needs it
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

    def _take_admissible(self) -> list[Job]:
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

    def _admit(self, job: Job) -> None:
        job.started = time.perf_counter()
        self.observer.admitted(job.started - job.submitted)
        self.stats.requests += 1
        if job.config.length == 0:
            self._finish(job)
            return
        # Primed here rather than on a worker thread: one thread hop less per request, and the
        # common primes (the default above all) come from the generator's cache.
        try:
            job.prime(self.generator)
        except NonFiniteOutput as exc:  # a broken model, not a bug here
            job.emit("error", (500, str(exc)))
            return
        except Exception:  # a bug: fail this request, keep the others going
            logger.exception("priming failed for a request on %s", self.name)
            job.emit("error", (500, "internal error while priming"))
            return
        assert job.logits is not None
        noise = job.draw_noise(NOISE_AHEAD, skip=self._phase)  # from this tick to the cycle's end
        if self._logits is None or self._state is None or self._noise is None:
            self._logits, self._state, self._noise = job.logits.contiguous(), job.state, noise
            self._bias, self._on_device = job.bias, False
        else:
            if self._on_device:  # primed on the CPU: its rows join the batch where it is
                job.state, job.bias = self._moved(job.state, job.bias, True)
            self._logits = torch.cat([self._logits, job.logits])
            self._state = tuple(torch.cat([a, b], dim=1) for a, b in zip(self._state, job.state))
            self._noise = torch.cat([self._noise, noise], dim=1)
            if self._bias is not None and job.bias is not None:
                self._bias = torch.cat([self._bias, job.bias])
        job.logits, job.state, job.bias = None, (), None  # the batch holds them now
        self._active.append(job)

    def _retain(self, keep: list[Job]) -> torch.Tensor | None:
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
            self._logits = self._state = self._noise = self._bias = None
            self._on_device = False
            return index
        assert self._logits is not None and self._state is not None and self._noise is not None
        state_index = index.to(self._state[0].device) if self._on_device else index
        if self._bias is not None:
            self._bias = self._bias.index_select(0, state_index)
        self._logits = self._logits.index_select(0, index)
        self._state = reorder_state(self._state, state_index)
        self._noise = self._noise.index_select(1, index)
        return index

    def _tick(self) -> None:
        """Choose every active row's next token, then step all rows that go on, once.

        Tokens are chosen by ``choose_tokens`` once per group of requests with the same
        settings (one call for the usual single group); only the draw's noise is per
        request, from its own RNG.
        """
        self._retain([job for job in self._active if not job.cancelled])
        if not self._active:
            return
        began = time.perf_counter()
        assert self._logits is not None and self._state is not None and self._noise is not None
        logits, noise = self._logits, self._noise[self._phase]  # [B, V] each
        starts: list[int] = []
        groups: dict[tuple[Any, ...], list[tuple[Job, int]]] = {}
        start = 0
        for job in self._active:
            starts.append(start)
            groups.setdefault(job.key, []).append((job, start))
            start += job.n
        failed: dict[int, tuple[int, str]] = {}
        tokens = torch.zeros(len(logits), dtype=torch.long)  # failed rows keep 0: they leave before the step
        gained = [0.0] * len(logits)
        for members in groups.values():
            rows = [r for job, first in members for r in range(first, first + job.n)]
            whole = len(members) == len(self._active)  # the usual case: one group, no gathering
            index = None if whole else torch.tensor(rows)
            group_noise = noise if index is None else noise.index_select(0, index)
            bans = [ban for job, _ in members for ban in job.bans()] \
                if any(job.blocking for job, _ in members) else None
            try:
                choice = choose_tokens(logits if index is None else logits.index_select(0, index),
                                       members[0][0].config, bans, lambda noise=group_noise: noise)
            except RuntimeError:  # a bug: fail these requests, keep the others going
                logger.exception("sampling failed for requests on %s", self.name)
                failed.update((id(job), (500, "internal error while decoding")) for job, _ in members)
                continue
            if index is None:
                tokens = choice.tokens
                gained = choice.logprobs
            else:
                tokens.index_copy_(0, index, choice.tokens)
                for row, logprob in zip(rows, choice.logprobs):
                    gained[row] = logprob
        token_list = tokens.tolist()
        symbols = self.generator.codec.symbols
        going: list[Job] = []
        for job, first in zip(self._active, starts):
            if failed and id(job) in failed:
                job.emit("error", failed[id(job)])
                continue
            rows = token_list[first : first + job.n]
            if job.blocking:
                for blocker, token in zip(job.blockers, rows):
                    blocker.push(token)
            texts = job.rows.push(rows, gained[first : first + job.n], symbols)
            self.stats.tokens += job.n
            if job.stream and any(texts):
                job.emit("tokens", texts)
            if job.remaining == job.config.length:
                self.observer.first_token(time.perf_counter() - job.submitted)
            job.remaining -= 1
            if job.remaining <= 0 or job.rows.all_stopped:
                self._finish(job)
            else:
                going.append(job)
        index = self._retain(going)
        self._phase += 1
        if going:
            if self._phase == NOISE_AHEAD:  # next cycle: every request draws its next NOISE_AHEAD ticks
                self._noise = torch.cat([job.draw_noise(NOISE_AHEAD) for job in going], dim=1)
            step_tokens = tokens if index is None else tokens.index_select(0, index)
            stepper = self.generator.stepper if self._offload is None else self._place(len(step_tokens), going)
            self._logits, self._state = stepper.step(step_tokens, self._state, self._bias)
            self.observer.stepped(len(step_tokens), time.perf_counter() - began)
            self.stats.steps += 1
            self.stats.max_batch_rows = max(self.stats.max_batch_rows, len(step_tokens))
            self.stats.max_batch_requests = max(self.stats.max_batch_requests, len(going))
        self._phase %= NOISE_AHEAD

    def _place(self, rows: int, going: list[Job]) -> Stepper:
        """The stepper for a tick of ``rows`` rows (the device's where it pays), the batch moved there."""
        assert self._offload is not None and self._state is not None
        on_device = self._offload.pays(rows)
        if on_device != self._on_device:
            self._state, self._bias = self._moved(self._state, self._bias, on_device)
            self._on_device = on_device
        if not on_device:
            return self.generator.stepper
        name = str(self._offload.device)
        for job in going:
            job.device = name
        return self._offload.stepper

    def _moved(self, state: State, bias: torch.Tensor | None, to_device: bool) -> tuple[State, torch.Tensor | None]:
        assert self._offload is not None
        where = self._offload.device if to_device else torch.device("cpu")
        return tuple(s.to(where) for s in state), None if bias is None else bias.to(where)

    def _finish(self, job: Job) -> None:
        tail = job.rows.finish()
        if job.stream and any(tail):
            job.emit("tokens", tail)
        samples = job.rows.samples(self.generator.codec)
        try:  # a NaN is an error, never data (nor invalid JSON), and never recorded
            check_finite(samples, job.n if job.config.length else 0)
        except NonFiniteOutput as exc:  # the model is broken, not the request
            job.emit("error", (500, str(exc)))
            return
        job.emit("done", (samples, time.perf_counter() - job.started, job.device))

    def _fail_all(self, message: str, status: int = 500) -> None:
        with self._cond:
            jobs = list(self._pending) + self._active
            self._pending.clear()
        self._active, self._logits, self._state, self._noise, self._bias = [], None, None, None, None
        self._on_device = False
        for job in jobs:
            job.emit("error", (status, message))
