"""Compatibility: training lives in the :mod:`chargen.training` package; these names stay importable."""

from chargen.training import (  # noqa: F401
    Progress,
    Reporter,
    StepBudget,
    TrainConfig,
    Trainer,
    TrainingState,
    TrainResult,
    evaluate,
    lr_at,
    train,
)
from chargen.training.run import LN2, StopFlag, _eval_line  # noqa: F401
