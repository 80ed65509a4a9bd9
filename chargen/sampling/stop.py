"""Stop strings: a row of a generation ends where its text first contains one (OpenAI's ``stop``).

The stop string itself is not part of the output, nor are its tokens' log-probabilities;
text that could still turn out to begin a stop string is held back from streaming
until it is known not to. Every decoder (``Generator`` for the API and CLI, the
service's scheduler) keeps one :class:`StopWatch` per row, so a seeded request
ends at the same character wherever it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from chargen.sampling.config import Sample

if TYPE_CHECKING:
    from chargen.codecs.base import Codec


class StopWatch:
    """One row's text as it grows, watched for the first of ``stops``.

    ``push`` takes each token's text and log-probability and returns the text that
    is now safe to show; once a stop string appears the row is ``stopped`` and
    takes no more. The log-probabilities of kept tokens are summed in order from
    0.0 (as the decoders sum them), those of the held-back tail only once kept.
    """

    __slots__ = ("stops", "longest", "kept_ids", "total", "stopped", "_held", "_held_ids", "_held_lps")

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(s for s in stops if s)
        self.longest = max((len(s) for s in self.stops), default=0)
        self.kept_ids: list[int] = []
        self.total = 0.0
        self.stopped = False
        self._held = ""  # text not yet shown: it may be the start of a stop string
        self._held_ids: list[int] = []  # one token per character (every codec maps a token to one character)
        self._held_lps: list[float] = []

    def push(self, token: int, symbol: str, logprob: float) -> str:
        """Add one token; the text that can be shown now ("" while held back, or after the stop)."""
        if self.stopped:
            return ""
        self._held += symbol
        self._held_ids.append(token)
        self._held_lps.append(logprob)
        found = [at for stop in self.stops if (at := self._held.find(stop)) >= 0]
        if found:
            self.stopped = True
            return self._release(min(found))
        # Keep only the tail that may still begin a stop string.
        keep = next((n for n in range(min(len(self._held), self.longest - 1), 0, -1)
                     if any(s.startswith(self._held[-n:]) for s in self.stops)), 0)
        return self._release(len(self._held) - keep)

    def finish(self) -> str:
        """The rest of the held text, at the end of the generation."""
        return "" if self.stopped else self._release(len(self._held))

    def _release(self, count: int) -> str:
        shown = self._held[:count]
        for lp in self._held_lps[:count]:
            self.total += lp
        self.kept_ids.extend(self._held_ids[:count])
        self._held, self._held_ids, self._held_lps = self._held[count:], self._held_ids[count:], self._held_lps[count:]
        if self.stopped:
            self._held, self._held_ids, self._held_lps = "", [], []
        return shown


def truncate_at_stop(text: str, stops: Sequence[str]) -> int:
    """Where ``text`` ends once cut before its first stop string (its length when there is none)."""
    found = [at for s in stops if s and (at := text.find(s)) >= 0]
    return min(found, default=len(text))


class RowTexts:
    """The rows of one generation: each row's ids, log-probability total and new text per step, through a
    :class:`StopWatch` per row where there are stop strings (none: every token is kept at once)."""

    def __init__(self, rows: int, stops: Sequence[str]):
        self.watches = [StopWatch(stops) for _ in range(rows)] if stops else None
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.totals = [0.0] * rows

    @property
    def all_stopped(self) -> bool:
        return self.watches is not None and all(w.stopped for w in self.watches)

    def push(self, tokens: list[int], logprobs: list[float], symbols: str) -> list[str]:
        """Each row's token of this step; each row's text that may be shown now."""
        if self.watches is None:
            for row, (token, logprob) in enumerate(zip(tokens, logprobs)):
                self.ids[row].append(token)
                self.totals[row] += logprob
            return [symbols[token] for token in tokens]
        return [w.push(token, symbols[token], logprob) for w, token, logprob in zip(self.watches, tokens, logprobs)]

    def finish(self) -> list[str]:
        """Each row's held-back text, once the generation ends."""
        return [w.finish() for w in self.watches] if self.watches is not None else [""] * len(self.ids)

    def results(self) -> list[tuple[list[int], float, bool]]:
        """(ids, log-probability, whether it stopped at a stop string) of each row, after :meth:`finish`."""
        if self.watches is None:
            return [(ids, total, False) for ids, total in zip(self.ids, self.totals)]
        return [(w.kept_ids, w.total, w.stopped) for w in self.watches]

    def samples(self, codec: Codec) -> list[Sample]:
        return [Sample(ids=ids, text=codec.decode(ids), logprob=total, codec=codec, stopped=stopped)
                for ids, total, stopped in self.results()]
