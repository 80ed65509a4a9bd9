"""The HTTP endpoints, on an ``APIRouter``; the served state comes from ``app.state.service``."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from chargen.codecs.midi.export import midi_notes
from chargen.codecs.registry import codec_from_metadata, is_music
from chargen.errors import ChargenError
from chargen.runs.curve import scan_curve, trend
from chargen.sampling.config import DecodeConfig
from chargen.serve.completions import CompletionRequest, complete
from chargen.serve.completions import stream as completion_stream
from chargen.serve.history_writer import GenerationLog, GenerationNotFound, HistoryError
from chargen.serve.limits import ID_PATTERN, ServiceError, over_limit
from chargen.serve.metrics import CONTENT_TYPE
from chargen.serve.page import INDEX
from chargen.serve.schemas import GenerateRequest, decode_options
from chargen.serve.service import Service, render_midi
from chargen.serve.sse import cancel_on_disconnect, events

router = APIRouter()


def get_service(request: Request) -> Service:
    return request.app.state.service


def _require_log(service: Service) -> GenerationLog:
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


def _is_midi(record: dict[str, Any]) -> bool:
    return is_music((record.get("codec") or {}).get("name"))


def _record_midi(record: dict[str, Any], index: int) -> bytes:
    """The .mid of one logged output; ChargenError when it holds no notes."""
    codec = codec_from_metadata(record["codec"])
    # With the settings it was logged with (older rows: this server's), as `chargen history export` does.
    return render_midi(codec, codec.encode(record["outputs"][index]["text"]), record.get("params") or {})


def _add_notes(record: dict[str, Any]) -> dict[str, Any]:
    """Each output's notes, as a fresh generation answers them: the page's piano roll and player."""
    for index, output in enumerate(record.get("outputs") or []):
        try:
            output["notes"] = midi_notes(_record_midi(record, index))
        except ChargenError as exc:  # e.g. no notes at all
            output.update(notes=[], midi_error=str(exc))
    return record


def _decorate(service: Service, record: dict[str, Any]) -> dict[str, Any]:
    names = {s.sha256: s.name for s in service.models.values()}
    record["model"] = names.get(record.get("checkpoint_sha256", ""))
    if _is_midi(record):
        record["midi_url"] = f"/v1/generations/{record['id']}.mid"
    return record


@router.get("/healthz")
async def healthz(service: Service = Depends(get_service)) -> JSONResponse:
    status = "shutting down" if service.closing else "ok"
    return JSONResponse({"status": status, "models": len(service.models)},
                        status_code=503 if service.closing else 200)


@router.get("/", response_class=FileResponse, include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(INDEX, headers={"Cache-Control": "no-cache"})  # its CSP: chargen.serve.shield


@router.get("/v1/models")
async def list_models(service: Service = Depends(get_service)) -> dict[str, Any]:
    """The served models: OpenAI's list (``object``, ``data``) and chargen's own ``models`` beside it."""
    described = [served.describe() for served in service.models.values()]
    data = [{"id": item["name"], "object": "model", "created": served.created, "owned_by": "chargen", **item}
            for item, served in zip(described, service.models.values())]
    return {"object": "list", "data": data, "models": described}


@router.post("/v1/completions", responses={400: {}, 401: {}, 404: {}, 413: {}, 503: {}})
async def completions(body: CompletionRequest, service: Service = Depends(get_service)) -> Any:
    """OpenAI's completions API (see chargen.serve.completions); chargen's decode options as extra fields."""
    if body.stream:
        chunks = await completion_stream(body, service)
        return StreamingResponse(chunks, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await complete(body, service)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
async def metrics(service: Service = Depends(get_service)) -> Response:
    """Prometheus' text format: requests, tokens, streams, batch sizes, latencies, queue wait, history writes."""
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/v1/stats")
async def stats(service: Service = Depends(get_service)) -> dict[str, Any]:
    """Scheduler counters per model: steps vs tokens shows how much batching happened."""
    return {"models": {name: {**asdict(served.scheduler.stats), "active_rows": served.scheduler.active_rows,
                              "inflight": served.inflight} for name, served in service.models.items()}}


@router.post("/v1/generate", responses={400: {}, 404: {}, 413: {}, 422: {}, 503: {}})
async def generate(body: GenerateRequest, request: Request, service: Service = Depends(get_service)) -> Any:
    served = service.lookup(body.model)
    length = body.length if body.length is not None else service.default_length()
    prepared = service.prepare(served, DecodeConfig(length=length, **decode_options(body)), body.prime,
                               body.format == "midi")
    config = prepared.config
    handle = await service.start_generation(served, prepared, body.stream)
    if body.stream:
        stream = events(service, handle, body, config)
        # A client gone before the stream starts never runs its finally: release on collection too.
        weakref.finalize(stream, handle.close)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    watcher = asyncio.create_task(cancel_on_disconnect(request, handle))
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


@router.get("/v1/generations")
async def list_generations(q: str | None = Query(None, max_length=500),
                           limit: int = Query(20, ge=1),
                           model: str | None = Query(None, max_length=128),
                           service: Service = Depends(get_service)) -> dict[str, Any]:
    log = _require_log(service)
    if limit > service.limits.max_list:
        raise over_limit("limit", limit, "max_list", service.limits.max_list)
    sha = service.lookup(model).sha256 if model is not None else None
    records = await _read(partial(log.list, limit=limit, query=q, sha256=sha))
    return {"generations": [_decorate(service, r) for r in records]}


# Before /{gen_id}: that pattern would also match "ID.mid".
@router.get("/v1/generations/{gen_id}.mid", response_class=Response,
            responses={200: {"content": {"audio/midi": {}}}})
async def generation_midi(gen_id: str = PathParam(pattern=ID_PATTERN), index: int = Query(0, ge=0),
                          service: Service = Depends(get_service)) -> Response:
    log = _require_log(service)
    record = await _read(partial(log.get, gen_id))
    if not _is_midi(record):
        raise ServiceError(404, f"generation {gen_id} is not music: it has no .mid")
    outputs = record.get("outputs") or []
    if index >= len(outputs):
        raise ServiceError(404, f"generation {gen_id} has {len(outputs)} output(s); no index {index}")
    data = await run_in_threadpool(_record_midi, record, index)
    return Response(data, media_type="audio/midi",
                    headers={"Content-Disposition": f'attachment; filename="{record["id"]}-{index}.mid"'})


@router.get("/v1/generations/{gen_id}")
async def get_generation(gen_id: str = PathParam(pattern=ID_PATTERN),
                         service: Service = Depends(get_service)) -> dict[str, Any]:
    log = _require_log(service)
    record = _decorate(service, await _read(partial(log.get, gen_id)))
    return await run_in_threadpool(_add_notes, record) if _is_midi(record) else record


@router.get("/v1/models/{name}/curve")
async def model_curve(name: str = PathParam(max_length=128),
                      service: Service = Depends(get_service)) -> dict[str, Any]:
    """The training curve of the model's run (``metrics.jsonl``, thinned to at most ``curves.MAX_POINTS``
    points, read in bounded memory) and its trend; empty without a run folder."""
    served = service.lookup(name)
    run_dir = served.checkpoint.path.parent  # where `chargen info` reads it too
    curve = await run_in_threadpool(scan_curve, run_dir)
    verdict = trend(run_dir, curve)
    return {"model": served.name, "points": [asdict(point) for point in curve.points],
            "trend": verdict.to_dict() if verdict is not None else None}
