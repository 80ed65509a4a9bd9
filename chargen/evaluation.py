"""How well a model predicts a token stream: the one computation behind the
validation loss training records and the scores ``chargen score`` prints.

Both must agree to the last digit, so both call :func:`token_losses`: the
stream is cut into ``streams`` parallel streams read ``max(seq_len, 256)``
tokens at a time (:func:`chargen.data.validation_batches`), the hidden state
carried from one window to the next.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from chargen.data import validation_batches
from chargen.device import autocast_context
from chargen.model import CharRNN

#: shortest window evaluation reads; short training windows would under-use the carried state
MIN_EVAL_SEQ_LEN = 256
EVAL_STREAMS = 16


@torch.no_grad()
def token_losses(model: CharRNN, ids: np.ndarray, seq_len: int, device: torch.device | str = "cpu",
                 precision: str = "fp32", streams: int = EVAL_STREAMS) -> np.ndarray:
    """Loss in nats of each predicted token, in stream order.

    Entry ``i`` is the loss of predicting ``ids[i + 1]``; the few tokens past
    ``streams * stream_len`` that do not fill a stream are not scored, so the
    result may be shorter than ``len(ids) - 1``.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    state = None
    per_window: list[torch.Tensor] = []  # each [streams, width]
    for x, y in validation_batches(ids, max(seq_len, MIN_EVAL_SEQ_LEN), streams):
        x, y = x.to(device), y.to(device)
        if state is not None and state[0].shape[1] != x.shape[0]:
            state = None
        with autocast_context(device, precision):
            logits, state = model(x, state)
        loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                           reduction="none")
        per_window.append(loss.reshape(y.shape).cpu())
    model.train(was_training)
    if not per_window:
        return np.zeros(0, dtype=np.float32)
    return torch.cat(per_window, dim=1).reshape(-1).numpy()  # stream 0's tokens, then stream 1's, ...


def mean_loss(model: CharRNN, ids: np.ndarray, seq_len: int, device: torch.device | str = "cpu",
              precision: str = "fp32") -> float:
    """Mean nats per token over ``ids`` (the validation loss training records)."""
    losses = token_losses(model, ids, seq_len, device, precision)
    return float(losses.sum(dtype=np.float64) / losses.size)
