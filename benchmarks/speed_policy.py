"""Issue 14's acceptance ratios for the speed policy, in one command, back to back on one machine.

    python -m benchmarks.speed_policy [--steps 60] [--minutes 1] [--rounds 2] [--quick] [--out BENCHMARKS.md]

1. Precision: default training (``--precision auto``, calibration included: a fresh
   CHARGEN_HOME) against ``--precision fp32`` on the medium preset, chars/s of the
   training steps, wall-clock of the whole run, and validation loss at equal steps.
2. Auto's cost where the CPU has no native bf16. On such a CPU it is measured for real;
   on one with bf16 it is *simulated* by forcing the candidate list to fp32
   (CHARGEN_PRECISION_CANDIDATES=fp32), which is what auto sees there. Ratio: wall-clock
   of the whole auto run over the fp32 run.
3. Batch-1 sampling on the medium LSTM against the in-run memory floor: the fastest pass
   (torch's, numpy's or the fused C kernel's own 1-row products) that reads every weight a
   step needs once, measured in the same rounds as the sampling.
4. Training throughput at the default threads against ``--threads 1`` beside one
   busy-looping process (the small preset).
5. A ``--minutes`` run beside that process (no size given: the budget sizes the model, and
   set-up counts against the budget): how far from its budget the whole call ends, and
   whether its schedule completed.
6. ``chargen sample`` as a user runs it, a process of its own: the time from its start to its
   first character on stdout (medium checkpoint, warm kernel cache, median of rounds; beside
   it the time of ``import torch`` alone), and the peak RSS of a ``--len 2000000`` sample
   (``--stream-preset``, tiny by default so that it takes minutes: the generator's memory
   does not grow with the length whatever the model), read as VmHWM from /proc while it streams.

Every figure is a ratio taken side by side; the load average is printed with each
section. ``--quick`` shrinks everything (tiny preset, a few steps) to check the script
runs: its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import REPO, cores, cpu_flags, cpu_model, load_corpus, publish
from chargen.codecs.text import TextCodec
from chargen.machine.calibrate import CANDIDATES_ENV
from chargen.machine.device import cpu_has_native_bf16
from chargen.machine.kernels import choose_kernel, single_thread_openblas
from chargen.machine.native import lstm_library
from chargen.model import PRESETS, CharRNN, ModelConfig
from chargen.runs.start import start_run
from chargen.sampling import DecodeConfig, Generator
from chargen.training import TrainConfig, TrainResult

START = "<!-- benchmarks/speed_policy.py: start (generated) -->"
END = "<!-- benchmarks/speed_policy.py: end -->"


def load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


@contextlib.contextmanager
def env(**values: str | None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def busy_neighbour() -> Iterator[None]:
    """One busy-looping process beside the measurement."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        process.kill()
        process.wait()


class Runner:
    def __init__(self, corpus: Path, root: Path):
        self.corpus, self.root, self.count = corpus, root, 0

    def train(self, preset: str | None, fresh_home: bool = True, **config: object) -> tuple[TrainResult, float]:
        """One ``start_run`` (as ``chargen train`` does it); its result and whole wall-clock."""
        self.count += 1
        home = self.root / f"home-{self.count}" if fresh_home else self.root / "home-shared"
        with env(CHARGEN_HOME=str(home)):
            settings = dict(eval_every=10**9, seed=1337)
            settings.update(config)
            began = time.monotonic()
            result = start_run([self.corpus], TrainConfig(**settings), preset, {}, f"run-{self.count}",
                               self.root / "runs", progress=False, warn=lambda message: None)
            return result, time.monotonic() - began


