"""Training with several processes: ``torchrun ... -m chargen train`` (torch.distributed, DDP).

torchrun starts one process per rank and sets WORLD_SIZE/RANK/LOCAL_RANK; without
them chargen trains in one process and everything here is a no-op (``SINGLE``),
so a single-process run is exactly what it was before.

How the ranks share one run:

- The configuration's ``batch_size`` is the *global* batch (``--batch-size`` x world size).
  Rank r reads streams r*B .. r*B+B-1 of the global stream layout (B the per-rank batch),
  so N ranks read exactly the batches one process reads with batch N*B, and the
  DistributedDataParallel-averaged gradient is that process's gradient.
- Rank 0 builds the corpus cache; the others wait, then memory-map the same file
  (the run folder must be on a filesystem every node sees).
- Every rank runs every evaluation (same weights, same tokens: the same loss, and no
  rank idles at a collective meanwhile); rank 0 alone writes.
- Decisions that depend on a clock or a signal (the --minutes deadline, the fitted
  schedule, Ctrl-C) are rank 0's or any rank's, agreed by a collective every step.
- Collectives time out (``CHARGEN_DIST_TIMEOUT``, default 30 s), and a dead peer
  becomes a one-line error, so a lost rank ends the job instead of hanging it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from chargen.codecs.base import Codec
from chargen.codecs.registry import codec_from_metadata
from chargen.errors import ChargenError
from chargen.model import State
from chargen.training.budget import StepBudget
from chargen.training.data import CorpusInfo, StreamBatcher

TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
#: How long a collective may wait for a peer: long enough for rank 0 to write a checkpoint
#: while the others wait at the next step, short enough that a stuck peer ends the job.
DEFAULT_TIMEOUT_S = 30.0
#: Rank 0 encodes the corpus while the others wait: that may take long on a large corpus.
CORPUS_TIMEOUT = timedelta(hours=6)
#: torchrun forwards a Ctrl-C to its workers, which the terminal already signalled: a repeat
#: this soon is the same Ctrl-C, not a second one asking to stop without saving.
SAME_SIGNAL_S = 3.0


class Distributed:
    """This process's place in the job; every collective the training needs is a method."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, enabled: bool = False):
        self.rank, self.world_size, self.local_rank, self.enabled = rank, world_size, local_rank, enabled
        self._control: Any = None  # gloo group for small CPU-side agreements (also under NCCL)
        self._waiting: Any = None  # gloo group with a long timeout: waiting for rank 0's corpus

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ life cycle

    def start(self, device: torch.device) -> None:
        """Join the job's process group: NCCL on CUDA devices, gloo on the CPU."""
        timeout = timedelta(seconds=float(os.environ.get("CHARGEN_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, timeout=timeout)
            self._control = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
            self._waiting = dist.new_group(backend="gloo", timeout=CORPUS_TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            raise ChargenError(f"cannot join the torchrun job as rank {self.rank}: {_first_line(exc)}") from None

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    # ------------------------------------------------------------------ agreements (CPU tensors, gloo)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank (a Ctrl-C that reached one process stops all)."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self._control)
        return bool(value.item())

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (the training loss of the global batch)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor, group=self._control)
        return float(tensor.item()) / self.world_size

    def from_main(self, value: int) -> int:
        """Rank 0's ``value``, on every rank."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.int64)
        dist.broadcast(tensor, src=0, group=self._control)
        return int(tensor.item())

    def json_from_main(self, make: Callable[[], Any]) -> Any:
        """Rank 0 runs ``make`` (while the others wait) and every rank gets its JSON-able result.

        If it fails on rank 0, the others exit quietly with status 1: rank 0 says why.
        """
        if not self.enabled:
            return make()
        payload, failure = None, None
        if self.is_main:
            try:
                payload = make()
            except BaseException as exc:  # noqa: BLE001 - told to the others, then raised here
                failure = exc
        data = json.dumps({"ok": payload} if failure is None else {"failed": True}).encode("utf-8")
        size = torch.tensor([len(data)], dtype=torch.int64)
        dist.broadcast(size, src=0, group=self._waiting)
        buffer = torch.zeros(int(size.item()), dtype=torch.uint8)
        if self.is_main:
            buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        dist.broadcast(buffer, src=0, group=self._waiting)
        if failure is not None:
            raise failure
        message = json.loads(bytes(buffer.tolist()).decode("utf-8"))
        if "failed" in message:
            raise SystemExit(1)
        return message["ok"]

    def build_corpus_once(self, build: Callable[[], tuple[Codec, CorpusInfo]]) -> tuple[Codec, CorpusInfo]:
        """Rank 0 encodes the corpus (``build``); the others take its codec and facts, not the text."""
        if not self.enabled:
            return build()

        def built() -> dict[str, Any]:
            codec, corpus = build()
            return {"codec": codec.to_metadata(), "corpus": asdict(corpus)}

        shared = self.json_from_main(built)
        return codec_from_metadata(shared["codec"]), CorpusInfo(**shared["corpus"])

    # ------------------------------------------------------------------ the model and its data

    def global_batch(self, batch_size: int) -> int:
        """``--batch-size`` is per process; the run trains (and records) the global batch."""
        return batch_size * self.world_size

    def batcher(self, ids: np.ndarray, batch_size: int, seq_len: int,
                augment: Callable[[np.ndarray, int], np.ndarray] | None,
                labels: np.ndarray | None = None) -> StreamBatcher:
        """This rank's share of the global batch ``batch_size``."""
        if not self.enabled:
            return StreamBatcher(ids, batch_size, seq_len, augment, labels)
        if batch_size % self.world_size:
            raise ChargenError(f"the run's global batch of {batch_size} streams does not split evenly over "
                               f"{self.world_size} processes; use a number of processes that divides it")
        return ShardedStreamBatcher(ids, batch_size, seq_len, augment, self.rank, self.world_size, labels)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """What forward/backward goes through: DDP averages the gradients across ranks."""
        if not self.enabled:
            return model
        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)  # CharRNN has no buffers

    def seed_dropout(self, seed: int, step: int) -> None:
        """Ranks other than 0 draw their own dropout masks, seeded by the step so a resumed run draws
        them again; rank 0 keeps the single-process stream (saved and restored with the run)."""
        if self.enabled and self.rank:
            torch.manual_seed(hash((seed, step, self.rank)) & 0x7FFF_FFFF_FFFF)

    def shard_hidden(self, hidden: State | None) -> State | None:
        """This rank's rows of the global carried hidden state (as saved: [layers, global batch, hidden])."""
        if not self.enabled or hidden is None:
            return hidden
        per_rank = hidden[0].shape[1] // self.world_size
        return tuple(h[:, self.rank * per_rank:(self.rank + 1) * per_rank].contiguous() for h in hidden)

    def gather_hidden(self, hidden: State | None) -> State | None:
        """The global carried hidden state, on every rank (a collective: every rank calls it)."""
        if not self.enabled or hidden is None:
            return hidden
        gathered = []
        for part in hidden:
            parts = [torch.empty_like(part) for _ in range(self.world_size)]
            dist.all_gather(parts, part.contiguous())
            gathered.append(torch.cat(parts, dim=1))
        return tuple(gathered)

    def agree_budget(self, budget: StepBudget | None) -> StepBudget | None:
        if not self.enabled or budget is None:
            return budget
        return AgreedBudget(budget, self)  # type: ignore[return-value]  (same two methods)

    @contextmanager
    def failures(self) -> Iterator[None]:
        """A peer lost mid-collective (killed, out of memory, timed out) becomes a one-line error."""
        if not self.enabled:
            yield
            return
        try:
            yield
        except (RuntimeError, dist.DistError) as exc:
            if not _is_collective_failure(exc):
                raise
            raise ChargenError(f"rank {self.rank}: another training process stopped or stopped answering "
                               f"({_first_line(exc)}); the last checkpoint is kept") from None


class ShardedStreamBatcher(StreamBatcher):
    """Rows ``rank*B .. rank*B+B-1`` of the ``batch_size`` streams a single process would read."""

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int,
                 augment: Callable[[np.ndarray, int], np.ndarray] | None, rank: int, world_size: int,
                 labels: np.ndarray | None = None):
        super().__init__(ids, batch_size, seq_len, augment, labels)
        per_rank = batch_size // world_size
        self.rows = slice(rank * per_rank, (rank + 1) * per_rank)
        if augment is None:
            self._starts = self._starts[self.rows]  # read only this rank's streams

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = super().batch(step)
        if self.augment is None:
            return inputs, targets
        # A transposition draws a shift per row in order: to draw the single-process shifts,
        # the whole window is augmented (MIDI corpora are small), and this rank keeps its rows.
        return inputs[self.rows], targets[self.rows]

    def batch_labels(self, step: int) -> torch.Tensor | None:
        labels = super().batch_labels(step)
        return labels if labels is None or self.augment is None else labels[self.rows]


class AgreedBudget:
    """A ``StepBudget`` whose decisions are rank 0's: one clock, so every rank stops at the same step."""

    def __init__(self, budget: StepBudget, context: Distributed):
        self.budget, self.context = budget, context

    def expired(self) -> bool:
        return bool(self.context.from_main(int(self.budget.expired()) if self.context.is_main else 0))

    def observe(self, step: int, overhead_s: float, evals_done: int) -> int | None:
        fitted = self.budget.observe(step, overhead_s, evals_done) if self.context.is_main else None
        agreed = self.context.from_main(-1 if fitted is None else fitted)
        return None if agreed < 0 else agreed

    def whole_evaluation_fits(self, eval_s: float, evals_done: int) -> bool:
        fits = self.budget.whole_evaluation_fits(eval_s, evals_done) if self.context.is_main else False
        return bool(self.context.from_main(int(fits)))


class GroupStopFlag:
    """Under torchrun a Ctrl-C reaches each worker twice (from the terminal, then forwarded by
    torchrun): repeats within ``SAME_SIGNAL_S`` count once, so the run still saves."""

    def __init__(self, flag: Any):
        self.flag = flag
        self.first_at: float | None = None

    def handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.first_at is not None and now - self.first_at < SAME_SIGNAL_S:
            return
        self.first_at = self.first_at or now
        self.flag._handle(signum, frame)


def _first_line(exc: BaseException) -> str:
    """The gist of a torch.distributed error: without gloo's source position and boilerplate advice."""
    lines = str(exc).strip().splitlines()
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[0]) if lines else type(exc).__name__
    return text.split(". This is typically")[0][:300]


