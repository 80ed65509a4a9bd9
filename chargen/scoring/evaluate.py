"""How well a model predicts a token stream: the one computation behind the
validation loss training records and the scores ``chargen score`` prints.

Both must agree to the last digit, so both call :func:`token_losses`: the
stream is cut into ``streams`` parallel streams read ``max(seq_len, 256)``
tokens at a time (:func:`chargen.training.data.validation_batches`), the hidden state
carried from one window to the next. During training a large validation split
is scored on a sample (``max_tokens``: the first part of each stream), the
same tokens at every evaluation (``TrainConfig.evaluation_tokens``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from chargen.machine.device import autocast_context
from chargen.model import CharRNN
from chargen.training.data import validation_batches, validation_label_batches, validation_layout

#: shortest window evaluation reads; short training windows would under-use the carried state
MIN_EVAL_SEQ_LEN = 256
EVAL_STREAMS = 16


#: Up to this many scored tokens a mean is taken over the array of every token's loss (float64 sum of
#: the float32 losses, as ``chargen score`` sums them); above, window by window, so that a split of any
#: size is scored in bounded memory (the two sums differ only in the order of their float64 additions).
EXACT_TOKENS = 1 << 24


def scored_tokens(length: int, seq_len: int, streams: int = EVAL_STREAMS, max_tokens: int | None = None) -> int:
    """How many tokens ``token_losses`` scores in a stream of ``length`` tokens."""
    if length < 2:
        return 0
    streams, _, read = validation_layout(length, max(seq_len, MIN_EVAL_SEQ_LEN), streams, max_tokens)
    return streams * read


@torch.no_grad()
def _window_losses(model: CharRNN, ids: np.ndarray, seq_len: int, device: torch.device | str, precision: str,
                   streams: int, labels: np.ndarray | int | None, max_tokens: int | None) -> Iterator[torch.Tensor]:
    """Each window's losses [streams, width] (CPU, float32), the hidden state carried between windows."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    state = None
    eval_len = max(seq_len, MIN_EVAL_SEQ_LEN)
    if isinstance(labels, (int, np.integer)):
        labels = np.full(len(ids), int(labels), dtype=np.int64)
    label_windows = validation_label_batches(labels, eval_len, streams, max_tokens) if labels is not None else None
    try:
        for x, y in validation_batches(ids, eval_len, streams, max_tokens):
            x, y = x.to(device), y.to(device)
            window_labels = next(label_windows).to(device) if label_windows is not None else None
            if state is not None and state[0].shape[1] != x.shape[0]:
                state = None
            with autocast_context(device, precision):
                logits, state = model(x, state, window_labels)
            loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                               reduction="none")
            yield loss.reshape(y.shape).cpu()
    finally:
        model.train(was_training)


def token_losses(model: CharRNN, ids: np.ndarray, seq_len: int, device: torch.device | str = "cpu",
                 precision: str = "fp32", streams: int = EVAL_STREAMS,
                 labels: np.ndarray | int | None = None, max_tokens: int | None = None) -> np.ndarray:
    """Loss in nats of each predicted token, in stream order.

    Entry ``i`` is the loss of predicting ``ids[i + 1]``; the few tokens past
    ``streams * stream_len`` that do not fill a stream are not scored, so the
    result may be shorter than ``len(ids) - 1``. ``labels`` (a labelled model):
    each token's label id beside ``ids``, or one id for all; None is "no label".
    ``max_tokens``: only the first part of each stream (``chargen.training.data.validation_layout``).
    """
    if len(ids) < 2:
        return np.zeros(0, dtype=np.float32)
    streams, _, read = validation_layout(len(ids), max(seq_len, MIN_EVAL_SEQ_LEN), streams, max_tokens)
    out = np.empty((streams, read), dtype=np.float32)  # stream 0's tokens, then stream 1's, ...
    pos = 0
    for loss in _window_losses(model, ids, seq_len, device, precision, streams, labels, max_tokens):
        out[:, pos : pos + loss.shape[1]] = loss.numpy()
        pos += loss.shape[1]
    return out[:, :pos].reshape(-1)


def mean_loss(model: CharRNN, ids: np.ndarray, seq_len: int, device: torch.device | str = "cpu",
              precision: str = "fp32", labels: np.ndarray | int | None = None,
              max_tokens: int | None = None) -> float:
    """Mean nats per token over ``ids`` (the validation loss training records); ``labels`` and
    ``max_tokens`` as ``token_losses``."""
    if scored_tokens(len(ids), seq_len, max_tokens=max_tokens) <= EXACT_TOKENS:
        losses = token_losses(model, ids, seq_len, device, precision, labels=labels, max_tokens=max_tokens)
        return float(losses.sum(dtype=np.float64) / losses.size)
    total, count = 0.0, 0
    for loss in _window_losses(model, ids, seq_len, device, precision, EVAL_STREAMS, labels, max_tokens):
        total += float(loss.sum(dtype=torch.float64))
        count += loss.numel()
    return total / count


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