def precision_section(runner: Runner, preset: str, steps: int, rounds: int) -> list[str]:
    rows, ratios, walls, deltas, chosen = [], [], [], [], set()
    for round_index in range(rounds):
        order = ("auto", "fp32") if round_index % 2 == 0 else ("fp32", "auto")
        got = {}
        for precision in order:
            got[precision] = runner.train(preset, max_steps=steps, precision=precision)
        (auto, auto_wall), (fp32, fp32_wall) = got["auto"], got["fp32"]
        used = read_speed(auto)
        chosen.add(used.get("precision_used", "?"))
        ratios.append(auto.chars_per_s / fp32.chars_per_s)
        walls.append(auto_wall / fp32_wall)
        deltas.append((auto.last_val_loss or math.nan) - (fp32.last_val_loss or math.nan))
        calibration = used.get("calibration", {})
        speeds = ", ".join(f"{k} {v:,.0f}" for k, v in calibration.get("speeds", {}).items()) or "none measured"
        rows.append(f"| {round_index + 1} | {used.get('precision_used')} ({speeds}) | {auto.chars_per_s:,.0f} | "
                    f"{fp32.chars_per_s:,.0f} | {ratios[-1]:.2f} | {walls[-1]:.2f} | "
                    f"{auto.last_val_loss:.4f} | {fp32.last_val_loss:.4f} | {deltas[-1]:+.4f} |")
    return [f"### 1. Default precision against `--precision fp32` ({preset}, {steps} steps; load {load()})", "",
            "| round | auto chose (calibration chars/s) | auto chars/s | fp32 chars/s | throughput ratio "
            "(≥ 1.5 with native bf16) | wall ratio (calibration included) | auto val | fp32 val | Δ val "
            "(≤ 0.02) |", "|---|---|---|---|---|---|---|---|---|", *rows, "",
            f"Median throughput ratio {statistics.median(ratios):.2f}; median |Δ val| "
            f"{statistics.median(abs(d) for d in deltas):.4f} nats/char; chose {', '.join(sorted(chosen))}.", ""]


def read_speed(result: TrainResult) -> dict:
    return json.loads((result.run_dir / "run.json").read_text()).get("speed", {})


def no_bf16_section(runner: Runner, preset: str, steps: int, rounds: int) -> list[str]:
    simulated = cpu_has_native_bf16()
    ratios = []
    for round_index in range(rounds):
        order = ("auto", "fp32") if round_index % 2 == 0 else ("fp32", "auto")
        walls = {}
        for precision in order:
            with env(**{CANDIDATES_ENV: "fp32" if simulated else None}):
                walls[precision] = runner.train(preset, max_steps=steps, precision=precision)[1]
        ratios.append(walls["auto"] / walls["fp32"])
    how = ("simulated: this CPU has native bf16, so the candidates were forced to fp32 "
           f"({CANDIDATES_ENV}=fp32), which is what auto sees on a CPU without it" if simulated
           else "measured for real: this CPU has no native bf16")
    return [f"### 2. Auto's cost without native bf16 ({how}; load {load()})", "",
            f"Wall-clock of a whole `{preset}` run of {steps} steps, auto over fp32, per round: "
            + ", ".join(f"{r:.3f}" for r in ratios) + f"; median {statistics.median(ratios):.3f} (≤ 1.05).", ""]


def floor_pass(weights: list[torch.Tensor], kernel: str) -> float:
    """Seconds for the 1-row products that read each weight once, through ``kernel``."""
    if kernel == "native":  # the fused kernel's own mat-vec, alone (chargen/native/lstm_step.c)
        matvec = lstm_library().chargen_matvec
        vectors = [torch.randn(w.shape[0]) for w in weights]
        outputs = [torch.empty(w.shape[1]) for w in weights]
        began = time.perf_counter()
        for v, w, y in zip(vectors, weights, outputs):
            matvec(ctypes.c_void_p(v.data_ptr()), ctypes.c_void_p(w.data_ptr()), w.shape[0], w.shape[1],
                   ctypes.c_void_p(y.data_ptr()))
        return time.perf_counter() - began
    if kernel == "numpy":
        arrays = [w.numpy() for w in weights]
        vectors = [np.random.default_rng(0).standard_normal(a.shape[0]).astype(np.float32) for a in arrays]
        began = time.perf_counter()
        for v, a in zip(vectors, arrays):
            np.dot(v, a)
        return time.perf_counter() - began
    inputs = [torch.randn(1, w.shape[0]) for w in weights]
    began = time.perf_counter()
    for x, w in zip(inputs, weights):
        torch.mm(x, w)
    return time.perf_counter() - began


