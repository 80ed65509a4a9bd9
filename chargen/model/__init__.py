"""The recurrent language model.

  config.py    ModelConfig (the shape), the size presets, FLOPs per token: no torch
  network.py   CharRNN: embedding -> LSTM/GRU/RNN stack -> logits (torch)
  dropout.py   dropout with a cheaper random mask on the CPU
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chargen.lazy import homes, lazy_exports

if TYPE_CHECKING:
    from chargen.model.config import (
        CELLS,
        DEFAULT_LABEL_EMBEDDING,
        DEFAULT_PRESET,
        PRESETS,
        ModelConfig,
        check_label_names,
        flops_per_token,
        parameter_shapes,
    )
    from chargen.model.network import CharRNN, State, detach_state

__getattr__, __dir__ = lazy_exports(__name__, {
    **homes("chargen.model.config", "CELLS", "DEFAULT_LABEL_EMBEDDING", "DEFAULT_PRESET", "PRESETS", "ModelConfig",
            "check_label_names", "flops_per_token", "parameter_shapes"),
    **homes("chargen.model.network", "CharRNN", "State", "detach_state"),
})

__all__ = ["CELLS", "DEFAULT_LABEL_EMBEDDING", "DEFAULT_PRESET", "PRESETS", "CharRNN", "ModelConfig", "State",
           "check_label_names", "detach_state", "flops_per_token", "parameter_shapes"]
