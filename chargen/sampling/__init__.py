"""Decoders: temperature/top-k/top-p sampling, greedy, and batched beam search.

Every decoder reports the model's own log-probability (at temperature 1) of
what it produced, and all of them step through :class:`chargen.sampling.steppers.Stepper`.

  config.py     DecodeConfig (and its one set of rules), Sample, GenerationResult
  ngram.py      the n-gram block, and the one rule for a ban on every token
  decoder.py    choose_tokens: the one token-choice rule (CLI and service)
  grammar.py    the MIDI grammar's part: MusicRules, the per-sequence constraints of every decoder
  beam.py       batched beam search
  generator.py  Generator: primed-state cache, the sampling loop, beam search
  steppers.py   one-token steps of the model for generation (packed weights, batch steps)
  stop.py       stop strings: where a sample ends
  primes.py     primes read from files, bounded in bytes and tokens
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chargen.lazy import homes, lazy_exports

if TYPE_CHECKING:
    from chargen.sampling.beam import beam_search
    from chargen.sampling.config import DEFAULT_NO_REPEAT_NGRAM, DecodeConfig, GenerationResult, Sample
    from chargen.sampling.decoder import (
        Choice,
        NoiseSource,
        choose_tokens,
        draw_one,
        exponential_noise,
        filter_logits,
        temper,
    )
    from chargen.sampling.generator import (
        PRIME_CACHE_SIZE,
        PRIME_CACHE_TOKENS,
        SHORT_PRIME,
        Generator,
        TokenCallback,
        sequence_logprob,
    )
    from chargen.sampling.grammar import MusicRules, learnt_max_hold_s, learnt_polyphony_cap, sequence_constraints
    from chargen.sampling.ngram import NgramBlocker, advance_beams, effective_ban

__getattr__, __dir__ = lazy_exports(__name__, {
    **homes("chargen.sampling.beam", "beam_search"),
    **homes("chargen.sampling.config", "DEFAULT_NO_REPEAT_NGRAM", "DecodeConfig", "GenerationResult", "Sample"),
    **homes("chargen.sampling.decoder", "Choice", "NoiseSource", "choose_tokens", "draw_one", "exponential_noise",
            "filter_logits", "temper"),
    **homes("chargen.sampling.generator", "PRIME_CACHE_SIZE", "PRIME_CACHE_TOKENS", "SHORT_PRIME", "Generator",
            "TokenCallback", "sequence_logprob"),
    **homes("chargen.sampling.grammar", "MusicRules", "learnt_max_hold_s", "learnt_polyphony_cap",
            "sequence_constraints"),
    **homes("chargen.sampling.ngram", "NgramBlocker", "advance_beams", "effective_ban"),
})

__all__ = [
    "DEFAULT_NO_REPEAT_NGRAM", "PRIME_CACHE_SIZE", "PRIME_CACHE_TOKENS", "SHORT_PRIME", "Choice", "DecodeConfig",
    "GenerationResult", "Generator", "MusicRules", "NgramBlocker", "NoiseSource", "Sample", "TokenCallback",
    "advance_beams", "beam_search", "choose_tokens", "draw_one", "effective_ban", "exponential_noise", "filter_logits",
    "learnt_max_hold_s", "learnt_polyphony_cap", "sequence_constraints", "sequence_logprob", "temper",
]
