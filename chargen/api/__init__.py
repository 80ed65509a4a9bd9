"""chargen's public Python API: train, load, generate, sample, score, and read the history.

    import chargen
    run = chargen.train("corpora/fables.txt", minutes=2)
    model = chargen.load(run.name)
    model.generate("The ", 200, temperature=0.8, seed=1)

  training.py  train() -> Run
  model.py     load() -> Model: generate, sample, score, info
  info.py      what a checkpoint is (Model.info, chargen info)
  history.py   generations, training_runs, scores, replay
"""

from chargen.api.history import generation, generations, replay, scores, training_runs
from chargen.api.model import Model, TextStream, load
from chargen.api.training import Run, train

__all__ = ["Model", "Run", "TextStream", "generation", "generations", "load", "replay", "scores", "train",
           "training_runs"]
