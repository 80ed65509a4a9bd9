"""Does a labelled model use its labels? The validation-loss matrix, and for music each label's polyphony.

    python -m benchmarks.labels RUN [--samples 4] [--length 1500] [--temperature 1.0] [--seed 1]

Matrix: row = the label whose validation part is scored (each label's last
``val_fraction`` of tokens, as training split it), column = the label the model
is given; nats per token through :func:`chargen.scoring.evaluate.label_loss_matrix`,
the computation behind the validation loss. A model that uses its labels scores
every row best in its own column (bold).

For a MIDI run, samples are generated with each label (and without one) and
read back as ``benchmarks.music.stats`` reads them; polyphony is its
time-weighted mean number of sounding notes, beside the same figure for each
label's corpus files.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.music.settings import MAX_NOTE_S
from benchmarks.music.stats import Summary, read_back
from benchmarks.music_quality import corpus_summary
from chargen.runs.checkpoint import load_checkpoint
from chargen.runs.layout import LABELS, TOKENS, read_run_json
from chargen.runs.lookup import resolve_checkpoint
from chargen.sampling import DecodeConfig, Generator
from chargen.scoring.evaluate import label_loss_matrix
from chargen.training.data import load_tokens, split_tokens


def loss_table(run: str) -> tuple[str, bool]:
    """The matrix as Markdown, and whether the right label is best in every row."""
    weights = resolve_checkpoint(run)
    loaded = load_checkpoint(weights)
    run_dir = weights.parent
    recorded = read_run_json(run_dir) or {}
    corpus, train_config = recorded.get("corpus", {}), recorded.get("train_config", {})
    names = loaded.config.labels
    if not names:
        raise SystemExit(f"{run}: not a labelled model")
    split = split_tokens(load_tokens(run_dir / TOKENS), train_config["val_fraction"], 1, 1,
                         corpus.get("train_tokens"), load_tokens(run_dir / LABELS))
    assert split.val_labels is not None
    matrix = label_loss_matrix(loaded.model, split.val, split.val_labels, train_config["seq_len"])
    counts = np.bincount(np.asarray(split.val_labels), minlength=len(names))
    lines = ["| validation of \\ label given | " + " | ".join(names) + " | tokens |",
             "|---|" + "---:|" * (len(names) + 1)]
    for true, name in enumerate(names):
        cells = [f"**{v:.3f}**" if given == true else f"{v:.3f}" for given, v in enumerate(matrix[true])]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {counts[true]:,} |")
    right_best = all(int(np.argmin(row)) == true for true, row in enumerate(matrix))
    return "\n".join(lines), right_best


def polyphony_table(run: str, samples: int, length: int, temperature: float, seed: int) -> str:
    """Each label's corpus polyphony beside that of samples generated with the label (MIDI runs)."""
    weights = resolve_checkpoint(run)
    loaded = load_checkpoint(weights)
    corpus_paths = (read_run_json(weights.parent) or {}).get("corpus", {}).get("paths", [])
    generator = Generator(loaded.model, loaded.codec)
    vocab = loaded.codec.vocab
    lines = ["| label | corpus polyphony | sampled polyphony | notes/s sampled |", "|---|---:|---:|---:|"]
    names: Sequence[str | None] = [*loaded.config.labels, None]
    for index, name in enumerate(names):
        corpus_cell = "–"
        if name is not None and len(corpus_paths) == len(loaded.config.labels):
            corpus = corpus_summary(Path(corpus_paths[index]))
            corpus_cell = f"{corpus.statistics(None)['polyphony']:.2f}"
        result = generator.generate(None, DecodeConfig(length=length, temperature=temperature, num_samples=samples,
                                                       seed=seed, label=name))
        stats = Summary([read_back(s.ids, vocab, MAX_NOTE_S) for s in result.samples]).statistics(None)
        lines.append(f"| {name or '(none)'} | {corpus_cell} | {stats['polyphony']:.2f} | {stats['per_s']:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="run folder, run name or weights file of a labelled model")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--length", type=int, default=1500)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    table, right_best = loss_table(args.run)
    print(table)
    print(f"\nright label best in every row: {'yes' if right_best else 'NO'}")
    if load_checkpoint(resolve_checkpoint(args.run)).codec.music:
        print()
        print(polyphony_table(args.run, args.samples, args.length, args.temperature, args.seed))


if __name__ == "__main__":
    main()
