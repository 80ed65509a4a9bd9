"""Dropout with a cheaper random mask on the CPU.

``F.dropout`` draws one Bernoulli sample per element through torch's CPU generator,
and a training step makes two such masks (between the layers and before the head):
a noticeable share of a small or medium step (``benchmarks/dropout_cost.py``).
Here one 32-bit draw gives two elements 15 random bits each, and an element is kept
when its bits reach p's threshold: a few times cheaper, from the same generator
(seeded and checkpointed like everything else). The keep probability is
p rounded to a multiple of 2^-15, and the survivors are scaled by its exact inverse,
so the expectation is unchanged. On other devices ``F.dropout`` is already fast.
"""

from __future__ import annotations

import torch
from torch import nn

#: Random bits per element: an int32 draw spans [0, 2^31), i.e. two halves of 15 usable bits each.
BITS = 15
LEVELS = 1 << BITS


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``x`` with each element zeroed with probability ~p (to 2^-15) and the rest scaled up."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return nn.functional.dropout(x, p, training=True)
    threshold = round(p * LEVELS)
    if threshold >= LEVELS:
        return x * 0.0
    count = x.numel()
    draws = torch.empty((count + 1) // 2, dtype=torch.int32).random_()  # uniform in [0, 2^31)
    bits = draws.view(torch.int16)[:count].view(x.shape).bitwise_and_(LEVELS - 1)  # 15 uniform bits each
    mask = bits.ge_(threshold).to(x.dtype).mul_(LEVELS / (LEVELS - threshold))
    return x * mask
