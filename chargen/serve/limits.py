"""What one request may ask of the service, and the errors it answers with."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: Served model names: what a request may name; never a path.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
NAME_RE = re.compile(NAME_PATTERN)
#: History ids in URLs.
ID_PATTERN = r"^[0-9A-Za-z]{1,64}$"
DEFAULT_LENGTH = 200
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
    body_timeout_s: float = 5.0  # a request body not complete by then is answered 408


#: OpenAI's error types by status, for the ``error`` object every error answer carries.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 408: "timeout_error", 413: "invalid_request_error",
               422: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable_error"}


def error_body(status: int, message: str, param: str | None = None, limit: str | None = None,
               detail: Any = None) -> dict[str, Any]:
    """Every error answer's body: chargen's ``detail`` (and the ``limit`` hit) beside OpenAI's ``error`` object,
    so both chargen's clients and OpenAI's (openai, LangChain) read it."""
    return {"detail": message if detail is None else detail, **({"limit": limit} if limit else {}),
            "error": {"message": message, "type": ERROR_TYPES.get(status, "server_error" if status >= 500
                                                                  else "invalid_request_error"),
                      "param": param or limit, "code": limit}}


class ServiceError(Exception):
    """An HTTP answer other than 200, with a one-line message (and the limit hit, if any)."""

    def __init__(self, status: int, detail: str, limit: str | None = None, param: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.limit, self.param = status, detail, limit, param

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.detail, self.param, self.limit)


def over_limit(what: str, value: int, limit: str, cap: int) -> ServiceError:
    return ServiceError(422, f"{what} {value} exceeds this server's limit {limit}={cap}", limit)
