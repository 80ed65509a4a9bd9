"""The history from Python: what was generated, trained and scored, and replaying a generation."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from chargen.history.location import resolve_database_url, sqlite_file

if TYPE_CHECKING:
    from chargen.history import GenerationRecord, History, ScoreRecord, TrainingRunRecord
    from chargen.records import ReplayOutcome

T = TypeVar("T")


def _read(database: str | None, read: Callable[[History], T], empty: T) -> T:
    """``read(history)``, or ``empty`` where the SQLite file does not exist (reading never creates one)."""
    from chargen.history import History

    url = resolve_database_url(database)
    path = sqlite_file(url)
    if path is not None and not os.path.exists(path):
        return empty
    with History(url) as store:
        return read(store)


def generations(n: int | None = 20, query: str | None = None, checkpoint: str | None = None,
                database: str | None = None) -> list[GenerationRecord]:
    """Logged generations, newest first: ``n`` of them (None: all), those whose prime or output contains
    ``query`` (any case), or from ``checkpoint`` (a path or sha256)."""
    return _read(database, lambda h: h.list_generations(limit=n, query=query, checkpoint=checkpoint), [])


def generation(generation_id: str, database: str | None = None) -> GenerationRecord:
    """One logged generation by its id or a unique prefix (HistoryLookupError otherwise)."""
    from chargen.history import History

    with History(database) as store:
        return store.get_generation(generation_id)


def training_runs(n: int | None = 20, database: str | None = None) -> list[TrainingRunRecord]:
    """Logged training runs, newest first."""
    return _read(database, lambda h: h.list_runs(limit=n), [])


def scores(n: int | None = 20, checkpoint: str | None = None, database: str | None = None) -> list[ScoreRecord]:
    """Logged scores (one per scored file), newest first."""
    return _read(database, lambda h: h.list_scores(limit=n, checkpoint=checkpoint), [])


def replay(generation_id: str, database: str | None = None) -> ReplayOutcome:
    """Re-run a logged generation with its checkpoint, seed and options; ``identical`` says whether it matched."""
    from chargen.records import replay as replay_generation

    return replay_generation(database, generation_id)
