"""chargen's performance figures, all measured in one run on the machine it is started on.

    python -m benchmarks.run [--quick] [--out BENCHMARKS.md] [--corpus FILE]

Prints a Markdown section and writes it into ``--out`` between this script's
markers, keeping every other section of that file. Sections: the machine and
its own matmul peak (fp32, bf16) at LSTM shapes; training throughput of the
presets and cells against a plain ``nn.LSTM`` loop; precision; sampling speed
of every decoder against an ``nn.LSTM``-per-character loop and against the
memory floor; and the cell comparison at equal wall-clock time. Figures are
medians over repetitions with their min–max, and ratios are taken within one
round (interleaved), so load from other processes shifts both sides alike;
how much CPU other processes used during each section is reported with it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.common import (
    REPO,
    Corpus,
    LoadMeter,
    cores,
    cpu_flags,
    cpu_model,
    fmt,
    load_corpus,
    write_section,
)
from chargen.codecs.text import TextCodec
from chargen.errors import ChargenError
from chargen.machine.device import cpu_has_native_bf16
from chargen.model import PRESETS, CharRNN, ModelConfig, flops_per_token
from chargen.sampling import DecodeConfig, Generator
from chargen.sampling.steppers import generation_threads
from chargen.training import TrainConfig, Trainer
from chargen.training.data import Split, StreamBatcher

START = "<!-- benchmarks/run.py: start (generated; edit the script, not this section) -->"
END = "<!-- benchmarks/run.py: end -->"
BATCH, SEQ = 32, 100


@dataclass
class Budget:
    """How long each part may run: ``--quick`` shrinks every one."""

    quick: bool
    peak_s: float = field(init=False)  # per matmul measurement
    peak_reps: int = field(init=False)
    train_rounds: int = field(init=False)
    train_s: float = field(init=False)  # per training measurement
    sample_rounds: int = field(init=False)
    sample_len: int = field(init=False)
    policy_len: int = field(init=False)
    cell_s: float = field(init=False)  # per cell, wall-clock training budget
    cell_preset: str = field(init=False)

    def __post_init__(self) -> None:
        q = self.quick
        self.peak_s, self.peak_reps = (0.15, 3) if q else (0.5, 7)
        self.train_rounds, self.train_s = (2, 0.5) if q else (4, 2.0)
        self.sample_rounds, self.sample_len = (3, 120) if q else (7, 300)
        self.policy_len = 30 if q else 60
        self.cell_s = 8.0 if q else 60.0
        self.cell_preset = "small" if q else "medium"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def repeat_for(fn: Callable[[], object], seconds: float, reps: int = 5) -> list[float]:
    """Seconds per call of ``fn``, ``reps`` times, each over enough calls to fill ``seconds / reps``."""
    once = max(timed(fn), 1e-7)
    calls = max(1, int(seconds / reps / once))
    return [timed(lambda: [fn() for _ in range(calls)]) / calls for _ in range(reps)]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def load_note(meter: LoadMeter) -> str:
    others = meter.others_cores()
    return "" if others is None else f"Other processes used {others:.2f} of {cores()} cores on average meanwhile."


# ----------------------------------------------------------------------------- matmul peak

def matmul_section(budget: Budget, n_threads: int) -> tuple[list[str], float]:
    """GFLOP/s of x @ W at the shapes an LSTM trains with; returns (lines, fp32 peak at N threads)."""
    meter = LoadMeter()
    native_bf16 = cpu_has_native_bf16()
    shapes = [("recurrent step [32×512]·[512×2048]", 32), ("input projection [3200×512]·[512×2048]", 3200)]
    rows, fp32_peak = [], 0.0
    for label, m in shapes:
        for dtype in (torch.float32, torch.bfloat16):
            rows_m, note = m, ""
            if dtype == torch.bfloat16 and not native_bf16 and m > 64:
                rows_m, note = 64, "run at M=64: emulated bf16 would take ~10 s per 3200-row call"
            a, w = torch.randn(rows_m, 512, dtype=dtype), torch.randn(512, 2048, dtype=dtype)
            flop = 2 * rows_m * 512 * 2048
            cells = []
            for n in sorted({1, n_threads}):
                with threads(n):
                    secs = repeat_for(lambda a=a, w=w: a @ w, budget.peak_s, reps=budget.peak_reps)
                gflops = [flop / s / 1e9 for s in secs]
                cells.append(fmt(gflops, 1))
                if dtype == torch.float32 and m == 3200 and n == n_threads:
                    fp32_peak = max(gflops)  # a peak: the best repetition, least disturbed by other processes
            if n_threads == 1:
                cells.append("(1 thread only)")
            rows.append([label, str(dtype).replace("torch.", ""), *cells, note])
    lines = ["### Matmul peak (this machine, GFLOP/s)", ""]
    lines += table(["shape", "dtype", "1 thread", f"{n_threads} threads", "note"], rows)
    bf16 = "native (avx512_bf16/amx)" if native_bf16 else "no native bf16 (no avx512_bf16/amx_bf16): emulated"
    lines += ["", f"bf16 support: {bf16}. {load_note(meter)}", ""]
    return lines, fp32_peak


# ----------------------------------------------------------------------------- training

class ChargenTrainer:
    """``chargen.training.Trainer`` itself, stepped as ``chargen train`` steps it (AdamW groups,
    clipping, the lr schedule, truncated BPTT with the carried state, the loss read back each
    step); only evaluation and saving are left out, as they are not training throughput."""

    def __init__(self, config: ModelConfig, corpus: Corpus, precision: str = "fp32"):
        # The benchmark sets the threads itself: fixed, so the Trainer's thread policy leaves them be.
        train_config = TrainConfig(batch_size=BATCH, seq_len=SEQ, seed=0, device="cpu", precision=precision,
                                   threads=torch.get_num_threads())
        self.trainer = Trainer(config, train_config, Split(train=corpus.train, val=corpus.val))

    def run(self, steps: int) -> float:
        """Train ``steps`` steps; returns the last loss."""
        loss = math.nan
        for _ in range(steps):
            loss = self.trainer.step()
        return loss


class PlainLoop(nn.Module):
    """The baseline: an independent minimal loop of embedding + torch RNN + linear, AdamW."""

    def __init__(self, config: ModelConfig, train_ids: np.ndarray):
        super().__init__()
        torch.manual_seed(0)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[config.cell]
        self.embed = nn.Embedding(config.vocab_size, config.embedding)
        self.rnn = rnn(config.embedding, config.hidden, num_layers=config.layers, batch_first=True)
        self.head = nn.Linear(config.hidden, config.vocab_size)
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=3e-3)
        self.batcher = StreamBatcher(train_ids, BATCH, SEQ)
        self.step = 0

    def run(self, steps: int) -> float:
        loss = torch.zeros(())
        for _ in range(steps):
            x, y = self.batcher.batch(self.step)
            logits = self.head(self.rnn(self.embed(x))[0])
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.step += 1
        return float(loss.item())


def chars_per_s(trainer: ChargenTrainer | PlainLoop, steps: int) -> float:
    return steps * BATCH * SEQ / timed(lambda: trainer.run(steps))


def training_section(budget: Budget, corpus: Corpus, peak: float) -> tuple[list[str], list[float]]:
    """Returns the lines and the medium preset's chars/s repetitions (the fp32 precision row)."""
    configs = [(f"{name} ({p['layers']}×{p['hidden']}, emb {p['embedding']})", ModelConfig(
        vocab_size=corpus.vocab, cell="lstm", **{k: v for k, v in p.items() if k != "dropout"}))
        for name, p in PRESETS.items() if name in ("tiny", "small", "medium")]
    small = {k: v for k, v in PRESETS["small"].items() if k != "dropout"}
    configs += [(f"small, --cell {cell}", ModelConfig(vocab_size=corpus.vocab, cell=cell, **small))
                for cell in ("gru", "rnn")]
    rows, medium = [], []
    for label, config in configs:
        meter = LoadMeter()
        ours, plain = ChargenTrainer(config, corpus), PlainLoop(config, corpus.train)
        ours.run(1), plain.run(1)  # warm-up: allocator, oneDNN primitives
        steps = max(2, round(budget.train_s / max(timed(lambda o=ours: o.run(1)), 1e-3)))
        ours_cps, plain_cps, ratios = [], [], []
        for r in range(budget.train_rounds):  # alternate which goes first
            if r % 2:
                b = chars_per_s(plain, steps)
                a = chars_per_s(ours, steps)
            else:
                a = chars_per_s(ours, steps)
                b = chars_per_s(plain, steps)
            ours_cps.append(a)
            plain_cps.append(b)
            ratios.append(a / b)
        flop = flops_per_token(config) * 3 / 1e9  # forward + backward ≈ 3× forward
        others = meter.others_cores()
        if label.startswith("medium"):
            medium = ours_cps
        rows.append([label, f"{CharRNN(config).num_parameters():,}", fmt(ours_cps), fmt(ours_cps, 1, flop),
                     f"{statistics.median(ours_cps) * flop / peak:.0%}" if peak else "–",
                     fmt(plain_cps), fmt(ratios, 2), f"{others:.2f}" if others is not None else "–"])
    lines = [f"### Training throughput (fp32, batch {BATCH} × seq {SEQ}, {torch.get_num_threads()} threads)", ""]
    lines += table(["model", "params", "chargen chars/s", "GFLOP/s", "of fp32 peak", "plain nn.* loop chars/s",
                    "chargen / plain", "others' cores"], rows)
    lines += ["", "FLOPs: `chargen.model.flops_per_token` × 3 (forward + backward) per character. "
              "chargen = `chargen.training.Trainer.step` (AdamW groups, clipping, lr schedule, carried state); "
              "plain = embedding + `nn.LSTM`/`nn.GRU`/`nn.RNN` + linear, AdamW, nothing else, same batches. "
              f"Each cell: median (min–max) of {budget.train_rounds} interleaved rounds; peak = the best "
              f"repetition of the fp32 input-projection row above at {torch.get_num_threads()} threads.", ""]
    return lines, medium


