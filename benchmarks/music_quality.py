"""Does sampled music sound like its corpus? Texture statistics per corpus, training level, codec and decoding.

    python -m benchmarks.music_quality [--corpora midi-basics shared bach] [--samples 16] [--length 3000]
        [--short-steps 600] [--max-steps 5000] [--eval-every 100] [--patience 4] [--work DIR] [--no-publish]
    python -m benchmarks.music_quality --checkpoint RUN --corpus DIR [--samples 16] [--length 3000]

For each corpus (:mod:`benchmarks.music.corpora`: midi-basics, the shared
folder, music21's Bach chorales) and each training level (a short run, and one
stopped when its validation loss plateaus: :mod:`benchmarks.music.training`),
one ``small`` model per music codec (``midi-notes``, the note codec; ``midi``,
the event codec), then for each model the decoding settings of
:mod:`benchmarks.music.settings` at temperature 1.0: unconstrained, each grammar
rule alone, each learnt limit alone, the event codec's old default (every rule,
cap and hold), the default, and beam search under the default. Every piece is
read back from its .mid by pretty_midi; each figure has a 95 % bootstrap
interval over pieces (:mod:`benchmarks.music.stats`).

The figures go to ``benchmarks/results/music_quality.json``, and a Markdown
section (the command, the acceptance checks, the tables) to BENCHMARKS.md.
With ``--checkpoint``, one existing model against one corpus folder, printed only.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import REPO, publish, record
from benchmarks.music.corpora import corpora, default_cache
from benchmarks.music.report import Result, acceptance, headline, markdown
from benchmarks.music.settings import evaluate_model
from benchmarks.music.stats import Summary, read_back
from benchmarks.music.training import Level, train
from chargen.codecs.registry import codec_class, codec_for_suffix
from chargen.errors import ChargenError, CorruptFileError
from chargen.runs.checkpoint import load_checkpoint
from chargen.runs.lookup import resolve_checkpoint
from chargen.training.data import find_corpus_files

START = "<!-- benchmarks/music_quality.py: start (generated) -->"
END = "<!-- benchmarks/music_quality.py: end -->"
RESULTS = REPO / "benchmarks" / "results" / "music_quality.json"
CODECS = ("midi-notes", "midi")


def corpus_summary(folder: Path) -> Summary:
    """The corpus's pieces, encoded by the default music codec, exported without a held-note cap, read back."""
    codec = codec_class(codec_for_suffix(Path("x.mid")) or "midi").fit()
    _, files = find_corpus_files([folder], codec.name)
    pieces = []
    for path in files:
        try:
            ids = codec.encode_file(path)
        except CorruptFileError:
            continue
        pieces.append(read_back(ids.tolist(), codec.vocab, None))  # type: ignore[attr-defined]
    return Summary(pieces)


def run_all(args: argparse.Namespace) -> list[Result]:
    cache = args.work or default_cache()
    plateau = Level("plateau", args.max_steps, args.eval_every, patience=args.patience)
    results = []
    for corpus in corpora(cache, tuple(args.corpora)):
        if corpus.folder is None:
            results.append(Result(corpus.name, corpus.note, None, None, {}, {}))
            print(f"{corpus.name}: {corpus.note}", file=sys.stderr)
            continue
        reference = corpus_summary(corpus.folder)
        runs = {codec: train(corpus.folder, codec, plateau, cache / "runs", f"{corpus.name}-{codec}-plateau")
                for codec in args.codecs}
        # Short: --short-steps, or half the steps to the default codec's best validation if that is fewer
        # (a small corpus plateaus early), so that it is always the less trained of the two.
        best = runs[args.codecs[0]].best_step or args.short_steps
        short = Level("short", max(args.eval_every, min(args.short_steps, best // 2)), args.eval_every)
        for level in (short, plateau):
            models = {}
            trained = {}
            for codec in args.codecs:
                began = time.monotonic()
                run = train(corpus.folder, codec, level, cache / "runs", f"{corpus.name}-{codec}-{level.name}")
                print(f"{corpus.name} {level.name} {codec}: {run.steps} steps, best val {run.best_val} "
                      f"({time.monotonic() - began:.0f} s)", file=sys.stderr)
                trained[codec] = {"steps": run.steps, "best_val": run.best_val, "best_step": run.best_step,
                                  "weights": str(run.weights)}
                models[codec] = evaluate_model(load_checkpoint(run.weights), reference, args.samples, args.length,
                                               args.seed, args.beam_width, cache=run.run_dir)
            results.append(Result(corpus.name, corpus.note, level, reference, trained, models))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", nargs="+", default=["midi-basics", "shared", "bach"])
    parser.add_argument("--codecs", nargs="+", default=list(CODECS), help="the first is the default's codec")
    parser.add_argument("--samples", type=int, default=16, help="samples per setting (one batch; beam: runs)")
    parser.add_argument("--length", type=int, default=3000, help="tokens per sample")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--short-steps", type=int, default=600)
    parser.add_argument("--max-steps", type=int, default=5000, help="the plateau run's schedule")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--patience", type=int, default=4, help="evaluations without improvement that stop a run")
    parser.add_argument("--work", type=Path, help="corpora and runs [default: $CHARGEN_BENCH_CACHE or "
                        "~/.cache/chargen-bench]")
    parser.add_argument("--checkpoint", help="evaluate this model only (with --corpus)")
    parser.add_argument("--corpus", type=Path, help="the folder of .mid files --checkpoint was trained on")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--no-publish", action="store_true", help="print, write neither JSON nor BENCHMARKS.md")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.music_quality " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    try:
        if args.checkpoint:
            if args.corpus is None:
                parser.error("--checkpoint needs --corpus")
            loaded = load_checkpoint(resolve_checkpoint(args.checkpoint))
            if not loaded.codec.music:
                raise ChargenError(f"{loaded.path}: not a MIDI model (codec {loaded.codec.name})")
            reference = corpus_summary(args.corpus)
            if not reference.pieces:
                raise ChargenError(f"{args.corpus}: no readable MIDI file with notes")
            model = evaluate_model(loaded, reference, args.samples, args.length, args.seed, args.beam_width)
            results = [Result(args.corpus.name, str(args.corpus), None, reference, {}, {loaded.codec.name: model})]
            print(markdown(results, command))
            return 0
        results = run_all(args)
    except ChargenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    body = markdown(results, command)
    if args.no_publish:
        print(body)
        return 0
    rows = acceptance(results)
    record("music_quality", headline(rows), command, {"results": [r.to_dict() for r in results], "acceptance": rows},
           args.json)
    return publish(body, args.out, START, END)


if __name__ == "__main__":
    sys.exit(main())
