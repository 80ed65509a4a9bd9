"""The history's two errors; both reach the user as one line."""

from __future__ import annotations

from chargen.errors import ChargenError


class HistoryUnavailable(ChargenError):
    """The history database cannot be opened, read or written right now."""


class HistoryLookupError(ChargenError):
    """No record, or more than one, matches the id (prefix) the user gave."""
