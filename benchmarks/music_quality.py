"""How much a MIDI model's samples sound like its corpus: texture statistics as a Markdown table.

    python -m benchmarks.music_quality CHECKPOINT CORPUS_DIR [--length 3000] [--samples 3]
        [--temperatures 0.8 1.0 1.2] [--beam-width 4] [--seed 1] [--cap K] [--max-hold-s S] [--out FILE]

Rows: the corpus, then samples at each temperature and one beam search, each
decoded without the MIDI grammar (today's decoder) and with it
(:mod:`chargen.codecs.midi.grammar`, polyphony cap K: the checkpoint's stored cap, or
else the corpus's 99th percentile of simultaneous notes over time), the latter
twice: the cap alone, and with ``max_hold`` set to the checkpoint's longest
hold (the model must release a note before then: the decoder's default; the
corpus's 99th percentile of note length, at most the export's held-note cap,
or that cap for an older checkpoint without its run's tokens). Every piece, corpus file
or sample, goes the same way: token ids (the corpus encoded by the checkpoint's
codec) -> :func:`chargen.codecs.midi.export.decode_to_midi` -> a Standard MIDI File
read back by pretty_midi, which the statistics are taken from. Samples are
exported with the held-note cap ``--max-note-s`` (5 s, as ``chargen sample``
does); the corpus without it, so that its own long notes count as such.

The columns, pooled over all pieces of a row:

* polyphony: time-weighted mean number of sounding notes while at least one
  sounds, i.e. the total duration of all notes over the length of time during
  which any note sounds (rests excluded; a four-voice chorale scores about 4).
* pitch mean ± sd: mean and standard deviation of MIDI pitch over notes (each
  note counts once, whatever its length).
* PCP distance: distance of the row's pitch-class profile from the corpus's.
  A piece's profile is its duration-weighted pitch-class histogram (seconds of
  sounding per pitch class, 12 values summing to 1) sorted in descending order
  ("key-sorted": the most-sounded class first, so the piece's key and any
  transposition do not matter, only how its time spreads over the classes); a
  row's profile is the mean of its pieces' sorted profiles; the distance is
  the total variation 0.5 * sum |p_i - q_i|, in [0, 1] (0 for the corpus).
* note length median and IQR: of note durations in seconds, as exported
  (after the held-note cap), IQR = 75th - 25th percentile.
* notes/s: number of notes over the summed length of the pieces (from 0 to
  the last note's end).
* cut: the share of notes that the held-note cap ends, i.e. notes longer than
  ``--max-note-s`` in the token stream (for the corpus: longer in the corpus).

Generation is on the CPU and takes minutes for the default 3,000 tokens; do
not run it on a shared machine for figures that matter.
"""

from __future__ import annotations

import argparse
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from chargen.codecs.midi import MidiCodec, MidiVocab, ids_to_notes
from chargen.codecs.midi.export import decode_to_midi
from chargen.codecs.midi.texture import polyphony_cap
from chargen.errors import ChargenError, CorruptFileError
from chargen.runs.checkpoint import load_checkpoint
from chargen.runs.lookup import resolve_checkpoint
from chargen.sampling import DecodeConfig, Generator, learnt_max_hold_s
from chargen.training.data import find_corpus_files

MAX_NOTE_S = 5.0


@dataclass
class Notes:
    """The notes of one exported piece as pretty_midi reads them, and how many the held-note cap cut."""

    start: np.ndarray
    end: np.ndarray
    pitch: np.ndarray
    cut: int = 0

    @property
    def duration(self) -> np.ndarray:
        return self.end - self.start


def read_back(ids: Sequence[int], vocab: MidiVocab, max_note_s: float | None, cut_s: float) -> Notes:
    """Export ``ids`` as chargen writes a file (held-note cap ``max_note_s``) and read it with pretty_midi.

    ``cut`` counts the notes of the stream longer than ``cut_s``: those the cap ends.
    """
    import pretty_midi

    notes = ids_to_notes(ids, vocab)
    longest = max(1, round(cut_s * 1000 / vocab.step_ms))
    cut = sum(n.end - n.start > longest for n in notes)
    if not notes:
        empty = np.zeros(0)
        return Notes(empty, empty, empty)
    buffer = io.BytesIO()
    decode_to_midi(ids, vocab=vocab, max_note_s=max_note_s).save(file=buffer)
    buffer.seek(0)
    with warnings.catch_warnings():  # pretty_midi warns about meta events it does not need
        warnings.simplefilter("ignore")
        read = [n for inst in pretty_midi.PrettyMIDI(buffer).instruments if not inst.is_drum for n in inst.notes]
    return Notes(np.array([n.start for n in read]), np.array([n.end for n in read]),
                 np.array([n.pitch for n in read]), cut)


