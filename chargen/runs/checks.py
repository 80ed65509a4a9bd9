"""What a checkpoint says is checked before it is believed: the config's types and bounds, the
memory the model would take (estimated before anything is allocated), every tensor's shape against
the config, and the weights' finiteness.

A weights file's metadata is only text: a 370 KB file can claim ``hidden=65536, layers=64``. The
model's shapes are worked out on torch's ``meta`` device (no storage), compared with the shapes the
file's header declares, and the bytes they need compared with the memory there is, all before a
single weight is read; then the weights read must be finite numbers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from chargen.errors import ChargenError, CheckpointError
from chargen.model import ModelConfig, parameter_shapes

#: Bounds a checkpoint's config must keep (``chargen train`` cannot make anything larger).
MAX_LAYERS = 64
MAX_WIDTH = 65536  # hidden, embedding, label embedding
MAX_VOCAB = 0x110000  # one token per Unicode code point at most
MAX_LABELS = 65536
_INTS = {"vocab_size": MAX_VOCAB, "layers": MAX_LAYERS, "hidden": MAX_WIDTH, "embedding": MAX_WIDTH,
         "label_embedding": MAX_WIDTH}
#: A model loaded for sampling holds its weights about twice over at the peak (the tensors read, the model).
LOAD_COPIES = 2
#: Training holds weights, gradients, AdamW's two moments and the weight average, besides activations.
TRAIN_COPIES = 5
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
#: safetensors' own limit on the JSON header
MAX_HEADER_BYTES = 100_000_000
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
Header = dict[str, tuple[tuple[int, ...], str]]


def read_header(path: Path) -> tuple[dict[str, str], Header]:
    """A safetensors file's metadata and its tensors' shapes and dtypes, read from its header alone (bounded:
    the file is neither mapped nor read past it). Shapes, dtypes and offsets are checked against each other
    and the file's size, so a header that lies about its tensors is refused here; ValueError otherwise."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
            raise ValueError("no safetensors header")
        header = json.loads(handle.read(length).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("the header is not an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("the metadata is not text")
    tensors: Header = {}
    end = 0
    for name, info in header.items():
        shape, dtype, offsets = (info.get(k) for k in ("shape", "dtype", "data_offsets")) if isinstance(
            info, dict) else (None, None, None)
        if (not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape)
                or dtype not in _ITEMSIZE or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(n, int) for n in offsets)
                or offsets[1] - offsets[0] != math.prod(shape) * _ITEMSIZE[dtype] or offsets[0] < 0):
            raise ValueError(f"tensor {name!r} is described inconsistently")
        tensors[name] = (tuple(shape), dtype)
        end = max(end, offsets[1])
    if 8 + length + end > size:
        raise ValueError("truncated")
    return metadata, tensors


def model_config(path: Path | str, data: Any) -> ModelConfig:
    """The checkpoint's ``model_config`` as a :class:`ModelConfig`, its fields' types and bounds checked."""
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: checkpoint metadata is damaged (model_config is not an object)")
    for key, high in _INTS.items():
        value = data.get(key)
        if key not in data and key != "vocab_size":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
            raise CheckpointError(f"{path}: checkpoint metadata is damaged (model_config {key} is {value!r}, "
                                  f"not a whole number in 1..{high})")
    for key in ("dropout", "weight_drop"):
        value = data.get(key, 0.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
            raise CheckpointError(f"{path}: checkpoint metadata is damaged (model_config {key} is {value!r}, "
                                  "not a number in [0, 1))")
    if not isinstance(data.get("cell", "lstm"), str):
        raise CheckpointError(f"{path}: checkpoint metadata is damaged (model_config cell is {data.get('cell')!r})")
    labels = data.get("labels", [])
    if not isinstance(labels, list) or len(labels) > MAX_LABELS:
        raise CheckpointError(f"{path}: checkpoint metadata is damaged (model_config labels is not a list of at "
                              f"most {MAX_LABELS} names)")
    try:
        return ModelConfig.from_dict(dict(data))
    except ChargenError as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is damaged ({exc})") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is damaged (model_config: {exc})") from None


