"""``chargen serve``: generation over HTTP (JSON and Server-Sent Events), the history, and a small web page.

  limits.py          Limits, ServiceError, name and id patterns
  schemas.py         the body of POST /v1/generate (strict, finite)
  scheduler.py       BatchScheduler: continuous batching, one model step per tick for every request
  history_writer.py  HistoryLog (rows by chargen.records.generation_fields), HistoryWriter (group commit)
  service.py         Service: served models, a generation's life, MIDI rendering of answers
  sse.py             Server-Sent Events; cancelling on disconnect
  guard.py           ASGI middleware: API token, body-size cap, body read timeout
  shield.py          ASGI middleware: the Host check (DNS rebinding), security headers; JSON that always encodes
  routes.py          the endpoints, on an APIRouter
  app.py             create_app, load_models, serve (uvicorn)
  page.py            the page at /, its style sheet and script
"""

from chargen.serve.app import TOKEN_ENV, create_app, load_models, model_name_for, serve
from chargen.serve.history_writer import (
    GenerationLog,
    GenerationNotFound,
    HistoryError,
    HistoryLog,
    HistoryWriter,
)
from chargen.serve.limits import Limits, ServiceError
from chargen.serve.scheduler import NOISE_AHEAD, BatchScheduler, Job
from chargen.serve.service import MIDI_SETTINGS, Service

__all__ = [
    "MIDI_SETTINGS", "NOISE_AHEAD", "TOKEN_ENV", "BatchScheduler", "GenerationLog", "GenerationNotFound",
    "HistoryError", "HistoryLog", "HistoryWriter", "Job", "Limits", "Service", "ServiceError",
    "create_app", "load_models", "model_name_for", "serve",
]
