"""Corpus preparation and truncated-BPTT batches.

Token ids live in a compact ``.npy`` (uint8/uint16/int32 as the vocabulary
allows) written next to the run and memory-mapped, so a corpus of hundreds of
MB trains without ever becoming Python objects.
"""

from __future__ import annotations

import hashlib
import math
import mmap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from chargen.codecs.base import Codec
from chargen.codecs.registry import CODECS, codec_class, codec_for_suffix
from chargen.errors import ChargenError, CorpusError, CorruptFileError
from chargen.files.atomic import atomic_write, sha256_files
from chargen.files.user_paths import require_file_or_folder

Warn = Callable[[str], None]

#: A vocabulary past this many symbols gets a warning: every step and checkpoint grows with it.
VOCAB_WARNING = 4096
#: ... and past this many, a refusal unless ``--max-vocab`` allows more (each symbol is a row of the
#: embedding and of the output layer: 200k distinct characters make a tiny model a GB-sized one).
DEFAULT_MAX_VOCAB = 32768


def check_vocab_size(vocab_size: int, max_vocab: int = DEFAULT_MAX_VOCAB, warn: Warn | None = None) -> None:
    """Refuse a vocabulary larger than ``max_vocab``; warn about one larger than :data:`VOCAB_WARNING`."""
    if vocab_size > max_vocab:
        raise CorpusError(f"the corpus has {vocab_size:,} distinct symbols, more than --max-vocab {max_vocab:,}: "
                          "is it really text in one encoding? Raise --max-vocab to train on it anyway")
    if vocab_size > VOCAB_WARNING and warn is not None:
        warn(f"warning: the corpus has {vocab_size:,} distinct symbols: the model's embedding and output layer "
             "grow with each one, so steps are slow and checkpoints large")


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
    """Resolve files and folders to (codec name, sorted file list).

    A folder contributes the files whose suffix belongs to a codec (every
    codec's under ``auto``, else the chosen one's). Under ``auto`` all files,
    named one by one or found in folders, must belong to one codec.
    """
    if not paths:
        raise CorpusError("no corpus given: name a text file, several files, or a folder")
    suffixes = tuple(s for name, cls in CODECS.items() if codec in ("auto", name) for s in cls.suffixes)
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        try:
            kind = require_file_or_folder(path)
        except ChargenError as exc:
            raise CorpusError(str(exc)) from None
        if kind == "folder":
            found = sorted(p for p in path.rglob("*")
                           if p.suffix.lower() in suffixes and not p.name.startswith(".") and p.is_file())
            if not found:
                raise CorpusError(f"{path}: folder holds no {'/'.join(suffixes)} files")
            files.extend(found)
        else:
            files.append(path)
    if codec == "auto":
        # A named file of no known suffix is read as text (corpus.dat, README).
        found_codecs = {codec_for_suffix(p) or "text" for p in files}
        if len(found_codecs) > 1:
            raise CorpusError(f"corpus mixes {' and '.join(sorted(found_codecs))} files; choose one with codec")
        codec = found_codecs.pop()
    return codec, files


