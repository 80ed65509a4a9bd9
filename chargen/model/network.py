"""The recurrent language model: embedding -> LSTM/GRU/RNN stack -> logits.

Built on torch's fused ``nn.LSTM``/``nn.GRU``/``nn.RNN`` for training. One-token
generation steps use :mod:`chargen.sampling.steppers`, which reads the same weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from chargen.errors import ArgumentError
from chargen.model.config import ModelConfig
from chargen.model.dropout import dropout

#: Recurrent state: (h, c) for an LSTM, (h,) otherwise; each [layers, batch, hidden].
State = tuple[torch.Tensor, ...]


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[config.cell]
        self.embed = nn.Embedding(config.vocab_size, config.embedding)
        label_width = config.label_embedding if config.labels else 0
        self.rnn = rnn_class(
            config.embedding + label_width,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.head = nn.Linear(config.hidden, config.vocab_size)
        # Made last, so an unlabelled model draws its initial weights exactly as before labels existed.
        # Row len(labels) is "no label". The label joins every step's input, so training stays one fused RNN call.
        self.label_embed = nn.Embedding(len(config.labels) + 1, label_width) if config.labels else None
        # One-layer shapes on the meta device (no storage, not registered: not in the state dict or the
        # parameters) through which training runs the stack one layer at a time with this model's weights.
        self._layer_shapes = tuple(
            rnn_class(width, config.hidden, batch_first=True, device="meta")
            for width in dict.fromkeys((config.embedding + label_width, config.hidden)))

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        shape = (self.config.layers, batch, self.config.hidden)
        n = 2 if self.config.cell == "lstm" else 1
        dtype = self.head.weight.dtype
        return tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in range(n))

    def forward(self, tokens: torch.Tensor, state: State | None = None,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """tokens [B, T]; labels (labelled models): [B, T] or [B] label ids, None = "no label"."""
        x = self.embed(tokens)  # [B, T, E]
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full(tokens.shape, self.config.no_label, dtype=torch.long, device=tokens.device)
            elif labels.dim() == 1:
                labels = labels[:, None].expand(tokens.shape)
            x = torch.cat([x, self.label_embed(labels).to(x.dtype)], dim=-1)  # [B, T, E + E_l]
        elif labels is not None:
            raise ArgumentError("this model has no labels")
        hx = None if state is None else (state[0], state[1]) if self.config.cell == "lstm" else state[0]
        # On the CPU dropout between layers is cheaper layer by layer (chargen's mask); elsewhere the fused
        # stack's own dropout is already fast (cuDNN), and only weight drop needs the layers apart.
        between = self.config.dropout > 0 and self.config.layers > 1 and x.device.type == "cpu"
        if self.training and (self.config.weight_drop > 0 or between):
            out, new_state = self._layer_by_layer(x, hx)  # out: [B, T, H]
        else:
            out, new_state = self.rnn(x, hx)
        logits = self.head(dropout(out, self.config.dropout, self.training))  # [B, T, V]
        if not isinstance(new_state, tuple):
            new_state = (new_state,)
        return logits, new_state

    def _layer_by_layer(self, x: torch.Tensor, hx: Any) -> tuple[torch.Tensor, Any]:
        """Training's stack, one fused layer at a time: dropout between layers with chargen's cheaper mask
        (``nn.LSTM``'s own draws it per element: 6-11 % of a step on the CPU), and weight drop (AWD-LSTM's
        DropConnect) on masked copies of the recurrent weights, whose gradients reach the originals. In
        evaluation the weights are used as they are (dropout's 1/(1-p) scaling keeps them comparable)."""
        lstm = self.config.cell == "lstm"
        last_h: list[torch.Tensor] = []
        last_c: list[torch.Tensor] = []
        for layer in range(self.config.layers):
            weights = {f"{kind}_l0": getattr(self.rnn, f"{kind}_l{layer}")
                       for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            if self.config.weight_drop > 0:
                weights["weight_hh_l0"] = dropout(weights["weight_hh_l0"], self.config.weight_drop)
            if hx is None:
                layer_hx = None
            else:
                layer_hx = (hx[0][layer:layer + 1], hx[1][layer:layer + 1]) if lstm else hx[layer:layer + 1]
            shape = self._layer_shapes[min(layer, len(self._layer_shapes) - 1)]
            x, state = torch.func.functional_call(shape, weights, (x, layer_hx))  # x: [B, T, H]
            if layer < self.config.layers - 1:
                x = dropout(x, self.config.dropout)
            last_h.append(state[0] if lstm else state)
            if lstm:
                last_c.append(state[1])
        if lstm:
            return x, (torch.cat(last_h), torch.cat(last_c))
        return x, torch.cat(last_h)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach_state(state: State) -> State:
    """The state carried to the next batch: no graph, and float32 whatever autocast computed it in (a bf16
    state fed to an fp32 step, after a resume that chose another precision, is refused by oneDNN's LSTM)."""
    return tuple(s.detach().float() for s in state)
