"""Fine-tuning (``chargen train CORPUS --init-from RUN``): a new run that starts from a run's weights.

The new run keeps its parent's model shape and every token id; characters of the
new corpus that the parent never saw are appended to the vocabulary (never mapped
to something else), with new embedding and output rows. The optimizer and the
learning-rate schedule start afresh. The parent (run name, weights file, sha256)
is recorded in ``run.json``, in the weights' training metadata and in the history.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chargen.codecs.base import Codec
from chargen.codecs.text import TextCodec, code_points, iter_code_points
from chargen.codecs.text_scan import seen_code_points
from chargen.errors import ArgumentError, ChargenError
from chargen.files.atomic import sha256_file
from chargen.model import CharRNN, ModelConfig
from chargen.runs.checkpoint import load_checkpoint
from chargen.runs.lookup import resolve_checkpoint
from chargen.training.data import CorpusInfo, Warn, build_corpus, find_corpus_files

#: Model options that change a tensor's shape: a fine-tuned run has its parent's shape.
SHAPE_OPTIONS = ("size", "layers", "hidden", "embedding", "cell")
#: Spread of the new embedding rows, as a fraction of the existing rows' standard deviation.
NEW_ROW_NOISE = 0.1


@dataclass
class Initialisation:
    """The weights a new run starts from, and the record of where they came from."""

    weights: dict[str, torch.Tensor]
    parent: dict[str, Any]  # run, checkpoint_path, checkpoint_sha256 (+ new_symbols)

    def apply(self, model: CharRNN) -> None:
        """Copy the weights into ``model`` in place (its optimizer keeps pointing at the same tensors)."""
        with torch.no_grad():
            model.load_state_dict(self.weights)


def check_no_shape_options(given: dict[str, object]) -> None:
    """Refuse a model shape option next to --init-from: the shape is the parent's."""
    named = [name for name in SHAPE_OPTIONS if given.get(name) is not None]
    if named:
        raise ArgumentError(f"{', '.join(named)} cannot be combined with init_from: a fine-tuned run keeps "
                           "its parent's model shape")


def unseen_characters(codec: TextCodec, files: Sequence[Path]) -> str:
    """Characters of ``files`` that ``codec`` lacks, in code point order."""
    known = code_points(codec.symbols)
    seen = seen_code_points(piece for path in files for piece in iter_code_points(path, codec.encoding))
    new = np.setdiff1d(seen, known)
    return new.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


def grow_vocabulary(weights: dict[str, torch.Tensor], old_size: int, new_size: int,
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``weights`` with rows for ids ``old_size..new_size-1`` appended to the embedding and the output layer.

    New embedding rows sit at the mean of the existing ones plus a little noise (so
    they start as an "average" character, distinct from each other); new output rows
    have zero weights and the lowest existing bias, so the model first predicts them
    as rarely as its rarest character and learns them from the new corpus.
    """
    added = new_size - old_size
    if added <= 0:
        return weights
    grown = dict(weights)
    embed = weights["embed.weight"]
    noise = torch.randn(added, embed.shape[1], generator=generator) * embed.std(dim=0) * NEW_ROW_NOISE
    grown["embed.weight"] = torch.cat([embed, embed.mean(dim=0, keepdim=True) + noise])
    head_w, head_b = weights["head.weight"], weights["head.bias"]
    grown["head.weight"] = torch.cat([head_w, torch.zeros(added, head_w.shape[1], dtype=head_w.dtype)])
    grown["head.bias"] = torch.cat([head_b, head_b.min().expand(added)])
    return grown


def prepare_finetune(parent_spec: str, corpus_paths: Sequence[str | Path], tokens_path: Path, codec_name: str,
                     encoding: str, model_overrides: dict[str, object], seed: int,
                     warn: Warn | None = None) -> tuple[Codec, CorpusInfo, ModelConfig, Initialisation]:
    """The codec, encoded corpus, model configuration and starting weights of a run fine-tuned from ``parent_spec``."""
    check_no_shape_options(model_overrides)
    weights_path = resolve_checkpoint(parent_spec)  # best weights, or last where there is no best
    parent_sha256 = sha256_file(weights_path)  # before loading: the file the weights came from
    parent = load_checkpoint(weights_path)
    codec = parent.codec
    if codec_name == "auto" and codec.music:  # .mid files have two codecs: read them the parent's way
        codec_name = codec.name
    found_codec, files = find_corpus_files(corpus_paths, codec_name)
    if found_codec != codec.name:
        raise ChargenError(f"init_from {parent_spec}: that model uses the {codec.name} codec, "
                           f"but the corpus is read as {found_codec}")
    new_symbols = ""
    if isinstance(codec, TextCodec):
        if warn and encoding.lower() not in ("utf-8", codec.encoding.lower()):
            warn(f"encoding {encoding} ignored: the parent model reads {codec.encoding}")
        new_symbols = unseen_characters(codec, files)
        if new_symbols:
            codec = codec.extended(new_symbols)
            if warn:
                warn(f"vocabulary extended by {len(new_symbols)} character(s) the parent never saw: "
                     f"{''.join(new_symbols)!r}")
    codec, corpus = build_corpus(corpus_paths, tokens_path, codec.name, codec=codec, warn=warn)
    regularisers = {k: float(v) for k in ("dropout", "weight_drop")  # type: ignore[arg-type]
                    if (v := model_overrides.get(k)) is not None}
    model_config = replace(parent.config, vocab_size=codec.vocab_size, **regularisers)
    weights = {k: v.detach().cpu() for k, v in parent.model.state_dict().items()}
    weights = grow_vocabulary(weights, parent.config.vocab_size, codec.vocab_size,
                              torch.Generator().manual_seed(seed))
    record = {"run": weights_path.parent.name, "checkpoint_path": str(weights_path.resolve()),
              "checkpoint_sha256": parent_sha256, "step": parent.training.get("step"),
              "best_val_loss": _finite_or_none(parent.training.get("best_val_loss")),
              "new_symbols": new_symbols}
    return codec, corpus, model_config, Initialisation(weights, record)


def _finite_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
