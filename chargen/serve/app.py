"""The ASGI app (``create_app``), the models it serves (``load_models``), and running it with uvicorn (``serve``)."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Mount

from chargen.errors import ChargenError
from chargen.history import resolve_database_url
from chargen.runs.checkpoint import Checkpoint, load_checkpoint
from chargen.runs.layout import BEST, LAST
from chargen.runs.lookup import resolve_checkpoint
from chargen.serve.guard import Guard, check_token
from chargen.serve.history_writer import HistoryLog
from chargen.serve.limits import NAME_RE, Limits, ServiceError, error_body
from chargen.serve.metrics import RequestCounter
from chargen.serve.page import STATIC_PATH, static_files
from chargen.serve.routes import router
from chargen.serve.service import Service
from chargen.serve.shield import LOOPBACK_HOSTS, SafeJSONResponse, Shield, allowed_hosts_for, encodable, is_loopback
from chargen.version import __version__

logger = logging.getLogger("chargen.service")
TOKEN_ENV = "CHARGEN_API_TOKEN"


def create_app(models: dict[str, Checkpoint], history_url: str | None, api_token: str | None,
               limits: Limits | None = None, device: str = "cpu",
               allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS) -> FastAPI:
    """The ASGI app serving ``models`` by name. ``history_url`` None: no history (its endpoints say so).

    ``device``: where batched steps may run (``chargen.machine.offload``). ``allowed_hosts``: the ``Host``
    names answered (default: loopback's; :func:`allowed_hosts_for` makes the list for a bind address); None
    answers any (a public bind, where the token protects)."""
    limits = limits or Limits()
    check_token(api_token)
    service = Service(models, HistoryLog(history_url) if history_url is not None else None, limits, device)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    # No /docs: Swagger UI loads its assets from a CDN. The schema stays at /openapi.json.
    app = FastAPI(title="chargen", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, default_response_class=SafeJSONResponse)
    app.state.service = service

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _document_served(schema, sorted(service.models), limits)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(ChargenError, _chargen_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.include_router(router)
    static = Mount(STATIC_PATH, static_files(), name="static")  # the page's style sheets and scripts
    app.router.routes.append(static)
    app.add_middleware(Guard, token=api_token, max_body=limits.max_body_bytes, body_timeout_s=limits.body_timeout_s)
    app.add_middleware(Shield, allowed_hosts=allowed_hosts)  # runs before the token check
    # outermost: every answer, labelled by its route (the page's files by their mount)
    app.add_middleware(RequestCounter, metrics=service.metrics, routes=[*router.routes, static])
    return app


#: Routes that speak OpenAI's API: their bad requests are 400, as OpenAI's own server answers them.
OPENAI_ROUTES = frozenset({"/v1/completions"})


async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    return SafeJSONResponse(exc.body(), status_code=exc.status)


async def _chargen_error(_: Request, exc: ChargenError) -> JSONResponse:
    return SafeJSONResponse(error_body(400, str(exc)), status_code=400)


def _finite_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 (400 on OpenAI's routes) naming each bad field; the offending value is echoed only when JSON can
    carry it (not NaN/inf), and with any lone surrogate in it (or in a field's name) escaped."""
    errors = encodable(jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b.decode("utf-8", "replace")}))
    for error in errors:
        if "input" in error and not _finite_json(error["input"]):
            del error["input"]
        if "ctx" in error and not _finite_json(error["ctx"]):
            del error["ctx"]
    fields = [".".join(str(part) for part in error.get("loc", ())[1:]) or "body" for error in errors]
    message = "; ".join(f"{field}: {error.get('msg', 'invalid')}" for field, error in zip(fields, errors))
    status = 400 if request.url.path in OPENAI_ROUTES else 422
    return SafeJSONResponse(error_body(status, message, param=fields[0] if fields else None, detail=errors),
                            status_code=status)


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
        if spec is not None and "=" in spec and NAME_RE.match(spec.split("=", 1)[0]):
            name, spec = spec.split("=", 1)
        path = resolve_checkpoint(spec)
        name = name or model_name_for(path)
        if name in models:
            raise ChargenError(f"two checkpoints would be served as {name!r}; name them with NAME=PATH")
        models[name] = load_checkpoint(path)
    return models


def serve(host: str = "127.0.0.1", port: int = 8000, checkpoints: Sequence[str] = (), *,
          token: str | None = None, database: str | None = None, history: bool = True,
          limits: Limits | None = None, threads: int | None = 1, log_level: str = "info",
          graceful_timeout_s: float = 10.0, device: str = "cpu", allowed_hosts: Sequence[str] = ()) -> None:
    """Run the service with uvicorn until SIGINT/SIGTERM. ``token`` defaults to ``$CHARGEN_API_TOKEN``.

    ``allowed_hosts``: ``Host`` names answered besides loopback's (on a loopback bind); on another bind,
    the only ones answered when given (else any: the token is the protection there)."""
    token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
    check_token(token)
    # One intra-op thread by default: a generation step is a few small matrix products, and
    # OpenMP workers spinning beside the scheduler and the event loop slow it down by orders of
    # magnitude on a busy machine. Batching is the parallelism here; --threads N for big models
    # on idle many-core machines.
    torch.set_num_threads(threads or 1)
    models = load_models(checkpoints)
    url = resolve_database_url(database) if history else None
    app = create_app(models, url, token, limits or Limits(), device=device,
                     allowed_hosts=allowed_hosts_for(host, allowed_hosts))
    if not is_loopback(host) and not token:
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
