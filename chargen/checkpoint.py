"""Checkpoints: one safetensors file is enough to sample; a state file resumes.

A run folder ``checkpoints/<run>/`` holds
  best.safetensors   weights with the lowest validation loss, plus metadata
  last.safetensors   weights at the latest save
  state.pt           everything to resume exactly: model, optimizer, RNG,
                     step, schedule, hidden state (tensors and plain data only,
                     loaded with ``weights_only=True``)
  tokens.npy         the encoded corpus, memory-mapped
  run.json           how the run was started
Every write is atomic: a temp file in the same folder, fsync, then rename, so a
SIGKILL at any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from chargen.codec import Codec, codec_from_metadata
from chargen.errors import ChargenError, CheckpointError
from chargen.model import CharRNN, ModelConfig

FORMAT = "chargen-checkpoint"
FORMAT_VERSION = "1"
BEST = "best.safetensors"
LAST = "last.safetensors"
STATE = "state.pt"
TOKENS = "tokens.npy"
RUN_JSON = "run.json"


def default_checkpoint_root() -> Path:
    """``$CHARGEN_CHECKPOINTS`` or ``./checkpoints`` (nanoGPT's out dir, per project)."""
    return Path(os.environ.get("CHARGEN_CHECKPOINTS", "checkpoints"))


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename tmp over ``path``; never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def save_weights(path: Path, model: CharRNN, codec: Codec, training: dict[str, Any]) -> None:
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": json.dumps(model.config.to_dict()),
        "codec": json.dumps(codec.to_metadata()),
        "training": json.dumps(training),
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


@dataclass
class Checkpoint:
    path: Path
    model: CharRNN
    codec: Codec
    config: ModelConfig
    training: dict[str, Any]

    @property
    def sha256(self) -> str:
        return sha256_file(self.path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(path: Path) -> dict[str, str]:
    """The chargen metadata of a weights file; a clear error for anything else."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception:  # safetensors raises several types for a bad header
        raise CheckpointError(
            f"{path}: not a chargen checkpoint (not a readable safetensors file, or truncated)"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a chargen checkpoint (safetensors file without chargen metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {metadata.get('format_version')} is not supported")
    return metadata


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> Checkpoint:
    metadata = read_metadata(path)
    try:
        config = ModelConfig.from_dict(json.loads(metadata["model_config"]))
        codec = codec_from_metadata(json.loads(metadata["codec"]))
        training = json.loads(metadata.get("training", "{}"))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is damaged ({exc})") from None
    model = CharRNN(config)
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key)
        model.load_state_dict(tensors)
    except ChargenError:
        raise
    except Exception:
        raise CheckpointError(f"{path}: checkpoint weights are truncated or do not match its config") from None
    model.to(device).eval()
    return Checkpoint(path=path, model=model, codec=codec, config=config, training=training)


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any]:
    """Resume state, refusing anything but tensors and plain containers."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no resume state in this run")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused to load: it holds Python objects other than tensors and plain data"
        ) from None
    except Exception:
        raise CheckpointError(f"{path}: resume state is truncated or not a chargen state file") from None


def resolve_checkpoint(spec: str | Path | None, root: Path | None = None) -> Path:
    """A weights file from a path, a run folder, a run name, or the newest run."""
    root = root or default_checkpoint_root()
    if spec is None:
        candidates = [p for p in root.glob("*/*.safetensors") if p.name in (BEST, LAST)] if root.is_dir() else []
        if not candidates:
            raise CheckpointError(
                f"no checkpoint found under {root}/; train one with 'chargen train' or pass --checkpoint"
            )
        newest_run = max(candidates, key=lambda p: p.stat().st_mtime).parent
        return run_weights(newest_run)
    path = Path(spec)
    if not path.exists() and not path.is_absolute() and (root / path).exists():
        path = root / path
    if path.is_dir():
        return run_weights(path)
    if path.is_file():
        return path
    raise CheckpointError(f"{spec}: no such checkpoint, run folder or run name (looked in {root}/)")


def run_weights(run_dir: Path) -> Path:
    for name in (BEST, LAST):
        if (run_dir / name).is_file():
            return run_dir / name
    raise CheckpointError(f"{run_dir}: run folder holds no {BEST} or {LAST}")


def resolve_run_dir(spec: str | Path, root: Path | None = None) -> Path:
    root = root or default_checkpoint_root()
    path = Path(spec)
    if not path.is_dir() and (root / path).is_dir():
        path = root / path
    if not path.is_dir():
        raise CheckpointError(f"{spec}: no such run (looked for a folder, and under {root}/)")
    return path
