"""The MIDI grammar in the decoder: what a music model brings, and the constraints a sequence decodes under.

:class:`MusicRules` is what a music model adds to a :class:`DecodeConfig`'s
resolution (its vocabulary, and the polyphony cap and longest hold learnt from its corpus);
:func:`sequence_constraints` builds, for one generation, the per-sequence
constraint every decoder (sampling, greedy, beam search, the service's batch
scheduler) applies: the grammar (:class:`chargen.codecs.midi.grammar.MidiGrammar`, a
rule) and the n-gram block (a preference), combined by
:class:`chargen.sampling.constraints.Constraints` (grammar bans always stand).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chargen.codecs.midi import MidiVocab
from chargen.codecs.midi.export import DEFAULT_MAX_NOTE_S
from chargen.codecs.midi.grammar import ALL_RULES, RULES, MidiGrammar
from chargen.codecs.midi.note_grammar import NOTE_RULES, NoteGrammar
from chargen.codecs.midi.note_vocab import NoteVocab
from chargen.codecs.midi.texture import corpus_limits
from chargen.sampling.constraints import Constraints, TokenConstraint
from chargen.sampling.ngram import NgramBlocker

if TYPE_CHECKING:
    from chargen.runs.checkpoint import Checkpoint
    from chargen.sampling.config import DecodeConfig


@dataclass(frozen=True)
class MusicRules:
    """A music model's part in decoding: its event vocabulary and the limits learnt from its corpus."""

    vocab: MidiVocab | NoteVocab
    polyphony_cap: int = 0  # the checkpoint's learnt cap; 0 = none known (no cap)
    max_hold_s: float = DEFAULT_MAX_NOTE_S  # the checkpoint's learnt longest hold; else the export's held-note cap
    rules: tuple[str, ...] = tuple(sorted(ALL_RULES))  # the rules on by default (chargen.codecs.midi.grammar)
    beam_unbiased: bool = False  # beam search draws its beams (DecodeConfig.beam_unbiased): the run's default
    # What the corpus taught, whether or not the default uses it (None: the default's figure).
    corpus_cap: int | None = None
    corpus_hold_s: float | None = None

    @property
    def learnt_cap(self) -> int:
        return self.polyphony_cap if self.corpus_cap is None else self.corpus_cap

    @property
    def learnt_hold_s(self) -> float:
        return self.max_hold_s if self.corpus_hold_s is None else self.corpus_hold_s

    @property
    def known_rules(self) -> tuple[str, ...]:
        """Every rule this model's grammar knows (what ``grammar_rules`` may name)."""
        return NOTE_RULES if isinstance(self.vocab, NoteVocab) else RULES

    def grammar(self, config: DecodeConfig, prime_ids: list[int]) -> TokenConstraint:
        """The grammar of a resolved ``config`` for this model's codec, after ``prime_ids``."""
        chosen = self.known_rules if config.grammar_rules is None else config.grammar_rules
        hold = self.hold_steps(config.max_hold_s or 0.0)
        if isinstance(self.vocab, NoteVocab):
            return NoteGrammar(config.max_polyphony or 0, prime_ids, self.vocab, hold, chosen)
        return MidiGrammar(config.max_polyphony or 0, prime_ids, self.vocab, hold, chosen)

    def hold_steps(self, seconds: float) -> int:
        """``seconds`` as the grammar's ``max_hold`` in time steps (0 = no limit)."""
        return max(1, round(seconds / self.vocab.step_s)) if seconds > 0 else 0


def sequence_constraints(config: DecodeConfig, music: MusicRules | None, prime_ids: list[int],
                         rows: int) -> list[TokenConstraint]:
    """One constraint per row for a resolved ``config`` (the same for every row: they share the prime), or [].

    The n-gram block alone is the plain :class:`NgramBlocker` (what text models
    always had), the grammar alone the plain :class:`MidiGrammar`; both together
    are one :class:`Constraints`, where the block yields if it would leave no token.
    """
    rules: list[TokenConstraint] = []
    if config.grammar:
        if music is None:
            raise ValueError("the MIDI grammar needs a music model")
        rules.append(music.grammar(config, prime_ids))
    preferences: list[TokenConstraint] = [NgramBlocker(config.no_repeat_ngram, prime_ids)] \
        if config.no_repeat_ngram else []
    if rules and preferences:
        assert music is not None  # rules come only from the grammar
        first: TokenConstraint = Constraints(rules, preferences, music.vocab.size)
    elif rules or preferences:
        first = (rules or preferences)[0]
    else:
        return []
    return [first] + [first.fork() for _ in range(rows - 1)]  # forks: the prime is read once


def _from_run_tokens(checkpoint: Checkpoint) -> tuple[tuple[int, float], str] | None:
    """An older checkpoint's limits computed from its run folder's ``tokens.npy``, if still beside it."""
    from chargen.runs.layout import TOKENS

    vocab = getattr(checkpoint.codec, "vocab", None)
    tokens = checkpoint.path.parent / TOKENS
    if isinstance(vocab, MidiVocab | NoteVocab) and tokens.is_file():
        try:
            stat = tokens.stat()
            return _limits_of(tokens, stat.st_mtime_ns, stat.st_size, vocab), f"computed from {tokens}"
        except (OSError, ValueError):
            pass  # unreadable: the fallbacks rather than no generation
    return None


@functools.lru_cache(maxsize=8)
def _limits_of(tokens: Path, mtime_ns: int, size: int, vocab: MidiVocab | NoteVocab) -> tuple[int, float]:
    """One pass over a corpus for both limits: the cap and the hold are asked for apart (keyed by the file's
    state, so a rewritten tokens.npy is read again)."""
    return corpus_limits(tokens, vocab)


def learnt_polyphony_cap(checkpoint: Checkpoint) -> tuple[int | None, str]:
    """A music checkpoint's polyphony cap and where it comes from (None: no cap known).

    Runs record it in the weights' training metadata ("polyphony_cap", the 99th
    percentile of the corpus's simultaneous notes over time; runs before that
    stored the percentile over note onsets, and keep it). Older checkpoints:
    computed from their run folder's ``tokens.npy``, if it is still beside them; else None.
    """
    stored = checkpoint.training.get("polyphony_cap")
    if isinstance(stored, int) and stored >= 0:
        return stored, "learnt from the training corpus"
    computed = _from_run_tokens(checkpoint)
    if computed is not None:
        return computed[0][0], computed[1]
    return None, "none known (older checkpoint without its run's tokens.npy): no cap"


def learnt_max_hold_s(checkpoint: Checkpoint) -> tuple[float, str]:
    """A music checkpoint's longest hold in seconds and where it comes from.

    Runs record it in the weights' training metadata ("max_hold_s", the 99th
    percentile of the corpus's note lengths, clamped to [1 s, the export's
    held-note cap]). Older checkpoints: computed from their run folder's
    ``tokens.npy``, if it is still beside them; else the export's held-note cap
    (what every checkpoint decoded with before).
    """
    stored = checkpoint.training.get("max_hold_s")
    if isinstance(stored, (int, float)) and not isinstance(stored, bool) and 0 <= stored <= DEFAULT_MAX_NOTE_S:
        return float(stored), "learnt from the training corpus"
    computed = _from_run_tokens(checkpoint)
    if computed is not None:
        return computed[0][1], computed[1]
    return DEFAULT_MAX_NOTE_S, "the export's held-note cap (older checkpoint without its run's tokens.npy)"
