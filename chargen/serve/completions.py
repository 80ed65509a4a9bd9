"""``POST /v1/completions``: OpenAI's completions API over chargen's own engine, batching and history.

A request becomes one chargen generation per prompt (``n`` samples each), run by
the same scheduler, decoder and history as ``POST /v1/generate``; OpenAI's
fields map to chargen's (``max_tokens`` -> length, ``n`` -> num_samples,
``temperature`` 0 -> greedy), and chargen's own decode options (``top_k``,
``beam_width``, ``label``, ``grammar``, ...) are accepted as extra body fields.
A music model's completion text is its printable event tokens (one character per
event, as ``chargen midi tokens`` prints them); each choice's ``.mid`` is at the
URL the response's ``chargen.midi_urls`` gives.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.concurrency import run_in_threadpool

from chargen.sampling import DecodeConfig, Sample
from chargen.sampling.generator import Prepared
from chargen.sampling.logprobs import token_logprobs
from chargen.serve.limits import ServiceError
from chargen.serve.schemas import decode_field_names, decode_fields
from chargen.serve.service import Handle, Served, Service

#: OpenAI's default max_tokens for completions.
DEFAULT_MAX_TOKENS = 16
#: OpenAI fields chargen has no counterpart for: accepted only at the value that changes nothing.
NEUTRAL = {"best_of": (None, 1), "frequency_penalty": (None, 0, 0.0), "presence_penalty": (None, 0, 0.0),
           "logit_bias": (None, {}), "suffix": (None, "")}
#: chargen's decode options that OpenAI's fields already cover, under other names.
COVERED = ("length", "num_samples", "temperature", "top_p", "seed", "stop")

_FIELDS: dict[str, Any] = {
    "model": (str | None, Field(None, min_length=1, max_length=128,
                                description="A served model's name (GET /v1/models); optional when one is served.")),
    "prompt": (str | list[str], Field("", description="Text to continue (or a list: one generation each); "
                                      "'' starts from the model's default prime.")),
    "max_tokens": (int | None, Field(DEFAULT_MAX_TOKENS, ge=0, description="Tokens to generate per choice.")),
    "temperature": (float | None, Field(None, ge=0, allow_inf_nan=False,
                                        description="Softmax temperature; 0 means greedy. Default 1.")),
    "top_p": (float | None, Field(None, gt=0, le=1, allow_inf_nan=False)),
    "n": (int, Field(1, ge=1, description="Choices per prompt (capped by max_samples).")),
    "stream": (bool, False),
    "stream_options": (dict[str, bool] | None, None),
    "logprobs": (int | None, Field(None, ge=0, le=5, description="Log-probabilities of each token and of the "
                                   "N likeliest alternatives.")),
    "stop": (str | list[str] | None, Field(None, description="Where a choice ends (left out of its text).")),
    "seed": (int | None, Field(None, ge=0, lt=2**63)),
    "echo": (bool, Field(False, description="Put the prompt before each choice's text.")),
    "user": (str | None, Field(None, max_length=256)),
    "best_of": (int | None, None),
    "frequency_penalty": (float | None, Field(None, allow_inf_nan=False)),
    "presence_penalty": (float | None, Field(None, allow_inf_nan=False)),
    "logit_bias": (dict[str, float] | None, None),
    "suffix": (str | None, None),
    **{name: spec for name, spec in decode_fields().items() if name not in COVERED},
}

if TYPE_CHECKING:
    class CompletionRequest(BaseModel):
        def __getattr__(self, name: str) -> Any: ...
else:
    CompletionRequest = create_model("CompletionRequest", __config__=ConfigDict(extra="forbid", strict=True),
                                     **_FIELDS)


def decode_config(body: Any) -> DecodeConfig:
    """The DecodeConfig of a completion request (OpenAI's names mapped to chargen's)."""
    for name, neutral in NEUTRAL.items():
        if getattr(body, name) not in neutral:
            raise ServiceError(400, f"{name} is not supported by chargen (leave it at its default)", param=name)
    if isinstance(body.prompt, list) and not body.prompt:
        raise ServiceError(400, "prompt must not be an empty list", param="prompt")
    if body.stream and body.logprobs is not None:
        raise ServiceError(400, "logprobs are not available with stream; ask without streaming", param="logprobs")
    options = {name: getattr(body, name) for name in decode_field_names() if name not in COVERED}
    options = {k: v for k, v in options.items() if v is not None and v is not False}
    stops = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
    greedy = body.temperature == 0
    return DecodeConfig(length=DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens,
                        num_samples=body.n, temperature=1.0 if greedy or body.temperature is None else body.temperature,
                        top_p=body.top_p, seed=body.seed, stop=list(stops),
                        **({"greedy": True} if greedy else {}), **options)


def prepare(body: Any, service: Service) -> tuple[Served, list[Prepared]]:
    """The served model and one prepared generation per prompt (limits and decoder rules checked)."""
    served = service.lookup(body.model)
    config = decode_config(body)
    prompts = body.prompt if isinstance(body.prompt, list) else [body.prompt]
    if len(prompts) * body.n > service.limits.max_samples:
        raise ServiceError(400, f"{len(prompts)} prompt(s) x n={body.n} choices exceed this server's limit "
                           f"max_samples={service.limits.max_samples}", "max_samples", param="n")
    return served, [service.prepare(served, config, prompt) for prompt in prompts]


async def complete(body: Any, service: Service) -> dict[str, Any]:
    """The whole answer of a non-streamed completion."""
    served, prepared = prepare(body, service)
    handles = [await service.start_generation(served, item, stream=False) for item in prepared]
    try:
        outcomes = [await _outcome(handle) for handle in handles]
    finally:
        for handle in handles:
            handle.close()
    choices, ids, tokens = [], [], []
    for k, (item, (samples, duration, device)) in enumerate(zip(prepared, outcomes)):
        history_id, _ = await service.log_generation(served, item.config, item.prime, samples, duration,
                                                     device=device)
        ids.append(history_id)
        for i, sample in enumerate(samples):
            logprobs = None
            if body.logprobs is not None:
                logprobs = await run_in_threadpool(_logprobs, served, item, sample, body.logprobs, body.echo)
            choices.append(_choice(k * body.n + i, (item.prime if body.echo else "") + sample.text, sample, logprobs))
            tokens.append(len(sample.ids))
    return {"id": _completion_id(ids), "object": "text_completion", "created": int(time.time()),
            "model": served.name, "system_fingerprint": served.sha256[:16], "choices": choices,
            "usage": _usage(prepared, tokens), "chargen": _extension(served, prepared, ids, body.n)}


async def stream(body: Any, service: Service) -> AsyncIterator[bytes]:
    """A streamed completion: OpenAI's Server-Sent Events, one chunk per new text, ``data: [DONE]`` last."""
    served, prepared = prepare(body, service)
    handles = [await service.start_generation(served, item, stream=True) for item in prepared]
    merged: asyncio.Queue[tuple[int, tuple[str, Any]]] = asyncio.Queue()
    pumps = [asyncio.create_task(_pump(k, handle, merged)) for k, handle in enumerate(handles)]
    return _chunks(body, service, served, prepared, handles, pumps, merged)


