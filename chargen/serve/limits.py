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


class ServiceError(Exception):
    """An HTTP answer other than 200, with a one-line message (and the limit hit, if any)."""

    def __init__(self, status: int, detail: str, limit: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.limit = status, detail, limit

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **({"limit": self.limit} if self.limit else {})}


def over_limit(what: str, value: int, limit: str, cap: int) -> ServiceError:
    return ServiceError(422, f"{what} {value} exceeds this server's limit {limit}={cap}", limit)
