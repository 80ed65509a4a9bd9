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

from chargen.data import validation_batches, validation_label_batches
from chargen.device import autocast_context
from chargen.model import CharRNN

#: shortest window evaluation reads; short training windows would under-use the carried state
MIN_EVAL_SEQ_LEN = 256
EVAL_STREAMS = 16


@torch.no_grad()
def token_losses(model: CharRNN, ids: np.ndarray, seq_len: int, device: torch.device | str = "cpu",
                 precision: str = "fp32", streams: int = EVAL_STREAMS,
                 labels: np.ndarray | int | None = None) -> np.ndarray:
    """Loss in nats of each predicted token, in stream order.

    Entry ``i`` is the loss of predicting ``ids[i + 1]``; the few tokens past
    ``streams * stream_len`` that do not fill a stream are not scored, so the
    result may be shorter than ``len(ids) - 1``. ``labels`` (a labelled model):
    each token's label id beside ``ids``, or one id for all; None is "no label".
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    state = None
    per_window: list[torch.Tensor] = []  # each [streams, width]
    eval_len = max(seq_len, MIN_EVAL_SEQ_LEN)
    if isinstance(labels, (int, np.integer)):
        labels = np.full(len(ids), int(labels), dtype=np.int64)
    label_windows = validation_label_batches(labels, eval_len, streams) if labels is not None else None
    for x, y in validation_batches(ids, eval_len, streams):
        x, y = x.to(device), y.to(device)
        window_labels = next(label_windows).to(device) if label_windows is not None else None
        if state is not None and state[0].shape[1] != x.shape[0]:
            state = None
        with autocast_context(device, precision):
            logits, state = model(x, state, window_labels)
        loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                           reduction="none")
        per_window.append(loss.reshape(y.shape).cpu())
    model.train(was_training)
    if not per_window:
        return np.zeros(0, dtype=np.float32)
    return torch.cat(per_window, dim=1).reshape(-1).numpy()  # stream 0's tokens, then stream 1's, ...


def mean_loss(model: CharRNN, ids: np.ndarray, seq_len: int, device: torch.device | str = "cpu",
              precision: str = "fp32", labels: np.ndarray | int | None = None) -> float:
    """Mean nats per token over ``ids`` (the validation loss training records); ``labels`` as ``token_losses``."""
    losses = token_losses(model, ids, seq_len, device, precision, labels=labels)
    return float(losses.sum(dtype=np.float64) / losses.size)


def label_loss_matrix(model: CharRNN, val: np.ndarray, val_labels: np.ndarray, seq_len: int,
                      device: torch.device | str = "cpu", precision: str = "fp32") -> np.ndarray:
    """[true label, given label] mean loss: each label's validation tokens scored under every label.

    The right label should score lowest in every row (a model that uses its labels).
    """
    count = len(model.config.labels)
    matrix = np.zeros((count, count))
    for true in range(count):
        ids = val[np.asarray(val_labels) == true]  # each label's validation part is contiguous
        for given in range(count):
            matrix[true, given] = mean_loss(model, ids, seq_len, device, precision, labels=given)
    return matrix
