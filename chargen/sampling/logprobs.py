"""Each token's log-probability and the likeliest alternatives, by one forward pass over a sequence.

What OpenAI's ``logprobs`` asks for (per token, and for the prompt with ``echo``).
A teacher-forced pass of the whole model (``nn.LSTM``) rather than the decoder's
steps: the figures agree with what the decoder saw to float32 rounding, and it
works the same after any decoder (sampling, greedy, beam search).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from chargen.model import CharRNN


@dataclass
class TokenLogprob:
    token: int
    logprob: float
    top: list[tuple[int, float]]  # the likeliest tokens at this position and their log-probabilities


def token_logprobs(model: CharRNN, ids: list[int], label: int | None = None, top: int = 0) -> list[TokenLogprob]:
    """For each token of ``ids`` after the first: its log-probability given those before, and the ``top``
    likeliest tokens at its position (natural logs, float64)."""
    if len(ids) < 2:
        return []
    with torch.inference_mode():
        tokens = torch.tensor([ids])
        labels = None if label is None else torch.tensor([label])
        logits, _ = model.cpu().eval()(tokens[:, :-1], None, labels)  # [1, T-1, V]
        logprobs = torch.log_softmax(logits[0].double(), dim=-1)  # [T-1, V]
        chosen = logprobs.gather(1, tokens[0, 1:, None])[:, 0].tolist()
        best = torch.topk(logprobs, min(top, logprobs.shape[1]), dim=-1) if top > 0 else None
    result = []
    for position, (token, logprob) in enumerate(zip(ids[1:], chosen)):
        alternatives = list(zip(best.indices[position].tolist(), best.values[position].tolist())) if best is not None \
            else []
        result.append(TokenLogprob(token, logprob, alternatives))
    return result
