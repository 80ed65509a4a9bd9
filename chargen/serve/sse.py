"""Server-Sent Events for streamed generations, and cancelling a generation whose client hung up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from chargen.errors import ChargenError
from chargen.sampling import DecodeConfig
from chargen.serve.limits import ServiceError
from chargen.serve.schemas import GenerateRequest
from chargen.serve.service import Handle, Service


def sse(event: str, data: Any) -> bytes:
    """One event; its data is always valid JSON (no NaN: ValueError) and always encodes (lone surrogates
    escaped)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return f"event: {event}\ndata: {text}\n\n".encode("utf-8", "backslashreplace")


async def events(service: Service, handle: Handle, body: GenerateRequest,
                 config: DecodeConfig) -> AsyncIterator[bytes]:
    """SSE: start, token (per sample, coalesced), then done or error. Leaving cancels the generation."""
    served = handle.served
    try:
        yield sse("start", {"model": served.name, "decoder": config.decoder, "seed": config.seed,
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
                    if any(parts):
                        yield sse("token", {"index": index, "text": "".join(parts)})
            elif kind == "done":
                try:
                    result = await service.result_body(served, body, config, *payload)
                except (ServiceError, ChargenError) as exc:
                    status, detail = (exc.status, exc.detail) if isinstance(exc, ServiceError) else (400, str(exc))
                    yield sse("error", {"status": status, "detail": detail})
                    return
                yield sse("done", result)
                return
            else:
                status, detail = payload
                yield sse("error", {"status": status, "detail": detail})
                return
    finally:
        handle.close()


async def cancel_on_disconnect(request: Request, handle: Handle, every_s: float = 0.5) -> None:
    """A client that hung up (a timeout, say) frees its batch rows instead of waiting for the end."""
    while not handle.closed:
        await asyncio.sleep(every_s)
        if await request.is_disconnected():
            handle.close()
            handle.queue.put_nowait(("error", (499, "client disconnected")))
            return
