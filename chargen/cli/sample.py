"""``chargen sample``: generate from a trained model."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from chargen.cli.group import cli, warn
from chargen.cli.types import (
    HUGE,
    SEED_RANGE,
    FiniteFloat,
    InputFile,
    OutputFile,
    RunOrPath,
)
from chargen.errors import ChargenError

#: Streamed text is flushed at most this often (seconds), and at the first token and the end.
STREAM_FLUSH_S = 0.05


@cli.command()
@click.option("--checkpoint", "-c", type=RunOrPath(), metavar="PATH|RUN",
              help="Weights file, run folder or run name [default: newest run].")
@click.option("--len", "length", type=click.IntRange(0, HUGE), default=500, show_default=True,
              help="Tokens (characters) to generate.")
@click.option("--temperature", "-t", type=FiniteFloat(min=0, min_open=True),
              help="Softmax temperature (> 0) [default: 1.0].")
@click.option("--top-k", type=click.IntRange(1, HUGE), help="Sample only among the k likeliest tokens.")
@click.option("--top-p", type=FiniteFloat(0, 1, min_open=True), help="Nucleus sampling threshold.")
@click.option("--greedy", is_flag=True, help="Always take the likeliest token.")
@click.option("--beam-width", type=click.IntRange(1, 1024),
              help="Beam search with K beams advanced as one batch (1 = greedy).")
@click.option("--beam-sample", is_flag=True, help="Stochastic beam search: draw candidates, keep the likeliest.")
@click.option("--no-repeat-ngram", type=click.IntRange(0, HUGE),
              help="Never repeat an n-gram of this length [default: 12 for greedy/beam, off for sampling].")
@click.option("--grammar/--no-grammar", default=None,
              help="MIDI models: decode under the MIDI grammar (note-offs only for sounding notes, no second "
              "note-on, a velocity only before a note-on, a polyphony cap, a longest hold) "
              "[default: on for MIDI models].")
@click.option("--max-polyphony", type=click.IntRange(0, 128), metavar="N",
              help="MIDI grammar: at most N notes at once; 0 = no cap [default: the cap learnt from the corpus].")
@click.option("--max-hold-s", type=FiniteFloat(0, 3600), metavar="SECONDS",
              help="MIDI grammar: no note held longer than this, the model must release it; 0 = no limit "
              "[default: the hold learnt from the corpus, at most 5 s, the export's held-note cap].")
@click.option("--prime", help="Text to start from (must use the model's characters).")
@click.option("--prime-file", type=InputFile(),
              help="Read the prime text from a file.")
@click.option("--prime-midi", type=InputFile(),
              help="MIDI models: prime with the start of this .mid file.")
@click.option("--prime-len", type=click.IntRange(1, HUGE), default=200, show_default=True,
              help="Tokens of --prime-midi to use.")
@click.option("--seed", type=SEED_RANGE, help="Seed: same seed + checkpoint + options = identical output.")
@click.option("--label", metavar="NAME", help="A labelled model: generate for this label (chargen info lists them).")
@click.option("--num-samples", "-n", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Samples generated together as one batch.")
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
@click.option("--json", "as_json", is_flag=True, help="Print samples with log-probabilities as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No summary line on stderr.")
@click.option("--database", metavar="URL", help="History database [default: $CHARGEN_DATABASE_URL, "
              "else $CHARGEN_HOME/history.db].")
@click.option("--no-log", is_flag=True, help="Do not record this generation in the history.")
@click.option("--require-log", is_flag=True, help="Exit 1 if the generation could not be logged.")
def sample(checkpoint: str | None, length: int, temperature: float | None, top_k: int | None,
           top_p: float | None, greedy: bool, beam_width: int | None, beam_sample: bool, no_repeat_ngram: int | None,
           grammar: bool | None, max_polyphony: int | None, max_hold_s: float | None, prime: str | None,
           prime_file: Path | None, prime_midi: Path | None, prime_len: int, seed: int | None, label: str | None,
           num_samples: int, output_format: str | None, output: Path | None, tempo: float, program: int,
           max_note_seconds: float, as_json: bool, quiet: bool, database: str | None, no_log: bool,
           require_log: bool) -> None:
    """Generate from a trained model; only generated text goes to stdout.

    For MIDI models the samples are written as .mid files (-o) and their paths
    reported on stderr; --format text prints the token stream instead.
    """
    from chargen.checkpoint import load_checkpoint, resolve_checkpoint
    from chargen.sampling import DecodeConfig, Generator
    from chargen.user_paths import read_text_file

    if greedy and (beam_width is not None or beam_sample):
        raise click.UsageError("--greedy and --beam-width/--beam-sample are different decoders; choose one")
    if sum(x is not None for x in (prime, prime_file, prime_midi)) > 1:
        raise click.UsageError("give only one of --prime, --prime-file and --prime-midi")
    if prime_file is not None:
        prime = read_text_file(prime_file)  # bounded; BOM and CRLF as in a corpus
    loaded = load_checkpoint(resolve_checkpoint(checkpoint))
    is_midi = loaded.codec.music
    output_format = output_format or ("midi" if is_midi else "text")
    if output_format == "midi" and not is_midi:
        raise click.UsageError(f"--format midi needs a MIDI model; this one uses the {loaded.codec.name} codec")
    from chargen.audio import find_synth, is_audio_path, render_wav

    if is_audio_path(output) and output_format != "midi":
        raise click.UsageError("-o FILE.wav renders music: it needs a MIDI model and --format midi")
    if output is not None and output_format == "text":
        raise click.UsageError("-o/--output names .mid files; text goes to stdout (redirect it: > FILE)")
    if prime_midi is not None:
        if not is_midi:
            raise click.UsageError("--prime-midi needs a MIDI model")
        prime = loaded.codec.decode(loaded.codec.encode_file(prime_midi)[:prime_len].tolist())
    # No --temperature is temperature 1 (which changes nothing): the one value greedy accepts.
    config = DecodeConfig(length=length, temperature=1.0 if temperature is None else temperature, top_k=top_k,
                          top_p=top_p, greedy=greedy, beam_width=beam_width, beam_sample=beam_sample,
                          num_samples=num_samples, no_repeat_ngram=no_repeat_ngram, seed=seed, label=label,
                          grammar=grammar, max_polyphony=max_polyphony, max_hold_s=max_hold_s)
    if (beam_width or 1) > loaded.codec.vocab_size:
        raise click.UsageError(f"--beam-width {beam_width} exceeds the model's vocabulary of "
                               f"{loaded.codec.vocab_size} tokens")
    if config.decoder == "beam" and num_samples > (beam_width or 1):
        raise click.UsageError(f"--num-samples {num_samples} exceeds --beam-width {beam_width}")
    generator = Generator.from_checkpoint(loaded)  # music: with the learnt polyphony cap
    try:
        config.validate(loaded.codec.vocab_size, generator.music)  # the decoder's rules, as the service applies them
        loaded.config.label_id(label)  # the model's label rule, as the service applies it
    except ChargenError as exc:
        raise click.UsageError(str(exc)) from None
    synth = find_synth() if is_audio_path(output) else None  # before generating: fail with nothing written
    loaded.codec.encode(prime or "")  # unknown characters fail here, before anything is printed
    checkpoint_sha256 = loaded.sha256  # before generating: the file may be replaced meanwhile
    stream = not as_json and num_samples == 1 and config.decoder != "beam" and output_format == "text"
    out = click.get_text_stream("stdout")
    if stream and prime:
        out.write(prime)

    last_flush = -STREAM_FLUSH_S  # the first token is flushed at once

    def on_token(index: int, text: str) -> None:
        # A flush per token is a write(2) per character; 20 flushes a second read the same to a person.
        nonlocal last_flush
        out.write(text)
        now = time.monotonic()
        if now - last_flush >= STREAM_FLUSH_S:
            out.flush()
            last_flush = now

    result = generator.generate(prime, config, on_token if stream else None)
    midi_paths: list[Path] = []
    if output_format == "midi":
        from chargen.midi.export import output_paths, write_midi

        midi_paths = output_paths(output.with_suffix(".mid") if synth and output else output, len(result.samples))
        for item, path in zip(result.samples, midi_paths):
            stats = write_midi(item.ids, path, tempo_bpm=tempo, program=program, max_note_s=max_note_seconds,
                               vocab=loaded.codec.vocab)
            if synth:  # the .mid stays beside its .wav: the history records it
                render_wav(path, path.with_suffix(".wav"), synth)
            if not quiet:
                warn(f"wrote {path}" + (f" and {path.with_suffix('.wav')}" if synth else "")
                      + f" ({stats.notes} notes, {stats.duration_s:.1f} s)")
    if as_json:
        data = dict(result.to_dict(), checkpoint=str(loaded.path))
        for item, path in zip(data["samples"], midi_paths):
            item["midi_path"] = str(path)
            item.update({"wav_path": str(path.with_suffix(".wav"))} if synth else {})
        click.echo(json.dumps(data, ensure_ascii=False))
    elif output_format == "midi":
        pass  # the files are the output
    elif stream:
        out.write("\n")
    else:
        for i, item in enumerate(result.samples):
            if i:
                out.write("\n")
            out.write((prime or "") + item.text + "\n")
    out.flush()
    logged_id = None
    if not no_log:
        from chargen.history import HistoryUnavailable
        from chargen.records import log_generation

        export = ({"format": output_format, "tempo_bpm": tempo, "program": program,
                   "max_note_s": max_note_seconds} if is_midi else None)
        try:
            logged_id = log_generation(database, loaded, result, midi_paths, export, checkpoint_sha256)
        except HistoryUnavailable as exc:
            warn(f"warning: generation not logged: {exc}")
            if require_log:
                sys.exit(1)
    if not quiet:
        logprob = sum(s.logprob for s in result.samples)
        tokens = sum(len(s.ids) for s in result.samples)
        warn(f"{result.config.decoder}, seed {result.config.seed}: {result.tokens} tokens in "
              f"{result.duration_s:.2f}s ({result.tokens_per_s:,.0f}/s), log-prob {logprob:.2f} "
              f"({-logprob / max(tokens, 1):.3f} nats/token)" + (f", logged {logged_id}" if logged_id else ""))
