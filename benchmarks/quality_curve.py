"""Validation loss against wall-clock minutes on tiny-shakespeare: the new defaults against the previous ones.

    python -m benchmarks.quality_curve --minutes 2 10 30 [--settings new previous] [--corpus FILE]
                                       [--out BENCHMARKS.md] [--png benchmarks/quality_curve.png]
    python -m benchmarks.quality_curve --runs 10:new 10:previous 30:new [--corpus FILE]

Every run's result is added to ``benchmarks/quality_curve.json`` (``--results``; a run of the same
corpus, budget and setting replaces the older one), and the section is written from all the results
there, so budgets measured in separate sessions of the benchmark share one table (each row keeps its
own date and load averages).

Runs ``chargen train CORPUS --minutes M`` for each budget and each setting, back
to back (for each budget: new, then previous), reads the validation curve each
run recorded in its state file, and writes a Markdown section (between markers)
and a PNG plot. "new" is chargen's defaults as they are (precision, threads and
model size chosen by measurement); "previous" is the defaults before issue 14:
``--size medium --batch-size 32 --lr 3e-3 --precision fp32``. The new defaults' runs spend part of
their budget choosing the model size and the precision (a few seconds of timed steps: the budget
counts from the command's start, as a user's wall clock does). Corpus:
../shared/corpora/tinyshakespeare.txt (nanoGPT's split: first 90% train, last
10% validation), or the project's fables corpus where that is absent (said so).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import cpu_flags, cpu_model
from chargen.runs.checkpoint import load_state
from chargen.runs.layout import STATE

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"
BEGIN, END = "<!-- quality-curve:begin -->", "<!-- quality-curve:end -->"


#: The settings compared: chargen's defaults now, and the defaults before issue 14.
SETTINGS = {"new": [], "previous": ["--size", "medium", "--batch-size", "32", "--lr", "3e-3", "--precision", "fp32",
                                    "--ema", "0", "--weight-decay", "0"]}


def run_budget(corpus: Path, minutes: float, root: Path, setting: str = "new") -> dict:
    name = f"curve-{setting}-{minutes:g}min"
    command = [sys.executable, "-m", "chargen", "train", str(corpus), "--minutes", f"{minutes:g}",
               "--run-name", name, "--out", str(root), "--quiet", "--no-log", *SETTINGS[setting]]
    load_before = os.getloadavg()[0]
    started = time.time()
    subprocess.run(command, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    state = load_state(root / name / STATE)
    model = state.get("model_config", {})
    return {"corpus": corpus.name, "date": datetime.date.today().isoformat(), "setting": setting,
            "model": f"{model.get('layers')}x{model.get('hidden')}"
                     + (f" drop {model['dropout']:g}" if model.get("dropout") else "")
                     + (f" weight drop {model['weight_drop']:g}" if model.get("weight_drop") else ""),
            "train_loss": state["evals"][-1].get("train_loss") if state["evals"] else None,
            "minutes": minutes, "evals": state["evals"], "best": float(state["best_val"]),
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
    corpus = results[0]["corpus"]
    for result in (r for r in results if r["corpus"] == corpus):
        xs = [e["minutes"] for e in result["evals"]]
        ys = [e["val_loss"] for e in result["evals"]]
        ax.plot(xs, ys, marker="o", markersize=3, linestyle="-" if result["setting"] == "new" else "--",
                label=f"{result['setting']} {result['model']}, --minutes {result['minutes']:g}")
    ax.axhline(1.4697, color="grey", linestyle="--", linewidth=1, label="nanoGPT shakespeare_char (A100)")
    ax.set_xlabel("wall-clock minutes")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_ylim(1.3, 2.2)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"chargen on {corpus}: new defaults against previous (medium, fp32)")
    fig.tight_layout()
    fig.savefig(png)
    return True


def load_results(path: Path) -> list[dict]:
    try:
        return list(json.loads(path.read_text()))
    except FileNotFoundError:
        return []


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it (the report names the file it used)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 10, 30])
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["new", "previous"])
    parser.add_argument("--runs", nargs="+", metavar="MINUTES:SETTING",
                        help="exactly these runs, in this order (instead of --minutes x --settings)")
    parser.add_argument("--corpus", type=Path, help="text file or folder (default: tinyshakespeare, else fables)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--png", type=Path, default=REPO / "benchmarks" / "quality_curve.png")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "quality_curve.json")
    args = parser.parse_args(argv)
    corpus = args.corpus or (SHAKESPEARE if SHAKESPEARE.exists() else REPO / "corpora" / "fables.txt")
    if args.runs:
        planned = [(float(spec.split(":")[0]), spec.split(":")[1]) for spec in args.runs]
        if any(setting not in SETTINGS for _, setting in planned):
            parser.error(f"--runs: settings are {', '.join(sorted(SETTINGS))}")
    else:
        # Back to back: both settings at one budget before the next budget, so a drift of the machine's
        # speed over the hours touches both alike.
        planned = [(minutes, setting) for minutes in args.minutes for setting in args.settings]
    results = load_results(args.results)
    with tempfile.TemporaryDirectory() as tmp:
        for minutes, setting in planned:
            result = run_budget(corpus, minutes, Path(tmp), setting)
            key = (result["corpus"], result["minutes"], result["setting"])
            results = [r for r in results if (r.get("corpus"), r["minutes"], r["setting"]) != key] + [result]
            args.results.write_text(json.dumps(results, indent=1) + "\n")  # after each run: hours are not lost
    results.sort(key=lambda r: (r.get("corpus") != SHAKESPEARE.name, r.get("corpus", ""), r["minutes"],
                                r["setting"]))
    flags = ", ".join(name for name, have in cpu_flags().items() if have) or "none of interest"
    lines = [
        "## Quality at a budget (validation loss against minutes)",
        "",
        "Commands: `python -m benchmarks.quality_curve --runs M:new M:previous ... [--corpus FILE]`, "
        "i.e. `chargen train CORPUS --minutes M` with the new defaults (size, dropout, weight drop, precision and "
        f"threads chosen by measurement) and with the previous ones (`{' '.join(SETTINGS['previous'])}`), back to back "
        f"for each budget; results kept in `{_shown(args.results)}`.",
        f"Machine: {cpu_model()} (flags: {flags}), {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. tinyshakespeare: `{SHAKESPEARE}` (nanoGPT's split).",
        "",
        "| corpus | budget | setting | model | steps | best val (nats/char) | bits/char | last train loss "
        "| wall time | date | load avg before/after |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        train = f"{r['train_loss']:.4f}" if isinstance(r["train_loss"], float) else "–"
        lines.append(f"| {r.get('corpus', SHAKESPEARE.name)} | {r['minutes']:g} min | {r['setting']} | {r['model']} "
                     f"| {r['steps']} | {r['best']:.4f} | {r['best'] / 0.693147:.3f} | {train} "
                     f"| {r['wall_s'] / 60:.1f} min | {r.get('date', '–')} "
                     f"| {r['load_before']:.1f} / {r['load_after']:.1f} |")
    by = {(r.get("corpus", SHAKESPEARE.name), r["minutes"], r["setting"]): r["best"] for r in results}
    gains = [f"{c} {m:g} min: {by[(c, m, 'previous')] - by[(c, m, 'new')]:+.4f}"
             for (c, m, s) in by if s == "new" and (c, m, "previous") in by]
    if gains:
        lines += ["", "Previous minus new best validation loss (positive: the new defaults are better): "
                  + "; ".join(gains) + "."]
    new_runs = sorted((r for r in results if r["setting"] == "new" and r.get("corpus") == results[0].get("corpus")),
                      key=lambda r: r["minutes"])
    if len(new_runs) > 1:
        lines += ["", f"New defaults on {results[0].get('corpus')}, each budget against the next shorter one: "
                  + "; ".join(f"{b['minutes']:g} min {b['best']:.4f} vs {a['minutes']:g} min {a['best']:.4f} "
                              f"({a['best'] - b['best']:+.4f})" for a, b in zip(new_runs, new_runs[1:])) + "."]
    longest = max((r for r in results if r.get("corpus") == results[0].get("corpus")), key=lambda r: r["minutes"])
    lines += ["", f"Curve of the longest run ({longest['setting']}, --minutes {longest['minutes']:g}; "
              "every evaluation):",
              "", "| minutes | step | val loss |", "|---:|---:|---:|"]
    for e in longest["evals"]:
        lines.append(f"| {e['minutes']:.1f} | {e['step']} | {e['val_loss']:.4f} |")
    if plot(results, args.png):
        shown = os.path.relpath(args.png.resolve(), args.out.resolve().parent)  # a link that works from the .md
        lines += ["", f"![validation loss against minutes]({shown})"]
    text = "\n".join(lines)
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
