"""The weights format: one safetensors file with chargen metadata is enough to sample; ``state.pt`` resumes.

Nothing in a file is believed before :mod:`chargen.runs.checks` has checked it.
"""

from __future__ import annotations

import json
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from chargen.codecs.base import Codec
from chargen.codecs.registry import codec_from_metadata
from chargen.errors import ChargenError, CheckpointError
from chargen.files.atomic import atomic_write, sha256_file
from chargen.model import CharRNN, ModelConfig
from chargen.runs import checks
from chargen.terminal import printable

FORMAT = "chargen-checkpoint"
FORMAT_VERSION = "1"


def save_weights(path: Path, model: CharRNN, codec: Codec, training: dict[str, Any]) -> None:
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": json.dumps(model.config.to_dict()),
        "codec": json.dumps(codec.to_metadata()),
        "training": json.dumps(training),
    }
    # Serialised here and written by atomic_write's own file: safetensors' save_file makes a temp file of its
    # own in the folder, whose failure (a folder made read-only mid-run) is a SafetensorError, not an OSError.
    data = save(tensors, metadata=metadata)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


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


def read_metadata(path: Path) -> dict[str, str]:
    """The chargen metadata of a weights file; a clear error for anything else."""
    return _read_header(path)[0]


def _read_header(path: Path) -> tuple[dict[str, str], checks.Header]:
    """Metadata and tensor shapes of a chargen weights file, from its header alone (nothing mapped)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        metadata, tensors = checks.read_header(path)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        raise CheckpointError(
            f"{path}: not a chargen checkpoint (not a readable safetensors file, or truncated)"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a chargen checkpoint (safetensors file without chargen metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {printable(metadata.get('format_version'))[:40]} is not "
                              "supported")
    return metadata, tensors


def _no_constant(name: str) -> Any:
    # JSON has no NaN or Infinity (Python's json reads them): metadata holding one is refused, not passed on.
    raise ValueError(f"non-finite number {name}")


def _metadata_dict(path: Path, metadata: dict[str, str], key: str, default: str | None = None) -> dict[str, Any]:
    try:
        value = json.loads(metadata[key] if default is None else metadata.get(key, default),
                           parse_constant=_no_constant)
    except KeyError:
        raise CheckpointError(f"{path}: checkpoint metadata is damaged (no {key!r} field)") from None
    except ValueError:
        raise CheckpointError(f"{path}: checkpoint metadata is damaged ({key!r} is not JSON)") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: checkpoint metadata is damaged ({key!r} is a {type(value).__name__}, "
                              "not an object)")
    return value


def checkpoint_codec(path: Path, metadata: dict[str, str] | None = None) -> Codec:
    """The codec a weights file was trained with (checked, never an internal error)."""
    metadata = metadata if metadata is not None else read_metadata(path)
    try:
        return codec_from_metadata(_metadata_dict(path, metadata, "codec"))
    except ChargenError as exc:
        message = str(exc)
        raise CheckpointError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is damaged (codec: {exc!r})") from None


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> Checkpoint:
    """A weights file as a ready model. Nothing in it is believed unchecked: the config's types and bounds,
    every tensor's shape and the memory they need come before any allocation, finiteness after reading."""
    metadata, header = _read_header(path)
    codec = checkpoint_codec(path, metadata)
    config = checks.model_config(path, _metadata_dict(path, metadata, "model_config"))
    training = _metadata_dict(path, metadata, "training", "{}")
    checks.check_training(path, training)
    if codec.vocab_size != config.vocab_size:
        raise CheckpointError(f"{path}: checkpoint metadata is inconsistent: the {codec.name} codec has "
                              f"{codec.vocab_size} symbols but the model's vocabulary is {config.vocab_size}")
    checks.check_header(path, config, header)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            tensors = {key: handle.get_tensor(key) for key in header}
    except ChargenError:
        raise
    except Exception:  # safetensors raises several types for a truncated or malformed file
        raise CheckpointError(f"{path}: checkpoint weights are truncated or unreadable") from None
    checks.check_finite(path, tensors)
    model = CharRNN(config)
    try:
        model.load_state_dict(tensors)
    except (RuntimeError, ValueError, TypeError):
        raise CheckpointError(f"{path}: checkpoint weights do not match its config") from None
    del tensors
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