async def _chunks(body: Any, service: Service, served: Served, prepared: list[Prepared], handles: list[Handle],
                  pumps: list[asyncio.Task[None]], merged: asyncio.Queue[tuple[int, tuple[str, Any]]]
                  ) -> AsyncIterator[bytes]:
    created, ids, completion_tokens = int(time.time()), [], []
    head = {"id": "cmpl-pending", "object": "text_completion", "created": created, "model": served.name}
    try:
        if body.echo:
            for k, item in enumerate(prepared):
                for i in range(body.n):
                    yield _data(head | {"choices": [_choice(k * body.n + i, item.prime, None, None)]})
        finished = 0
        while finished < len(handles):
            k, (kind, payload) = await merged.get()
            if kind == "tokens":
                for i, text in enumerate(payload):
                    if text:
                        yield _data(head | {"choices": [{"text": text, "index": k * body.n + i, "logprobs": None,
                                                         "finish_reason": None}]})
            elif kind == "done":
                finished += 1
                samples, duration, device = payload
                item = prepared[k]
                history_id, _ = await service.log_generation(served, item.config, item.prime, samples, duration,
                                                             device=device)
                ids.append(history_id)
                for i, sample in enumerate(samples):
                    completion_tokens.append(len(sample.ids))
                    yield _data(head | {"choices": [{"text": "", "index": k * body.n + i, "logprobs": None,
                                                     "finish_reason": "stop" if sample.stopped else "length"}]})
            else:
                status, detail = payload
                yield _data({"error": ServiceError(status, detail).body()["error"]})
                return
        if (body.stream_options or {}).get("include_usage"):
            yield _data(head | {"id": _completion_id(ids), "choices": [], "usage": _usage(prepared,
                                                                                        completion_tokens)})
        yield b"data: [DONE]\n\n"
    finally:
        for pump in pumps:
            pump.cancel()
        for handle in handles:
            handle.close()


