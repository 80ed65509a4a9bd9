"""Record ids: sortable ULID-style ids, and the short prefixes users see."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timedelta, timezone

#: shortest id prefix shown to users; longer where needed to stay unique
MIN_SHORT_ID = 8

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_last_id_lock = threading.Lock()
_last_id: tuple[int, int] = (-1, 0)


def new_id(at: datetime | None = None) -> str:
    """A 26-character ULID-style id: 48-bit milliseconds, then 80 random bits.

    Ids sort like their creation times (Crockford base32 keeps byte order),
    and ids made in the same millisecond by one process still sort in call
    order because the random part is incremented instead of redrawn.
    """
    global _last_id
    # Integer arithmetic: float timestamps can round a millisecond down.
    ms = (at - _EPOCH) // timedelta(milliseconds=1) if at is not None else time.time_ns() // 1_000_000
    with _last_id_lock:
        last_ms, last_rand = _last_id
        if ms == last_ms and last_rand < (1 << 80) - 1:
            rand = last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_id = (ms, rand)
    value = (ms << 80) | rand
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def id_time(record_id: str) -> datetime:
    """Creation time encoded in an id from :func:`new_id`."""
    value = 0
    for ch in record_id.upper():
        value = value * 32 + _CROCKFORD.index(ch)
    return _EPOCH + timedelta(milliseconds=value >> 80)


def new_record_id(created_at: datetime | None) -> tuple[str, datetime]:
    """A fresh id and the creation time it encodes (now, unless given)."""
    if created_at is None:
        created_at = datetime.now(timezone.utc)
    elif created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    return new_id(created_at), created_at


def short_id(record_id: str, before: str | None, after: str | None) -> str:
    """Shortest prefix of ``record_id`` unique among all ids, given its sorted neighbours.

    One character past the longest prefix shared with either neighbour (like
    git), and never under :data:`MIN_SHORT_ID`.
    """
    shared = max(len(os.path.commonprefix([record_id, other])) for other in (before or "", after or ""))
    return record_id[: max(MIN_SHORT_ID, shared + 1)]
