"""The store: :class:`History`, one connection to the history database.

Every failure to reach or write the database is raised as
:class:`HistoryUnavailable`, one line, so that callers can warn and carry on
with their real work; no session outlives a method call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, delete, func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased, selectinload

from chargen.files.atomic import sha256_file as file_sha256
from chargen.history import schema
from chargen.history.convert import (
    ConfigLike,
    GenerationFields,
    GenerationRecord,
    ScoreFields,
    ScoreRecord,
    TrainingRunRecord,
    abspath,
    finite,
    json_object,
)
from chargen.history.engine import DEFAULT_BUSY_TIMEOUT_MS, WRITE_OPTION, create_history_engine, describe
from chargen.history.errors import HistoryLookupError, HistoryUnavailable
from chargen.history.ids import new_record_id, short_id
from chargen.history.location import display_url, resolve_database_url
from chargen.history.schema import Generation, GenerationOutput, Score, TrainingRun
from chargen.version import __version__

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_Row = TypeVar("_Row", Generation, TrainingRun, Score)
_Record = TypeVar("_Record", GenerationRecord, TrainingRunRecord, ScoreRecord)
_KINDS = {Generation: "generation", TrainingRun: "training run", Score: "score"}


class History:
    """A connection to the history database at ``url``.

    ``History(None)`` uses :func:`resolve_database_url`, and plain paths are
    taken as SQLite files. Opening creates the tables or migrates an older
    schema. Every method (and the constructor) raises
    :class:`HistoryUnavailable` when the database cannot be used, and
    :class:`HistoryLookupError` for an unknown or ambiguous id.
    """

    def __init__(self, url: str | None = None, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self.url = resolve_database_url(url)
        self.busy_timeout_ms = busy_timeout_ms
        self._engine = create_history_engine(self.url, busy_timeout_ms)
        self._writer = self._engine.execution_options(**{WRITE_OPTION: True})
        try:
            with self._guard():
                schema.ensure_schema(self._engine, self._writer, display_url(self.url))
        except BaseException:
            self._engine.dispose()
            raise

    @contextmanager
    def _guard(self) -> Iterator[None]:
        dbapi_error = getattr(self._engine.dialect.loaded_dbapi, "Error", SQLAlchemyError)
        try:
            yield
        except (SQLAlchemyError, dbapi_error) as exc:
            raise HistoryUnavailable(describe(exc, self.url, self.busy_timeout_ms)) from None

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        with self._guard(), Session(self._writer if write else self._engine) as session, session.begin():
            yield session

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def schema_version(self) -> int:
        with self._guard(), self._engine.connect() as conn:
            return schema.read_version(conn, display_url(self.url))

    # -- writing -----------------------------------------------------------

    def record_generation(self, fields: GenerationFields | None = None, /, **keywords: Any) -> str:
        """Store one generation and its outputs; returns its id.

        Give a :class:`GenerationFields`, or its fields as keywords.
        """
        return self.record_generations([fields if fields is not None else keywords])[0]

    def record_generations(self, generations: Sequence[GenerationFields | Mapping[str, Any]]) -> list[str]:
        """Store several generations in one transaction: all or none. Returns their ids, in order.

        Each entry is a :class:`GenerationFields` or a mapping of its fields. One commit
        (and one training-run lookup per checkpoint) for many rows: a server logging
        many concurrent requests groups them this way.
        """
        entries = [GenerationFields.of(g) for g in generations]
        rows = [entry.to_row() for entry in entries]  # validates all before writing any
        ids = [row.id for row in rows]  # read now: the commit expires the rows
        with self._session(write=True) as session:
            self._link_runs(session, rows, [entry.run_id for entry in entries])
            session.add_all(rows)
        return ids

    def record_scores(self, scores: Sequence[ScoreFields | Mapping[str, Any]]) -> list[str]:
        """Store scored files in one transaction: all or none. Returns their ids, in order."""
        entries = [s if isinstance(s, ScoreFields) else ScoreFields(**s) for s in scores]
        rows = [entry.to_row() for entry in entries]  # validates all before writing any
        ids = [row.id for row in rows]
        with self._session(write=True) as session:
            self._link_runs(session, rows, [entry.run_id for entry in entries])
            session.add_all(rows)
        return ids

    def _link_runs(self, session: Session, rows: Sequence[Generation | Score], given: Sequence[str | None]) -> None:
        """Each row's training run: the given id, else the newest run that wrote its checkpoint."""
        runs: dict[str, str | None] = {}
        for row, run_id in zip(rows, given):
            if run_id is not None:
                row.run_id = self._resolve(session, TrainingRun, run_id).id
            else:
                if row.checkpoint_sha256 not in runs:
                    runs[row.checkpoint_sha256] = self._find_run(session, row.checkpoint_sha256)
                row.run_id = runs[row.checkpoint_sha256]

    def record_training_run(
        self,
        *,
        corpus_path: str | os.PathLike[str],
        corpus_sha256: str,
        corpus_tokens: int,
        codec: Mapping[str, Any],
        model_config: ConfigLike,
        train_config: ConfigLike,
        steps: int,
        best_val_loss: float | None,
        checkpoint_path: str | os.PathLike[str],
        checkpoint_sha256: str | None = None,
        chargen_version: str = __version__,
        created_at: datetime | None = None,
        parent: Mapping[str, Any] | None = None,
    ) -> str:
        """Store one training run; returns its id. ``best_val_loss`` is in nats.

        ``parent`` (fine-tuning) names the weights the run started from; its
        ``checkpoint_sha256`` links it to the parent's own run row (``run_id``) where logged.
        """
        record_id, created = new_record_id(created_at)
        lineage = None if parent is None else json_object(parent, "parent")
        row = TrainingRun(
            id=record_id,
            created_at=created,
            chargen_version=chargen_version,
            corpus_path=abspath(corpus_path),
            corpus_sha256=corpus_sha256.lower(),
            corpus_tokens=int(corpus_tokens),
            codec=json_object(codec, "codec"),
            model_config=json_object(model_config, "model_config"),
            train_config=json_object(train_config, "train_config"),
            steps=int(steps),
            best_val_loss=finite(best_val_loss),
            checkpoint_path=abspath(checkpoint_path),
            checkpoint_sha256=None if checkpoint_sha256 is None else checkpoint_sha256.lower(),
        )
        with self._session(write=True) as session:
            sha256 = (lineage or {}).get("checkpoint_sha256")
            if lineage is not None and isinstance(sha256, str):
                lineage["run_id"] = self._find_run(session, sha256.lower())
            row.parent = lineage
            session.add(row)
        return record_id

    def delete_generation(self, id_or_prefix: str) -> str:
        """Delete a generation (its outputs go with it); returns the full id."""
        return self._delete(Generation, id_or_prefix)

    def delete_run(self, id_or_prefix: str) -> str:
        """Delete a training run; its generations stay, unlinked. Returns the full id."""
        return self._delete(TrainingRun, id_or_prefix)

    def _delete(self, model: type[_Row], id_or_prefix: str) -> str:
        with self._session(write=True) as session:
            found = self._resolve(session, model, id_or_prefix).id
            session.execute(delete(model).where(model.id == found))
        return found

    # -- reading -----------------------------------------------------------

    def find_run_by_checkpoint(self, checkpoint: str | os.PathLike[str]) -> str | None:
        """Id of the newest run that wrote this checkpoint (sha256 hex, or a path)."""
        with self._session() as session:
            return session.scalar(
                select(TrainingRun.id)
                .where(_checkpoint_clause(TrainingRun, checkpoint))
                .order_by(TrainingRun.id.desc())
                .limit(1)
            )

    def list_generations(
        self,
        limit: int | None = 20,
        query: str | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> list[GenerationRecord]:
        """Newest first. ``query`` matches prime or any output, ignoring case;
        ``checkpoint`` is a sha256 or a path (matching the path or the file's
        current sha256). ``limit=None`` lists everything."""
        stmt = _with_short_ids(Generation).options(selectinload(Generation.outputs)).order_by(Generation.id.desc())
        if query and "\x00" in query:
            # SQLite's LIKE ends its pattern at a NUL: "%\x00zz%" would match every row.
            raise HistoryLookupError("the search text must not contain NUL characters")
        if query:
            stmt = stmt.where(
                or_(
                    Generation.prime.icontains(query, autoescape=True),
                    Generation.outputs.any(GenerationOutput.text.icontains(query, autoescape=True)),
                )
            )
        if checkpoint is not None:
            stmt = stmt.where(_checkpoint_clause(Generation, checkpoint))
        return self._list(stmt, GenerationRecord, limit)

    def get_generation(self, id_or_prefix: str) -> GenerationRecord:
        return self._get(Generation, GenerationRecord, id_or_prefix)

    def list_runs(self, limit: int | None = 20) -> list[TrainingRunRecord]:
        return self._list(_with_short_ids(TrainingRun).order_by(TrainingRun.id.desc()), TrainingRunRecord, limit)

    def get_run(self, id_or_prefix: str) -> TrainingRunRecord:
        return self._get(TrainingRun, TrainingRunRecord, id_or_prefix)

    def list_scores(self, limit: int | None = 20, checkpoint: str | os.PathLike[str] | None = None
                    ) -> list[ScoreRecord]:
        """Newest first; ``checkpoint`` as in :meth:`list_generations`."""
        stmt = _with_short_ids(Score).order_by(Score.id.desc())
        if checkpoint is not None:
            stmt = stmt.where(_checkpoint_clause(Score, checkpoint))
        return self._list(stmt, ScoreRecord, limit)

    def get_score(self, id_or_prefix: str) -> ScoreRecord:
        return self._get(Score, ScoreRecord, id_or_prefix)

    def _get(self, model: type[_Row], record: type[_Record], id_or_prefix: str) -> _Record:
        with self._session() as session:
            row = self._resolve(session, model, id_or_prefix)
            return record.from_row(row, self._short_id(session, model, row.id))

    def _list(self, stmt: Select[tuple[_Row, str | None, str | None]], record: type[_Record],
              limit: int | None) -> list[_Record]:
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._session() as session:
            return [record.from_row(row, short) for row, short in _rows_with_short_ids(session, stmt)]

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _find_run(session: Session, sha256: str) -> str | None:
        return session.scalar(
            select(TrainingRun.id)
            .where(TrainingRun.checkpoint_sha256 == sha256)
            .order_by(TrainingRun.id.desc())
            .limit(1)
        )

    @staticmethod
    def _resolve(session: Session, model: type[_Row], id_or_prefix: str) -> _Row:
        kind = _KINDS[model]
        wanted = id_or_prefix.strip().upper()
        if not wanted:
            raise HistoryLookupError(f"give a {kind} id")
        if "\x00" in wanted:  # SQLite's LIKE ends its pattern at a NUL: the prefix would match anything
            raise HistoryLookupError(f"no {kind} with id {id_or_prefix!r}")
        exact = session.get(model, wanted)
        if exact is not None:
            return exact
        found = session.scalars(select(model).where(model.id.startswith(wanted, autoescape=True)).limit(3)).all()
        if not found:
            raise HistoryLookupError(f"no {kind} with id {id_or_prefix!r}")
        if len(found) > 1:
            shown = ", ".join(row.id for row in found[:2])
            more = ", ..." if len(found) > 2 else ""
            raise HistoryLookupError(
                f"id prefix {id_or_prefix!r} matches more than one {kind} ({shown}{more}); give more characters"
            )
        return found[0]

    @staticmethod
    def _short_id(session: Session, model: type[_Row], record_id: str) -> str:
        before, after = _neighbours(model)
        row = session.execute(select(before, after).where(model.id == record_id)).one()
        return short_id(record_id, *row)


def _neighbours(model: type[_Row]) -> tuple[Any, Any]:
    """Correlated subqueries: the ids just below and just above each row's, in the whole table.

    Each is one probe of the primary key's index, so a page of N rows gets its
    short ids in the same query that reads it, not in 2N more.
    """
    other = aliased(model)
    before = select(func.max(other.id)).where(other.id < model.id).scalar_subquery()
    after = select(func.min(other.id)).where(other.id > model.id).scalar_subquery()
    return before, after


def _with_short_ids(model: type[_Row]) -> Select[tuple[_Row, str | None, str | None]]:
    return select(model, *_neighbours(model))


def _rows_with_short_ids(session: Session, stmt: Select[tuple[_Row, str | None, str | None]]
                         ) -> Iterator[tuple[_Row, str]]:
    for row, before, after in session.execute(stmt).all():
        yield row, short_id(row.id, before, after)


def _checkpoint_clause(
    model: type[Generation | TrainingRun | Score], checkpoint: str | os.PathLike[str]
) -> ColumnElement[bool]:
    value = os.fspath(checkpoint)
    if _SHA256.fullmatch(value):
        return model.checkpoint_sha256 == value.lower()
    path = abspath(value)
    clauses = [model.checkpoint_path == path]
    if os.path.isfile(path):
        # The same checkpoint may have been recorded under another path.
        try:
            clauses.append(model.checkpoint_sha256 == file_sha256(path))
        except OSError:
            pass
    return or_(*clauses)
