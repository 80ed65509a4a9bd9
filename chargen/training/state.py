"""``TrainingState``: exactly what ``--resume`` restores, and the ``state.pt`` layout that holds it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from chargen.errors import CheckpointError
from chargen.model import CharRNN, ModelConfig, State
from chargen.training.averaging import WeightAverage
from chargen.training.config import TrainConfig
from chargen.version import __version__


@dataclass
class TrainingState:
    """The progress of a run. With the model's and optimizer's own state dicts and the RNG
    streams (taken and restored by :meth:`to_state_dict`/:meth:`restore`), it is everything
    a resumed run needs to go on exactly as if it had never stopped."""

    step: int = 0
    total_steps: int = 0  # 0: not fixed yet (a --minutes budget fits it to the measured speed)
    best_val: float = math.inf
    elapsed_s: float = 0.0  # wall-clock of all earlier sessions of this run
    evals: list[dict[str, float]] = field(default_factory=list)
    hidden: State | None = None  # carried across batches within an epoch (truncated BPTT)
    run_id: str | None = None  # the run this state belongs to, also in run.json: a foreign state.pt is refused

    def to_state_dict(self, model: CharRNN, optimizer: torch.optim.Optimizer, device: torch.device,
                      model_config: ModelConfig, train_config: TrainConfig, elapsed_s: float,
                      average: WeightAverage | None = None) -> dict[str, Any]:
        """The ``state.pt`` payload: tensors and plain data only (loaded with ``weights_only=True``)."""
        return {
            "model": model.state_dict(),
            **({"average": average.state_dict()} if average is not None else {}),
            "optimizer": optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            **({"rng_cuda": torch.cuda.get_rng_state()} if device.type == "cuda" else {}),
            "step": self.step,
            "total_steps": self.total_steps,
            "best_val": self.best_val,
            "elapsed_s": elapsed_s,
            "evals": self.evals,
            "hidden": [h.detach().cpu() for h in self.hidden] if self.hidden is not None else [],
            "model_config": model_config.to_dict(),
            "train_config": train_config.to_dict(),
            "chargen_version": __version__,
            **({"run_id": self.run_id} if self.run_id else {}),
        }

    @classmethod
    def restore(cls, saved: dict[str, Any], model: CharRNN, optimizer: torch.optim.Optimizer,
                device: torch.device) -> TrainingState:
        """Load ``saved`` (a ``state.pt`` payload) into ``model``, ``optimizer`` and the RNGs.

        A payload that does not fit them (checked against the run beforehand by ``chargen.training.run``)
        is a CheckpointError, never a late IndexError."""
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            torch.set_rng_state(saved["rng_cpu"])
            if device.type == "cuda" and "rng_cuda" in saved:
                torch.cuda.set_rng_state(saved["rng_cuda"])
            hidden = tuple(h.to(device, torch.float32) for h in saved["hidden"]) if saved.get("hidden") else None
            run_id = saved.get("run_id")
            return cls(step=int(saved["step"]), total_steps=int(saved["total_steps"]),
                       best_val=float(saved["best_val"]), elapsed_s=float(saved["elapsed_s"]),
                       evals=list(saved.get("evals", [])), hidden=hidden,
                       run_id=run_id if isinstance(run_id, str) else None)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as exc:
            raise CheckpointError(f"resume state is damaged or not this run's ({type(exc).__name__}: "
                                  f"{str(exc)[:200]})") from None
