"""Corpus preparation and truncated-BPTT batches.

Token ids live in a compact ``.npy`` (uint8/uint16/int32 as the vocabulary
allows) written next to the run and memory-mapped, so a corpus of hundreds of
MB trains without ever becoming Python objects.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from chargen.codec import Codec, codec_class
from chargen.errors import CorpusError, CorruptFileError
from chargen.text_codec import TextCodec, code_points, iter_text_chunks

Warn = Callable[[str], None]


@dataclass
class CorpusInfo:
    paths: list[str]
    files: int
    tokens: int
    sha256: str
    skipped: list[str] = field(default_factory=list)  # "path: reason"
    # A labelled corpus: label names (ids in this order), and where training ends in tokens.npy. Each label's
    # last val_fraction is validation; tokens.npy holds every label's training part, then every validation part.
    labels: list[str] = field(default_factory=list)
    train_tokens: int | None = None


def token_dtype(vocab_size: int) -> np.dtype:
    if vocab_size <= 256:
        return np.dtype(np.uint8)
    if vocab_size <= 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def find_corpus_files(paths: Sequence[str | Path], codec: str = "auto") -> tuple[str, list[Path]]:
    """Resolve files and folders to (codec name, sorted file list)."""
    if not paths:
        raise CorpusError("no corpus given: name a text file, several files, or a folder")
    midi_suffixes = (".mid", ".midi")
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            midi = [p for p in found if p.suffix.lower() in midi_suffixes]
            text = [p for p in found if p.suffix.lower() == ".txt"]
            chosen = midi if (codec == "midi" or (codec == "auto" and midi and not text)) else text
            if codec == "auto" and midi and text:
                chosen = midi if len(midi) >= len(text) else text
            if not chosen:
                raise CorpusError(f"{path}: folder holds no .txt or .mid/.midi files")
            files.extend(chosen)
        elif path.is_file():
            files.append(path)
        else:
            raise CorpusError(f"{path}: no such file or folder")
    if codec == "auto":
        is_midi = [p.suffix.lower() in midi_suffixes for p in files]
        if any(is_midi) and not all(is_midi):
            raise CorpusError("corpus mixes MIDI and text files; pass --codec to choose one")
        codec = "midi" if all(is_midi) else "text"
    return codec, files


def _hash_files(files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def build_corpus(
    paths: Sequence[str | Path],
    cache_path: Path,
    codec_name: str = "auto",
    encoding: str = "utf-8",
    warn: Warn | None = None,
    codec: Codec | None = None,
) -> tuple[Codec, CorpusInfo]:
    """Encode the corpus into ``cache_path`` (.npy) and return its codec and facts.

    A given ``codec`` is reused (resume, fine-tuning); otherwise a text
    vocabulary is fitted to the corpus, or the fixed MIDI vocabulary is used.
    """
    warn = warn or (lambda message: None)
    codec_name, files = find_corpus_files(paths, codec_name if codec is None else codec.name)
    skipped: list[str] = []
    if codec_name == "text":
        if codec is None:
            codec = TextCodec.fit(files, encoding)
        assert isinstance(codec, TextCodec)
        total = sum(len(code_points(c)) for p in files for c in iter_text_chunks(p, codec.encoding))
        if total == 0:
            raise CorpusError("the corpus is empty: no characters to learn")
        out = _open_cache(cache_path, total, codec.vocab_size)
        pos = 0
        for path in files:
            for chunk in iter_text_chunks(path, codec.encoding):
                ids = codec.encode_chunk(chunk)
                out[pos : pos + len(ids)] = ids
                pos += len(ids)
        used = files
    else:
        codec = codec or codec_class(codec_name)()
        pieces: list[np.ndarray] = []
        used = []
        for path in files:
            try:
                pieces.append(codec.encode_file(path))
                used.append(path)
            except CorruptFileError as exc:
                skipped.append(str(exc))
                warn(f"skipping {exc}")
        if skipped:
            warn(f"skipped {len(skipped)} of {len(files)} files; {len(used)} usable")
        total = sum(len(p) for p in pieces)
        if total == 0:
            raise CorpusError(f"no usable tokens in the corpus ({len(skipped)} of {len(files)} files skipped)")
        out = _open_cache(cache_path, total, codec.vocab_size)
        out[:] = np.concatenate(pieces)
        pos = total
    out.flush()
    del out
    tmp = cache_path.with_name(cache_path.name + ".tmp")
    os.replace(tmp, cache_path)
    info = CorpusInfo(
        paths=[str(p) for p in paths],
        files=len(used),
        tokens=pos,
        sha256=_hash_files(used),
        skipped=skipped,
    )
    return codec, info


def _open_cache(cache_path: Path, length: int, vocab_size: int) -> np.memmap:
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_name(cache_path.name + ".tmp")
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=token_dtype(vocab_size), shape=(length,))


def label_folders(folder: str | Path, warn: Warn | None = None) -> list[tuple[str, Path]]:
    """``--labels-from folders``: each immediate subfolder of ``folder`` is a label, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise CorpusError(f"{root}: --labels-from folders needs a folder whose subfolders are the labels")
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise CorpusError(f"{root}: no subfolders; --labels-from folders takes each subfolder as a label")
    loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in (".txt", ".mid", ".midi")]
    if loose and warn is not None:
        warn(f"{root}: {len(loose)} file(s) outside the label subfolders are not used ({', '.join(sorted(loose)[:3])}"
             + (", ..." if len(loose) > 3 else "") + ")")
    return [(p.name, p) for p in subfolders]


