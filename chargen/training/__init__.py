"""Training: configuration, the corpus as batches, optimizer, resumable state, the --minutes budget, the Trainer.

    config.py   TrainConfig (validated), TrainResult, the lr schedule
    data.py     the corpus as token ids (tokens.npy) and truncated-BPTT batches
    optim.py    AdamW parameter groups, the fp16 grad scaler
    state.py    TrainingState: exactly what --resume restores (the state.pt layout)
    budget.py   StepBudget: how many steps --minutes fits, from the measured speed
    trainer.py  Trainer: step(), evaluate(), checkpoint(), fit() with a progress callback
    run.py      train(): one session of a run folder, as `chargen train` runs it
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chargen.lazy import homes, lazy_exports

if TYPE_CHECKING:
    from chargen.training.budget import StepBudget
    from chargen.training.config import Reporter, TrainConfig, TrainResult, lr_at
    from chargen.training.optim import build_optimizer
    from chargen.training.run import StopFlag, resume_config, train
    from chargen.training.state import TrainingState
    from chargen.training.trainer import Progress, ProgressCallback, Trainer, evaluate, planned_steps

__getattr__, __dir__ = lazy_exports(__name__, {
    **homes("chargen.training.budget", "StepBudget"),
    **homes("chargen.training.config", "Reporter", "TrainConfig", "TrainResult", "lr_at"),
    **homes("chargen.training.optim", "build_optimizer"),
    **homes("chargen.training.run", "StopFlag", "resume_config", "train"),
    **homes("chargen.training.state", "TrainingState"),
    **homes("chargen.training.trainer", "Progress", "ProgressCallback", "Trainer", "evaluate", "planned_steps"),
})

__all__ = [
    "Progress", "ProgressCallback", "Reporter", "StepBudget", "StopFlag", "TrainConfig",
    "TrainResult", "Trainer", "TrainingState", "build_optimizer", "evaluate", "lr_at", "planned_steps",
    "resume_config", "train",
]