def sampling_section(corpus: Path, preset: str, length: int, rounds: int) -> list[str]:
    """Random weights: a step reads the same bytes whatever they hold."""
    codec = TextCodec.fit([corpus])
    torch.manual_seed(0)
    settings = {k: v for k, v in PRESETS[preset].items() if k != "dropout"}
    model = CharRNN(ModelConfig(vocab_size=codec.vocab_size, **settings)).eval()
    generator = Generator(model, codec)
    kernel = choose_kernel(model)
    stepper = generator.stepper
    weights = [stepper.w_hh[0]] + [torch.cat([stepper.w_ih[layer], stepper.w_hh[layer]])
                                   for layer in range(1, stepper.layers)] + [stepper.head_w]
    ratios, per_char, floors = [], [], []
    from chargen.sampling.steppers import generation_threads

    floor_kernels = ("torch", "numpy", "native") if lstm_library() is not None else ("torch", "numpy")
    # The floor at generation's one thread: OpenBLAS would otherwise read with both cores (a 2-thread pass
    # is ~2x faster on a quiet machine; generation keeps one thread, see chargen/inference.py).
    single_thread_openblas()

    for _ in range(rounds):
        with generation_threads():
            floor = min(min(floor_pass(weights, k) for _ in range(200)) for k in floor_kernels)
        result = generator.generate(None, DecodeConfig(length=length, seed=1))
        per_char.append(result.duration_s / length)
        floors.append(floor)
        ratios.append(per_char[-1] / floor)
    return [f"### 3. Batch-1 sampling against the memory floor ({preset}; kernel {kernel}; load {load()})", "",
            f"Per character {statistics.median(per_char) * 1e6:.1f} µs; floor (best of {', '.join(floor_kernels)} "
            f"1-row products on one thread, as generation runs, over "
            f"{sum(w.numel() * 4 for w in weights) / 2**20:.1f} MiB) "
            f"{statistics.median(floors) * 1e6:.1f} µs; ratio per round "
            + ", ".join(f"{r:.2f}" for r in ratios) + f"; median {statistics.median(ratios):.2f} (≤ 1.2).", ""]


def threads_section(runner: Runner, preset: str, steps: int, rounds: int) -> list[str]:
    ratios, rows = [], []
    with busy_neighbour():
        for round_index in range(rounds):
            order = (None, 1) if round_index % 2 == 0 else (1, None)
            speed = {}
            for threads in order:
                result, _ = runner.train(preset, fresh_home=False, max_steps=steps, threads=threads)
                speed[threads] = result.chars_per_s
                if threads is None:
                    used = read_speed(result)
            ratios.append(speed[None] / speed[1])
            rows.append(f"| {round_index + 1} | {speed[None]:,.0f} (settled on {used.get('threads_used')}) | "
                        f"{speed[1]:,.0f} | {ratios[-1]:.2f} |")
    return [f"### 4. Default threads against `--threads 1` beside one busy-looping process ({preset}, {steps} "
            f"steps, {cores()} cores; load {load()})", "",
            "| round | default chars/s | --threads 1 chars/s | ratio (≥ 1) |", "|---|---|---|---|", *rows,
            "", f"Median ratio {statistics.median(ratios):.2f}.", ""]


def minutes_section(runner: Runner, minutes: float) -> list[str]:
    with busy_neighbour():
        result, wall = runner.train(None, fresh_home=False, minutes=minutes, eval_every=200)
    budget = minutes * 60
    model = json.loads((result.run_dir / "run.json").read_text()).get("sizing", {}).get("preset", "?")
    return [f"### 5. `--minutes {minutes:g}` beside one busy-looping process (sized: {model}; load {load()})", "",
            f"The whole call (corpus, sizing, calibration, training, final evaluation and save) took "
            f"{wall:.1f} s against a budget of {budget:.0f} s: {(wall / budget - 1) * 100:+.1f} % (target: within "
            f"±5 %); training itself {result.elapsed_s:.1f} s. Steps {result.step} of a schedule of "
            f"{result.total_steps}: "
            + ("completed." if result.total_steps and result.step >= result.total_steps else "NOT completed."), ""]