def precision_section(corpus: Corpus, fp32_medium: list[float]) -> list[str]:
    rows = [["fp32", fmt(fp32_medium), "default on CPUs (the medium row above)"]]
    if cpu_has_native_bf16():
        config = ModelConfig(vocab_size=corpus.vocab, **{k: v for k, v in PRESETS["medium"].items() if k != "dropout"})
        try:
            trainer = ChargenTrainer(config, corpus, precision="bf16")
            trainer.run(2)
            rows.append(["bf16", fmt([chars_per_s(trainer, 5) for _ in range(3)]), "autocast bf16"])
        except (RuntimeError, ChargenError) as exc:
            rows.append(["bf16", "failed", str(exc).splitlines()[0][:160]])
    else:
        probe = CharRNN(ModelConfig(vocab_size=corpus.vocab, layers=1, hidden=64, embedding=16))
        try:
            tokens = torch.from_numpy(corpus.train[: 2 * SEQ].astype(np.int64)).view(2, SEQ)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                probe(tokens)[0].float().sum().backward()
            why = "a bf16 autocast step runs, but emulated"
        except RuntimeError as exc:
            why = f"a bf16 autocast LSTM step fails: `{str(exc).splitlines()[0].split('. ')[0]}`"
        rows.append(["bf16", "not supported on this CPU",
                     f"no avx512_bf16/amx_bf16; `--precision bf16` refuses; {why}"])
    lines = ["### Precision (medium LSTM training, chars/s)", ""]
    return lines + table(["precision", "chars/s", "note"], rows) + [""]


