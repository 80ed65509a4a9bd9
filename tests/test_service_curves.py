"""What the page's panels read over real HTTP: a model's training curve, a music record's notes."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import httpx
from service_support import make_checkpoint, thread_server

from chargen.codecs.midi import MidiCodec
from chargen.runs.checkpoint import load_checkpoint
from chargen.runs.curve import read_curve, trend
from chargen.runs.layout import BEST
from chargen.runs.metrics import MetricsLog
from chargen.serve import Limits, create_app


def write_curve(run_dir: Path, val_losses: list[float]) -> None:
    """A run's metrics.jsonl as training writes it: train loss every 10 steps, validation every 20."""
    log = MetricsLog(run_dir)
    for i, val in enumerate(val_losses):
        log.append(step=20 * i + 10, elapsed_s=2.0 * i + 1, train_loss=3.0 - 0.1 * i, val_loss=None, lr=1e-3)
        log.append(step=20 * i + 20, elapsed_s=2.0 * i + 2, train_loss=2.95 - 0.1 * i, val_loss=val, lr=1e-3)
    log.close()


def test_curve_of_a_served_run_and_of_a_loose_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "fables"
    run.mkdir(parents=True)
    write_curve(run, [2.9, 2.6, 2.5, 2.7, 2.8])  # best at step 60, then rising while train loss falls
    models = {"fables": load_checkpoint(make_checkpoint(run / BEST)),
              "loose": load_checkpoint(make_checkpoint(tmp_path / "loose.safetensors"))}
    with thread_server(create_app(models, None, None, Limits())) as base, httpx.Client(base_url=base) as http:
        curve = http.get("/v1/models/fables/curve").json()
        empty = http.get("/v1/models/loose/curve").json()
        unknown = http.get("/v1/models/nope/curve")
        path_like = http.get("/v1/models/..%2F..%2Fetc/curve")
        documented = http.get("/openapi.json").json()["paths"]

    assert curve["model"] == "fables"
    assert curve["points"] == [asdict(point) for point in read_curve(run)]
    assert len(curve["points"]) == 10 and curve["points"][0] == {"step": 10, "elapsed_s": 1.0, "train_loss": 3.0,
                                                                  "val_loss": None}
    assert curve["trend"] == trend(run).to_dict()
    assert curve["trend"]["verdict"] == "overfitting" and curve["trend"]["best_step"] == 60
    assert empty == {"model": "loose", "points": [], "trend": None}
    assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["detail"]
    assert path_like.status_code in (404, 422)
    assert "/v1/models/{name}/curve" in documented


def test_a_music_record_carries_the_notes_of_its_generation(tmp_path: Path) -> None:
    """The page opens a past piece with the very notes (roll, player) the generation answered."""
    ckpt = load_checkpoint(make_checkpoint(tmp_path / "music.safetensors", MidiCodec(), seed=4))
    database = f"sqlite:///{tmp_path / 'history.db'}"
    with thread_server(create_app({"music": ckpt}, database, None, Limits())) as base, \
            httpx.Client(base_url=base, timeout=60) as http:
        got = http.post("/v1/generate", json={"length": 300, "seed": 5, "format": "midi", "num_samples": 2}).json()
        record = http.get(f"/v1/generations/{got['history_id']}").json()
        # Asked for as text, a music model's generation is still music in the history.
        text_only = http.post("/v1/generate", json={"length": 300, "seed": 5, "num_samples": 2}).json()
        plain = http.get(f"/v1/generations/{text_only['history_id']}").json()
    assert [o["notes"] for o in record["outputs"]] == [s["notes"] for s in got["samples"]]
    assert record["outputs"][0]["notes"], "an untrained model's 300 events hold some notes"
    assert plain["outputs"][0]["notes"] == record["outputs"][0]["notes"]  # same seed, same piece
