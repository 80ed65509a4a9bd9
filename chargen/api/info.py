"""What a checkpoint is: the facts ``Model.info`` gives and ``chargen info`` prints."""

from __future__ import annotations

import math
from typing import Any

from chargen.runs.checkpoint import Checkpoint
from chargen.runs.curve import trend
from chargen.runs.layout import read_run_json
from chargen.sampling.grammar import learnt_max_hold_s, learnt_polyphony_cap
from chargen.sampling.music_defaults import corpus_statistics, stored_policy

LN2 = math.log(2)


def describe(checkpoint: Checkpoint, sha256: str | None = None) -> dict[str, Any]:
    """Model, vocabulary, corpus, training progress and trend of a loaded checkpoint, as JSON-ready data."""
    training = checkpoint.training
    best = training.get("best_val_loss")
    music = checkpoint.codec.music
    cap, cap_source = learnt_polyphony_cap(checkpoint) if music else (None, "")
    hold, hold_source = learnt_max_hold_s(checkpoint) if music else (None, "")
    texture, texture_source = corpus_statistics(checkpoint) if music else (None, "")
    curve = trend(checkpoint.path.parent)
    return {
        "path": str(checkpoint.path),
        "sha256": sha256 or checkpoint.sha256,
        "model_config": checkpoint.config.to_dict(),
        "parameters": checkpoint.model.num_parameters(),
        "codec": checkpoint.codec.name,
        "vocab_size": checkpoint.codec.vocab_size,
        "vocabulary": checkpoint.codec.symbols,
        "labels": list(checkpoint.config.labels),
        "corpus_sha256": training.get("corpus_sha256"),
        "corpus_tokens": training.get("corpus_tokens"),
        "corpus_paths": training.get("corpus_paths"),
        "steps": training.get("step"),
        "best_val_loss_nats": best,
        "best_val_loss_bpc": best / LN2 if isinstance(best, int | float) else None,
        "chargen_version": training.get("chargen_version"),
        "status": (read_run_json(checkpoint.path.parent) or {}).get("status"),
        "trend": curve.to_dict() if curve else None,
        "polyphony_cap": cap,
        "polyphony_cap_source": cap_source or None,
        "max_hold_s": hold,
        "max_hold_source": hold_source or None,
        "corpus_texture": texture,  # what the model aims at: the corpus's own polyphony, note length, density, pitch
        "corpus_texture_source": texture_source or None,
        "grammar_defaults": stored_policy(checkpoint) if music else None,
        "parent": training.get("parent"),
    }
