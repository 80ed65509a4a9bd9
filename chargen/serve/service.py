"""The service's state: the served models, each with its generator and scheduler, and a generation's life.

A generation is prepared (limits, then ``DecodeConfig.validate``), run (sampling
and greedy in the model's :class:`BatchScheduler`, beam search whole on a small
thread pool: its K beams are already one batch), recorded through the history
writer, and answered. Nothing heavy runs on the event loop: results come back
through ``loop.call_soon_threadsafe`` into per-request asyncio queues.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool

from chargen.codecs.midi.export import DEFAULT_MAX_NOTE_S, DEFAULT_PROGRAM, DEFAULT_TEMPO_BPM, midi_bytes, midi_notes
from chargen.errors import ChargenError
from chargen.files.atomic import sha256_file
from chargen.runs.checkpoint import Checkpoint
from chargen.sampling import DecodeConfig, GenerationResult, Generator, Sample
from chargen.sampling.config import ModelRef, NonFiniteOutput
from chargen.sampling.generator import Prepared
from chargen.serve.history_writer import GenerationLog, HistoryError, HistoryWriter
from chargen.serve.limits import (
    DEFAULT_LENGTH,
    NAME_PATTERN,
    NAME_RE,
    SHUTDOWN_MESSAGE,
    Limits,
    ServiceError,
    over_limit,
)
from chargen.serve.metrics import ServiceMetrics
from chargen.serve.scheduler import BatchScheduler, Emit, Job
from chargen.serve.schemas import GenerateRequest

logger = logging.getLogger("chargen.service")

#: How this server renders every .mid: recorded with each music generation (``export``), so
#: ``chargen history export`` writes the very bytes the service returned.
MIDI_SETTINGS: dict[str, Any] = {"tempo_bpm": DEFAULT_TEMPO_BPM, "program": DEFAULT_PROGRAM,
                                 "max_note_s": DEFAULT_MAX_NOTE_S}


def render_midi(codec: Any, ids: list[int], settings: Mapping[str, Any] = MIDI_SETTINGS) -> bytes:
    """A Standard MIDI File of token ids in the checkpoint's own vocabulary; ChargenError when no notes."""
    return midi_bytes(ids, vocab=codec.vocab, **{key: settings.get(key, MIDI_SETTINGS[key]) for key in MIDI_SETTINGS})


@dataclass
class Served:
    name: str
    checkpoint: Checkpoint
    sha256: str
    generator: Generator
    scheduler: BatchScheduler
    inflight: int = 0

    @functools.cached_property
    def ref(self) -> ModelRef:
        """What the history records of this model."""
        return ModelRef.of(self.checkpoint, self.sha256)

    @property
    def created(self) -> int:
        """When the weights file was written (Unix time): OpenAI's ``created`` of a model."""
        try:
            return int(self.checkpoint.path.stat().st_mtime)
        except OSError:
            return 0

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
            "labels": list(ckpt.config.labels),
            "music": ckpt.codec.music,
            "polyphony_cap": self.generator.music.polyphony_cap if self.generator.music else None,
            "max_hold_s": self.generator.music.max_hold_s if self.generator.music else None,
        }