def model_bytes(config: ModelConfig) -> int:
    """Bytes of the model's float32 weights."""
    return 4 * sum(math.prod(shape) for shape in parameter_shapes(config).values())


def available_memory() -> int | None:
    """Bytes this process could still allocate: the system's available memory, less under an RLIMIT_AS."""
    limits: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm", encoding="ascii") as handle:
                used = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            limits.append(max(0, soft - used))
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return min(limits) if limits else None


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_model_memory(config: ModelConfig, what: str = "loading this model", copies: int = TRAIN_COPIES) -> None:
    """Refuse, before allocating, a model whose weights (``copies`` times over) exceed the memory there is."""
    needed = model_bytes(config) * copies
    available = available_memory()
    if available is not None and needed > available:
        raise ChargenError(f"{what} needs about {_size(needed)} of memory ({config.layers}x{config.hidden} "
                           f"{config.cell.upper()}, vocabulary {config.vocab_size:,}), more than the "
                           f"{_size(available)} available; choose a smaller model")


def check_header(path: Path, config: ModelConfig, header: Mapping[str, tuple[tuple[int, ...], str]]) -> None:
    """The file's tensors (name -> (shape, dtype) from its header) against ``config``, and memory against
    what there is: all before any weight is read."""
    expected = parameter_shapes(config)
    missing = sorted(set(expected) - set(header))
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(extra[:3])}"
        raise CheckpointError(f"{path}: checkpoint weights do not match its config ({what})")
    for name, shape in expected.items():
        found, dtype = header[name]
        if tuple(found) != shape:
            raise CheckpointError(f"{path}: checkpoint weights do not match its config ({name} is "
                                  f"{list(found)}, the config needs {list(shape)})")
        if dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{path}: checkpoint weight {name} is {dtype}, not floating point")
    check_model_memory(config, f"{path}: loading this model", LOAD_COPIES)


def check_finite(path: Path | str, tensors: Mapping[str, torch.Tensor], what: str = "weights") -> None:
    """Every tensor holds finite numbers: a NaN or infinity would only ever generate garbage."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: checkpoint {what} hold NaN or infinity ({name}): the run diverged "
                                  "or the file is damaged; use another checkpoint")


def check_state_model(path: Path, config: ModelConfig, weights: Any) -> None:
    """A ``state.pt``'s model weights against the run's config (a foreign state of another shape)."""
    if not isinstance(weights, Mapping) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        raise CheckpointError(f"{path}: resume state is damaged (its model weights are not tensors)")
    header = {name: (tuple(t.shape), "F32" if t.is_floating_point() else str(t.dtype)) for name, t in weights.items()}
    check_header(path, config, header)
    check_finite(path, weights, "resume weights")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: The facts of a weights file's ``training`` metadata that commands read, and what each must be (or None).
_TRAINING_FIELDS: dict[str, tuple[str, Any]] = {
    "best_val_loss": ("a finite number", _is_number),
    "step": ("a whole number >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "corpus_tokens": ("a whole number >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "corpus_paths": ("a list of paths", lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v)),
    "corpus_sha256": ("a string", lambda v: isinstance(v, str)),
    "chargen_version": ("a string", lambda v: isinstance(v, str)),
    "train_config": ("an object", lambda v: isinstance(v, dict)),
    "parent": ("an object", lambda v: isinstance(v, dict)),
    "world_size": ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
}


def check_training(path: Path | str, training: Mapping[str, Any]) -> None:
    """The weights' ``training`` facts that commands print and use have the types they need (or are absent)."""
    for key, (kind, test) in _TRAINING_FIELDS.items():
        value = training.get(key)
        if value is not None and not test(value):
            raise CheckpointError(f"{path}: checkpoint metadata is damaged (training {key} is {str(value)[:40]!r}, "
                                  f"not {kind})")
    seq_len = training.get("train_config", {}).get("seq_len", 0) if training.get("train_config") else 0
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or not 0 <= seq_len <= 10**9:
        raise CheckpointError(f"{path}: checkpoint metadata is damaged (train_config seq_len is {seq_len!r})")