def _is_collective_failure(exc: BaseException) -> bool:
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return any(marker in text for marker in ("Connection closed by peer", "Connection reset", "Timed out",
                                              "timed out", "gloo", "NCCL", "Broken pipe"))


SINGLE = Distributed()
_current = SINGLE


def current() -> Distributed:
    """This process's place in the job (``SINGLE`` outside torchrun)."""
    return _current


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_ENV)


def start(device_name: str) -> Distributed:
    """Join the torchrun job this process belongs to, if any; pin its GPU; mute the non-zero ranks' output."""
    global _current
    if not launched_by_torchrun() or _current.enabled:
        return _current
    try:
        rank, world_size, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise ChargenError("torchrun's RANK/WORLD_SIZE/LOCAL_RANK are not whole numbers") from None
    from chargen.machine.device import resolve_device

    device = resolve_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    context = Distributed(rank, world_size, local_rank, enabled=True)
    context.start(device)
    _current = context
    return context


def stop() -> None:
    """Leave the process group (no-op outside torchrun)."""
    global _current
    _current.close()
    _current = SINGLE


def install_signal_dedup(flag: Any) -> None:
    """Route the flag's SIGINT/SIGTERM through :class:`GroupStopFlag` (under torchrun only)."""
    if not current().enabled:
        return
    group = GroupStopFlag(flag)
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, group.handle)
        except ValueError:
            pass