@dataclass
class Handle:
    """One running generation as the event loop sees it."""

    served: Served
    queue: asyncio.Queue[tuple[str, Any]]
    job: Job | None = None
    closed: bool = False
    release: Callable[[], None] = field(default=lambda: None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.job is not None:
                self.job.cancelled = True  # the scheduler drops its rows next tick
            self.release()


class Service:
    def __init__(self, models: Mapping[str, Checkpoint], log: GenerationLog | None, limits: Limits,
                 device: str = "cpu"):
        """``device``: where batched sampling steps may run (``chargen.machine.offload``; auto: CUDA where present)."""
        if not models:
            raise ChargenError("no models to serve")
        self.limits, self.log = limits, log
        self.closing = False
        self.models: dict[str, Served] = {}
        self.metrics = ServiceMetrics(self)
        for name, ckpt in models.items():
            if not NAME_RE.match(name):
                raise ChargenError(f"model name {name!r} must match {NAME_PATTERN}")
            generator = Generator.from_checkpoint(ckpt, device)  # music: with the learnt polyphony cap
            self.models[name] = Served(name, ckpt, sha256_file(ckpt.path), generator,
                                       BatchScheduler(name, generator, limits.max_batch, self.metrics.scheduler(name)))
        workers = max(1, min(4, (os.cpu_count() or 2) // 2))
        self.beam_pool = ThreadPoolExecutor(workers, thread_name_prefix="chargen-beam")
        # One writer thread (SQLite takes one writer at a time anyway), committing in groups.
        self.history = HistoryWriter(log, observer=self.metrics.history()) if log is not None else None

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
        if not NAME_RE.match(name) or ".." in name:
            raise ServiceError(422, "model must be the name of a served model (GET /v1/models), not a path")
        served = self.models.get(name)
        if served is None:
            raise ServiceError(404, f"unknown model {name!r}; served models: {', '.join(self.models)}")
        return served

    def prepare(self, served: Served, config: DecodeConfig, prime: str | None, midi: bool = False) -> Prepared:
        """Check a request against this server's limits and the model (the decoder's and the model's rules, as
        the API and `chargen sample` apply them); the resolved config (seed drawn) and the encoded prime."""
        limits, codec = self.limits, served.checkpoint.codec
        if config.length > limits.max_length:
            raise over_limit("length", config.length, "max_length", limits.max_length)
        if config.beam_width is not None and config.beam_width > limits.max_beam_width:
            raise over_limit("beam_width", config.beam_width, "max_beam_width", limits.max_beam_width)
        if config.num_samples > limits.max_samples:
            raise over_limit("num_samples", config.num_samples, "max_samples", limits.max_samples)
        if prime is not None and len(prime) > limits.max_prime_chars:
            raise over_limit("prime length", len(prime), "max_prime_chars", limits.max_prime_chars)
        if midi and not codec.music:
            raise ServiceError(400, f"format 'midi' needs a music model; {served.name} uses the {codec.name} codec")
        return served.generator.prepare(prime, config)

    def default_length(self) -> int:
        """A request's length when it gives none: one that always fits this server's cap."""
        return min(DEFAULT_LENGTH, self.limits.max_length)

    async def start_generation(self, served: Served, prepared: Prepared, stream: bool) -> Handle:
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
        handle = Handle(served, queue, release=lambda: setattr(served, "inflight", served.inflight - 1))
        config = prepared.config
        try:
            if config.decoder == "beam":
                future = loop.run_in_executor(self.beam_pool, served.generator.generate, prepared.prime, config)
                future.add_done_callback(partial(_beam_done, emit))
            else:
                handle.job = Job(config, prepared.prime_ids, emit, stream, served.generator.music)
                served.scheduler.submit(handle.job)
        except BaseException:
            handle.close()
            raise
        return handle

    async def record(self, entry: GenerationResult) -> tuple[str | None, str | None]:
        """History id (or None) and the history error message (or None)."""
        if self.history is None:
            return None, None
        try:
            return await asyncio.wrap_future(self.history.submit(entry)), None
        except HistoryError as exc:
            logger.warning("history: %s", exc)
            return None, str(exc)

    async def log_generation(self, served: Served, config: DecodeConfig, prime: str, samples: list[Sample],
                             duration_s: float, midi: bool = False, device: str = "cpu"
                             ) -> tuple[str | None, str | None]:
        """Record a finished generation (as `chargen sample` logs it: a music model's row carries the export
        settings, whatever the format); its history id and the history's error, if any."""
        self.metrics.tokens.labels(served.name).inc(sum(len(s.ids) for s in samples))
        export = {"format": "midi" if midi else "text", **MIDI_SETTINGS} if served.checkpoint.codec.name != "text" \
            else None
        return await self.record(GenerationResult(samples, config, prime, duration_s, device=device, model=served.ref,
                                                  export=export))

    async def result_body(self, served: Served, body: GenerateRequest, config: DecodeConfig,
                          samples: list[Sample], duration_s: float, device: str = "cpu") -> dict[str, Any]:
        history_id, history_error = await self.log_generation(served, config, body.prime or "", samples, duration_s,
                                                              body.format == "midi", device)
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
                    data = await run_in_threadpool(render_midi, codec, sample.ids)
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
    elif isinstance(future.exception(), NonFiniteOutput):  # the model is broken, not the request
        emit("error", (500, str(future.exception())))
    elif isinstance(future.exception(), ChargenError):
        emit("error", (400, str(future.exception())))
    elif future.exception() is not None:
        logger.error("beam search failed", exc_info=future.exception())
        emit("error", (500, "internal error in beam search"))
    else:
        result = future.result()
        emit("done", (result.samples, result.duration_s, result.device))