# ----------------------------------------------------------------------------- sampling

def nn_lstm_per_char(model: CharRNN, prime_ids: list[int], length: int, seed: int) -> None:
    """The baseline: CharRNN's forward (embedding, ``nn.LSTM``, head) called once per character."""
    rng = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        logits, state = model(torch.tensor([prime_ids]))
        for _ in range(length):
            token = torch.multinomial(torch.softmax(logits[:, -1], dim=-1), 1, generator=rng)  # [1, 1]
            logits, state = model(token, state)


def matvec_floor(generator: Generator, rows: int) -> tuple[Callable[[], None], int]:
    """The products that read every weight one step needs once: W_hh of layer 0 [H, G·H],
    [W_ih | W_hh] of each later layer as one [2H, G·H] matrix, the head [H, V]; layer 0's
    input projection is a table lookup. Same layout as the Stepper's weights (x @ W)."""
    stepper = generator.stepper
    weights = [stepper.w_hh[0]] + [torch.cat([stepper.w_ih[layer], stepper.w_hh[layer]])
                                   for layer in range(1, stepper.layers)] + [stepper.head_w]
    inputs = [torch.randn(rows, w.shape[0]) for w in weights]

    def run() -> None:
        for x, w in zip(inputs, weights):
            torch.mm(x, w)

    return run, sum(w.numel() * w.element_size() for w in weights)