def sounding_time(notes: Notes) -> float:
    """Seconds during which at least one note sounds (the union of the notes' intervals)."""
    if not len(notes.start):
        return 0.0
    times = np.concatenate([notes.start, notes.end])
    change = np.concatenate([np.ones(len(notes.start)), -np.ones(len(notes.end))])
    order = np.lexsort((change, times))  # at one time, ends (-1) before starts
    times, running = times[order], np.cumsum(change[order])
    return float(np.sum(np.diff(times)[running[:-1] > 0]))


def pitch_class_profile(notes: Notes) -> np.ndarray:
    """Duration-weighted pitch-class histogram summing to 1, sorted descending (see the module docstring)."""
    profile = np.bincount(notes.pitch.astype(np.int64) % 12, weights=notes.duration, minlength=12)
    total = profile.sum()
    return np.sort(profile / total)[::-1] if total > 0 else np.zeros(12)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(p - q).sum())


@dataclass
class Row:
    source: str
    decoder: str
    grammar: str
    pieces: list[Notes] = field(default_factory=list)

    @property
    def notes(self) -> Notes:
        return Notes(*(np.concatenate([getattr(p, name) for p in self.pieces] or [np.zeros(0)])
                       for name in ("start", "end", "pitch")), sum(p.cut for p in self.pieces))

    def profile(self) -> np.ndarray:
        profiles = [pitch_class_profile(p) for p in self.pieces if len(p.pitch)]
        return np.mean(profiles, axis=0) if profiles else np.zeros(12)

    def stats(self, corpus_profile: np.ndarray) -> dict[str, float]:
        """The table's figures for this row (NaN where there are no notes)."""
        pooled = self.notes
        count = len(pooled.pitch)
        if not count:
            return dict.fromkeys(("polyphony", "pitch_mean", "pitch_sd", "pcp", "median", "iqr", "per_s", "cut"),
                                 float("nan"))
        q25, median, q75 = np.percentile(pooled.duration, [25, 50, 75])
        span = sum(float(p.end.max()) for p in self.pieces if len(p.end))
        return {
            "polyphony": float(pooled.duration.sum()) / sum(sounding_time(p) for p in self.pieces),
            "pitch_mean": float(pooled.pitch.mean()),
            "pitch_sd": float(pooled.pitch.std()),
            "pcp": total_variation(self.profile(), corpus_profile),
            "median": float(median),
            "iqr": float(q75 - q25),
            "per_s": count / span if span > 0 else float("nan"),
            "cut": pooled.cut / count,
        }


@dataclass(frozen=True)
class GrammarSettings:
    """The MIDI grammar's settings for one row (see :class:`chargen.codecs.midi.grammar.MidiGrammar`)."""

    cap: int  # polyphony cap, 0 = none
    max_hold_s: float = 0.0  # longest note in seconds, 0 = no limit

    def label(self) -> str:
        hold = f", hold <= {self.max_hold_s:g} s" if self.max_hold_s else ""
        return f"on, cap {self.cap}{hold}"


def decode_config(base: DecodeConfig, grammar: GrammarSettings | None) -> DecodeConfig:
    """``base`` without the MIDI grammar (None: switched off explicitly, as it is on by default) or with it."""
    if grammar is None:
        return replace(base, grammar=False)
    return replace(base, grammar=True, max_polyphony=grammar.cap, max_hold_s=grammar.max_hold_s)


def corpus_row(files: Sequence[Path], codec: MidiCodec, max_note_s: float) -> tuple[Row, np.ndarray]:
    """The corpus's row (exported without the held-note cap) and all its token ids; unreadable files left out."""
    row = Row("corpus", "", "")
    encoded = []
    for path in files:
        try:
            ids = codec.encode_file(path)
        except CorruptFileError:
            continue
        encoded.append(ids)
        piece = read_back(ids.tolist(), codec.vocab, None, max_note_s)
        if len(piece.pitch):
            row.pieces.append(piece)
    return row, (np.concatenate(encoded) if encoded else np.zeros(0, dtype=np.int64))


