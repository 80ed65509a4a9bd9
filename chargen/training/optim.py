"""Optimizer construction: AdamW with weight decay on matrices only."""

from __future__ import annotations

import torch

from chargen.model import CharRNN
from chargen.training.config import TrainConfig

#: AdamW betas: beta2 0.99 rather than 0.999 (nanoGPT's char-level setting): the second-moment
#: estimate follows the quickly changing gradient scale of a small recurrent model.
BETAS = (0.9, 0.99)


def decays(name: str, param: torch.nn.Parameter) -> bool:
    """Weight decay applies to weight matrices, never to biases or the embedding table."""
    return param.dim() >= 2 and "embed" not in name


def build_optimizer(model: CharRNN, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if decays(n, p)]
    no_decay = [p for n, p in model.named_parameters() if not decays(n, p)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=BETAS,
        **({"fused": True} if device.type == "cuda" else {}),
    )


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling (its exponent range underflows small gradients); bf16 and fp32 do not."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
