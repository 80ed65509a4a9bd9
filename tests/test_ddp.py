"""Training with several processes (issue 13): real torchrun jobs on the CPU (gloo), kept tiny.

The two-rank job must train the same weights as one process with the same global
batch, write its run once, resume with another number of processes, and end
(never hang) when a rank dies or the job is interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from chargen.errors import ChargenError
from chargen.runs.checkpoint import load_state
from chargen.runs.layout import LAST, RUN_JSON, STATE
from chargen.training.data import StreamBatcher
from chargen.training.distributed import Distributed, ShardedStreamBatcher
from tests.conftest import FABLES, REPO, invoke

pytestmark = pytest.mark.slow  # real processes or servers: `make test-fast` leaves them out

# Tiny model, tiny batches: a step takes milliseconds, so the processes' start-up dominates.
MODEL = ["--size", "tiny", "--hidden", "32", "--embedding", "8", "--dropout", "0", "--seq-len", "16",
         "--threads", "1", "--quiet", "--seed", "3"]


def env_for(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", CHARGEN_CHECKPOINTS=str(tmp_path / "ckpt"),
               CHARGEN_HOME=str(tmp_path / "home"))
    env.pop("CHARGEN_DEBUG", None)
    env.pop("CHARGEN_DATABASE_URL", None)
    return env


def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "chargen", *args]


def chargen(*args: str) -> list[str]:
    return [sys.executable, "-m", "chargen", *args]


def run(command: list[str], tmp_path: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """A torchrun job as real processes; a plain ``chargen`` command (the one-process reference, sampling,
    the history) in this process, with the job's environment: the processes under test are the ranks."""
    if command[:3] == chargen():
        with _environment(env_for(tmp_path)):
            result = invoke(*command[3:])
    else:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env_for(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / LAST))


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def small_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "fables.txt"
    corpus.write_text(FABLES.read_text()[:20000])
    return corpus


# ----------------------------------------------------------------------------- data layout (no processes)

def test_ranks_read_disjoint_rows_of_the_single_process_batch() -> None:
    ids = np.arange(5000, dtype=np.int64) % 251
    whole = StreamBatcher(ids, 8, 16)
    shards = [ShardedStreamBatcher(ids, 8, 16, None, rank, 2) for rank in range(2)]
    for step in (0, 1, 7, whole.steps_per_epoch + 2):
        x, y = whole.batch(step)
        parts = [shard.batch(step) for shard in shards]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    assert all(shard.steps_per_epoch == whole.steps_per_epoch for shard in shards)


def test_augmented_shards_draw_the_single_process_shifts() -> None:
    ids = np.arange(3000, dtype=np.int64) % 100

    def augment(window: np.ndarray, step: int) -> np.ndarray:
        rng = np.random.default_rng(step)
        return window + rng.integers(0, 5, size=(window.shape[0], 1))  # a per-row draw, in row order

    whole = StreamBatcher(ids, 4, 8, augment)
    shards = [ShardedStreamBatcher(ids, 4, 8, augment, rank, 2) for rank in range(2)]
    x, _ = whole.batch(3)
    assert torch.equal(torch.cat([shard.batch(3)[0] for shard in shards]), x)


def test_a_global_batch_that_does_not_split_is_refused() -> None:
    three = Distributed(rank=0, world_size=3, enabled=True)
    with pytest.raises(ChargenError, match="global batch of 8 streams does not split evenly over 3"):
        three.batcher(np.zeros(1000, dtype=np.uint8), 8, 16, None)


# ----------------------------------------------------------------------------- real torchrun jobs