def sample_rows(generator: Generator, grammars: Sequence[GrammarSettings], temperatures: Sequence[float],
                beam_width: int, length: int, samples: int, seed: int, max_note_s: float) -> list[Row]:
    """For each decoder setting, a row without the grammar and one per ``grammars``."""
    settings = [(f"sample T={t:g}", DecodeConfig(length=length, temperature=t, num_samples=samples, seed=seed))
                for t in temperatures]
    if beam_width:
        settings.append((f"beam {beam_width}", DecodeConfig(length=length, beam_width=beam_width, seed=seed)))
    rows = []
    for name, base in settings:
        for grammar in (None, *grammars):
            row = Row("model", name, "off" if grammar is None else grammar.label())
            result = generator.generate(None, decode_config(base, grammar))
            row.pieces = [read_back(s.ids, generator.codec.vocab, max_note_s, max_note_s) for s in result.samples]
            rows.append(row)
    return rows


def fmt(value: float, digits: int = 2) -> str:
    return "–" if value != value else f"{value:.{digits}f}"  # NaN: no notes


def table(rows: Sequence[Row], corpus_profile: np.ndarray) -> str:
    lines = ["| source | decoder | grammar | pieces | notes | polyphony | pitch mean ± sd | PCP distance | "
             "note length median (IQR) s | notes/s | cut by the held-note cap |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        s = row.stats(corpus_profile)
        lines.append(
            f"| {row.source} | {row.decoder} | {row.grammar} | {len(row.pieces)} | {len(row.notes.pitch)} | "
            f"{fmt(s['polyphony'])} | {fmt(s['pitch_mean'], 1)} ± {fmt(s['pitch_sd'], 1)} | {fmt(s['pcp'], 3)} | "
            f"{fmt(s['median'])} ({fmt(s['iqr'])}) | {fmt(s['per_s'], 1)} | {fmt(100 * s['cut'], 1)} % |")
    return "\n".join(lines)


def report(checkpoint: str, corpus: Path, length: int, samples: int, temperatures: Sequence[float],
           beam_width: int, seed: int, cap: int | None, max_note_s: float, max_hold_s: float | None = None) -> str:
    loaded = load_checkpoint(resolve_checkpoint(checkpoint))
    codec = loaded.codec
    if not isinstance(codec, MidiCodec):
        raise ChargenError(f"{loaded.path}: not a MIDI model (codec {codec.name})")
    _, files = find_corpus_files([corpus], "midi")
    corpus_stats, corpus_ids = corpus_row(files, codec, max_note_s)
    if not corpus_stats.pieces:
        raise ChargenError(f"{corpus}: no readable MIDI file with notes")
    stored = loaded.training.get("polyphony_cap")
    if cap is None:
        cap, cap_source = ((int(stored), "stored in the checkpoint") if stored is not None else
                           (polyphony_cap(corpus_ids, codec.vocab),
                            "the corpus's 99th percentile of simultaneous notes over time"))
    else:
        cap_source = "given with --cap"
    if max_hold_s is None:
        max_hold_s, hold_source = learnt_max_hold_s(loaded)
    else:
        hold_source = "given with --max-hold-s"
    # The cap alone, then with notes held at most as long as the decoder's default lets them (the learnt hold).
    grammars = [GrammarSettings(cap), GrammarSettings(cap, max_hold_s)]
    rows = [corpus_stats, *sample_rows(Generator.from_checkpoint(loaded), grammars, temperatures, beam_width, length,
                                       samples, seed, max_note_s)]
    head = (f"Checkpoint `{loaded.path}`, corpus `{corpus}` ({len(corpus_stats.pieces)} files with notes). "
            f"{samples} samples of {length} tokens per temperature, one beam of {length}; seed {seed}; "
            f"samples exported with a {max_note_s:g} s held-note cap. Polyphony cap {cap} ({cap_source}); "
            f"longest hold {max_hold_s:g} s ({hold_source}).")
    return head + "\n\n" + table(rows, corpus_stats.profile())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint file, run folder or run name")
    parser.add_argument("corpus", type=Path, help="the folder of MIDI files the model was trained on")
    parser.add_argument("--length", type=int, default=3000, help="tokens per sample")
    parser.add_argument("--samples", type=int, default=3, help="samples per temperature")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.8, 1.0, 1.2])
    parser.add_argument("--beam-width", type=int, default=4, help="0: no beam search row")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cap", type=int, help="polyphony cap [default: the checkpoint's, else the corpus's]")
    parser.add_argument("--max-hold-s", type=float, help="longest hold under the grammar [default: the checkpoint's]")
    parser.add_argument("--max-note-s", type=float, default=MAX_NOTE_S, help="held-note cap of the export")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args(argv)
    try:
        text = report(args.checkpoint, args.corpus, args.length, args.samples, args.temperatures,
                      args.beam_width, args.seed, args.cap, args.max_note_s, args.max_hold_s)
    except ChargenError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