def thread_policy_check(generator: Generator, length: int, reps: int) -> list[str]:
    """``--num-samples 2`` at torch's default threads vs the one thread ``Generator`` now uses,
    on the machine as it is and with one busy process (started here) holding a core."""
    from chargen.sampling import steppers as inference

    config = DecodeConfig(length=length, num_samples=2, seed=0)
    saved = inference.GENERATION_THREADS

    def measure() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"default": [], "one": []}
        try:
            for _ in range(reps):
                inference.GENERATION_THREADS = None  # leave torch's setting alone, as before this change
                times["default"].append(generator.generate("The ", config).duration_s / length)
                inference.GENERATION_THREADS = saved
                times["one"].append(generator.generate("The ", config).duration_s / length)
        finally:
            inference.GENERATION_THREADS = saved
        return times

    quiet = measure()
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        busy = measure()
    finally:
        burner.kill()
        burner.wait()
    lines = [f"Thread policy check (`--num-samples 2`, {length} chars, {reps} runs, µs per step): "
             f"torch's default {torch.get_num_threads()} threads / the 1 thread `Generator` now uses:", ""]
    for label, times in (("as the machine is", quiet), ("one busy-looping process also running", busy)):
        lines.append(f"- {label}: {fmt(times['default'], 0, 1e6)} / {fmt(times['one'], 0, 1e6)}")
    return lines


def sampling_section(budget: Budget, model: CharRNN, codec: TextCodec, weights_note: str) -> list[str]:
    meter = LoadMeter()
    generator = Generator(model, codec)
    prime, n = "The ", budget.sample_len
    prime_ids = codec.encode(prime)
    floor1, floor_bytes = matvec_floor(generator, 1)
    floor8, _ = matvec_floor(generator, 8)
    decoders = {
        "sample (batch 1, T=1)": (DecodeConfig(length=n), 1),
        "8 samples (--num-samples 8)": (DecodeConfig(length=n, num_samples=8), 8),
        "greedy (n-gram block 12)": (DecodeConfig(length=n, greedy=True), 1),
        "beam width 8 (n-gram block 12)": (DecodeConfig(length=n, beam_width=8), 1),
    }
    per_char: dict[str, list[float]] = {name: [] for name in ["floor1", "floor8", "nn.LSTM", *decoders]}
    floor_near: dict[str, list[float]] = {name: [] for name in per_char}  # the floor measured around each run
    with generation_threads():  # what Generator uses; the baselines get the same single thread
        calls = max(1, int(0.1 / max(timed(floor1), 1e-6)))

        def floor() -> float:
            return timed(lambda: [floor1() for _ in range(calls)]) / calls

        jobs: list[tuple[str, Callable[[int], float]]] = [
            ("floor8", lambda r: timed(lambda: [floor8() for _ in range(calls)]) / calls),
            ("nn.LSTM", lambda r: timed(lambda: nn_lstm_per_char(model, prime_ids, n, r)) / n),
        ]
        for name, (config, rows) in decoders.items():
            def run(r: int, config: DecodeConfig = config, rows: int = rows) -> float:
                config.seed = r
                return generator.generate(prime, config).duration_s / (config.length * rows)
            jobs.append((name, run))
        for job in jobs:  # warm-up
            job[1](0)
        for r in range(budget.sample_rounds):
            before = floor()
            for name, job in jobs[r % len(jobs):] + jobs[: r % len(jobs)]:  # rotate the order each round
                per_char[name].append(job(r))
                after = floor()  # each run is bracketed by floor measurements: its ratio uses their mean
                floor_near[name].append((before + after) / 2)
                per_char["floor1"].append(after)
                before = after
    policy = thread_policy_check(generator, budget.policy_len, 3)
    rounds = range(budget.sample_rounds)

    def ratio(a: str, b: str) -> list[float]:
        return [per_char[a][r] / per_char[b][r] for r in rounds]

    def over_floor(name: str) -> list[float]:
        return [t / f for t, f in zip(per_char[name], floor_near[name])]

    rows = []
    for name in ["nn.LSTM", *decoders]:
        label = "nn.LSTM called once per char (baseline)" if name == "nn.LSTM" else name
        rows.append([label, fmt(per_char[name], 1, 1e6), fmt([1 / t for t in per_char[name]]),
                     fmt(ratio("nn.LSTM", name), 2), fmt(over_floor(name), 2)])
    rows.append([f"memory floor: 1-row mat-vecs over {floor_bytes / 2**20:.1f} MiB of weights",
                 fmt(per_char["floor1"], 1, 1e6), "–", "–", "1"])
    rows.append(["the same products with 8 rows (8 beams' floor)", fmt(per_char["floor8"], 1, 1e6),
                 "–", "–", fmt(over_floor("floor8"), 2)])
    bandwidth = floor_bytes / statistics.median(per_char["floor1"]) / 1e9
    targets = [
        ("batch-1 sampling vs nn.LSTM per char (speed-up)", ratio("nn.LSTM", "sample (batch 1, T=1)"), "≥ 5", True),
        ("batch-1 sampling time per char / memory floor", over_floor("sample (batch 1, T=1)"), "≤ 1.5", False),
        ("beam width 8 / batch-1 sampling, time per generated char",
         ratio("beam width 8 (n-gram block 12)", "sample (batch 1, T=1)"), "≤ 2", False),
    ]
    cfg = model.config
    lines = [f"### Sampling ({cfg.layers}×{cfg.hidden} {cfg.cell.upper()}, vocab {cfg.vocab_size}, "
             f"1 thread as `Generator` uses, {n} chars per run)", "",
             f"Weights: {weights_note}. Time per generated character (for 8 samples: per character of each "
             "sample, i.e. per step / 8), median (min–max) over "
             f"{budget.sample_rounds} rounds, each round running every row once in rotated order; "
             "speed-ups are taken within each round, and `× memory floor` against the mean of the floor "
             "measured just before and just after that very run.", ""]
    lines += table(["decoder", "µs / char", "chars/s", "speed-up vs nn.LSTM loop", "× memory floor"], rows)
    lines += ["", "Memory floor = the `torch.mm` calls that read each weight matrix one step needs once, at batch 1: "
              "W_hh of layer 0, [W_ih | W_hh] of every later layer as one matrix, the head (layer 0's input "
              f"projection is a per-token table lookup); {bandwidth:.0f} GB/s here. The 8-row products bound "
              "beam width 8 from below: at 8 rows MKL's fp32 GEMM is compute-bound on one core.", "", *policy, "",
              "| acceptance ratio | measured median (min–max) | target | met |", "|---|---|---|---|"]
    for label, values, target, higher in targets:
        mid = statistics.median(values)
        met = mid >= float(target[2:]) if higher else mid <= float(target[2:])
        lines.append(f"| {label} | {fmt(values, 2)} | {target} | {'yes' if met else 'no'} |")
    beam, floor8 = "beam width 8 (n-gram block 12)", per_char["floor8"]
    bound = [floor8[r] / per_char["sample (batch 1, T=1)"][r] for r in rounds]
    rest = [1 - floor8[r] / per_char[beam][r] for r in rounds]
    gemm = [2 * 8 * floor_bytes / 4 / t / 1e9 for t in floor8]
    lines += ["", f"Beam width 8 against batch-1 sampling is bounded below by its 8-row products alone: they take "
              f"{fmt(bound, 2)}× a whole batch-1 sampling step here (one core's fp32 GEMM at 8 rows: "
              f"{fmt(gemm, 1)} GFLOP/s, compute-bound, where 1 row is bandwidth-bound); the remaining "
              f"~{statistics.median(rest):.0%} (median) of a beam step is its bookkeeping and 8-row element-wise "
              "work.", "",
              load_note(meter), ""]
    return lines


