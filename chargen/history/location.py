"""Where the history database is: ``--database``, ``$CHARGEN_DATABASE_URL``, ``$CHARGEN_HOME``.

Importing this module does not import SQLAlchemy (~0.3 s): the CLI reads
:data:`DATABASE_ENV` for its help text on every start.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from chargen.errors import ChargenError
from chargen.history.errors import HistoryUnavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

DATABASE_ENV = "CHARGEN_DATABASE_URL"
#: what a PostgreSQL URL without a driver (``postgresql://``) is run with
POSTGRES_DRIVER = "psycopg"
POSTGRES_EXTRA = "pip install 'chargen[postgres]'"


def resolve_database_url(explicit: str | None = None) -> str:
    """``--database`` > ``$CHARGEN_DATABASE_URL`` > ``$CHARGEN_HOME/history.db``.

    A value without ``://`` is taken as a filesystem path to a SQLite file.
    """
    value = explicit or os.environ.get(DATABASE_ENV)
    if value:
        if "://" in value or value.startswith("sqlite:"):
            return value
        return "sqlite:///" + os.path.abspath(os.path.expanduser(value))
    from chargen.files.home import chargen_home

    try:
        home = chargen_home().resolve()
    except ChargenError as exc:
        raise HistoryUnavailable(str(exc)) from None
    return f"sqlite:///{home / 'history.db'}"


def _parse(url: str) -> URL | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return make_url(url)
    except (SQLAlchemyError, ValueError):  # ValueError: e.g. a port that is not a number
        return None


def engine_url(url: str) -> URL:
    """The URL SQLAlchemy connects with: ``postgresql://`` (and ``postgres://``) use psycopg 3.

    SQLAlchemy's own default for a bare ``postgresql://`` is psycopg2, which
    chargen does not depend on; its ``postgresql`` extra installs psycopg 3.
    Raises SQLAlchemy's ArgumentError for a URL it cannot parse.
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername=f"postgresql+{POSTGRES_DRIVER}")
    return parsed


def sqlite_file(url: str) -> str | None:
    """Filesystem path of a SQLite database URL; None for in-memory or other backends."""
    parsed = _parse(url)
    if parsed is None:
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):  # sqlite:///file:path?mode=ro&uri=true
        if parsed.query.get("mode") == "memory":
            return None
        database = database[len("file:") :]
    return database


#: Query parameters whose values are never shown: any name holding one of these (password, sslpassword,
#: api_key, token, client_secret, ...).
SECRET_WORDS = ("pass", "secret", "token", "key", "auth", "credential")
MASK = "***"


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def display_url(url: str) -> str:
    """The file path of a SQLite URL, else the URL with its secrets hidden: the password of its
    ``user:password@`` part and every secret-like query parameter (``?password=``, ``sslpassword``, ...).
    A URL that does not parse is masked by its shape, never shown as given."""
    path = sqlite_file(url)
    if path is not None:
        return path
    parsed = _parse(url)
    if parsed is None:
        return _mask_unparsed(url)
    placeholder = "chargenmaskedsecret"  # rendering would percent-encode the mask itself
    query = {name: (placeholder if is_secret_name(name) else value) for name, value in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True).replace(placeholder, MASK)


def _mask_unparsed(url: str) -> str:
    """Hide ``user:password@`` and secret-like ``name=value`` pairs of a URL SQLAlchemy cannot read."""
    scheme, sep, rest = url.partition("://")
    if sep:
        authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, tail = rest[:authority_end], rest[authority_end:]
        if "@" in authority:
            userinfo, _, host = authority.rpartition("@")
            user = userinfo.split(":", 1)[0]
            authority = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{userinfo}@{host}"
        url = f"{scheme}{sep}{authority}{tail}"
    base, sep, query = url.partition("?")
    if not sep:
        return url
    pairs = [(pair.partition("=")[0], pair.partition("=")[1], pair.partition("=")[2]) for pair in query.split("&")]
    return base + "?" + "&".join(f"{k}{eq}{MASK if eq and is_secret_name(k) else v}" for k, eq, v in pairs)
