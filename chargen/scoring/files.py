"""``chargen score``: how well a model predicts given files (nats, bits, perplexity).

A file's score is the validation-loss computation of training
(:func:`chargen.scoring.evaluate.token_losses`), so scoring a run's own validation
split reproduces the loss the run recorded. Text files are read as text;
characters the model has never seen are removed from the stream and
reported, never guessed at. ``.mid`` files go through the model's codec.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chargen.codecs.base import Codec
from chargen.codecs.text import code_points, iter_text_chunks
from chargen.errors import ChargenError
from chargen.files.atomic import sha256_file
from chargen.files.user_paths import require_file
from chargen.runs.checkpoint import Checkpoint
from chargen.scoring.evaluate import token_losses

MIDI_SUFFIXES = (".mid", ".midi")
NEWLINE = ord("\n")
#: Past this loss per token the perplexity (e to the loss) is no longer a finite float.
MAX_NATS = 700.0


@dataclass
class LineScore:
    line: int  # 1-based line number in the file
    text: str
    nats_per_char: float
    chars: int  # characters of the line whose prediction was scored (its newline included)


@dataclass
class FileScore:
    path: str
    unit: str  # "char" for text, "token" for MIDI events
    tokens: int  # tokens read, after removing unknown characters
    scored: int  # tokens whose prediction was scored (all but the first and a short tail)
    nats_per_token: float
    unknown: dict[str, int] = field(default_factory=dict)  # removed character -> occurrences
    worst_lines: list[LineScore] = field(default_factory=list)
    sha256: str = ""  # of the file as read
    duration_s: float = 0.0  # reading and scoring it

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)

    @property
    def unknown_count(self) -> int:
        return sum(self.unknown.values())

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), bits_per_token=self.bits_per_token, perplexity=self.perplexity,
                    unknown_count=self.unknown_count)


@dataclass
class TokenizedText:
    ids: np.ndarray  # token ids of the known characters, in file order
    positions: np.ndarray  # index in ``text`` of each id
    text: str
    unknown: dict[str, int]


def tokenize_text(text: str, codec: Codec) -> TokenizedText:
    """Ids of the characters ``codec`` knows; the others are dropped and counted."""
    symbols = code_points(codec.symbols)
    order = np.argsort(symbols, kind="stable")
    known_points = symbols[order]
    points = code_points(text)
    slot = np.minimum(np.searchsorted(known_points, points), len(known_points) - 1)
    known = known_points[slot] == points
    missing, counts = np.unique(points[~known], return_counts=True)
    unknown = {chr(int(p)): int(n) for p, n in zip(missing, counts)}
    return TokenizedText(ids=order[slot[known]].astype(np.int64), positions=np.flatnonzero(known),
                         text=text, unknown=unknown)


def read_text(path: Path, codec: Codec) -> str:
    encoding = getattr(codec, "encoding", "utf-8")
    # score has no --encoding: the model reads the encoding it was trained on
    advice = f"the model reads text as {encoding}: convert the file to {encoding} to score it"
    return "".join(iter_text_chunks(path, encoding, advice))


def worst_lines(tokenized: TokenizedText, losses: np.ndarray, count: int) -> list[LineScore]:
    """The ``count`` lines with the highest mean loss per scored character."""
    points = code_points(tokenized.text)
    line_of_char = np.concatenate([[0], np.cumsum(points[:-1] == NEWLINE)])  # a newline ends its own line
    lines = line_of_char[tokenized.positions[1 : 1 + len(losses)]]  # losses[i] predicts ids[i + 1]
    totals = np.bincount(lines, weights=losses.astype(np.float64))
    chars = np.bincount(lines)
    texts = tokenized.text.split("\n")
    candidates = [i for i in np.flatnonzero(chars) if texts[i].strip()]
    candidates.sort(key=lambda i: totals[i] / chars[i], reverse=True)
    return [LineScore(line=int(i) + 1, text=texts[i], nats_per_char=float(totals[i] / chars[i]),
                      chars=int(chars[i])) for i in candidates[:count]]


def score_file(checkpoint: Checkpoint, path: Path, per_line: int = 0,
               device: torch.device | str = "cpu") -> FileScore:
    began = time.monotonic()
    codec = checkpoint.codec
    require_file(path, "file to score")  # a FIFO would block, /dev/zero never end
    file_sha256 = sha256_file(path)
    if path.suffix.lower() in MIDI_SUFFIXES:
        if path.suffix.lower() not in codec.suffixes:
            raise ChargenError(f"{path}: a MIDI file, but the model uses the {codec.name} codec")
        return _score(checkpoint, str(path), codec.encode_file(path), None, per_line, device, file_sha256, began)
    tokenized = tokenize_text(read_text(path, codec), codec)
    return _score(checkpoint, str(path), tokenized.ids, tokenized, per_line, device, file_sha256, began)


def score_text(checkpoint: Checkpoint, text: str, per_line: int = 0, device: torch.device | str = "cpu") -> FileScore:
    """A text's score (its ``path`` is ``<text>``); characters the model does not know are removed, as from files."""
    began = time.monotonic()
    tokenized = tokenize_text(text, checkpoint.codec)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return _score(checkpoint, "<text>", tokenized.ids, tokenized, per_line, device, digest, began)


def _score(checkpoint: Checkpoint, name: str, ids: np.ndarray, tokenized: TokenizedText | None, per_line: int,
           device: torch.device | str, sha256: str, began: float) -> FileScore:
    seq_len = int(checkpoint.training.get("train_config", {}).get("seq_len", 0))
    losses = token_losses(checkpoint.model, ids, seq_len, device)
    if losses.size == 0:
        raise ChargenError(f"{name}: too short to score: it needs at least 2 tokens the model knows")
    nats = float(losses.sum(dtype=np.float64) / losses.size)
    if not (math.isfinite(nats) and nats <= MAX_NATS):  # an error, never NaN or an infinite perplexity
        raise ChargenError(f"{name}: the model's loss is not a usable number ({nats:g} nats/token): its weights "
                           "overflow or are damaged; use another checkpoint")
    return FileScore(
        path=name, unit="token" if checkpoint.codec.music else "char", tokens=len(ids),
        scored=int(losses.size), nats_per_token=nats,
        unknown=tokenized.unknown if tokenized else {},
        worst_lines=worst_lines(tokenized, losses, per_line) if tokenized and per_line else [],
        sha256=sha256, duration_s=time.monotonic() - began,
    )


def score_files(checkpoint: Checkpoint, paths: Sequence[Path], per_line: int = 0,
                device: torch.device | str = "cpu") -> list[FileScore]:
    """Each file scored on its own, from a fresh hidden state."""
    checkpoint.model.to(device)
    return [score_file(checkpoint, Path(path), per_line, device) for path in paths]


def describe_unknown(score: FileScore, limit: int = 10) -> str:
    """One line naming the removed characters, most frequent first."""
    common = sorted(score.unknown.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{ch!r} x{n}" for ch, n in common[:limit])
    more = f" and {len(common) - limit} more" if len(common) > limit else ""
    return (f"{score.path}: removed {score.unknown_count} character(s) outside the model's vocabulary "
            f"({len(common)} distinct: {shown}{more})")
