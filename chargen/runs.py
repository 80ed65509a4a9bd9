"""Run folders: naming, creating, and starting or resuming a training run.

This is what ``chargen train`` does, as a library call the service can reuse.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from chargen.checkpoint import RUN_JSON, STATE, TOKENS, default_checkpoint_root, resolve_run_dir
from chargen.codec import codec_from_metadata
from chargen.data import CorpusInfo, Warn, build_corpus
from chargen.errors import ChargenError
from chargen.model import DEFAULT_PRESET, PRESETS, ModelConfig
from chargen.train import TrainConfig, TrainResult, train


def default_run_name(paths: Sequence[str | Path]) -> str:
    stem = Path(paths[0]).stem if paths else "run"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "run"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def model_config_for(vocab_size: int, preset: str | None = None, **overrides: object) -> ModelConfig:
    """A preset (default medium) with any explicitly given fields on top."""
    settings = dict(PRESETS[preset or DEFAULT_PRESET])
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig(vocab_size=vocab_size, **settings)


def start_run(
    corpus_paths: Sequence[str | Path],
    train_config: TrainConfig,
    preset: str | None = None,
    model_overrides: dict[str, object] | None = None,
    run_name: str | None = None,
    out: Path | None = None,
    codec_name: str = "auto",
    encoding: str = "utf-8",
    progress: bool = True,
    warn: Warn | None = None,
) -> TrainResult:
    root = out or default_checkpoint_root()
    run_dir = root / (run_name or default_run_name(corpus_paths))
    if (run_dir / STATE).exists():
        raise ChargenError(f"{run_dir} already holds a run; use --resume {run_dir.name} or another --run-name")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        codec, corpus = build_corpus(corpus_paths, run_dir / TOKENS, codec_name, encoding, warn)
        model_config = model_config_for(codec.vocab_size, preset, **(model_overrides or {}))
        return train(run_dir, codec, corpus, model_config, train_config, progress=progress, report=warn)
    except ChargenError:
        # Nothing was trained: leave no empty run behind to be picked as "newest".
        if created and not (run_dir / STATE).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def resume_run(spec: str | Path, train_config: TrainConfig | None = None, progress: bool = True,
               warn: Warn | None = None) -> TrainResult:
    run_dir = resolve_run_dir(spec)
    try:
        meta = json.loads((run_dir / RUN_JSON).read_text())
    except (OSError, ValueError):
        raise ChargenError(f"{run_dir}: not a chargen run folder (no readable {RUN_JSON})") from None
    if not (run_dir / TOKENS).is_file():
        raise ChargenError(f"{run_dir}: the encoded corpus {TOKENS} is missing; cannot resume")
    from chargen.checkpoint import LAST, read_metadata

    codec = codec_from_metadata(json.loads(read_metadata(run_dir / LAST)["codec"]))
    corpus = CorpusInfo(**meta["corpus"])
    return train(run_dir, codec, corpus, config=train_config, resume=True, progress=progress, report=warn)
