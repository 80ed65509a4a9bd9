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

from chargen.codecs.base import Codec
from chargen.errors import ArgumentError, ChargenError
from chargen.files.atomic import sha256_file
from chargen.model import DEFAULT_PRESET, PRESETS, ModelConfig, check_label_names
from chargen.runs.checkpoint import checkpoint_codec
from chargen.runs.checks import check_model_memory
from chargen.runs.layout import (
    LABELS,
    LAST,
    STATE,
    TOKENS,
    default_checkpoint_root,
    read_run_json,
    update_run_json,
)
from chargen.runs.lock import RunLock
from chargen.runs.lookup import resolve_run_dir
from chargen.terminal import has_controls
from chargen.training import TrainConfig, TrainResult, distributed, train
from chargen.training.data import (
    DEFAULT_MAX_VOCAB,
    CorpusInfo,
    Warn,
    build_corpus,
    build_labelled_corpus,
    check_vocab_size,
    label_folders,
    load_tokens,
    token_dtype,
)
from chargen.training.finetune import prepare_finetune


def check_run_name(name: str) -> str:
    """``name`` if it is a plain folder name; a one-line error for anything that could leave the root."""
    if not name or not name.strip():
        raise ArgumentError("run_name must not be empty")
    if name in (".", ".."):
        raise ArgumentError(f"run_name {name!r} is not a folder name of its own; choose a name like 'fables-1'")
    if "/" in name or "\\" in name or Path(name).is_absolute():
        raise ArgumentError(f"run_name {name!r} must be a plain name, without '/' or '\\\\'")
    if has_controls(name):  # C0/C1 controls, lone surrogates, bidi overrides
        raise ArgumentError(f"run_name {name!r} contains control characters")
    if name.startswith("."):
        raise ArgumentError(f"run_name {name!r} must not start with '.' (hidden and temporary files do)")
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
    labels_from: str | None = None,
    label: str | None = None,
    init_from: str | None = None,
    max_vocab: int = DEFAULT_MAX_VOCAB,
) -> TrainResult:
    """Start a run. ``labels_from="folders"``: the one CORPUS folder's subfolders are the labels;
    ``label``: the whole corpus is that one label; ``init_from`` (a run name, folder or weights file)
    fine-tunes that model. Otherwise a new unlabelled model, as before labels. ``max_vocab``: the
    largest vocabulary a new text model may have (see :func:`chargen.training.data.check_vocab_size`).

    The run folder is locked (:class:`~chargen.runs.lock.RunLock`) from before anything is written in it
    until the session ends: a second writer of the same run is refused with the holder's PID and host."""
    if labels_from is not None and label is not None:
        raise ArgumentError("give either labels_from or label, not both")
    if labels_from not in (None, "folders"):
        raise ArgumentError(f"labels_from {labels_from!r}: the only source of labels is 'folders'")
    if label is not None:
        check_label_names([label])
    if labels_from and (len(corpus_paths) != 1 or not Path(corpus_paths[0]).is_dir()):
        raise ArgumentError("labels_from='folders' takes one corpus folder, whose subfolders are the labels")
    if init_from is not None and (labels_from or label is not None):
        raise ArgumentError("init_from fine-tunes an unlabelled model: it takes no labels_from or label")
    began = time.monotonic()  # a --minutes budget counts from here: reading the corpus and sizing spend it too
    root = out or default_checkpoint_root()
    ranks = distributed.current()  # torchrun: rank 0 names the run and encodes the corpus; the others wait
    lock: RunLock | None = None
    created = False

    def claim() -> str:
        # Rank 0 writes the run: it makes the folder and takes its lock before anything in it is written
        # (or read as this run's), so a second writer is refused before it can touch the first one's files.
        nonlocal lock, created
        name = check_run_name(run_name) if run_name is not None else default_run_name(corpus_paths)
        if ranks.is_main:
            created = not (root / name).exists()
            _make_folder(root / name)
            lock = RunLock(root / name).acquire()
        return name

    run_dir = root / ranks.json_from_main(claim)
    try:
        if not ranks.is_main:
            _make_folder(run_dir)
        if (run_dir / STATE).exists():
            raise ChargenError(f"{run_dir} already holds a run; resume it ({run_dir.name}) or choose another run_name")
        return _start(run_dir, corpus_paths, train_config, preset, model_overrides, codec_name, encoding, progress,
                      warn, labels_from, label, init_from, began, max_vocab)
    except BaseException:
        # Nothing was trained: leave no run without weights behind to be picked as "newest".
        if created and not (run_dir / LAST).exists() and not (run_dir / STATE).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.release()


