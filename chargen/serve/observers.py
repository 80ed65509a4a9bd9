"""What the scheduler and the history writer report as they work: interfaces whose defaults do nothing.

:mod:`chargen.serve.metrics` implements them for Prometheus; the engine parts know nothing of it.
"""

from __future__ import annotations


class SchedulerObserver:
    """What a model's scheduler reports."""

    def admitted(self, wait_s: float) -> None:
        """A request joined the running batch, ``wait_s`` after it reached the scheduler."""

    def first_token(self, seconds: float) -> None:
        """A request's first token was chosen, ``seconds`` after it reached the scheduler."""

    def stepped(self, rows: int, seconds: float) -> None:
        """One scheduler step: ``rows`` rows stepped together, a token each, in ``seconds``."""


class HistoryObserver:
    """What the history writer reports."""

    def committed(self, rows: int) -> None:
        """One group commit wrote ``rows`` generations."""

    def failed(self, rows: int) -> None:
        """``rows`` generations could not be recorded."""
