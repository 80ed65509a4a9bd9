"""Run folders: naming, creating, and starting or resuming a training run.

This is what ``chargen train`` does, as a library call the service can reuse.
Every name that becomes a run folder passes :func:`check_run_name`, here only.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chargen.checkpoint import (
    LAST,
    STATE,
    TOKENS,
    checkpoint_codec,
    default_checkpoint_root,
    read_run_json,
    resolve_run_dir,
    sha256_file,
    update_run_json,
)
from chargen.codec import Codec
from chargen.data import CorpusInfo, Warn, build_corpus, load_tokens, token_dtype
from chargen.errors import ChargenError
from chargen.model import DEFAULT_PRESET, PRESETS, ModelConfig
from chargen.training import TrainConfig, TrainResult, train


def check_run_name(name: str) -> str:
    """``name`` if it is a plain folder name; a one-line error for anything that could leave the root."""
    if not name or not name.strip():
        raise ChargenError("--run-name must not be empty")
    if name in (".", ".."):
        raise ChargenError(f"--run-name {name!r} is not a folder name of its own; choose a name like 'fables-1'")
    if "/" in name or "\\" in name or Path(name).is_absolute():
        raise ChargenError(f"--run-name {name!r} must be a plain name, without '/' or '\\\\'")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ChargenError(f"--run-name {name!r} contains control characters")
    if name.startswith("."):
        raise ChargenError(f"--run-name {name!r} must not start with '.' (hidden and temporary files do)")
    return name


def default_run_name(paths: Sequence[str | Path]) -> str:
    stem = Path(paths[0]).stem if paths else "run"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "run"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


#: Giving any of these fixes the model's size: a --minutes budget then does not choose it.
SIZE_FIELDS = ("layers", "hidden", "embedding")


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
    began = time.monotonic()  # a --minutes budget counts from here: reading the corpus and sizing spend it too
    root = out or default_checkpoint_root()
    run_dir = root / (check_run_name(run_name) if run_name is not None else default_run_name(corpus_paths))
    if (run_dir / STATE).exists():
        raise ChargenError(f"{run_dir} already holds a run; use --resume {run_dir.name} or another --run-name")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ChargenError(f"{run_dir}: cannot create the run folder ({exc.strerror or exc})") from None
    try:
        codec, corpus = build_corpus(corpus_paths, run_dir / TOKENS, codec_name, encoding, warn)
        sized = None
        if preset is None and train_config.minutes and not any((model_overrides or {}).get(k) for k in SIZE_FIELDS):
            from chargen.training.sizing import size_run  # the budget buys the model (issue 14)

            cell = str((model_overrides or {}).get("cell") or "lstm")
            preset, train_config, sized = size_run(load_tokens(run_dir / TOKENS), codec.vocab_size, train_config,
                                                   cell, warn or (lambda message: None))
        model_config = model_config_for(codec.vocab_size, preset, **(model_overrides or {}))
        result = train(run_dir, codec, corpus, model_config, train_config, progress=progress, report=warn,
                       started=began)
        if sized is not None:
            update_run_json(run_dir, sizing={"preset": sized.preset, "speeds": sized.speeds, "reason": sized.reason})
        return result
    except BaseException:
        # Nothing was trained: leave no run without weights behind to be picked as "newest".
        if created and not (run_dir / LAST).exists() and not (run_dir / STATE).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def check_tokens(run_dir: Path, recorded: dict[str, object], codec: Codec) -> None:
    """Refuse a ``tokens.npy`` that is not the corpus this run recorded (truncated, foreign, replaced)."""
    path = run_dir / TOKENS
    if not path.is_file():
        raise ChargenError(f"{path}: the encoded corpus is missing; cannot resume")
    expected_hash = recorded.get("tokens_sha256")
    if isinstance(expected_hash, str):
        if sha256_file(path) != expected_hash:
            raise ChargenError(f"{path}: not the encoded corpus this run was started with (sha256 differs); "
                               "cannot resume")
        return
    try:  # runs from before tokens_sha256 was recorded: check what can be checked cheaply
        ids = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise ChargenError(f"{path}: not a readable token file ({exc}); cannot resume") from None
    corpus = recorded.get("corpus")
    tokens = corpus.get("tokens") if isinstance(corpus, dict) else None
    if ids.ndim != 1 or ids.dtype != token_dtype(codec.vocab_size) or (tokens is not None and len(ids) != tokens):
        raise ChargenError(f"{path}: holds {ids.shape} {ids.dtype} tokens, but this run recorded {tokens} tokens of "
                           f"{token_dtype(codec.vocab_size)}; cannot resume")
    if len(ids) and int(ids.max()) >= codec.vocab_size:
        raise ChargenError(f"{path}: holds token ids outside the model's vocabulary of {codec.vocab_size}")


def resume_run(spec: str | Path, train_config: TrainConfig | None = None, progress: bool = True,
               warn: Warn | None = None) -> TrainResult:
    """Continue a run; ``train_config`` may set a new limit (steps, epochs, minutes), device and threads."""
    run_dir = resolve_run_dir(spec)
    recorded = read_run_json(run_dir)
    if recorded is None or not isinstance(recorded.get("corpus"), dict):
        raise ChargenError(f"{run_dir}: not a chargen run folder (no readable run.json)")
    codec = checkpoint_codec(run_dir / LAST)
    check_tokens(run_dir, recorded, codec)
    try:
        corpus = CorpusInfo(**recorded["corpus"])
    except TypeError:
        raise ChargenError(f"{run_dir / 'run.json'}: its corpus record is damaged") from None
    return train(run_dir, codec, corpus, config=train_config, resume=True, progress=progress, report=warn)
