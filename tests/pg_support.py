"""A private PostgreSQL server for the tests: initdb into a temporary folder, start, stop.

The server comes from the machine's PostgreSQL binaries (Debian's ``postgresql``
package, which ``scripts/ensure_postgres.sh`` installs for ``make test``). It
listens on a free loopback port and a unix socket in its own folder, trusts
local connections, and is thrown away at the end of the session. PostgreSQL
refuses to run as root, so as root it runs as the ``postgres`` user the Debian
package creates. Each test gets a fresh database, dropped afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

SUPERUSER = "postgres"
# The server only ever holds throwaway test data: durability settings off make it start
# and write faster, and the tests still see real transactions, locks and constraints.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",  # 16 concurrent `chargen sample` processes plus servers' pools
}


class Unavailable(Exception):
    """No PostgreSQL server can be had here; the message says why (and what to install)."""


def find_bindir() -> Path:
    """Folder holding ``initdb`` and ``pg_ctl``: $PATH first, then Debian's versioned folders."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    # /usr/lib/postgresql/15/bin/initdb: the newest major version installed
    versions = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
                if Path(p).parts[-3].isdigit()]
    if versions:
        return max(versions, key=lambda bindir: int(bindir.parent.name))
    raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: "
                      "apt-get install postgresql, or run scripts/ensure_postgres.sh as root")


def _server_user() -> str | None:
    """The user to run the server as: None for the current one, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise Unavailable("running as root and there is no 'postgres' user to run the server as "
                          "(Debian's postgresql package creates it)") from None
    return SUPERUSER


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One private server; :meth:`start` it, take :meth:`database` URLs from it, :meth:`stop` it."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.user = _server_user()
        self.port = 0
        self.root: Path | None = None
        self.start_seconds = 0.0
        self.version = ""

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)

    def start(self) -> PostgresServer:
        began = time.monotonic()
        # Not under pytest's tmp folder: that one is private to the current user (0700),
        # and the server runs as another.
        self.root = Path(tempfile.mkdtemp(prefix="chargen-pg-"))
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        data = self.root / "data"
        # C.UTF-8: case-insensitive search folds non-ASCII letters too; plain C where it is missing.
        for locale in ("--locale=C.UTF-8", "--no-locale"):
            made = self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
                             "-E", "UTF8", locale, "--no-sync")
            if made.returncode == 0:
                break
        else:
            self._remove()
            raise Unavailable(f"initdb failed: {_last_line(made.stderr)}")
        for _attempt in range(3):  # the free port can be taken between choosing and binding
            self.port = _free_port()
            options = " ".join(f"-c {key}={value}" for key, value in SERVER_SETTINGS.items())
            started = self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "server.log"),
                                "-w", "-t", "60", "-o", f"-p {self.port} -k {self.root} {options}", "start")
            if started.returncode == 0:
                break
        else:
            log = (self.root / "server.log").read_text(errors="replace") if (self.root / "server.log").exists() else ""
            self._remove()
            raise Unavailable(f"pg_ctl start failed: {_last_line(log or started.stderr)}")
        self.start_seconds = time.monotonic() - began
        with self.admin() as conn:
            self.version = conn.execute("SHOW server_version").fetchone()[0]
        return self

    @contextmanager
    def admin(self) -> Iterator[psycopg.Connection]:
        """An autocommit psycopg connection to the ``postgres`` maintenance database."""
        import psycopg

        conn = psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                               autocommit=True)
        try:
            yield conn
        finally:
            conn.close()

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its name."""
        name = f"chargen_test_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            # FORCE: a test's killed server or sampler may still hold a connection.
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextmanager
    def database(self, driver: str = "postgresql+psycopg") -> Iterator[str]:
        """The URL of a fresh database that is dropped afterwards."""
        name = self.create_database()
        try:
            yield self.url(name, driver)
        finally:
            self.drop_database(name)

    def stop(self) -> None:
        if self.root is None:
            return
        if self.port:
            # immediate: nothing here needs a clean shutdown checkpoint
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w",
                      "stop", timeout=60)
        self._remove()

    def _remove(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def connect(url: str) -> psycopg.Connection:
    """A plain autocommit psycopg connection to the database of a chargen history URL, to look
    at its tables directly (psycopg imported here: without it the fixtures skip, not collection)."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database,
                           autocommit=True)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def start_server() -> PostgresServer:
    """A started private server, or :class:`Unavailable` saying why there is none."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable("psycopg is not installed: pip install 'chargen[postgres]'") from None
    return PostgresServer().start()
