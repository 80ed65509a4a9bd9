"""``chargen`` command line: thin click code over the engine library."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import click

from chargen import __version__
from chargen.errors import ChargenError

SIZES = ("tiny", "small", "medium", "large")


def _warn(message: str) -> None:
    click.echo(f"chargen: {message}", err=True)


class SemitoneRange(click.ParamType):
    """``LOW..HIGH`` semitones, e.g. ``-5..6``."""

    name = "LOW..HIGH"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, tuple):
            return value
        try:
            low, high = (int(part) for part in str(value).split(".."))
        except ValueError:
            self.fail(f"{value!r} is not a range like -5..6", param, ctx)
        if not -24 <= low <= high <= 24:
            self.fail(f"{value!r}: need -24 <= LOW <= HIGH <= 24", param, ctx)
        return (low, high)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="chargen")
def cli() -> None:
    """Train character-level (and MIDI-event) LSTM/GRU/RNN language models and generate from them.

    \b
    Quick start:
      chargen train corpora/fables.txt --minutes 2
      chargen sample --len 300 --temperature 0.8
    """


@cli.command()
@click.argument("corpus", nargs=-1, type=click.Path(path_type=Path))
@click.option("--resume", "resume", metavar="RUN", help="Continue the run RUN (name or folder) where it stopped.")
@click.option("--codec", type=click.Choice(["auto", "text", "midi"]), default="auto", show_default=True,
              help="How to read the corpus; auto picks by file type.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the corpus files.")
@click.option("--size", type=click.Choice(SIZES), help="Model preset [default: medium = 2x512 LSTM].")
@click.option("--cell", type=click.Choice(["lstm", "gru", "rnn"]), help="Recurrent cell [default: lstm].")
@click.option("--layers", type=click.IntRange(min=1), help="Recurrent layers (overrides the preset).")
@click.option("--hidden", type=click.IntRange(min=1), help="Hidden units per layer (overrides the preset).")
@click.option("--embedding", type=click.IntRange(min=1), help="Embedding width (overrides the preset).")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), help="Dropout (overrides the preset).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Parallel streams per batch.")
@click.option("--seq-len", type=click.IntRange(min=1), default=100, show_default=True,
              help="Tokens per stream per step (truncated BPTT length).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3, show_default=True,
              help="Peak learning rate (linear warmup, cosine decay to 10%).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True, help="AdamW decay.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), help="Stop after this many epochs.")
@click.option("--max-steps", type=click.IntRange(min=1),
              help="Stop after this many steps (with --resume: go on to this step, also past a finished run's end).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True),
              help="Wall-clock budget; the schedule is fitted to it. Default when no stop is given: 10.")
@click.option("--eval-every", type=click.IntRange(min=1), default=200, show_default=True,
              help="Validate and checkpoint every N steps.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="Last fraction of the corpus held out for validation.")
@click.option("--seed", type=int, default=1337, show_default=True, help="Seed for weights, dropout and order.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True, help="auto: the fastest that holds the loss, measured (cached) per machine and model.")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads (default: the free cores, re-measured at each evaluation).")
@click.option("--transpose", type=SemitoneRange(),
              help="MIDI only: transpose each training stream by a random shift in LOW..HIGH, e.g. -5..6.")
@click.option("--run-name", help="Run folder name [default: <corpus>-<date>-<time>].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Parent folder of run folders [default: $CHARGEN_CHECKPOINTS or ./checkpoints].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--database", metavar="URL", help="History database for the run record.")
@click.option("--no-log", is_flag=True, help="Do not record this run in the history.")
def train(corpus: tuple[Path, ...], resume: str | None, codec: str, encoding: str, size: str | None,
          cell: str | None, layers: int | None, hidden: int | None, embedding: int | None, dropout: float | None,
          batch_size: int, seq_len: int, lr: float, weight_decay: float, epochs: float | None,
          max_steps: int | None, minutes: float | None, eval_every: int, val_fraction: float, seed: int,
          device: str, precision: str, threads: int | None, transpose: tuple[int, int] | None,
          run_name: str | None, out: Path | None,
          quiet: bool, as_json: bool, database: str | None, no_log: bool) -> None:
    """Train a model on CORPUS: text files, a folder of .txt, or a folder of .mid files.

    Writes checkpoints/<run>/ with best and last weights (safetensors) and the
    state to --resume from. Ctrl-C saves and stops; --resume goes on exactly.
    """
    from chargen.runs import resume_run, start_run
    from chargen.train import TrainConfig

    if resume:
        if corpus:
            raise click.UsageError("give either CORPUS or --resume RUN, not both")
        # A limit given here replaces the run's own (a finished run is extended to it).
        limits = TrainConfig(max_steps=max_steps, epochs=epochs, minutes=minutes, device=device, threads=threads)
        result = resume_run(resume, limits, progress=not quiet, warn=_warn)
    else:
        if not corpus:
            raise click.UsageError("missing CORPUS: a text file, several files, or a folder")
        if epochs is None and max_steps is None and minutes is None:
            minutes = 10.0
        config = TrainConfig(batch_size=batch_size, seq_len=seq_len, lr=lr, weight_decay=weight_decay,
                             epochs=epochs, max_steps=max_steps, minutes=minutes, eval_every=eval_every,
                             val_fraction=val_fraction, seed=seed, device=device, precision=precision,
                             threads=threads, transpose=transpose)
        overrides = {"cell": cell, "layers": layers, "hidden": hidden, "embedding": embedding, "dropout": dropout}
        result = start_run(corpus, config, size, overrides, run_name, out, codec, encoding,
                           progress=not quiet, warn=_warn)
    if not no_log:
        from chargen.checkpoint import LAST, checkpoint_codec
        from chargen.history import HistoryUnavailable
        from chargen.records import log_training_run

        try:
            codec_used = checkpoint_codec(result.run_dir / LAST)
            log_training_run(database, result, codec_used)
        except HistoryUnavailable as exc:
            _warn(f"warning: training run not logged: {exc}")
    if as_json:
        click.echo(json.dumps({"run_dir": str(result.run_dir), "step": result.step, "best_val_loss":
                               result.best_val_loss, "interrupted": result.interrupted,
                               "chars_per_s": result.chars_per_s, "elapsed_s": result.elapsed_s}))
    if result.interrupted:
        _warn(f"stopped at step {result.step}; saved. Continue with: chargen train --resume {result.run_dir}")
        sys.exit(130)
    _warn(f"saved {result.run_dir} (best val {result.best_val_loss:.4f} nats/char)")


@cli.command()
@click.option("--checkpoint", "-c", metavar="PATH|RUN",
              help="Weights file, run folder or run name [default: newest run].")
@click.option("--len", "length", type=click.IntRange(min=0), default=500, show_default=True,
              help="Tokens (characters) to generate.")
@click.option("--temperature", "-t", type=click.FloatRange(min=0, min_open=True),
              help="Softmax temperature (> 0) [default: 1.0].")
@click.option("--top-k", type=click.IntRange(min=1), help="Sample only among the k likeliest tokens.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), help="Nucleus sampling threshold.")
@click.option("--greedy", is_flag=True, help="Always take the likeliest token.")
@click.option("--beam-width", type=click.IntRange(min=1),
              help="Beam search with K beams advanced as one batch (1 = greedy).")
@click.option("--beam-sample", is_flag=True, help="Stochastic beam search: draw candidates, keep the likeliest.")
@click.option("--no-repeat-ngram", type=click.IntRange(min=0),
              help="Never repeat an n-gram of this length [default: 12 for greedy/beam, off for sampling].")
@click.option("--prime", help="Text to start from (must use the model's characters).")
@click.option("--prime-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read the prime text from a file.")
@click.option("--prime-midi", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="MIDI models: prime with the start of this .mid file.")
@click.option("--prime-len", type=click.IntRange(min=1), default=200, show_default=True,
              help="Tokens of --prime-midi to use.")
@click.option("--seed", type=int, help="Seed: same seed + checkpoint + options = identical output.")
@click.option("--num-samples", "-n", type=click.IntRange(min=1), default=1, show_default=True,
              help="Samples generated together as one batch.")
@click.option("--format", "output_format", type=click.Choice(["text", "midi"]),
              help="text: tokens on stdout; midi: write .mid files [default: midi for MIDI models].")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="MIDI output file [default: chargen-<time>.mid]; with -n N, numbered files. "
              "A .wav name also renders audio (needs fluidsynth).")
@click.option("--tempo", type=click.FloatRange(20, 400), default=120.0, show_default=True,
              help="MIDI export: tempo written in the file (timing itself is absolute).")
@click.option("--program", type=click.IntRange(0, 127), default=0, show_default=True,
              help="MIDI export: General MIDI instrument (0 = piano).")
@click.option("--max-note-seconds", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="MIDI export: end notes held longer than this (a key the model never released).")
@click.option("--json", "as_json", is_flag=True, help="Print samples with log-probabilities as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No summary line on stderr.")
@click.option("--database", metavar="URL", help="History database [default: $CHARGEN_DATABASE_URL, "
              "else $CHARGEN_HOME/history.db].")
@click.option("--no-log", is_flag=True, help="Do not record this generation in the history.")
@click.option("--require-log", is_flag=True, help="Exit 1 if the generation could not be logged.")
def sample(checkpoint: str | None, length: int, temperature: float | None, top_k: int | None,
           top_p: float | None, greedy: bool, beam_width: int | None, beam_sample: bool, no_repeat_ngram: int | None,
           prime: str | None, prime_file: Path | None, prime_midi: Path | None, prime_len: int, seed: int | None,
           num_samples: int, output_format: str | None, output: Path | None, tempo: float, program: int,
           max_note_seconds: float, as_json: bool, quiet: bool, database: str | None, no_log: bool,
           require_log: bool) -> None:
    """Generate from a trained model; only generated text goes to stdout.

    For MIDI models the samples are written as .mid files (-o) and their paths
    reported on stderr; --format text prints the token stream instead.
    """
    from chargen.checkpoint import load_checkpoint, resolve_checkpoint
    from chargen.sampling import DecodeConfig, Generator

    if greedy and (beam_width is not None or beam_sample):
        raise click.UsageError("--greedy and --beam-width/--beam-sample are different decoders; choose one")
    if sum(x is not None for x in (prime, prime_file, prime_midi)) > 1:
        raise click.UsageError("give only one of --prime, --prime-file and --prime-midi")
    if prime_file is not None:
        try:
            prime = prime_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ChargenError(f"{prime_file}: cannot read prime text ({exc})") from None
    loaded = load_checkpoint(resolve_checkpoint(checkpoint))
    is_midi = loaded.codec.name == "midi"
    output_format = output_format or ("midi" if is_midi else "text")
    if output_format == "midi" and not is_midi:
        raise click.UsageError(f"--format midi needs a MIDI model; this one uses the {loaded.codec.name} codec")
    if prime_midi is not None:
        if not is_midi:
            raise click.UsageError("--prime-midi needs a MIDI model")
        prime = loaded.codec.decode(loaded.codec.encode_file(prime_midi)[:prime_len].tolist())
    # No --temperature is temperature 1 (which changes nothing): the one value greedy accepts.
    config = DecodeConfig(length=length, temperature=1.0 if temperature is None else temperature, top_k=top_k,
                          top_p=top_p, greedy=greedy, beam_width=beam_width, beam_sample=beam_sample,
                          num_samples=num_samples, no_repeat_ngram=no_repeat_ngram, seed=seed)
    if (beam_width or 1) > loaded.codec.vocab_size:
        raise click.UsageError(f"--beam-width {beam_width} exceeds the model's vocabulary of "
                               f"{loaded.codec.vocab_size} tokens")
    if config.decoder == "beam" and num_samples > (beam_width or 1):
        raise click.UsageError(f"--num-samples {num_samples} exceeds --beam-width {beam_width}")
    try:
        config.validate(loaded.codec.vocab_size)  # the decoder's rules, as the service applies them
    except ChargenError as exc:
        raise click.UsageError(str(exc)) from None
    from chargen.audio import find_synth, is_audio_path, render_wav

    if is_audio_path(output) and output_format != "midi":
        raise click.UsageError("-o FILE.wav renders music: it needs a MIDI model and --format midi")
    synth = find_synth() if is_audio_path(output) else None  # before generating: fail with nothing written
    loaded.codec.encode(prime or "")  # unknown characters fail here, before anything is printed
    checkpoint_sha256 = loaded.sha256  # before generating: the file may be replaced meanwhile
    generator = Generator(loaded.model, loaded.codec)
    stream = not as_json and num_samples == 1 and config.decoder != "beam" and output_format == "text"
    out = click.get_text_stream("stdout")
    if stream and prime:
        out.write(prime)

    def on_token(index: int, text: str) -> None:
        out.write(text)
        out.flush()

    result = generator.generate(prime, config, on_token if stream else None)
    midi_paths: list[Path] = []
    if output_format == "midi":
        from chargen.midi_export import output_paths, write_midi

        midi_paths = output_paths(output.with_suffix(".mid") if synth and output else output, len(result.samples))
        for item, path in zip(result.samples, midi_paths):
            stats = write_midi(item.ids, path, tempo_bpm=tempo, program=program, max_note_s=max_note_seconds)
            if synth:  # the .mid stays beside its .wav: the history records it
                render_wav(path, path.with_suffix(".wav"), synth)
            if not quiet:
                _warn(f"wrote {path}" + (f" and {path.with_suffix('.wav')}" if synth else "")
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
            _warn(f"warning: generation not logged: {exc}")
            if require_log:
                sys.exit(1)
    if not quiet:
        logprob = sum(s.logprob for s in result.samples)
        tokens = sum(len(s.ids) for s in result.samples)
        _warn(f"{result.config.decoder}, seed {result.config.seed}: {result.tokens} tokens in "
              f"{result.duration_s:.2f}s ({result.tokens_per_s:,.0f}/s), log-prob {logprob:.2f} "
              f"({-logprob / max(tokens, 1):.3f} nats/token)" + (f", logged {logged_id}" if logged_id else ""))


@cli.command()
@click.argument("checkpoint", required=False, metavar="[PATH|RUN]")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(checkpoint: str | None, as_json: bool) -> None:
    """Describe a checkpoint: model, vocabulary, corpus, training progress."""
    from chargen.checkpoint import load_checkpoint, read_run_json, resolve_checkpoint
    from chargen.curves import trend

    loaded = load_checkpoint(resolve_checkpoint(checkpoint))
    training = loaded.training
    best = training.get("best_val_loss")
    curve = trend(loaded.path.parent)
    data = {
        "path": str(loaded.path),
        "sha256": loaded.sha256,
        "model_config": loaded.config.to_dict(),
        "parameters": loaded.model.num_parameters(),
        "codec": loaded.codec.name,
        "vocab_size": loaded.codec.vocab_size,
        "vocabulary": loaded.codec.symbols,
        "corpus_sha256": training.get("corpus_sha256"),
        "corpus_tokens": training.get("corpus_tokens"),
        "corpus_paths": training.get("corpus_paths"),
        "steps": training.get("step"),
        "best_val_loss_nats": best,
        "best_val_loss_bpc": best / 0.6931471805599453 if best is not None else None,
        "chargen_version": training.get("chargen_version"),
        "status": (read_run_json(loaded.path.parent) or {}).get("status"),
        "trend": curve.to_dict() if curve else None,
    }
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    cfg = loaded.config
    click.echo(f"checkpoint   {data['path']}")
    click.echo(f"model        {cfg.layers}x{cfg.hidden} {cfg.cell.upper()}, embedding {cfg.embedding}, "
               f"dropout {cfg.dropout}, {data['parameters']:,} parameters")
    symbols = json.dumps(loaded.codec.symbols, ensure_ascii=False)
    click.echo(f"codec        {data['codec']}, {data['vocab_size']} tokens: {symbols}")
    click.echo(f"corpus       {', '.join(data['corpus_paths'] or [])} ({data['corpus_tokens']:,} tokens, "
               f"sha256 {str(data['corpus_sha256'])[:16]}...)")
    click.echo(f"trained      {data['steps']} steps")
    if best is not None:
        click.echo(f"best val     {best:.4f} nats/char ({data['best_val_loss_bpc']:.3f} bpc)")
    if data["status"]:
        click.echo(f"run status   {data['status']}")
    if curve:
        click.echo(f"trend        {curve.summary}")


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--checkpoint", "-c", metavar="PATH|RUN",
              help="Weights file, run folder or run name [default: newest run].")
@click.option("--per-line", type=click.IntRange(min=1), metavar="N", help="Also list the N worst-predicted lines.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
def score(files: tuple[Path, ...], checkpoint: str | None, per_line: int | None, device: str, as_json: bool) -> None:
    """Score FILE...: nats and bits per character (token) and perplexity under a model.

    \b
    Text files are read as text (characters the model does not know are removed
    and reported); .mid files as MIDI. Scoring a run's validation text gives the
    validation loss the run recorded.
      chargen score notes.txt --checkpoint fables-small --per-line 5
    """
    from chargen.checkpoint import load_checkpoint, resolve_checkpoint
    from chargen.device import resolve_device
    from chargen.scoring import describe_unknown, score_files

    loaded = load_checkpoint(resolve_checkpoint(checkpoint))
    scores = score_files(loaded, files, per_line or 0, resolve_device(device))
    for item in scores:
        if item.unknown:
            _warn(describe_unknown(item))
    if as_json:
        click.echo(json.dumps({"checkpoint": str(loaded.path), "sha256": loaded.sha256,
                               "files": [item.to_dict() for item in scores]}, ensure_ascii=False, indent=2))
        return
    for item in scores:
        click.echo(f"{item.path}: {item.nats_per_token:.4f} nats/{item.unit}, {item.bits_per_token:.4f} "
                   f"bits/{item.unit}, perplexity {item.perplexity:.3f} ({item.scored:,} {item.unit}s scored)")
        for line in item.worst_lines:
            click.echo(f"  line {line.line}: {line.nats_per_char:.3f} nats/char  {line.text[:100]!r}")


@cli.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=Path("curve.png"),
              show_default=True, help="PNG file to write.")
@click.option("--x", "x_axis", type=click.Choice(["steps", "minutes"]), default="steps", show_default=True,
              help="Horizontal axis.")
def plot(runs: tuple[str, ...], output: Path, x_axis: str) -> None:
    """Draw the validation (solid) and training (dashed) loss of one or several runs on one chart.

    \b
    Needs matplotlib: pip install 'chargen[plot]'.
      chargen plot fables-small fables-medium -o curves.png --x minutes
    """
    from chargen.checkpoint import resolve_run_dir
    from chargen.plotting import plot_runs

    plotted = plot_runs([resolve_run_dir(run) for run in runs], output, x_axis)
    _warn(f"wrote {plotted.path} ({len(runs)} run(s), {len(plotted.labels)} lines)")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback should come with --token.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--checkpoint", "-c", "checkpoints", multiple=True, metavar="[NAME=]PATH|RUN",
              help="Model to serve; repeat for several. NAME= sets the name clients use "
              "[default name: the run folder's; default model: the newest run].")
@click.option("--token", envvar="CHARGEN_API_TOKEN", show_envvar=True,
              help="Require 'Authorization: Bearer TOKEN' on every endpoint but /healthz.")
@click.option("--database", metavar="URL", help="History database [default: $CHARGEN_DATABASE_URL, "
              "else $CHARGEN_HOME/history.db].")
@click.option("--no-log", is_flag=True, help="Do not record generations in the history.")
@click.option("--max-length", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Most tokens per sample one request may ask for.")
@click.option("--max-beam-width", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--max-samples", type=click.IntRange(min=1), default=8, show_default=True,
              help="Most samples per request.")
@click.option("--max-prime-chars", type=click.IntRange(min=1), default=8000, show_default=True)
@click.option("--max-body-bytes", type=click.IntRange(min=1024), default=65536, show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Sampling streams stepped together per model; more requests wait their turn.")
@click.option("--max-queue", type=click.IntRange(min=1), default=256, show_default=True,
              help="Requests running or waiting per model; more are answered 503.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch CPU threads; batching, not threads, serves concurrent requests.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
def serve(host: str, port: int, checkpoints: tuple[str, ...], token: str | None, database: str | None,
          no_log: bool, max_length: int, max_beam_width: int, max_samples: int, max_prime_chars: int,
          max_body_bytes: int, max_batch: int, max_queue: int, threads: int, log_level: str) -> None:
    """Serve models over HTTP: generation (JSON or streamed), history, and a web page at /.

    \b
    Examples:
      chargen serve -c fables-small
      chargen serve -c text=fables-small -c music=bach-medium --port 8080
      curl -s localhost:8000/v1/generate -H 'content-type: application/json' -d '{"prime": "The ", "length": 200}'
    Stop with Ctrl-C or SIGTERM: running generations end with an error and are not logged.
    """
    from chargen.serve import Limits
    from chargen.serve import serve as run_service

    if max_samples > max_batch:
        raise click.UsageError(f"--max-samples {max_samples} cannot exceed --max-batch {max_batch}")
    limits = Limits(max_length=max_length, max_beam_width=max_beam_width, max_samples=max_samples,
                    max_prime_chars=max_prime_chars, max_body_bytes=max_body_bytes, max_batch=max_batch,
                    max_queue=max_queue)
    run_service(host, port, list(checkpoints), token=token or None, database=database, history=not no_log,
                limits=limits, threads=threads, log_level=log_level)


@cli.group()
def midi() -> None:
    """MIDI helpers: inspect how files become tokens."""


@midi.command("tokens")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print token ids and event names as JSON.")
def midi_tokens(file: Path, as_json: bool) -> None:
    """Print FILE as its token stream (one printable character per event)."""
    from chargen.midi_codec import MidiCodec, midi_stats, token_name

    codec = MidiCodec()
    ids = codec.encode_file(file).tolist()
    if as_json:
        stats = midi_stats(ids)
        click.echo(json.dumps({"file": str(file), "ids": ids, "events": [token_name(i) for i in ids],
                               "text": codec.decode(ids), "notes": stats.notes, "duration_s": stats.duration_s},
                              ensure_ascii=False))
    else:
        click.echo(codec.decode(ids))


from chargen.history_cli import history  # noqa: E402  (the group lives beside its store)

cli.add_command(history)


@history.command()
@click.argument("generation_id", metavar="ID")
@click.option("--database", metavar="URL", help="History database URL.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def replay(generation_id: str, database: str | None, as_json: bool) -> None:
    """Re-run generation ID with its logged checkpoint, seed and parameters, and compare.

    Exits 0 when the output is identical byte for byte, 1 when it differs or
    cannot be replayed (the checkpoint is missing or has changed).
    """
    from chargen.history_cli import database_url
    from chargen.records import replay as replay_generation

    outcome = replay_generation(database_url(database), generation_id)
    if as_json:
        click.echo(json.dumps({"id": outcome.generation_id, "identical": outcome.identical,
                               "recorded": outcome.recorded, "replayed": outcome.replayed}, ensure_ascii=False))
    for text in outcome.replayed if not as_json else ():
        click.echo(text)
    if outcome.identical:
        _warn(f"replay of {outcome.generation_id}: identical to the logged output")
    else:
        _warn(f"replay of {outcome.generation_id}: DIFFERENT from the logged output ({outcome.first_difference()})")
        sys.exit(1)


def main() -> None:
    """Console entry point: every failure is one line on stderr and a non-zero exit."""
    try:
        # Outside standalone mode click hands back (not raises) the code of an Exit
        # (`--help`, a command's `raise Exit(1)`); a command's own return value comes
        # back the same way, and only an int is taken for an exit code.
        code = cli.main(prog_name="chargen", standalone_mode=False)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "chargen"
        click.echo(f"{command}: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"chargen: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("chargen: aborted", err=True)
        sys.exit(130)
    except ChargenError as exc:
        click.echo(f"chargen: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("chargen: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()  # stdout closed by `| head`: not an error worth a message
        sys.exit(1)
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("CHARGEN_DEBUG"):
            traceback.print_exc()
        click.echo(f"chargen: internal error: {type(exc).__name__}: {exc} (set CHARGEN_DEBUG=1 for a traceback)",
                   err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
