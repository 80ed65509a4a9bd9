"""``chargen.load`` and :class:`Model`: generate, sample, score and describe a trained model from Python.

The CLI's ``sample``, ``score`` and ``info`` call these, so a seed and options give the same text
through the API, the CLI and the service (which shares the decoder, ``chargen.sampling``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chargen.api.info import describe
from chargen.api.report import Report, report_to_stderr
from chargen.codecs.midi.export import DEFAULT_MAX_NOTE_S, DEFAULT_PROGRAM, DEFAULT_TEMPO_BPM
from chargen.errors import ArgumentError
from chargen.history.errors import HistoryUnavailable
from chargen.options import unknown_keywords
from chargen.runs.checkpoint import Checkpoint, load_checkpoint
from chargen.runs.lookup import resolve_checkpoint
from chargen.sampling import DecodeConfig, GenerationResult, Generator, Sample
from chargen.sampling.config import ModelRef
from chargen.sampling.generator import Prepared
from chargen.scoring.files import FileScore, score_text

#: Decode options a call may give besides ``length`` and ``n`` (DecodeConfig's fields).
DECODE_OPTIONS = {f.name for f in dataclasses.fields(DecodeConfig)} - {"length", "num_samples"}
#: Tokens of a MIDI file used as a prime by default.
DEFAULT_PRIME_TOKENS = 200


def load(run_or_path: str | Path | None = None, *, database: str | None = None, log: bool = True,
         report: Report | None = report_to_stderr, device: str = "auto") -> Model:
    """The model of a run (its name under the checkpoint folder, or its folder) or of a weights file;
    None: the newest run. Generations and scores are logged to the history (``database``; default
    ``$CHARGEN_DATABASE_URL``, else ``$CHARGEN_HOME/history.db``) unless ``log=False``. ``device``: where
    batched steps (n rows) may run: auto is CUDA where present, from the batch size measured to pay there."""
    checkpoint = load_checkpoint(resolve_checkpoint(run_or_path))
    return Model(checkpoint, database=database, log=log, report=report, device=device)


class Model:
    """A loaded model (on the CPU) and the one generator that serves all its generations."""

    def __init__(self, checkpoint: Checkpoint, *, database: str | None = None, log: bool = True,
                 report: Report | None = report_to_stderr, device: str = "auto"):
        self.checkpoint, self.device = checkpoint, device
        self.database, self.log = database, log
        self.report = report or (lambda message: None)
        self.sha256 = checkpoint.sha256  # now: the file may be replaced while this model is in use

    @functools.cached_property
    def generator(self) -> Generator:
        """The model's generator, made on first use (it times this machine's kernels once per model shape)."""
        return Generator.from_checkpoint(self.checkpoint, self.device)

    def __repr__(self) -> str:
        config = self.checkpoint.config
        return (f"<chargen.Model {self.path} {config.layers}x{config.hidden} {config.cell}, "
                f"{self.codec.name} codec, {self.codec.vocab_size} tokens>")

    @property
    def path(self) -> Path:
        return self.checkpoint.path

    @property
    def codec(self) -> Any:
        return self.checkpoint.codec

    @property
    def is_music(self) -> bool:
        return bool(self.codec.music)

    @property
    def info(self) -> dict[str, Any]:
        """The model's facts (what ``chargen info --json`` prints): shape, vocabulary, corpus, training, trend."""
        return describe(self.checkpoint, self.sha256)

    # -- generation ------------------------------------------------------------------------------

    def config(self, length: int | None = None, n: int = 1, **options: Any) -> DecodeConfig:
        """The DecodeConfig of ``options`` (None = default), checked against this model (ArgumentError)."""
        unknown_keywords(options, DECODE_OPTIONS, "decode")
        given = {k: v for k, v in options.items() if v is not None}
        if length is not None:
            given["length"] = length
        config = DecodeConfig(num_samples=n, **given)
        config.validate(self.codec.vocab_size, self.generator.music)
        self.checkpoint.config.label_id(config.label)
        return config

    def midi_prime(self, path: str | Path, tokens: int = DEFAULT_PRIME_TOKENS) -> str:
        """The first ``tokens`` events of a MIDI file, as a prime for this (music) model (bounded; an error when
        the file has no notes)."""
        from chargen.sampling.primes import midi_prime

        if not self.is_music:
            raise ArgumentError("a MIDI prime needs a music model")
        return midi_prime(self.codec, Path(path), tokens)

    def generate(self, prime: str = "", length: int | None = None, *, stream: bool = False,
                 log: bool | None = None, **options: Any) -> str | TextStream:
        """One sample's text after ``prime`` (not repeated in it). ``options``: DecodeConfig's fields
        (temperature, top_k, top_p, greedy, beam_width, beam_sample, no_repeat_ngram, seed, label,
        grammar, max_polyphony, max_hold_s). ``stream=True`` returns a :class:`TextStream` that yields
        the text as it is produced."""
        if stream:
            config = self.config(length, 1, **options)
            return TextStream(self, self.generator.prepare(prime, config), self._logging(log))
        return self.sample(prime, length, 1, log=log, **options)[0].text

    def sample(self, prime: str = "", length: int | None = None, n: int = 1, **options: Any) -> list[Sample]:
        """``n`` samples generated as one batch (beam search: the ``n`` best beams), each with its text and
        log-probability; the keywords are :meth:`generation`'s."""
        return self.generation(prime, length, n, **options).samples

    def generation(self, prime: str = "", length: int | None = None, n: int = 1, *, log: bool | None = None,
                   output: str | Path | None = None, tempo_bpm: float = DEFAULT_TEMPO_BPM,
                   program: int = DEFAULT_PROGRAM, max_note_s: float = DEFAULT_MAX_NOTE_S,
                   **options: Any) -> GenerationResult:
        """The whole generation: samples, the resolved config (its seed), timing and ``history_id``. A music
        model's samples are written to ``output`` (.mid, numbered when n > 1; a .wav name renders audio beside
        each .mid) when it is given, and the paths are logged. ``options``: DecodeConfig's fields."""
        config = self.config(length, n, **options)
        prepared = self.generator.prepare(prime, config)
        synth = self._synth(output)  # before generating: fail with nothing written
        result = self._own(_finish(self.generator.steps(prepared)))
        paths = self._write(result, output, synth, tempo_bpm, program, max_note_s) if output is not None else []
        result.export = self._export(bool(paths), tempo_bpm, program, max_note_s)
        if self._logging(log):
            self._record(result)
        return result

    def _own(self, result: GenerationResult) -> GenerationResult:
        """``result`` marked as this model's (what the history records of it)."""
        result.model = ModelRef.of(self.checkpoint, self.sha256)
        return result

    def _export(self, midi: bool, tempo_bpm: float = DEFAULT_TEMPO_BPM, program: int = DEFAULT_PROGRAM,
                max_note_s: float = DEFAULT_MAX_NOTE_S) -> dict[str, Any] | None:
        """A music generation's export settings, as the history records them (replay and export use them)."""
        if not self.is_music:
            return None
        return {"format": "midi" if midi else "text", "tempo_bpm": tempo_bpm, "program": program,
                "max_note_s": max_note_s}

    def _synth(self, output: str | Path | None) -> Any:
        from chargen.codecs.midi.audio import find_synth, is_audio_path

        if output is None:
            return None
        if not self.is_music:
            raise ArgumentError("output names MIDI (or .wav) files: it needs a music model")
        return find_synth() if is_audio_path(Path(output)) else None

    def _write(self, result: GenerationResult, output: str | Path, synth: Any, tempo_bpm: float, program: int,
               max_note_s: float) -> list[Path]:
        from chargen.codecs.midi.export import output_paths

        target = Path(output)
        paths = output_paths(target.with_suffix(".mid") if synth else target, len(result.samples))
        settings = {"tempo_bpm": tempo_bpm, "program": program, "max_note_s": max_note_s}
        for item, path in zip(result.samples, paths):
            if synth:  # the .mid stays beside its .wav: the history records it
                item.write_wav(path.with_suffix(".wav"), synth, **settings)
            else:
                item.write_midi(path, **settings)
        return paths

    def _logging(self, log: bool | None) -> bool:
        return self.log if log is None else log

    def _record(self, result: GenerationResult) -> None:
        """Log ``result`` (``history_id`` set), or warn that it could not be."""
        from chargen.records import log_generation

        try:
            result.history_id = log_generation(self.database, result)
        except HistoryUnavailable as exc:
            self.report(f"warning: generation not logged: {exc}")

    # -- scoring ---------------------------------------------------------------------------------

    def score(self, text_or_path: str | os.PathLike[str], *, log: bool | None = None) -> float:
        """Nats per character (per event for MIDI) of a text, or of a file given as a ``Path``."""
        if isinstance(text_or_path, str):
            return score_text(self.checkpoint, text_or_path).nats_per_token
        return self.score_files([Path(text_or_path)], log=log)[0].nats_per_token

    def score_files(self, paths: list[Path], per_line: int = 0, *, log: bool | None = None,
                    device: str = "cpu") -> list[FileScore]:
        """Each file's score (:class:`chargen.scoring.FileScore`: nats, bits, perplexity, worst lines),
        each from a fresh hidden state; logged to the history unless ``log=False``."""
        from chargen.machine.device import resolve_device
        from chargen.records import log_scores
        from chargen.scoring.files import score_files

        scores = score_files(self.checkpoint, paths, per_line, resolve_device(device))
        self.checkpoint.model.cpu()  # generation runs on the CPU
        if self._logging(log):
            try:
                log_scores(self.database, self.checkpoint, self.sha256, scores)
            except HistoryUnavailable as exc:
                self.report(f"warning: scores not logged: {exc}")
        return scores


def _finish(steps: Iterator[list[int]]) -> GenerationResult:
    """Run a generation's steps to the end; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as finished:
            return finished.value


class TextStream:
    """A generation's text as it is produced (iterate it); ``result`` and ``history_id`` once it ends.

    Sampling and greedy yield each token's text; beam search yields the whole text at the end.
    """

    def __init__(self, model: Model, prepared: Prepared, log: bool):
        self.model, self.prepared, self.log = model, prepared, log
        self.result: GenerationResult | None = None
        self.history_id: str | None = None
        self._steps = model.generator.steps(prepared)

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                texts = next(self._steps)
            except StopIteration as finished:
                self.result = finished.value
                break
            if texts[0]:
                yield texts[0]
        self.model._own(self.result).export = self.model._export(False)
        if self.log:
            self.model._record(self.result)
            self.history_id = self.result.history_id