async def _pump(k: int, handle: Handle, merged: asyncio.Queue[tuple[int, tuple[str, Any]]]) -> None:
    while True:
        item = await handle.queue.get()
        await merged.put((k, item))
        if item[0] != "tokens":
            return


async def _outcome(handle: Handle) -> tuple[list[Sample], float, str]:
    while True:
        kind, payload = await handle.queue.get()
        if kind == "done":
            return payload
        if kind == "error":
            status, detail = payload
            raise ServiceError(status, detail)


def _data(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def _choice(index: int, text: str, sample: Sample | None, logprobs: dict[str, Any] | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": logprobs,
            "finish_reason": None if sample is None else "stop" if sample.stopped else "length"}


def _usage(prepared: list[Prepared], completion_tokens: list[int]) -> dict[str, int]:
    prompt = sum(len(item.prime_ids) for item in prepared)
    completion = sum(completion_tokens)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion_id(history_ids: list[str | None]) -> str:
    first = next((i for i in history_ids if i), None)
    return f"cmpl-{first}" if first else f"cmpl-{time.time_ns():x}"


def _extension(served: Served, prepared: list[Prepared], ids: list[str | None], n: int) -> dict[str, Any]:
    """chargen's own facts beside OpenAI's: the history rows, the seed, and a music model's .mid URLs."""
    out: dict[str, Any] = {"history_ids": ids, "seed": prepared[0].config.seed}
    if served.checkpoint.codec.name != "text":
        out["midi_urls"] = [f"/v1/generations/{gen}.mid?index={i}" if gen else None for gen in ids for i in range(n)]
    return out


def _logprobs(served: Served, item: Prepared, sample: Sample, top: int, echo: bool) -> dict[str, Any]:
    """OpenAI's logprobs object for one choice (the prompt's tokens too with ``echo``: the first has none)."""
    symbols = served.checkpoint.codec.symbols
    ids = item.prime_ids + sample.ids
    scored = token_logprobs(served.checkpoint.model, ids, item.label, top)
    echo = echo and bool(item.prime)  # '' primes with the model's default token, which is no part of the text
    skip = 0 if echo else len(item.prime_ids) - 1  # scored[j] is token j + 1
    shown = ids if echo else sample.ids
    token_lps: list[float | None] = ([None] if echo else []) + [t.logprob for t in scored[skip:]]
    tops: list[dict[str, float] | None] = ([None] if echo else []) + [
        {symbols[tok]: lp for tok, lp in t.top} for t in scored[skip:]]
    return {"tokens": [symbols[t] for t in shown], "token_logprobs": token_lps,
            "top_logprobs": tops if top else None, "text_offset": list(range(len(shown)))}
