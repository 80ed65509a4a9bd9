"""``chargen sample``: generate from a trained model (a thin client of ``chargen.load(...).generation``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from chargen.cli.group import cli, warn
from chargen.cli.options import given, spec_options
from chargen.cli.types import HUGE, FiniteFloat, InputFile, OutputFile, RunOrPath
from chargen.sampling.config import DecodeConfig

#: Streamed text is flushed at most this often (seconds), and at the first token and the end.
STREAM_FLUSH_S = 0.05
#: Tokens of --prime-midi used by default (chargen.api.model.DEFAULT_PRIME_TOKENS; spelled out: no torch for --help).
PRIME_TOKENS = 200


@cli.command()
@click.option("--checkpoint", "-c", type=RunOrPath(), metavar="PATH|RUN",
              help="Weights file, run folder or run name [default: newest run].")
@spec_options(DecodeConfig)
@click.option("--prime", help="Text to start from (must use the model's characters).")
@click.option("--prime-file", type=InputFile(), help="Read the prime text from a file.")
@click.option("--prime-midi", type=InputFile(), help="MIDI models: prime with the start of this .mid file.")
@click.option("--prime-len", type=click.IntRange(1, HUGE), default=PRIME_TOKENS, show_default=True,
              help="Tokens of --prime-midi to use.")
@click.option("--format", "output_format", type=click.Choice(["text", "midi"]),
              help="text: tokens on stdout; midi: write .mid files [default: midi for MIDI models].")
@click.option("--output", "-o", type=OutputFile(),
              help="MIDI output file [default: chargen-<time>.mid]; with -n N, numbered files. "
              "A .wav name also renders audio (needs fluidsynth).")
@click.option("--tempo", type=FiniteFloat(20, 400), default=120.0, show_default=True,
              help="MIDI export: tempo written in the file (timing itself is absolute).")
@click.option("--program", type=click.IntRange(0, 127), default=0, show_default=True,
              help="MIDI export: General MIDI instrument (0 = piano).")
@click.option("--max-note-seconds", type=FiniteFloat(min=0, max=3600, min_open=True), default=5.0, show_default=True,
              help="MIDI export: end notes held longer than this (a key the model never released).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where batched steps (-n N) may run: auto is CUDA where present, from the batch size measured "
              "to pay there; the tokens are chosen on the CPU either way.")
@click.option("--json", "as_json", is_flag=True, help="Print samples with log-probabilities as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No summary line on stderr.")
@click.option("--database", metavar="URL", help="History database [default: $CHARGEN_DATABASE_URL, "
              "else $CHARGEN_HOME/history.db].")
@click.option("--no-log", is_flag=True, help="Do not record this generation in the history.")
@click.option("--require-log", is_flag=True, help="Exit 1 if the generation could not be logged.")
def sample(checkpoint: str | None, prime: str | None, prime_file: Path | None, prime_midi: Path | None,
           prime_len: int, output_format: str | None, output: Path | None, tempo: float, program: int,
           max_note_seconds: float, device: str, as_json: bool, quiet: bool, database: str | None, no_log: bool,
           require_log: bool, **options: Any) -> None:
    """Generate from a trained model; only generated text goes to stdout.

    For MIDI models the samples are written as .mid files (-o) and their paths
    reported on stderr; --format text prints the token stream instead.
    """
    from chargen.api import load
    from chargen.codecs.midi.audio import is_audio_path
    from chargen.codecs.midi.export import output_paths
    from chargen.files.user_paths import read_text_file

    if sum(x is not None for x in (prime, prime_file, prime_midi)) > 1:
        raise click.UsageError("give only one of --prime, --prime-file and --prime-midi")
    if prime_file is not None:
        prime = read_text_file(prime_file)  # bounded; BOM and CRLF as in a corpus
    model = load(checkpoint, database=database, log=not no_log, report=warn, device=device)
    output_format = output_format or ("midi" if model.is_music else "text")
    if output_format == "midi" and not model.is_music:
        raise click.UsageError(f"--format midi needs a MIDI model; this one uses the {model.codec.name} codec")
    if is_audio_path(output) and output_format != "midi":
        raise click.UsageError("-o FILE.wav renders music: it needs a MIDI model and --format midi")
    if output is not None and output_format == "text":
        raise click.UsageError("-o/--output names .mid files; text goes to stdout (redirect it: > FILE)")
    if prime_midi is not None:
        prime = model.midi_prime(prime_midi, prime_len)
    options = given(options)
    length, n = options.pop("length", None), options.pop("num_samples", 1)
    config = model.config(length, n, **options)  # every rule checked before anything is printed
    stream = not as_json and n == 1 and config.decoder != "beam" and output_format == "text"
    out = sys.stdout
    if stream:
        result = _stream(model.generate(prime or "", length, stream=True, **options), prime or "", out)
    else:
        target = (output or output_paths(None, 1)[0]) if output_format == "midi" else None
        result = model.generation(prime or "", length, n, output=target, tempo_bpm=tempo, program=program,
                                  max_note_s=max_note_seconds, **options)
        _print(result, prime or "", output_format, as_json, quiet, model, out)
    out.flush()
    if model.log and result.history_id is None and require_log:
        sys.exit(1)
    if not quiet:
        logprob = sum(s.logprob for s in result.samples)
        tokens = sum(len(s.ids) for s in result.samples)
        logged = f", logged {result.history_id}" if result.history_id else ""
        warn(f"{result.config.decoder}, seed {result.config.seed}: {result.tokens} tokens in "
             f"{result.duration_s:.2f}s ({result.tokens_per_s:,.0f}/s), log-prob {logprob:.2f} "
             f"({-logprob / max(tokens, 1):.3f} nats/token){logged}")


def _stream(text: Any, prime: str, out: Any) -> Any:
    """Write a TextStream to ``out`` as it comes (the prime first), flushing ~20 times a second."""
    out.write(prime)
    last_flush = -STREAM_FLUSH_S  # the first token is flushed at once
    for chunk in text:
        out.write(chunk)
        now = time.monotonic()
        if now - last_flush >= STREAM_FLUSH_S:
            out.flush()
            last_flush = now
    out.write("\n")
    return text.result


def _print(result: Any, prime: str, output_format: str, as_json: bool, quiet: bool, model: Any, out: Any) -> None:
    for item in result.samples:
        if item.midi_path is not None and not quiet:
            stats = item.midi_stats
            warn(f"wrote {item.midi_path}" + (f" and {item.wav_path}" if item.wav_path else "")
                 + f" ({stats.notes} notes, {stats.duration_s:.1f} s)")
    if as_json:
        data = dict(result.to_dict(), checkpoint=str(model.path), history_id=result.history_id)
        for item, sample in zip(data["samples"], result.samples):
            if sample.midi_path is not None:
                item["midi_path"] = str(sample.midi_path)
            if sample.wav_path is not None:
                item["wav_path"] = str(sample.wav_path)
        click.echo(json.dumps(data, ensure_ascii=False))
    elif output_format == "text":
        for i, item in enumerate(result.samples):
            if i:
                out.write("\n")
            out.write(prime + item.text + "\n")