def build_corpus(
    paths: Sequence[str | Path],
    cache_path: Path,
    codec_name: str = "auto",
    encoding: str = "utf-8",
    warn: Warn | None = None,
    codec: Codec | None = None,
    max_vocab: int = DEFAULT_MAX_VOCAB,
) -> tuple[Codec, CorpusInfo]:
    """Encode the corpus into ``cache_path`` (.npy) and return its codec and facts.

    A given ``codec`` is reused (resume, fine-tuning); otherwise the codec is
    fitted to the corpus (a text vocabulary; MIDI's is fixed) and its size checked
    against ``max_vocab`` before anything is encoded. Files the codec finds corrupt
    (CorruptFileError) are skipped with a warning.
    """
    warn = warn or (lambda message: None)
    codec_name, files = find_corpus_files(paths, codec_name if codec is None else codec.name)
    fitted = codec
    if fitted is None:
        fitted = codec_class(codec_name).fit(files, encoding)
        check_vocab_size(fitted.vocab_size, max_vocab, warn)
    dtype = token_dtype(fitted.vocab_size)
    used: list[Path] = []
    skipped: list[str] = []
    total = 0

    def write(tmp: Path) -> None:
        # Pieces stream straight into the .npy (never the whole corpus in memory);
        # its length goes into the header at the end.
        nonlocal total
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (0,)}
        with open(tmp, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            data_start = handle.tell()
            for path in files:
                file_start = handle.tell()
                try:
                    for piece in fitted.encode_pieces(path):
                        handle.write(np.ascontiguousarray(piece, dtype=dtype).data)
                except CorruptFileError as exc:
                    handle.seek(file_start)
                    handle.truncate()
                    skipped.append(str(exc))
                    warn(f"skipping {exc}")
                    continue
                used.append(path)
            total = (handle.tell() - data_start) // dtype.itemsize
            if total == 0:
                if skipped:
                    raise CorpusError(f"no usable tokens in the corpus ({len(skipped)} of {len(files)} files skipped)")
                raise CorpusError("the corpus is empty: no characters to learn")
            # numpy pads the header so that the length of axis 0 can be rewritten in place.
            handle.seek(0)
            np.lib.format.write_array_header_1_0(handle, dict(header, shape=(total,)))
            if handle.tell() != data_start:  # pragma: no cover - a numpy without that padding
                raise RuntimeError("numpy's .npy header grew; cannot finish the token cache in place")

    atomic_write(cache_path, write)
    if skipped:
        warn(f"skipped {len(skipped)} of {len(files)} files; {len(used)} usable")
    info = CorpusInfo(paths=[str(p) for p in paths], files=len(used), tokens=total, sha256=sha256_files(used),
                      skipped=skipped)
    return fitted, info


def label_folders(folder: str | Path, warn: Warn | None = None) -> list[tuple[str, Path]]:
    """``--labels-from folders``: each immediate subfolder of ``folder`` is a label, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise CorpusError(f"{root}: labels_from='folders' needs a folder whose subfolders are the labels")
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise CorpusError(f"{root}: no subfolders; labels_from='folders' takes each subfolder as a label")
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
    max_vocab: int = DEFAULT_MAX_VOCAB,
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
    codec = codec_class(codec_name).fit(files, encoding)  # one vocabulary across every label
    check_vocab_size(codec.vocab_size, max_vocab, warn)
    parts: list[tuple[np.ndarray, np.ndarray]] = []  # per label: (train, val) token ids
    hashes, skipped, used_files = hashlib.sha256(), [], 0  # noqa: S324 - a fingerprint, not security
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
                              f"{val_fraction:.0%} validation part; add files or raise val_fraction")
        parts.append((ids[: len(ids) - n_val], ids[len(ids) - n_val :]))
        hashes.update(info.sha256.encode())
        skipped.extend(info.skipped)
        used_files += info.files
    ordered = [train for train, _ in parts] + [val for _, val in parts]
    label_of = list(range(len(parts))) * 2
    total = sum(len(p) for p in ordered)
    tokens = np.concatenate(ordered).astype(token_dtype(codec.vocab_size), copy=False)
    label_ids = np.repeat(np.array(label_of, dtype=token_dtype(len(names) + 1)), [len(p) for p in ordered])
    for array, path in ((tokens, cache_path), (label_ids, labels_path)):
        atomic_write(path, lambda tmp, array=array: _save_npy(tmp, array))
    return codec, CorpusInfo(paths=[str(p) for p in all_paths], files=used_files, tokens=total,
                             sha256=hashes.hexdigest(), skipped=skipped, labels=list(names),
                             train_tokens=sum(len(train) for train, _ in parts))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array)


def load_tokens(cache_path: Path) -> np.ndarray:
    return np.load(cache_path, mmap_mode="r")


def release_pages(array: np.ndarray) -> None:
    """Drop from this process the pages of the file ``array`` maps (``load_tokens``, or a view of it).

    They stay in the page cache and a later read maps them again; without this, every page a
    long run has read counts in its resident memory, which then grows with the corpus. A no-op
    for an array in memory, or where ``madvise`` is missing.
    """
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        try:
            base.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # closed, or refused: the pages simply stay
            pass


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
            f"corpus too small: {len(ids)} tokens, but batch_size {batch_size} and seq_len {seq_len} "
            f"with {val_fraction:.0%} validation needs at least {need}; "
            "add text or lower batch_size or seq_len"
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


def validation_layout(length: int, seq_len: int, streams: int, max_tokens: int | None = None) -> tuple[int, int, int]:
    """(streams, stream_len, read): ``validation_batches``' parallel streams of a split of ``length`` tokens,
    and how many tokens of each it scores: all ``stream_len``, or with ``max_tokens`` the first
    ``max_tokens // streams`` of each (a sample spread evenly over the split, the same every time)."""
    streams = max(1, min(streams, (length - 1) // seq_len))
    stream_len = (length - 1) // streams
    read = stream_len if max_tokens is None else max(1, min(stream_len, max_tokens // streams))
    return streams, stream_len, read


def _validation_windows(length: int, seq_len: int, streams: int, max_tokens: int | None = None):
    """Index arrays [streams, width + 1] of the windows ``validation_batches`` reads."""
    streams, stream_len, read = validation_layout(length, seq_len, streams, max_tokens)
    starts = np.arange(streams, dtype=np.int64)[:, None] * stream_len
    for pos in range(0, read, seq_len):
        width = min(seq_len, read - pos)
        yield starts + pos + np.arange(width + 1)[None, :]


def validation_batches(ids: np.ndarray, seq_len: int, streams: int = 16, max_tokens: int | None = None):
    """Yield (x, y) covering the validation split in ``streams`` parallel streams (``max_tokens``: the
    first part of each stream, ``validation_layout``)."""
    for index in _validation_windows(len(ids), seq_len, streams, max_tokens):
        tokens = torch.from_numpy(ids[index].astype(np.int64))
        yield tokens[:, :-1], tokens[:, 1:]


def validation_label_batches(labels: np.ndarray, seq_len: int, streams: int = 16, max_tokens: int | None = None):
    """The labels [streams, width] of each ``validation_batches(ids, ...)`` input (``labels`` beside ``ids``)."""
    for index in _validation_windows(len(labels), seq_len, streams, max_tokens):
        yield torch.from_numpy(labels[index[:, :-1]].astype(np.int64))
