"""Training: configuration, optimizer, resumable state, the --minutes budget, the Trainer, the run function.

    config.py   TrainConfig (validated), TrainResult, the lr schedule
    optim.py    AdamW parameter groups, the fp16 grad scaler
    state.py    TrainingState: exactly what --resume restores (the state.pt layout)
    budget.py   StepBudget: how many steps --minutes fits, from the measured speed
    trainer.py  Trainer: step(), evaluate(), checkpoint(), fit() with a progress callback
    metrics.py  metrics.jsonl, the training curve, appended line by line
    run.py      train(): one session of a run folder, as `chargen train` runs it
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chargen.lazy import homes, lazy_exports

if TYPE_CHECKING:
    from chargen.training.budget import StepBudget
    from chargen.training.config import Reporter, TrainConfig, TrainResult, lr_at
    from chargen.training.metrics import MetricsLog, read_metrics
    from chargen.training.optim import build_optimizer
    from chargen.training.run import StopFlag, resume_config, train
    from chargen.training.state import TrainingState
    from chargen.training.trainer import Progress, ProgressCallback, Trainer, evaluate, planned_steps

__getattr__, __dir__ = lazy_exports(__name__, {
    **homes("chargen.training.budget", "StepBudget"),
    **homes("chargen.training.config", "Reporter", "TrainConfig", "TrainResult", "lr_at"),
    **homes("chargen.training.metrics", "MetricsLog", "read_metrics"),
    **homes("chargen.training.optim", "build_optimizer"),
    **homes("chargen.training.run", "StopFlag", "resume_config", "train"),
    **homes("chargen.training.state", "TrainingState"),
    **homes("chargen.training.trainer", "Progress", "ProgressCallback", "Trainer", "evaluate", "planned_steps"),
})

__all__ = [
    "MetricsLog", "Progress", "ProgressCallback", "Reporter", "StepBudget", "StopFlag", "TrainConfig",
    "TrainResult", "Trainer", "TrainingState", "build_optimizer", "evaluate", "lr_at", "planned_steps",
    "read_metrics", "resume_config", "train",
]
