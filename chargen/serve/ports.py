"""Checks on the address ``chargen serve`` is asked to listen on, before the server starts."""

from __future__ import annotations

import contextlib
import errno
import socket

from chargen.errors import ChargenError


def require_free_port(host: str, port: int) -> None:
    """Raise a one-line ChargenError unless ``host:port`` can be listened on now.

    Binds a socket the way uvicorn does (SO_REUSEADDR, so a port in TIME_WAIT
    counts as free) and closes it again; a server started right after gets the
    same answer, short of a race with another program.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ChargenError(f"cannot listen on {host}:{port}: unknown host ({exc})") from None
    family, kind, proto, _, address = infos[0]
    with contextlib.closing(socket.socket(family, kind, proto)) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise ChargenError(f"cannot listen on {host}:{port}: {reason}") from None
