"""The one token-choice rule: what every sampling and greedy step does, in the CLI and the service alike.

``Generator._sample`` calls :func:`choose_tokens` once per step for its n rows;
the service's batch scheduler calls it once per step for each group of requests
that share settings, with each request's noise from its own seeded RNG. So a
seed gives the same tokens and the same log-probabilities wherever it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from chargen.sampling.config import DecodeConfig
from chargen.sampling.ngram import effective_ban

#: Exp(1) noise [rows, V], float32, for one step's draw (see :func:`draw_one`).
NoiseSource = Callable[[], torch.Tensor]


def exponential_noise(rows: int, vocab: int, rng: torch.Generator) -> torch.Tensor:
    """The noise :func:`draw_one` uses for one step of ``rows`` rows: Exp(1) draws from ``rng``."""
    return torch.empty(rows, vocab).exponential_(1, generator=rng)


def draw_one(probs: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """One token per row of ``probs`` [B, V]: exactly ``torch.multinomial(probs, 1, generator=rng)[:, 0]``.

    Torch draws one sample as argmax(p / q), q ~ Exp(1); doing the same here
    skips its input validation, which costs more than the draw itself.
    tests/test_inference.py checks the two agree draw for draw.
    """
    return (probs / torch.empty_like(probs).exponential_(1, generator=rng)).argmax(dim=-1)


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Mask all but the top-k / nucleus tokens with -inf. logits: [B, V]."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the token that crosses p
        drop[..., 0] = False  # the likeliest token always stays, however small top_p is
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def temper(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """``scores / temperature`` [B, V], still a distribution's logits however small the temperature.

    In float32 a temperature near zero (below about 1e-38; 1e-320 is 0 there) turns
    logits into +/-inf and NaN, and softmax then picks token 0. Then the division
    is done in float64 relative to each row's largest logit instead: the largest
    stays 0 and the others go to -inf, which is greedy, as the temperature's limit is.
    """
    scaled = scores / temperature
    if temperature < 1.0 and not bool(torch.isfinite(scaled.amax(dim=-1)).all()):
        top = scores.amax(dim=-1, keepdim=True)
        scaled = ((scores.double() - top) / temperature).float()
    return scaled


def sampling_logits(scores: torch.Tensor, config: DecodeConfig) -> torch.Tensor:
    """The logits sampling draws from [B, V]: ``scores`` tempered (a temperature of 1 changes nothing and is
    skipped), then top-k and top-p filtered. Sampling and both stochastic beam searches draw from these."""
    if config.temperature != 1.0:
        scores = temper(scores, config.temperature)
    return filter_logits(scores, config.top_k, config.top_p)


@dataclass
class Choice:
    tokens: torch.Tensor  # [B] long
    logprobs: list[float]  # per row: the model's own log-probability (temperature 1) of its token, float64


def choose_tokens(logits: torch.Tensor, config: DecodeConfig, bans: Sequence[tuple[int, ...]] | None = None,
                  noise: NoiseSource | None = None) -> Choice:
    """Each row's next token from ``logits`` [B, V] under ``config``'s rule (greedy, temperature, top-k, top-p).

    ``bans``: per row, the tokens its constraint forbids (the MIDI grammar and the
    n-gram block, :func:`chargen.sampling.grammar.sequence_constraints`; a ban on
    every token yields, :func:`effective_ban`). ``noise``: the rows' Exp(1) noise
    for the draw, argmax(p / q) as torch.multinomial draws; unused by greedy. The
    reported log-probabilities are the model's own, of the unmasked distribution.
    """
    scores = logits
    if bans:
        vocab = logits.shape[-1]
        for row, banned in enumerate(bans):
            banned = effective_ban(banned, vocab)
            if banned:
                scores = scores.clone() if scores is logits else scores  # never write into the caller's logits
                scores[row, list(banned)] = float("-inf")
    if config.greedy:
        tokens = scores.argmax(dim=-1)
    else:
        if noise is None:
            raise ValueError("sampling needs a noise source")
        probs = torch.softmax(sampling_logits(scores, config), dim=-1)
        tokens = (probs / noise()).argmax(dim=-1)
    # The model's own log-probabilities, in float64 as beam search scores them.
    chosen = torch.log_softmax(logits, dim=-1, dtype=torch.float64).gather(1, tokens[:, None])  # cast first
    return Choice(tokens, chosen.view(-1).tolist())
