"""The service's history: one small interface over ``chargen.history``, and a group-committing writer thread.

Rows are made by ``chargen.records.generation_fields``, the mapping ``chargen
sample`` logs through too, so served generations replay and export like any other.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any, Protocol

from chargen import history
from chargen.errors import ChargenError
from chargen.records import generation_fields
from chargen.sampling import GenerationResult
from chargen.serve.observers import HistoryObserver

logger = logging.getLogger("chargen.service")


class HistoryError(Exception):
    """The history database failed; generation still answers, without an id."""


class GenerationNotFound(Exception):
    pass


class GenerationLog(Protocol):
    """What the service needs from the history store."""

    def record_many(self, entries: Sequence[GenerationResult]) -> list[str]:
        """Record all generations in one transaction (all or none); their ids in order."""
        ...

    def list(self, *, limit: int, query: str | None, sha256: str | None) -> list[dict[str, Any]]: ...

    def get(self, gen_id: str) -> dict[str, Any]: ...

    def close(self) -> None: ...


class HistoryLog:
    """:class:`GenerationLog` over ``chargen.history.History``: the one place that knows that API."""

    def __init__(self, url: str):
        try:
            self._db = history.History(url)
        except history.HistoryUnavailable as exc:
            raise ChargenError(f"history database: {exc}") from None

    def record_many(self, entries: Sequence[GenerationResult]) -> list[str]:
        rows = [generation_fields(entry) for entry in entries]
        try:
            return self._db.record_generations(rows)
        except history.HistoryUnavailable as exc:
            raise HistoryError(str(exc)) from None

    def list(self, *, limit: int, query: str | None, sha256: str | None) -> list[dict[str, Any]]:
        try:
            records = self._db.list_generations(limit=limit, query=query or None, checkpoint=sha256)
        except history.HistoryUnavailable as exc:
            raise HistoryError(str(exc)) from None
        return [r.to_dict() for r in records]

    def get(self, gen_id: str) -> dict[str, Any]:
        try:
            return self._db.get_generation(gen_id).to_dict()
        except history.HistoryLookupError as exc:
            raise GenerationNotFound(str(exc)) from None
        except history.HistoryUnavailable as exc:
            raise HistoryError(str(exc)) from None

    def close(self) -> None:
        self._db.close()


class HistoryWriter:
    """Group commit: one thread writes, in one transaction, every entry queued while it was busy.

    Each request still waits for its own entry's commit before it answers (no id is
    handed out for a row that is not there); under load one commit serves many
    requests instead of one each, a fraction of the CPU per row.
    """

    def __init__(self, log: GenerationLog, max_batch: int = 64, observer: HistoryObserver | None = None):
        self.log, self.max_batch = log, max_batch
        self.observer = observer or HistoryObserver()  # metrics: rows per commit, failures
        self._cond = threading.Condition()  # guards _queue and _closing
        self._queue: deque[tuple[GenerationResult, Future[str]]] = deque()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="chargen-history", daemon=True)
        self._thread.start()

    def submit(self, entry: GenerationResult) -> Future[str]:
        future: Future[str] = Future()
        with self._cond:
            if self._closing:
                future.set_exception(HistoryError("server is shutting down"))
            else:
                self._queue.append((entry, future))
                self._cond.notify()
        return future

    def close(self, wait: float | None = 60.0) -> None:
        """Take no more entries, write those already queued, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(wait)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._queue or self._closing):
                    self._cond.wait()
                if not self._queue:  # closing, and everything queued is written
                    return
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self._write(batch)

    def _write(self, batch: list[tuple[GenerationResult, Future[str]]]) -> None:
        try:
            ids = self.log.record_many([entry for entry, _ in batch])
        except HistoryError as exc:  # the database is locked or gone: every entry gets that answer
            self.observer.failed(len(batch))
            for _, future in batch:
                _settle(future, exception=exc)
            return
        except Exception:
            if len(batch) > 1:  # a bad entry must not cost the others their rows
                for item in batch:
                    self._write([item])
                return
            logger.exception("recording a generation failed")
            self.observer.failed(1)
            _settle(batch[0][1], exception=HistoryError("internal error while recording the generation"))
            return
        self.observer.committed(len(batch))
        for (_, future), gen_id in zip(batch, ids):
            _settle(future, result=gen_id)


def _settle(future: Future[str], result: str | None = None, exception: BaseException | None = None) -> None:
    """Answer a waiting request; one that went away (its future cancelled) still got its row."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except InvalidStateError:
        pass