# ----------------------------------------------------------------------------- cells at equal wall-clock

def cells_section(budget: Budget, corpus: Corpus, workdir: Path) -> tuple[list[str], Path | None]:
    from chargen.runs.start import start_run

    meter = LoadMeter()
    preset = budget.cell_preset
    rows, lstm_run = [], None
    for cell in ("lstm", "gru", "rnn"):
        config = TrainConfig(batch_size=BATCH, seq_len=SEQ, minutes=budget.cell_s / 60, eval_every=10**9, seed=1337)
        result = start_run([corpus.path], config, preset=preset, model_overrides={"cell": cell},
                           run_name=f"cells-{cell}", out=workdir, progress=False, warn=lambda message: None)
        params = CharRNN(ModelConfig(vocab_size=corpus.vocab, cell=cell, **{
            k: v for k, v in PRESETS[preset].items() if k != "dropout"})).num_parameters()
        val = result.last_val_loss if result.last_val_loss is not None else math.nan
        rows.append([cell, f"{params:,}", f"{budget.cell_s:.0f} s", f"{result.step:,}",
                     f"{result.step * BATCH * SEQ / budget.cell_s:,.0f}", f"{val:.4f}", f"{val / math.log(2):.3f}"])
        if cell == "lstm":
            lstm_run = result.run_dir
    p = PRESETS[preset]
    lines = [f"### Cells at equal wall-clock time ({preset}: {p['layers']}×{p['hidden']}, emb {p['embedding']}; "
             f"batch {BATCH} × seq {SEQ}, `chargen train --minutes {budget.cell_s / 60:.2f}`)", ""]
    lines += table(["cell", "params", "training time", "steps", "chars/s", "val loss (nats/char)", "bpc"], rows)
    lines += ["", "Each cell trains through `chargen.runs.start_run` for the same wall-clock budget (its lr "
              "schedule fitted to it, no evaluation inside the budget), then is scored on the whole validation "
              "split (last 10%). Equal size means equal layers × hidden, so parameter counts differ: 4 gates, "
              f"3 or 1. {load_note(meter)}", ""]
    return lines, lstm_run