def test_two_ranks_train_the_one_process_weights_and_resume_with_another_count(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path)
    limits = ["--max-steps", "20", "--eval-every", "10"]
    db = tmp_path / "history.db"
    run(torchrun(2, "train", str(corpus), *MODEL, *limits, "--batch-size", "4", "--run-name", "ddp",
                 "--database", str(db)), tmp_path)
    run(chargen("train", str(corpus), *MODEL, *limits, "--batch-size", "8", "--run-name", "one", "--no-log"),
        tmp_path)
    root = tmp_path / "ckpt"
    ddp, one = root / "ddp", root / "one"
    assert sorted(p.name for p in root.iterdir()) == ["ddp", "one"]  # one run folder for the two ranks
    assert max_difference(weights(ddp), weights(one)) < 1e-5
    assert load_state(ddp / STATE)["best_val"] == pytest.approx(load_state(one / STATE)["best_val"], abs=1e-5)

    recorded = json.loads((ddp / RUN_JSON).read_text())
    assert recorded["world_size"] == 2 and recorded["train_config"]["batch_size"] == 8  # the global batch
    assert recorded["status"] == "finished"
    with safe_open(str(ddp / LAST), "pt") as saved:
        assert json.loads(saved.metadata()["training"])["world_size"] == 2
    lines = [json.loads(line) for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [10, 20]  # one writer: no line twice
    runs = json.loads(run(chargen("history", "runs", "--json", "--database", str(db)), tmp_path).stdout)
    assert len(runs) == 1 and runs[0]["steps"] == 20
    sampled = run(chargen("sample", "-c", str(ddp), "--len", "40", "--seed", "1", "--no-log"), tmp_path)
    assert len(sampled.stdout) >= 40

    # N -> 1 and 1 -> N: both continue to step 30 and still agree with each other.
    resumed = run(chargen("train", "--resume", str(ddp), "--max-steps", "30", "--threads", "1", "--quiet",
                          "--no-log"), tmp_path)
    assert "saved" in resumed.stderr
    run(torchrun(2, "train", "--resume", str(one), "--max-steps", "30", "--threads", "1", "--quiet", "--no-log"),
        tmp_path)
    assert load_state(ddp / STATE)["step"] == 30 and load_state(one / STATE)["step"] == 30
    assert json.loads((ddp / RUN_JSON).read_text())["world_size"] == 1
    assert json.loads((one / RUN_JSON).read_text())["world_size"] == 2
    assert max_difference(weights(ddp), weights(one)) < 1e-5


def test_a_budget_in_minutes_ends_every_rank_at_the_same_step(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path)
    result = run(torchrun(2, "train", str(corpus), *MODEL, "--minutes", "0.1", "--eval-every", "50",
                          "--batch-size", "4", "--run-name", "timed", "--no-log", "--json"), tmp_path)
    outcome = json.loads(result.stdout)  # rank 0 alone prints the result
    assert outcome["step"] > 0 and not outcome["interrupted"]
    assert load_state(tmp_path / "ckpt" / "timed" / STATE)["step"] == outcome["step"]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def wait_for_step(state: Path, step: int, process: subprocess.Popen, timeout: float = 180) -> None:
    """Until the run's saved state (written atomically) has reached ``step``."""
    deadline = time.monotonic() + timeout
    while not (state.exists() and load_state(state)["step"] >= step):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{state} never reached step {step}"
        time.sleep(0.2)


def children(pid: int) -> list[int]:
    """The worker processes torchrun started (from /proc: no psutil needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers through /proc")
def test_a_killed_rank_ends_the_job_and_the_last_checkpoint_samples(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path)
    run_dir = tmp_path / "ckpt" / "killed"
    job = subprocess.Popen(torchrun(2, "train", str(corpus), *MODEL, "--max-steps", "100000", "--eval-every", "5",
                                    "--batch-size", "4", "--run-name", "killed", "--no-log"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(tmp_path))
    try:
        # Its first evaluation's checkpoint is saved (metrics.jsonl alone is written just before that save).
        wait_for_step(run_dir / STATE, 5, job)
        workers = children(job.pid)
        assert len(workers) == 2, workers
        os.kill(max(workers), signal.SIGKILL)  # torchrun starts rank 0 first
        began = time.monotonic()
        _, stderr = job.communicate(timeout=60)
        assert time.monotonic() - began < 60
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert job.returncode != 0
    reasons = [line for line in stderr.splitlines() if line.startswith("chargen: error:")]
    assert len(reasons) == 1 and "another training process stopped" in reasons[0], stderr[-3000:]
    assert json.loads((run_dir / RUN_JSON).read_text())["status"] == "failed"
    run(chargen("sample", "-c", str(run_dir), "--len", "30", "--no-log"), tmp_path)
    assert load_state(run_dir / STATE)["step"] >= 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: Starts the ranks as torchrun does (its environment variables) and reports each one's exit
#: status, which torchrun does not; it is the leader of the process group the test signals.
LAUNCHER = """
import json, os, signal, subprocess, sys
signal.signal(signal.SIGINT, lambda *a: None)  # the ranks, not the launcher, handle the Ctrl-C
command, port = json.loads(sys.argv[1]), sys.argv[2]
ranks = [subprocess.Popen(command, env=dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2",
                                            RANK=str(r), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE="2"),
                          stderr=open(f"rank{r}.err", "w")) for r in range(2)]
