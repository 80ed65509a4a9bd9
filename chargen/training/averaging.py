"""An exponential moving average of the weights, which evaluations and checkpoints use.

Late in a run the learning rate is still large enough that each step's weights
jitter around the minimum; their running average sits nearer to it, most of all
mid-run (benchmarks/quality_probes.jsonl has the measurements). Training itself always continues from the raw
weights; only what is evaluated, saved and sampled is the average.

Hand-written rather than ``torch.optim.swa_utils.AveragedModel`` for two reasons:
the decay is ramped in, min(decay, (1 + n) / (10 + n)) after n updates, so that
early evaluations are not dominated by the random start; and the update count is
kept in Python, so that a CUDA run does not wait on the device once per step to read it.
"""

from __future__ import annotations

from typing import Any

import torch

from chargen.model import CharRNN


class WeightAverage:
    def __init__(self, model: CharRNN, decay: float):
        self.decay = decay
        # A fresh module loaded from the state dict, not a deepcopy: after a weight-dropped forward
        # (torch.func.functional_call) nn.LSTM's flat weight list may hold other tensor objects than its
        # parameters, and a deepcopy would copy those apart from the parameters that the average updates.
        # Its random initialisation is overwritten at once: it must not draw from the run's RNG stream.
        device = next(model.parameters()).device
        with torch.random.fork_rng(devices=[]):
            self.module = CharRNN(model.config).to(device).eval().requires_grad_(False)  # the averaged weights
        self.module.load_state_dict(model.state_dict())
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: CharRNN) -> None:
        """Move the average towards ``model``'s weights (after an optimizer step)."""
        weight = 1.0 - self.current_decay()
        for averaged, current in zip(self.module.parameters(), model.parameters()):
            averaged.lerp_(current.detach(), weight)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    @classmethod
    def restore(cls, saved: dict[str, Any], model: CharRNN, decay: float) -> WeightAverage:
        average = cls(model, decay)
        average.module.load_state_dict(saved["weights"])
        average.updates = int(saved["updates"])
        return average