# ----------------------------------------------------------------------------- report

def machine_lines(args: argparse.Namespace, corpus: Corpus, load_start: tuple[float, float, float]) -> list[str]:
    flags = ", ".join(f"{name} {'yes' if have else 'no'}" for name, have in cpu_flags().items())
    return [
        f"Command: `{shlex.join(getattr(sys, 'orig_argv', sys.argv))}`"
        f" ({'quick' if args.quick else 'full'} run, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z})",
        "",
        f"- CPU: {cpu_model()}, {cores()} cores usable; flags: {flags}",
        f"- torch {torch.__version__}, {torch.get_num_threads()} intra-op threads by default; "
        f"Python {sys.version.split()[0]}",
        f"- corpus: {corpus.note}; {len(corpus.ids):,} chars, vocab {corpus.vocab}, "
        f"split {len(corpus.train):,} train / {len(corpus.val):,} val (nanoGPT: first 90% / last 10%)",
        f"- load average at start: {' / '.join(f'{v:.2f}' for v in load_start)} (1/5/15 min)",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets (about 2 minutes in all)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="Markdown file to update")
    parser.add_argument("--corpus", type=Path, help="text file (default: tinyshakespeare if present, else fables)")
    args = parser.parse_args(argv)
    budget = Budget(args.quick)
    started, whole = time.monotonic(), LoadMeter()
    load_start = os.getloadavg()
    corpus = load_corpus(args.corpus)
    n_threads = torch.get_num_threads()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    lines = ["## Performance (benchmarks/run.py)", ""] + machine_lines(args, corpus, load_start) + [""]
    progress("matmul peak")
    peak_lines, peak = matmul_section(budget, n_threads)
    progress("training throughput")
    train_lines, medium_cps = training_section(budget, corpus, peak)
    progress("precision")
    precision_lines = precision_section(corpus, medium_cps)
    with tempfile.TemporaryDirectory(prefix="chargen-bench-") as tmp:
        progress(f"cells at equal wall-clock ({budget.cell_s:.0f} s each)")
        cell_lines, lstm_run = cells_section(budget, corpus, Path(tmp))
        progress("sampling")
        codec = TextCodec.fit([corpus.path])
        medium = ModelConfig(vocab_size=corpus.vocab, **{k: v for k, v in PRESETS["medium"].items() if k != "dropout"})
        if budget.cell_preset == "medium" and lstm_run is not None:
            from chargen.runs.checkpoint import load_checkpoint
            from chargen.runs.layout import BEST

            model = load_checkpoint(lstm_run / BEST).model
            weights_note = f"the medium LSTM trained above for {budget.cell_s:.0f} s"
        else:
            torch.manual_seed(0)
            model = CharRNN(medium)
            weights_note = "random initialisation (--quick trains no medium model)"
        sample_lines = sampling_section(budget, model.eval(), codec, weights_note)
    others = whole.others_cores()
    elapsed = time.monotonic() - started
    lines += peak_lines + train_lines + precision_lines + sample_lines + cell_lines
    lines += [f"Whole run: {elapsed:.0f} s; other processes used "
              + (f"{others:.2f}" if others is not None else "an unknown share")
              + f" of {cores()} cores on average; load average at the end "
              + " / ".join(f"{v:.2f}" for v in os.getloadavg()) + ". "
              + ("Figures were taken while other processes were running: compare ratios, not absolutes."
                 if others is not None and others > 0.2 else "")]
    body = "\n".join(lines)
    print(body)
    write_section(args.out, body, START, END)
    progress(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
