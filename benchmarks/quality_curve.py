"""Validation loss against wall-clock minutes on tiny-shakespeare, with default settings.

    python -m benchmarks.quality_curve --minutes 5 10 30 [--out BENCHMARKS.md] [--png benchmarks/quality_curve.png]

Runs ``chargen train CORPUS --minutes M`` (defaults only) for each budget, one
after another, reads the validation curve each run recorded in its state file,
and writes a Markdown section (between markers) and a PNG plot. Corpus:
../shared/corpora/tinyshakespeare.txt (nanoGPT's split: first 90% train, last
10% validation), or the project's fables corpus where that is absent (said so).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from chargen.checkpoint import STATE, load_state

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"
BEGIN, END = "<!-- quality-curve:begin -->", "<!-- quality-curve:end -->"


def run_budget(corpus: Path, minutes: float, root: Path) -> dict:
    name = f"curve-{minutes:g}min"
    command = [sys.executable, "-m", "chargen", "train", str(corpus), "--minutes", f"{minutes:g}",
               "--run-name", name, "--out", str(root), "--quiet", "--no-log"]
    load_before = os.getloadavg()[0]
    started = time.time()
    subprocess.run(command, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    state = load_state(root / name / STATE)
    return {"minutes": minutes, "evals": state["evals"], "best": float(state["best_val"]),
            "steps": int(state["step"]), "wall_s": time.time() - started, "load_before": load_before,
            "load_after": os.getloadavg()[0]}


def write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + section + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(new)


def plot(results: list[dict], png: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG (pip install matplotlib)", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for result in results:
        xs = [e["minutes"] for e in result["evals"]]
        ys = [e["val_loss"] for e in result["evals"]]
        ax.plot(xs, ys, marker="o", markersize=3, label=f"--minutes {result['minutes']:g}")
    ax.axhline(1.4697, color="grey", linestyle="--", linewidth=1, label="nanoGPT shakespeare_char (A100)")
    ax.set_xlabel("wall-clock minutes")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_ylim(1.3, 2.2)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("chargen defaults (2x512 LSTM) on tiny-shakespeare, 2-core CPU")
    fig.tight_layout()
    fig.savefig(png)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 30])
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--png", type=Path, default=REPO / "benchmarks" / "quality_curve.png")
    args = parser.parse_args()
    corpus = SHAKESPEARE if SHAKESPEARE.exists() else REPO / "corpora" / "fables.txt"
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_budget(corpus, minutes, Path(tmp)) for minutes in args.minutes]
    lines = [
        "## Quality at a budget (validation loss against minutes)",
        "",
        f"Command: `python -m benchmarks.quality_curve --minutes {' '.join(f'{m:g}' for m in args.minutes)}`, "
        f"i.e. `chargen train {corpus.name} --minutes M` with every other setting at its default "
        "(medium preset: 2x512 LSTM, embedding 128, batch 32 x 100, AdamW 3e-3, cosine to 10%).",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Corpus: `{corpus}`"
        + ("" if corpus == SHAKESPEARE else " (tiny-shakespeare absent: NOT comparable to the targets)") + ".",
        "",
        "| budget | steps | best val (nats/char) | bits/char | wall time | load avg before/after |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['minutes']:g} min | {r['steps']} | {r['best']:.4f} | {r['best'] / 0.693147:.3f} | "
                     f"{r['wall_s'] / 60:.1f} min | {r['load_before']:.1f} / {r['load_after']:.1f} |")
    lines += ["", "Curve of the longest run (every evaluation):", "",
              "| minutes | step | val loss |", "|---:|---:|---:|"]
    for e in results[-1]["evals"]:
        lines.append(f"| {e['minutes']:.1f} | {e['step']} | {e['val_loss']:.4f} |")
    if plot(results, args.png):
        shown = os.path.relpath(args.png.resolve(), args.out.resolve().parent)  # a link that works from the .md
        lines += ["", f"![validation loss against minutes]({shown})"]
    text = "\n".join(lines)
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