def build_labelled_corpus(
    groups: Sequence[tuple[str, Sequence[str | Path]]],
    cache_path: Path,
    labels_path: Path,
    val_fraction: float,
    codec_name: str = "auto",
    encoding: str = "utf-8",
    warn: Warn | None = None,
) -> tuple[Codec, CorpusInfo]:
    """Encode each label's files, and write ``cache_path`` (tokens) and ``labels_path`` (each token's label id).

    Each label is split on its own (its last ``val_fraction`` is validation), so every
    label has validation data; tokens.npy then holds all training parts, then all
    validation parts, and ``CorpusInfo.train_tokens`` says where the second begins.
    """
    warn = warn or (lambda message: None)
    names = [name for name, _ in groups]
    all_paths = [p for _, paths in groups for p in paths]
    codec_name, files = find_corpus_files(all_paths, codec_name)
    codec: Codec = TextCodec.fit(files, encoding) if codec_name == "text" else codec_class(codec_name)()
    parts: list[tuple[np.ndarray, np.ndarray]] = []  # per label: (train, val) token ids
    hashes, skipped, used_files = hashlib.sha256(), [], 0
    for label, (name, paths) in enumerate(groups):
        part_path = cache_path.with_name(f".{cache_path.name}.label{label}.npy")
        try:
            _, info = build_corpus(paths, part_path, codec_name, encoding, warn, codec=codec)
            ids = np.load(part_path)
        finally:
            part_path.unlink(missing_ok=True)
        n_val = int(len(ids) * val_fraction)
        if n_val < 2 or len(ids) - n_val < 2:
            raise CorpusError(f"label {name!r} has {len(ids)} tokens: too few for a training and a "
                              f"{val_fraction:.0%} validation part; add files or raise --val-fraction")
        parts.append((ids[: len(ids) - n_val], ids[len(ids) - n_val :]))
        hashes.update(info.sha256.encode())
        skipped.extend(info.skipped)
        used_files += info.files
    ordered = [train for train, _ in parts] + [val for _, val in parts]
    label_of = list(range(len(parts))) * 2
    total = sum(len(p) for p in ordered)
    out = _open_cache(cache_path, total, codec.vocab_size)
    lab = _open_cache(labels_path, total, len(names) + 1)
    pos = 0
    for piece, label in zip(ordered, label_of):
        out[pos : pos + len(piece)] = piece
        lab[pos : pos + len(piece)] = label
        pos += len(piece)
    for array, path in ((out, cache_path), (lab, labels_path)):
        array.flush()
        os.replace(path.with_name(path.name + ".tmp"), path)
    del out, lab
    return codec, CorpusInfo(paths=[str(p) for p in all_paths], files=used_files, tokens=total,
                             sha256=hashes.hexdigest(), skipped=skipped, labels=list(names),
                             train_tokens=sum(len(train) for train, _ in parts))


def load_tokens(cache_path: Path) -> np.ndarray:
    return np.load(cache_path, mmap_mode="r")


@dataclass
class Split:
    train: np.ndarray
    val: np.ndarray
    train_labels: np.ndarray | None = None  # a labelled corpus: each token's label id
    val_labels: np.ndarray | None = None