def _make_folder(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ChargenError(f"{run_dir}: cannot create the run folder ({exc.strerror or exc})") from None


def _start(run_dir: Path, corpus_paths: Sequence[str | Path], train_config: TrainConfig, preset: str | None,
           model_overrides: dict[str, object] | None, codec_name: str, encoding: str, progress: bool,
           warn: Warn | None, labels_from: str | None, label: str | None, init_from: str | None, began: float,
           max_vocab: int) -> TrainResult:
    """:func:`start_run`'s work in a run folder it has locked."""
    ranks = distributed.current()
    init = sized = None
    if init_from is not None:
        codec, corpus, model_config, init = prepare_finetune(
            init_from, corpus_paths, run_dir / TOKENS, codec_name, encoding,
            dict(model_overrides or {}, size=preset), train_config.seed, warn)
        added = len(init.parent.get("new_symbols") or "")  # the parent's own vocabulary is not the new corpus's doing
        check_vocab_size(codec.vocab_size, max(max_vocab, codec.vocab_size - added), warn)
    else:
        def build() -> tuple[Codec, CorpusInfo]:
            if labels_from or label is not None:
                groups = ([(name, [folder]) for name, folder in label_folders(corpus_paths[0], warn)]
                          if labels_from else [(label or "", list(corpus_paths))])
                return build_labelled_corpus(groups, run_dir / TOKENS, run_dir / LABELS,
                                             train_config.val_fraction, codec_name, encoding, warn, max_vocab)
            return build_corpus(corpus_paths, run_dir / TOKENS, codec_name, encoding, warn, max_vocab=max_vocab)

        codec, corpus = ranks.build_corpus_once(build)
        # The budget buys the model (issue 14); under torchrun every rank must build the same one,
        # so sizing (a measurement per process) is for single-process runs.
        if (preset is None and train_config.minutes and ranks.world_size == 1
                and not any((model_overrides or {}).get(k) for k in SIZE_FIELDS)):
            from chargen.machine.sizing import size_run

            cell = str((model_overrides or {}).get("cell") or "lstm")
            given = {k: (model_overrides or {}).get(k) for k in ("dropout", "weight_drop")}
            preset, train_config, sized = size_run(
                load_tokens(run_dir / TOKENS), codec.vocab_size, train_config, cell, warn or (lambda message: None),
                **{k: None if v is None else float(str(v)) for k, v in given.items()})
        overrides = dict(model_overrides or {})
        if sized is not None:  # the budget's, or an explicit --dropout / --weight-drop
            overrides.update(dropout=sized.dropout, weight_drop=sized.weight_drop)
        model_config = model_config_for(codec.vocab_size, preset, **overrides, labels=corpus.labels)
    check_model_memory(model_config, "training this model")
    result = train(run_dir, codec, corpus, model_config, train_config, progress=progress, report=warn,
                   init=init, started=began)
    if sized is not None:
        update_run_json(run_dir, sizing={"preset": sized.preset, "speeds": sized.speeds, "reason": sized.reason,
                                         "dropout": sized.dropout, "weight_drop": sized.weight_drop,
                                         "epochs": round(sized.epochs, 2)})
    return result


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
        labels_hash = recorded.get("labels_sha256")
        if isinstance(labels_hash, str):
            labels_path = run_dir / LABELS
            if not labels_path.is_file() or sha256_file(labels_path) != labels_hash:
                raise ChargenError(f"{labels_path}: missing, or not the label file this run was started with; "
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


def _is_run(run_dir: Path) -> bool:
    recorded = read_run_json(run_dir)
    return recorded is not None and isinstance(recorded.get("corpus"), dict)


def resume_run(spec: str | Path, train_config: TrainConfig | None = None, progress: bool = True,
               warn: Warn | None = None) -> TrainResult:
    """Continue a run; ``train_config`` may set a new limit (steps, epochs, minutes), device and threads."""
    run_dir = resolve_run_dir(spec)
    if not _is_run(run_dir):  # checked before locking: no lock file is left in a folder that is no run
        raise ChargenError(f"{run_dir}: not a chargen run folder (no readable run.json)")
    ranks = distributed.current()
    lock = RunLock(run_dir)
    ranks.json_from_main(lambda: lock.acquire() and None)  # rank 0 writes the run: it alone holds the lock
    try:
        recorded = read_run_json(run_dir) or {}  # again, now that this process is the run's one writer
        if not isinstance(recorded.get("corpus"), dict):
            raise ChargenError(f"{run_dir}: not a chargen run folder (no readable run.json)")
        codec = checkpoint_codec(run_dir / LAST)
        check_tokens(run_dir, recorded, codec)
        try:
            corpus = CorpusInfo(**recorded["corpus"])
        except TypeError:
            raise ChargenError(f"{run_dir / 'run.json'}: its corpus record is damaged") from None
        return train(run_dir, codec, corpus, config=train_config, resume=True, progress=progress, report=warn)
    finally:
        lock.release()