print(json.dumps([rank.wait() for rank in ranks]))
"""


def test_ctrl_c_saves_once_and_every_rank_exits_130(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path)
    run_dir = tmp_path / "ckpt" / "stopped"
    command = chargen("train", str(corpus), *MODEL, "--max-steps", "100000", "--eval-every", "5", "--batch-size", "4",
                      "--run-name", "stopped", "--no-log")
    job = subprocess.Popen([sys.executable, "-c", LAUNCHER, json.dumps(command), str(free_port())], cwd=tmp_path,
                           stdout=subprocess.PIPE, text=True, env=env_for(tmp_path), start_new_session=True)
    try:
        wait_for(run_dir / "metrics.jsonl", job)
        os.killpg(job.pid, signal.SIGINT)  # as a terminal's Ctrl-C: every process of the group
        stdout, _ = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.communicate()
    errors = [(tmp_path / f"rank{rank}.err").read_text() for rank in range(2)]
    assert json.loads(stdout) == [130, 130], errors
    assert "stopped at step" in errors[0] and errors[1].strip() == "", errors
    assert json.loads((run_dir / RUN_JSON).read_text())["status"] == "interrupted"
    step = load_state(run_dir / STATE)["step"]
    finals = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] == step]
    assert len(finals) == 1  # saved once


# ----------------------------------------------------------------------------- two machines, simulated (issue 30)

def launcher(node: int, port: int, tmp_path: Path, *args: str) -> subprocess.Popen:
    """One machine's ``torchrun --nnodes 2 --nproc-per-node 1 ... --rdzv-backend c10d`` (the README's command),
    in a folder and with a CHARGEN_HOME of its own; ``--out`` is the folder both see."""
    folder = tmp_path / f"node{node}"
    folder.mkdir()
    env = dict(env_for(tmp_path), CHARGEN_HOME=str(folder / "home"), TMPDIR=str(tmp_path / f"tmp{node}"))
    (tmp_path / f"tmp{node}").mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "-m", "chargen", "train", *args, "--out", str(tmp_path / "shared"), "--no-log"]
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def two_machines(tmp_path: Path, *args: str) -> list[subprocess.Popen]:
    """Both launchers; the first hosts the rendezvous store (the second starts once it listens)."""
    port = free_port()
    first = launcher(0, port, tmp_path, *args)
    deadline = time.monotonic() + 120
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first launcher never opened its rendezvous store"
        time.sleep(0.1)
    return [first, launcher(1, port, tmp_path, *args)]


def finish(jobs: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str]]:
    """(exit status, stderr) of each job; a job still running at the timeout is killed and fails the test."""
    outcomes = []
    for job in jobs:
        try:
            _, stderr = job.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in [*children(job.pid), job.pid]:
                os.kill(pid, signal.SIGKILL)
            job.communicate()
            raise
        outcomes.append((job.returncode, stderr))
    return outcomes


def test_two_launchers_on_two_nodes_train_one_model_written_by_process_0(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path)
    args = [str(corpus), *MODEL, "--max-steps", "20", "--eval-every", "10", "--batch-size", "4", "--run-name", "two"]
    outcomes = finish(two_machines(tmp_path, *args))
    assert all(code == 0 for code, _ in outcomes), [err[-2000:] for _, err in outcomes]
    run(chargen("train", str(corpus), *MODEL, "--max-steps", "20", "--eval-every", "10", "--batch-size", "8",
                "--run-name", "one", "--no-log"), tmp_path)
    two, one = tmp_path / "shared" / "two", tmp_path / "ckpt" / "one"
    assert max_difference(weights(two), weights(one)) < 1e-5  # one model, as one process with the global batch
    recorded = json.loads((two / RUN_JSON).read_text())
    assert recorded["world_size"] == 2 and recorded["train_config"]["batch_size"] == 8
    # Process 0 alone writes: the run folder holds what one process writes, each metrics line once; the other
    # machine's process prints nothing of chargen's and writes nothing in its folder or its CHARGEN_HOME.
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["two"]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert [json.loads(line)["step"] for line in (two / "metrics.jsonl").read_text().splitlines()] == [10, 20]
    writers = [node for node, (_, err) in enumerate(outcomes) if "chargen: saved" in err]
    assert len(writers) == 1, [err[-1000:] for _, err in outcomes]
    other = tmp_path / f"node{1 - writers[0]}"
    assert not any(line.startswith("chargen") or line.startswith("step ")
                   for line in outcomes[1 - writers[0]][1].splitlines())
    assert [p.name for p in other.iterdir()] == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers through /proc")
def test_a_lost_machine_ends_the_other_within_the_timeout_with_one_line(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    timeout_s = 20
    monkeypatch.setenv("CHARGEN_DIST_TIMEOUT", str(timeout_s))
    corpus = small_corpus(tmp_path)
    jobs = two_machines(tmp_path, str(corpus), *MODEL, "--max-steps", "100000", "--eval-every", "5",
                        "--batch-size", "4", "--run-name", "lost")
    try:
        wait_for_step(tmp_path / "shared" / "lost" / STATE, 5, jobs[0])
        lost = jobs[1]  # the second machine goes: its launcher and its worker (a session of its own) at once
        workers = children(lost.pid)
        assert len(workers) == 1, workers
        for pid in (lost.pid, *workers):
            os.kill(pid, signal.SIGKILL)
        began = time.monotonic()
        (code, stderr), = finish(jobs[:1], timeout=timeout_s + 60)
        elapsed = time.monotonic() - began
    finally:
        for job in jobs:
            if job.poll() is None:
                for pid in [*children(job.pid), job.pid]:
                    os.kill(pid, signal.SIGKILL)
                job.communicate()
    assert code != 0 and elapsed < timeout_s, (elapsed, stderr[-3000:])
    reasons = [line for line in stderr.splitlines() if line.startswith("chargen: error:")]
    assert len(reasons) == 1 and "another training process stopped" in reasons[0], stderr[-3000:]
    if "rank 0:" in reasons[0]:  # the writer survived: it marked the run failed, its last checkpoint intact
        assert json.loads((tmp_path / "shared" / "lost" / RUN_JSON).read_text())["status"] == "failed"
    assert load_state(tmp_path / "shared" / "lost" / STATE)["step"] >= 5
