"""Fast one-token steps for generation.

Calling ``nn.LSTM`` once per generated token pays its per-call overhead every
step. A ``Stepper`` instead keeps the weights pre-fused: layer 0's input
projection is folded into an embedding-sized table (one row per token), and
each later layer does one matrix product over ``[x, h]``. All decoders
(sampling, greedy, beam search) step through this class.
"""

from __future__ import annotations

import torch

from chargen.model import CharRNN, State


class Stepper:
    def __init__(self, model: CharRNN):
        cfg = model.config
        self.cell = cfg.cell
        self.layers = cfg.layers
        self.hidden = cfg.hidden
        rnn = model.rnn
        with torch.no_grad():
            embed = model.embed.weight  # [V, E]
            self.input_table: torch.Tensor | None = None
            self.w_cat: list[torch.Tensor] = []  # per layer: [E_or_H + H, G*H], G = gates
            self.bias: list[torch.Tensor] = []
            self.w_hh: list[torch.Tensor] = []  # per layer: [H, G*H]
            self.b_ih: list[torch.Tensor] = []
            self.b_hh: list[torch.Tensor] = []
            for layer in range(cfg.layers):
                w_ih = getattr(rnn, f"weight_ih_l{layer}")  # [G*H, in]
                w_hh = getattr(rnn, f"weight_hh_l{layer}")  # [G*H, H]
                b_ih = getattr(rnn, f"bias_ih_l{layer}")
                b_hh = getattr(rnn, f"bias_hh_l{layer}")
                self.w_cat.append(torch.cat([w_ih, w_hh], dim=1).t().contiguous())
                self.w_hh.append(w_hh.t().contiguous())
                self.b_ih.append(b_ih.clone())
                self.b_hh.append(b_hh.clone())
                self.bias.append((b_ih + b_hh).clone())
            # Layer 0's input projection depends only on the token: precompute it.
            table = embed @ self.w_cat[0][: cfg.embedding]  # [V, G*H]
            if self.cell == "gru":
                self.input_table = table + self.b_ih[0]  # GRU keeps b_hh apart (inside r * (...))
            else:
                self.input_table = table + self.bias[0]
            self.head_w = model.head.weight.t().contiguous()  # [H, V]
            self.head_b = model.head.bias.clone()

    def initial_state(self, batch: int) -> State:
        shape = (self.layers, batch, self.hidden)
        n = 2 if self.cell == "lstm" else 1
        return tuple(torch.zeros(shape, dtype=self.head_w.dtype) for _ in range(n))

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """tokens: [B] -> logits [B, V], new state (same layout as ``CharRNN``)."""
        h_all = state[0]  # [L, B, H]
        c_all = state[1] if self.cell == "lstm" else None
        new_h, new_c = [], []
        x: torch.Tensor | None = None
        for layer in range(self.layers):
            h = h_all[layer]  # [B, H]
            if self.cell == "gru":
                if layer == 0:
                    gi = self.input_table[tokens]  # [B, 3H]
                else:
                    gi = torch.addmm(self.b_ih[layer], x, self.w_cat[layer][: -self.hidden])
                gh = torch.addmm(self.b_hh[layer], h, self.w_hh[layer])  # [B, 3H]
                i_r, i_z, i_n = gi.chunk(3, dim=1)
                h_r, h_z, h_n = gh.chunk(3, dim=1)
                r = torch.sigmoid(i_r + h_r)
                z = torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                h = torch.lerp(n, h, z)  # (1 - z) * n + z * h
            else:
                if layer == 0:
                    gates = torch.addmm(self.input_table[tokens], h, self.w_hh[0])  # [B, G*H]
                else:
                    gates = torch.addmm(self.bias[layer], torch.cat([x, h], dim=1), self.w_cat[layer])
                if self.cell == "lstm":
                    i, f, g, o = gates.chunk(4, dim=1)
                    c = torch.sigmoid(f) * c_all[layer] + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                    new_c.append(c)
                else:
                    h = torch.tanh(gates)
            new_h.append(h)
            x = h
        logits = torch.addmm(self.head_b, x, self.head_w)  # [B, V]
        hs = torch.stack(new_h)  # [L, B, H]
        return logits, ((hs, torch.stack(new_c)) if self.cell == "lstm" else (hs,))


def reorder_state(state: State, index: torch.Tensor) -> State:
    """Pick batch rows of a state (beam search): index [B'] -> each [L, B', H]."""
    return tuple(s.index_select(1, index) for s in state)


def expand_state(state: State, batch: int) -> State:
    """Repeat a batch-1 state ``batch`` times."""
    return tuple(s.expand(-1, batch, -1).contiguous() for s in state)
