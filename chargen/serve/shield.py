"""What keeps a browser's other tabs out of the service: the ``Host`` check, the security headers,
and JSON that can always be encoded.

A server on 127.0.0.1 without a token is still reachable from any web page the browser opens: the
page's site can rebind its own name to 127.0.0.1 (DNS rebinding) and then read the answers as
same-origin. The browser keeps sending that site's name in ``Host``, so the service answers only
the names it is known by (loopback's, and those given with ``--allowed-host``) and 421 otherwise.
The headers keep the page out of frames, stop content sniffing, and allow only the server's own
scripts and styles (no inline code).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any

from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The names a loopback server is reached by.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: ``--allowed-host '*'`` turns the check off (a server behind a proxy that checks names itself).
ANY_HOST = "*"

#: The page and its assets come from this server only; no inline script or style; never in a frame.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self' blob:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")
#: Everything else (JSON, MIDI, event streams) is data: nothing in it may load or run anything.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"), (b"cross-origin-opener-policy", b"same-origin"))
PAGE_PATHS = frozenset({"/"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(bind: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The ``Host`` names a server bound to ``bind`` answers: loopback's for a loopback bind, plus
    ``extra``; None (no check) for another bind without ``extra``, or when ``extra`` holds ``*``."""
    names = {normalize_host(name) for name in extra}
    if ANY_HOST in names:
        return None
    if is_loopback(bind):
        names.update(LOOPBACK_HOSTS)
    elif not names:
        return None
    names.add(normalize_host(bind))
    return frozenset(names)


def normalize_host(value: str) -> str:
    """A Host header (or a name) without its port, lower case; IPv6 without brackets."""
    host = value.strip().lower().rstrip(".")
    if host.startswith("["):  # [::1]:8000
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:  # name:8000 (a bare IPv6 address has several colons)
        host = host.split(":", 1)[0]
    return host


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key == name), None)


class Shield:
    """ASGI middleware: refuse foreign ``Host`` names (421), and add the security headers to every answer."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] | None):
        self.app = app
        self.allowed = frozenset(normalize_host(h) for h in allowed_hosts) if allowed_hosts is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.allowed is not None:
            raw = _header(scope, b"host")
            host = normalize_host(raw.decode("latin-1")) if raw is not None else ""
            if host not in self.allowed:
                shown = json.dumps(raw.decode("latin-1"))[1:-1] if raw is not None else ""
                await _reply(send, 421, {"detail": f"this server does not answer to the host name '{shown}'; "
                                                   "start it with --allowed-host NAME to add a name"})
                return
        csp = (PAGE_CSP if scope["path"] in PAGE_PATHS else API_CSP).encode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name.decode(), value.decode())
                headers.setdefault("content-security-policy", csp.decode())
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _reply(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
               (b"connection", b"close"), *SECURITY_HEADERS, (b"content-security-policy", API_CSP.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def encodable(value: Any) -> Any:
    """``value`` with every string made encodable as UTF-8 (a lone surrogate becomes the text ``\\udXXX``),
    in nested lists and dicts too: what a client sent is echoed in errors, and must not make them fail."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {encodable(k): encodable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encodable(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: no NaN or infinity (ValueError: a bug to see, never invalid JSON sent),
    and strings that hold lone surrogates escaped rather than failing the answer."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")
