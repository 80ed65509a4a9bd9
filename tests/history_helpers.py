"""Shared helpers for the history tests (plain module: subprocess workers import it too)."""

from __future__ import annotations

import sys
from typing import Any

from chargen.history import History, SampleRecord

SHA_A = "a" * 64
SHA_B = "b" * 64


def record(history: History, **overrides: Any) -> str:
    """Record a small, fully specified text generation; keyword arguments override fields."""
    fields: dict[str, Any] = {
        "checkpoint_path": "/ckpt/fables/best.safetensors",
        "checkpoint_sha256": SHA_A,
        "model_config": {"cell": "lstm", "layers": 2, "hidden": 64, "vocab_size": 40},
        "codec": {"name": "text", "alphabet": "\n abcdefghij", "encoding": "utf-8"},
        "decoder": "sample",
        "params": {"temperature": 0.8, "top_k": None, "top_p": None, "length": 20, "num_samples": 1},
        "seed": 42,
        "prime": "The ",
        "outputs": [SampleRecord("fox ran\naway", -12.5)],
        "duration_s": 0.25,
    }
    fields.update(overrides)
    return history.record_generation(**fields)


def concurrent_worker() -> None:
    """Subprocess body: say ready, wait for 'go' on stdin, then open and write at once."""
    url, label = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    sys.stdin.readline()
    with History(url) as history:
        record(history, prime=f"worker {label}", params={"temperature": 1.0, "worker": label})
    print("done", flush=True)