def peak_rss(pid: int) -> int:
    """The process's own peak RSS in bytes (VmHWM), 0 where /proc cannot say. Not rusage's ru_maxrss: a child
    started by fork/vfork from this (large) benchmark process inherits its parent's peak through exec."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def first_output(command: list[str]) -> tuple[float, float, int]:
    """Seconds to the first byte on stdout, seconds to exit, and peak RSS in bytes of ``command`` (read from
    /proc while its output streams, the last reading just before it exits)."""
    began = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert process.stdout is not None
    first = process.stdout.read(1)
    to_first = time.monotonic() - began
    peak = peak_rss(process.pid)
    while process.stdout.read(1 << 16):
        peak = max(peak, peak_rss(process.pid))
    process.wait()
    if not first or process.returncode:
        raise RuntimeError(f"{shlex.join(command)} failed (exit {process.returncode})")
    return to_first, time.monotonic() - began, peak


def streaming_section(runner: Runner, preset: str, stream_preset: str, length: int, rounds: int) -> list[str]:
    sample = [sys.executable, "-m", "chargen", "sample", "--no-log", "--seed", "1"]
    medium, _ = runner.train(preset, fresh_home=False, max_steps=2)
    first_output([*sample, "-c", str(medium.run_dir), "--len", "10"])  # warm: the kernel choice is cached
    firsts, imports = [], []
    for _ in range(rounds):
        firsts.append(first_output([*sample, "-c", str(medium.run_dir), "--len", "200"])[0])
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        imports.append(time.monotonic() - began)
    small, _ = runner.train(stream_preset, fresh_home=False, max_steps=2)
    first_output([*sample, "-c", str(small.run_dir), "--len", "10"])
    to_first, wall, rss = first_output([*sample, "-c", str(small.run_dir), "--len", str(length)])
    return [f"### 6. `chargen sample`: first characters, and memory of a long sample (load {load()})", "",
            f"First character on stdout after {statistics.median(firsts):.2f} s (median of "
            + ", ".join(f"{f:.2f}" for f in firsts) + f" s; {preset}, `--len 200`, from the process's start; "
            f"target ≤ 1 s); `python -c 'import torch'` alone, start to exit, takes "
            f"{statistics.median(imports):.2f} s. "
            f"`chargen sample --len {length:,}` ({stream_preset}): first character after {to_first:.2f} s, "
            f"{wall:.0f} s in all ({length / wall:,.0f} chars/s), peak RSS {rss / 2**20:,.0f} MiB (VmHWM, read from "
            "/proc while it streamed; target < 1 GiB).",
            ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed_policy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per run (sections 1, 2, 4)")
    parser.add_argument("--minutes", type=float, default=1.0, help="the --minutes budget of section 5")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per comparison")
    parser.add_argument("--length", type=int, default=2000, help="characters sampled per round (section 3)")
    parser.add_argument("--stream-length", type=int, default=2_000_000, help="characters of section 6's sample")
    parser.add_argument("--stream-preset", default="tiny", choices=sorted(PRESETS), help="its model (section 6)")
    parser.add_argument("--only", type=int, nargs="+", choices=range(1, 7), metavar="N", help="only these sections")
    parser.add_argument("--quick", action="store_true", help="tiny settings to check that it runs (no figures)")
    parser.add_argument("--corpus", type=Path, help="text file (default: tinyshakespeare if present, else fables)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="Markdown file to update")
    args = parser.parse_args(argv)
    big, small = ("tiny", "tiny") if args.quick else ("medium", "small")
    if args.quick:
        args.steps, args.minutes, args.rounds, args.length, args.stream_length = 4, 0.05, 1, 50, 2000
    corpus = load_corpus(args.corpus)
    flags = ", ".join(name for name, have in cpu_flags().items() if have) or "none of interest"
    command = shlex.join(["python", "-m", "benchmarks.speed_policy", *(sys.argv[1:] if argv is None else argv)])
    lines = ["## Speed policy: precision, threads, kernels, budget (benchmarks/speed_policy.py)", "",
             f"Command: `{command}` ({time.strftime('%Y-%m-%d')}); {cpu_model()} (flags: {flags}), {cores()} cores, "
             f"torch {torch.__version__}; corpus: {corpus.note}; load average at the start {load()}."
             + (" **--quick: figures are meaningless.**" if args.quick else ""), ""]
    with tempfile.TemporaryDirectory(prefix="chargen-speed-") as tmp:
        runner = Runner(corpus.path, Path(tmp))
        sections = [
            lambda: precision_section(runner, big, args.steps, args.rounds),
            lambda: no_bf16_section(runner, big, args.steps, args.rounds),
            lambda: sampling_section(corpus.path, big, args.length, args.rounds),
            lambda: threads_section(runner, small, args.steps, args.rounds),
            lambda: minutes_section(runner, args.minutes),
            lambda: streaming_section(runner, big, args.stream_preset, args.stream_length, max(3, args.rounds)),
        ]
        for number, section in enumerate(sections, 1):
            if args.only and number not in args.only:
                continue
            with env(CHARGEN_HOME=str(Path(tmp) / "home-kernels")):
                lines += section()
            print("\n".join(lines[-4:]), file=sys.stderr, flush=True)
    lines.append(f"Load average at the end {load()}.")
    return publish("\n".join(lines), args.out, START, END)


if __name__ == "__main__":
    sys.exit(main())
