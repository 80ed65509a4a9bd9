"""ASGI middleware run before any route: the API token, the request-body cap and the body's read timeout."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chargen.errors import ChargenError
from chargen.serve.limits import error_body

OPEN_PATHS = frozenset({"/healthz"})


def check_token(token: str | None) -> None:
    """A token must be visible ASCII: browsers send header values as Latin-1 bytes (fetch refuses
    anything else), and Basic credentials as UTF-8 or Latin-1 depending on the browser, so a token
    with other characters could never be sent by the page."""
    if token and not all(0x21 <= ord(ch) <= 0x7E for ch in token):
        raise ChargenError("--token must be printable ASCII without spaces (letters, digits, punctuation): "
                           "browsers cannot send other characters in a header")


class Guard:
    """Bearer token (or Basic with the token as password, for browsers), the body-size cap, and a
    deadline for the body: a client that stops sending it gets 408 instead of holding its connection."""

    def __init__(self, app: ASGIApp, token: str | None, max_body: int, body_timeout_s: float = 5.0):
        check_token(token)
        self.app, self.max_body, self.body_timeout_s = app, max_body, body_timeout_s
        self.token = token.encode() if token else None

    def _authorized(self, scope: Scope) -> bool:
        assert self.token is not None
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, value = header.partition(b" ")
        value = value.strip()
        if scheme.lower() == b"basic":
            try:
                value = base64.b64decode(value, validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                return False
        elif scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(value, self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
            # The page gets a Basic challenge so a browser can prompt for the token.
            challenge = b'Basic realm="chargen"' if scope["path"] == "/" else b'Bearer realm="chargen"'
            await send_json(send, 401, error_body(401, "missing or wrong API token (Authorization: Bearer TOKEN)"),
                            [(b"www-authenticate", challenge)])
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            declared = dict(scope["headers"]).get(b"content-length")
            too_big = error_body(413, f"request body exceeds this server's limit max_body_bytes={self.max_body}",
                                 limit="max_body_bytes")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                await send_json(send, 413, too_big)
                return
            # Read the (small, JSON) body here so a chunked upload cannot pass the cap either.
            chunks, size = [], 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.body_timeout_s  # for the whole body, not each chunk: no trickling
            while True:
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    await send_json(send, 408, {"detail": f"the request body did not arrive within "
                                                          f"{self.body_timeout_s:g} s", "limit": "body_timeout_s"},
                                    [(b"connection", b"close")])
                    return
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.max_body:
                    await send_json(send, 413, too_big)
                    return
                if not message.get("more_body", False):
                    break
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                return await receive()  # later calls wait for the disconnect, as streaming needs

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)


async def send_json(send: Send, status: int, body: dict[str, Any],
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})
