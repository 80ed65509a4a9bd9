"""Fast one-token steps for generation.

Calling ``nn.LSTM`` once per generated token pays its per-call overhead every
step, several times the step's own arithmetic at batch 1. A ``Stepper``
instead keeps the weights pre-fused and transposed for ``x @ W``: layer 0's
input projection is folded into a per-token table, and LSTM gate rows are
reordered to (i, f, o, g), g doubled, so one ``sigmoid`` covers all gates.
At batch 1 a step is then dominated by reading the weights once (the
mat-vecs), the floor that ``benchmarks/run.py`` measures it against. (torch's
C++ ``lstm_cell`` was slower here: its ``x @ W.T`` mat-vec reads worse.)

All decoders (sampling, greedy, beam search) step through this class.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from chargen.model import CharRNN, State

#: Intra-op threads while generating. Each step is a few hundred microseconds
#: of small mat-vecs: a second thread gains little there, and when any other
#: process holds a core every OpenMP barrier waits out a scheduler time slice
#: (steps tens of times slower). ``None`` keeps torch's setting.
GENERATION_THREADS: int | None = 1

_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 0


@contextlib.contextmanager
def generation_threads(threads: int | None = None) -> Iterator[None]:
    """Run generation with ``threads`` intra-op threads, restoring torch's setting after.

    Reference-counted, so overlapping generations in several Python threads
    restore the original count only when the last one leaves.
    """
    global _threads_users, _threads_saved
    wanted = GENERATION_THREADS if threads is None else threads
    if not wanted:
        yield
        return
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
        _threads_users += 1
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0 and torch.get_num_threads() != _threads_saved:
                torch.set_num_threads(_threads_saved)


class Stepper:
    def __init__(self, model: CharRNN):
        cfg = model.config
        self.cell = cfg.cell
        self.layers = cfg.layers
        self.hidden = hidden = cfg.hidden
        rnn = model.rnn
        order: torch.Tensor | None = None
        scale: torch.Tensor | None = None
        if self.cell == "lstm":
            # torch's gate rows (i, f, g, o) -> (i, f, o, g), and g's rows doubled (exact: a power of two) so
            # one sigmoid covers all four gates: tanh(g) = 2 sigmoid(2g) - 1. Two to three fewer ops per layer.
            order = torch.cat([torch.arange(2 * hidden), torch.arange(3 * hidden, 4 * hidden),
                               torch.arange(2 * hidden, 3 * hidden)])
            scale = torch.ones(4 * hidden)
            scale[3 * hidden :] = 2.0
        with torch.no_grad():
            self.w_ih: list[torch.Tensor] = []  # per layer: [in, G*H], G = gates
            self.w_hh: list[torch.Tensor] = []  # per layer: [H, G*H]
            self.bias: list[torch.Tensor] = []  # LSTM/RNN: b_ih + b_hh; GRU: b_ih only
            self.b_hh: list[torch.Tensor] = []  # GRU keeps b_hh apart (inside r * (...))
            for layer in range(cfg.layers):
                w_ih = getattr(rnn, f"weight_ih_l{layer}").detach()  # [G*H, in]
                w_hh = getattr(rnn, f"weight_hh_l{layer}").detach()  # [G*H, H]
                b_ih = getattr(rnn, f"bias_ih_l{layer}").detach()
                b_hh = getattr(rnn, f"bias_hh_l{layer}").detach()
                if order is not None and scale is not None:
                    w_ih, w_hh = w_ih[order] * scale[:, None], w_hh[order] * scale[:, None]
                    b_ih, b_hh = b_ih[order] * scale, b_hh[order] * scale
                self.w_ih.append(w_ih.t().contiguous())
                self.w_hh.append(w_hh.t().contiguous())
                self.bias.append((b_ih if self.cell == "gru" else b_ih + b_hh).clone())
                self.b_hh.append(b_hh.clone())
            # Layer 0's input projection depends only on the token: precompute it, bias included.
            embedding = cfg.embedding
            self.input_table = torch.addmm(self.bias[0], model.embed.weight.detach(),
                                           self.w_ih[0][:embedding])  # [V, G*H]
            # A labelled model's label is constant through a generation: its share of layer 0's
            # pre-activations is one row per label, added to each row's gates (``label_bias``).
            self.label_table: torch.Tensor | None = None  # [labels + 1, G*H]
            if model.label_embed is not None:
                self.label_table = model.label_embed.weight.detach() @ self.w_ih[0][embedding:]
            self.head_w = model.head.weight.detach().t().contiguous()  # [H, V]
            self.head_b = model.head.bias.detach().clone()
        self._scratch = threading.local()  # per thread: see _lstm_scratch

    def initial_state(self, batch: int) -> State:
        shape = (self.layers, batch, self.hidden)
        n = 2 if self.cell == "lstm" else 1
        return tuple(self.head_w.new_zeros(shape) for _ in range(n))  # on the weights' device

    def label_bias(self, label: int | None, rows: int = 1) -> torch.Tensor | None:
        """Layer 0's per-row gate bias [rows, G*H] for label id ``label`` (None: "no label", the table's
        last row); None for an unlabelled model."""
        if self.label_table is None:
            return None
        if label is None:
            label = self.label_table.shape[0] - 1
        return self.label_table[label].expand(rows, -1).contiguous()

    def step(self, tokens: torch.Tensor, state: State,
             bias: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """tokens: [B] -> logits [B, V], new state (same layout as ``CharRNN``).

        ``bias``: a labelled model's per-row label bias [B, G*H] (``label_bias``); None when unlabelled.
        """
        if torch.is_inference_mode_enabled():  # the decoders already are: skip a context switch per token
            return self._step(tokens, state, bias)
        with torch.inference_mode():
            return self._step(tokens, state, bias)

    def _layer0_input(self, tokens: torch.Tensor, bias: torch.Tensor | None,
                      out: torch.Tensor | None = None) -> torch.Tensor:
        """Layer 0's input pre-activations [B, G*H], in ``out`` or a fresh tensor (callers accumulate into it)."""
        rows = torch.index_select(self.input_table, 0, tokens, out=out)
        return rows if bias is None else rows.add_(bias)

    def _step(self, tokens: torch.Tensor, state: State, bias: torch.Tensor | None) -> tuple[torch.Tensor, State]:
        if self.cell == "lstm":
            return self._lstm_step(tokens, state, bias)
        hidden, gru = self.hidden, self.cell == "gru"
        h_all = state[0].unbind(0)  # L x [B, H]
        new_h: list[torch.Tensor] = []
        x = tokens
        for layer in range(self.layers):
            h = h_all[layer]
            if gru:
                gi, gh = self._gru_products(layer, tokens, x, h, bias)  # [B, 3H] each: r, z, n
                r, z = gi[:, : 2 * hidden].add_(gh[:, : 2 * hidden]).sigmoid_().chunk(2, dim=1)
                n = torch.addcmul(gi[:, 2 * hidden :], r, gh[:, 2 * hidden :]).tanh_()
                x = torch.lerp(n, h, z)  # (1 - z) * n + z * h
            else:
                x = self._gates(layer, tokens, x, h, bias).tanh_()
            new_h.append(x)
        return self._head(x), (torch.stack(new_h),)  # logits [B, V], state [L, B, H]

    def _lstm_step(self, tokens: torch.Tensor, state: State,
                   bias: torch.Tensor | None) -> tuple[torch.Tensor, State]:
        """One LSTM step. At batch 1 the mat-vecs are the floor, so the rest avoids per-op overhead: the
        new state is written in place into fresh [L, B, H] tensors (no stack), and the gates go to a
        scratch buffer of this thread whose four gate views are made once (no chunk per layer). The
        element-wise ops are the same ones on the same values as ever, so results are bit for bit equal."""
        batch = tokens.shape[0]
        scratch = self._lstm_scratch(batch)
        gates_buf, (i, f, o, s), tanh_c = scratch
        h_all, c_all = state[0].unbind(0), state[1].unbind(0)  # L x [B, H]
        shape = (self.layers, batch, self.hidden)
        hs, cs = gates_buf.new_empty(shape), gates_buf.new_empty(shape)  # the weights' device and dtype
        new_h, new_c = hs.unbind(0), cs.unbind(0)
        x = tokens
        for layer in range(self.layers):
            gates = self._gates(layer, tokens, x, h_all[layer], bias, gates_buf)  # [B, G*H]: (i, f, o, 2g)
            if gates is gates_buf:
                gates.sigmoid_()
                gate_i, gate_f, gate_o, gate_s = i, f, o, s
            else:  # a kernel that returns its own tensor (numpy's, oneDNN's)
                gate_i, gate_f, gate_o, gate_s = gates.sigmoid_().chunk(4, dim=1)
            # c = f c + i tanh(g) = f c + 2 i sigmoid(2g) - i;  h = o tanh(c)
            c = torch.mul(gate_f, c_all[layer], out=new_c[layer]).addcmul_(gate_i, gate_s, value=2).sub_(gate_i)
            x = torch.mul(gate_o, torch.tanh(c, out=tanh_c), out=new_h[layer])
        return self._head(x), (hs, cs)

    def _lstm_scratch(self, batch: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
        """This thread's gate buffer [B, 4H] (with its four gate views) and tanh(c) buffer [B, H] for ``batch``
        rows: per thread, since one stepper serves concurrent generations (the service). Only the last
        batch size is kept, so a server whose batches vary holds one set, not one per size."""
        found = getattr(self._scratch, "lstm", None)
        if found is None or found[0].shape[0] != batch:
            gates = self.head_w.new_empty(batch, 4 * self.hidden)
            tanh_c = self.head_w.new_empty(batch, self.hidden)
            found = self._scratch.lstm = (gates, tuple(gates.chunk(4, dim=1)), tanh_c)
        return found

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.head_b, x, self.head_w)

    def _gates(self, layer: int, tokens: torch.Tensor, x: torch.Tensor, h: torch.Tensor,
               bias: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """LSTM/RNN pre-activations [B, G*H], into ``out`` where given (else a fresh tensor; kernels that
        make their own may ignore it); accumulating in place (addmm_) saves a copy per product."""
        if layer == 0:
            return self._layer0_input(tokens, bias, out).addmm_(h, self.w_hh[0])
        # Two products instead of one over cat([x, h]): same bytes, no copy.
        return torch.addmm(self.bias[layer], h, self.w_hh[layer], out=out).addmm_(x, self.w_ih[layer])

    def _gru_products(self, layer: int, tokens: torch.Tensor, x: torch.Tensor, h: torch.Tensor,
                      bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """GRU input and hidden products [B, 3H] each, kept apart: r multiplies only the hidden one's n."""
        gi = (self._layer0_input(tokens, bias) if layer == 0
              else torch.addmm(self.bias[layer], x, self.w_ih[layer]))
        return gi, torch.addmm(self.b_hh[layer], h, self.w_hh[layer])


def _pack(weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight`` layout [in, out] -> oneDNN's packed [out, in] weight for ``_linear``."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.t().contiguous())


def _linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")  # [B, out]


class PackedStepper(Stepper):
    """A ``Stepper`` for steps of several rows at once (beam search).

    At one row a product is a mat-vec bound by reading the weights, which MKL's
    ``addmm`` does well. At 8 rows it is compute-bound, and there oneDNN's
    pre-packed fp32 kernel beats ``addmm`` (``benchmarks/beam_cost.py``); deeper LSTM/RNN layers then
    also take one product over cat([x, h]). Results agree with ``Stepper`` to
    float32 rounding (only the order of the sums differs).
    """

    def __init__(self, model: CharRNN):
        super().__init__(model)
        deeper = range(1, self.layers)  # layer 0's input product is the per-token table
        with torch.no_grad():
            self.packed_hh = [_pack(w) for w in self.w_hh]
            # GRU keeps the input and hidden products apart; LSTM/RNN take one over cat([x, h]).
            self.packed_ih: list[torch.Tensor | None] = [None] * self.layers
            self.packed_both: list[torch.Tensor | None] = [None] * self.layers
            for layer in deeper:
                if self.cell == "gru":
                    self.packed_ih[layer] = _pack(self.w_ih[layer])
                else:
                    self.packed_both[layer] = _pack(torch.cat([self.w_ih[layer], self.w_hh[layer]]))

    def _gates(self, layer: int, tokens: torch.Tensor, x: torch.Tensor, h: torch.Tensor,
               bias: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        packed_both = self.packed_both[layer]
        if packed_both is None:  # layer 0
            gates = _linear(h, self.packed_hh[0], None).add_(self.input_table.index_select(0, tokens))
            return gates if bias is None else gates.add_(bias)
        return _linear(torch.cat([x, h], dim=1), packed_both, self.bias[layer])  # [B, G*H]

    def _gru_products(self, layer: int, tokens: torch.Tensor, x: torch.Tensor, h: torch.Tensor,
                      bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        packed_ih = self.packed_ih[layer]
        gi = (self._layer0_input(tokens, bias) if packed_ih is None
              else _linear(x, packed_ih, self.bias[layer]))
        return gi, _linear(h, self.packed_hh[layer], self.b_hh[layer])


def batch_stepper(model: CharRNN, fallback: Stepper) -> Stepper:
    """The stepper for several rows per step: ``PackedStepper`` where this torch has oneDNN, else ``fallback``.

    The packed path is checked once against ``fallback`` on the model itself,
    so a torch build whose private oneDNN ops differ falls back instead of failing.
    """
    if not torch.backends.mkldnn.is_available():
        return fallback
    try:
        packed = PackedStepper(model)
        with torch.inference_mode():
            tokens = torch.arange(4) % model.config.vocab_size
            rng = torch.Generator().manual_seed(0)
            state = tuple(torch.rand(s.shape, generator=rng) - 0.5 for s in fallback.initial_state(4))
            want, _ = fallback.step(tokens, state)
            got, _ = packed.step(tokens, state)
        if torch.allclose(got, want, atol=1e-4, rtol=1e-4):
            return packed
    except (RuntimeError, AttributeError, TypeError):  # missing or changed private ops
        pass
    return fallback


def reorder_state(state: State, index: torch.Tensor) -> State:
    """Pick batch rows of a state (beam search): index [B'] -> each [L, B', H]."""
    return tuple(s.index_select(1, index) for s in state)


def expand_state(state: State, batch: int) -> State:
    """Repeat a batch-1 state ``batch`` times."""
    return tuple(s.expand(-1, batch, -1).contiguous() for s in state)
