"""chargen: character-level (and MIDI-event) recurrent language models.

The public API (see the README)::

    import chargen
    run = chargen.train("corpus.txt", minutes=2)           # -> chargen.Run
    model = chargen.load(run.name)                         # -> chargen.Model
    text = model.generate("The ", 300, temperature=0.8, seed=7)
    samples = model.sample(n=3, length=200)                # each with .text and .logprob
    model.score("Some text.")                              # nats per character
    chargen.generations(n=5)                               # the history

Names load on first use, so ``import chargen`` stays cheap (torch loads when a model does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chargen.errors import (
    ArgumentError,
    ChargenError,
    CheckpointError,
    CorpusError,
    CorruptFileError,
    TrainingInterrupted,
    UnknownTokensError,
)
from chargen.lazy import homes, lazy_exports
from chargen.version import __version__

if TYPE_CHECKING:
    from chargen.api import (
        Model,
        Run,
        TextStream,
        generation,
        generations,
        load,
        replay,
        scores,
        train,
        training_runs,
    )
    from chargen.history.errors import HistoryLookupError, HistoryUnavailable
    from chargen.sampling import DecodeConfig, Sample
    from chargen.training.config import TrainConfig

__getattr__, __dir__ = lazy_exports(__name__, {
    **homes("chargen.api", "Model", "Run", "TextStream", "generation", "generations", "load", "replay", "scores",
            "train", "training_runs"),
    **homes("chargen.history.errors", "HistoryLookupError", "HistoryUnavailable"),
    **homes("chargen.sampling.config", "DecodeConfig", "Sample"),
    **homes("chargen.training.config", "TrainConfig"),
})

__all__ = [
    "ArgumentError", "ChargenError", "CheckpointError", "CorpusError", "CorruptFileError", "DecodeConfig",
    "HistoryLookupError", "HistoryUnavailable", "Model", "Run", "Sample", "TextStream", "TrainConfig",
    "TrainingInterrupted", "UnknownTokensError", "__version__", "generation", "generations", "load", "replay",
    "scores", "train", "training_runs",
]

