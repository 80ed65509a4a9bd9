"""Compatibility: training lives in the :mod:`chargen.training` package; these names stay importable."""

from chargen.training import (  # noqa: F401
    Progress,
    Reporter,
    StepBudget,
    StopFlag,
    TrainConfig,
    Trainer,
    TrainingState,
    TrainResult,
    evaluate,
    lr_at,
    train,
)
from chargen.training.run import LN2  # noqa: F401