def split_tokens(ids: np.ndarray, val_fraction: float, batch_size: int, seq_len: int,
                 train_tokens: int | None = None, labels: np.ndarray | None = None) -> Split:
    """First (1 - val_fraction) for training, the rest for validation (nanoGPT's split).

    A labelled corpus (``build_labelled_corpus``) says where its training part ends
    (``train_tokens``) and brings each token's label (``labels``), split the same way.
    """
    n_val = int(len(ids) * val_fraction) if train_tokens is None else len(ids) - train_tokens
    n_train = len(ids) - n_val
    need_train = batch_size * seq_len + 1
    need_val = seq_len + 1
    if n_train < need_train or n_val < need_val:
        need = max(math.ceil(need_train / (1 - val_fraction)), math.ceil(need_val / max(val_fraction, 1e-9)))
        raise CorpusError(
            f"corpus too small: {len(ids)} tokens, but --batch-size {batch_size} --seq-len {seq_len} "
            f"with {val_fraction:.0%} validation needs at least {need}; "
            "add text or lower --batch-size/--seq-len"
        )
    if labels is None:
        return Split(train=ids[:n_train], val=ids[n_train:])
    if len(labels) != len(ids):
        raise CorpusError(f"the label file holds {len(labels)} labels for {len(ids)} tokens")
    return Split(train=ids[:n_train], val=ids[n_train:], train_labels=labels[:n_train], val_labels=labels[n_train:])


class StreamBatcher:
    """``batch_size`` contiguous streams read ``seq_len`` tokens at a time.

    The data position is a pure function of the step number, so a resumed run
    reads exactly the batches it would have read; the hidden state is carried
    across batches within an epoch (char-rnn style) and reset at its start.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int,
                 augment: Callable[[np.ndarray, int], np.ndarray] | None = None, labels: np.ndarray | None = None):
        self.ids = ids
        self.labels = labels  # each token's label id (a labelled corpus), read in the same windows
        self.augment = augment  # (window [B, T+1], step) -> window; deterministic in step
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.stream_len = (len(ids) - 1) // batch_size
        self.steps_per_epoch = self.stream_len // seq_len
        self._starts = np.arange(batch_size, dtype=np.int64)[:, None] * self.stream_len
        self._offsets = np.arange(seq_len + 1, dtype=np.int64)[None, :]

    def starts_epoch(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos = (step % self.steps_per_epoch) * self.seq_len
        window = self.ids[self._starts + pos + self._offsets].astype(np.int64)  # [B, T+1]
        if self.augment is not None:
            window = self.augment(window, step)
        tokens = torch.from_numpy(window)
        return tokens[:, :-1], tokens[:, 1:]  # inputs, targets: [B, T] each

    def batch_labels(self, step: int) -> torch.Tensor | None:
        """The labels of ``batch(step)``'s inputs [B, T] (each input token's own), None when unlabelled."""
        if self.labels is None:
            return None
        pos = (step % self.steps_per_epoch) * self.seq_len
        return torch.from_numpy(self.labels[self._starts + pos + self._offsets[:, :-1]].astype(np.int64))


def _validation_windows(length: int, seq_len: int, streams: int):
    """Index arrays [streams, width + 1] of the windows ``validation_batches`` reads."""
    streams = max(1, min(streams, (length - 1) // seq_len))
    stream_len = (length - 1) // streams
    starts = np.arange(streams, dtype=np.int64)[:, None] * stream_len
    for pos in range(0, stream_len, seq_len):
        width = min(seq_len, stream_len - pos)
        yield starts + pos + np.arange(width + 1)[None, :]


def validation_batches(ids: np.ndarray, seq_len: int, streams: int = 16):
    """Yield (x, y) covering the validation split in ``streams`` parallel streams."""
    for index in _validation_windows(len(ids), seq_len, streams):
        tokens = torch.from_numpy(ids[index].astype(np.int64))
        yield tokens[:, :-1], tokens[:, 1:]


def validation_label_batches(labels: np.ndarray, seq_len: int, streams: int = 16):
    """The labels [streams, width] of each ``validation_batches(ids, ...)`` input (``labels`` beside ``ids``)."""
    for index in _validation_windows(len(labels), seq_len, streams):
        yield torch.from_numpy(labels[index[:, :-1]].astype(np.int64))
