"""benchmarks/quality_probe.py: a fixed-step probe is a pure function of its settings (so probes may share a
machine) and records what it measured."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.quality_probe import main
from tests.conftest import FABLES


def test_a_probe_repeats_exactly_and_records_its_best(tmp_path: Path) -> None:
    results = tmp_path / "probes.jsonl"
    args = ["--corpus", str(FABLES), "--size", "tiny", "--steps", "6", "--eval-every", "3", "--results", str(results)]
    main(["one", *args, "--weight-drop", "0.3"])
    main(["two", *args, "--weight-drop", "0.3"])
    main(["three", *args, "--lr", "1e-2"])
    one, two, three = (json.loads(line) for line in results.read_text().splitlines())
    assert [e["step"] for e in one["log"]] == [3, 6]
    assert [e["val_loss"] for e in one["log"]] == [e["val_loss"] for e in two["log"]]  # the same numbers
    assert [e["val_loss"] for e in three["log"]] != [e["val_loss"] for e in one["log"]]  # settings matter
    assert one["best"] == min(e["val_loss"] for e in one["log"]) and one["model"]["weight_drop"] == 0.3
    assert (one["corpus"], one["steps"], three["lr"]) == ("fables.txt", 6, 1e-2)
