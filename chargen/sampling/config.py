"""What a generation asks for (:class:`DecodeConfig`) and what it returns (:class:`Sample`, results)."""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from chargen.errors import ArgumentError, ChargenError
from chargen.options import check_fields, option

if TYPE_CHECKING:
    from chargen.codecs.base import Codec


class MusicPart(Protocol):
    """What a config needs of a music model's part in decoding (``chargen.sampling.grammar.MusicRules``,
    declared here so that the grammar may import this module and not the other way round)."""

    polyphony_cap: int
    max_hold_s: float
    rules: tuple[str, ...]
    beam_unbiased: bool

    @property
    def known_rules(self) -> tuple[str, ...]: ...

#: n-gram length blocked by default for the deterministic decoders, whose
#: character-level output otherwise loops ("the same the same the same ...").
DEFAULT_NO_REPEAT_NGRAM = 12
#: Music models: the longest a note may be held under the grammar when the model knows no learnt hold
#: (seconds; 0 = no limit): the export's held-note cap (chargen.codecs.midi.export.DEFAULT_MAX_NOTE_S), so the
#: model releases the notes the export would otherwise cut (BENCHMARKS.md, "Music quality").
DEFAULT_MAX_HOLD_S = 5.0
#: The longest prime, in tokens, of any codec: a prime is a start, not a corpus (it is run through the
#: model as one batch, whose memory grows with its length; a MIDI file's events cost far more to read).
MAX_PRIME_TOKENS = 16384


def check_prime_length(tokens: int) -> None:
    if tokens > MAX_PRIME_TOKENS:
        raise ChargenError(f"the prime is {tokens:,} tokens long, more than the {MAX_PRIME_TOKENS:,} a prime may "
                           "have; give the start of it")


#: A cap for counts a user could mistype by orders of magnitude (tokens, n-gram lengths).
HUGE = 10**9
#: Stop strings one generation may have.
MAX_STOPS = 16


@dataclass
class DecodeConfig:
    """How to generate: the one definition of the decode options (CLI options and service fields derive from it)."""

    length: int = option(500, "Tokens (characters) to generate.", flag="--len", low=0, high=HUGE)
    temperature: float = option(1.0, "Softmax temperature (> 0); greedy takes none.", short="-t", low=0,
                                low_open=True)
    top_k: int | None = option(None, "Sample only among the k likeliest tokens.", low=1, high=HUGE)
    top_p: float | None = option(None, "Nucleus sampling threshold.", low=0, low_open=True, high=1)
    greedy: bool = option(False, "Always take the likeliest token.")
    beam_width: int | None = option(None, "Beam search with K beams advanced as one batch; given at all (even 1) "
                                    "means beam search.", low=1, high=1024, metavar="K")
    beam_sample: bool = option(False, "Stochastic beam search: draw candidates, keep the likeliest.")
    beam_unbiased: bool | None = option(
        None, "Beam search whose beams are draws from the model (Gumbel top-k stochastic beam search, Kool et al. "
        "2019): the likeliest of K samples, without the likeliest-first pull toward repetition.", switch=True,
        default_text="on for music runs that store it (new runs), off otherwise")
    num_samples: int = option(1, "Samples generated together as one batch.", short="-n", low=1, high=1024)
    no_repeat_ngram: int | None = option(None, "Never repeat an n-gram of this length; 0 = off.", low=0, high=HUGE,
                                         metavar="N", default_text="12 for greedy and beam search, off for sampling")
    seed: int | None = option(None, "Seed: the same seed, checkpoint and options give the same output.", low=0,
                              high=2**63 - 1, default_text="drawn, and recorded in the history")
    label: str | None = option(None, "A labelled model: generate for this label (chargen info lists them).",
                               metavar="NAME")
    # The MIDI grammar (chargen.sampling.grammar): None = on for music models (off for text);
    # max_polyphony None = the checkpoint's learnt cap, 0 = no cap; max_hold_s None = its learnt hold, 0 = none;
    # grammar_rules None = the model's default rules, [] = only the limits; resolved: a sorted list (as JSON
    # gives it back, so a logged config and a fresh one compare equal).
    grammar: bool | None = option(None, "Music models: decode under the MIDI grammar (its rules, a polyphony cap, "
                                  "a longest hold).", switch=True, default_text="on for music models")
    max_polyphony: int | None = option(None, "MIDI grammar: at most N notes at once; 0 = no cap.", low=0, high=128,
                                       metavar="N", default_text="the cap learnt from the corpus")
    max_hold_s: float | None = option(None, "MIDI grammar: no note held longer than this, the model must release "
                                      "it; 0 = no limit.", low=0, high=3600, metavar="SECONDS",
                                      default_text="the hold learnt from the corpus, at most 5 s")
    grammar_rules: list[str] | None = option(None, "MIDI grammar: apply this rule (repeatable; chargen info lists "
                                             "the model's rules and its defaults).", flag="--grammar-rule",
                                             high=16, metavar="RULE", default_text="the model's default rules")
    stop: list[str] = option(list, "End a sample where its text first contains this string (left out of the "
                             "output); repeatable.", high=MAX_STOPS, metavar="TEXT")

    def __post_init__(self) -> None:
        if isinstance(self.stop, tuple):  # a repeated CLI option
            self.stop = list(self.stop)
        if isinstance(self.grammar_rules, tuple):
            self.grammar_rules = list(self.grammar_rules)

    @property
    def decoder(self) -> str:
        if self.beam_width is not None or self.beam_sample:
            return "beam"
        return "greedy" if self.greedy else "sample"

    def resolved(self, music: MusicPart | None = None) -> DecodeConfig:
        """A copy with every default made explicit (a seed drawn if none), for logging and replay.

        ``music``: the model's part (None for text models): the grammar's defaults come from it.
        """
        data = asdict(self)
        if data["grammar"] is None:
            data["grammar"] = music is not None
        if not data["grammar"]:
            data["max_polyphony"], data["max_hold_s"], data["grammar_rules"] = 0, 0.0, []
        else:
            if data["max_polyphony"] is None:
                data["max_polyphony"] = music.polyphony_cap if music is not None else 0
            if data["max_hold_s"] is None:
                data["max_hold_s"] = music.max_hold_s if music is not None else DEFAULT_MAX_HOLD_S
            if data["grammar_rules"] is None:
                data["grammar_rules"] = music.rules if music is not None else ()
            data["grammar_rules"] = sorted(set(data["grammar_rules"]))
        if data["seed"] is None:
            data["seed"] = random.SystemRandom().randrange(2**31)
        if data["beam_unbiased"] is None:  # a music run's stored default; never beside the other stochastic beam
            data["beam_unbiased"] = bool(self.decoder == "beam" and not self.beam_sample and music is not None
                                         and music.beam_unbiased)
        if data["no_repeat_ngram"] is None:  # unbiased beams are samples: no n-gram block, as for sampling
            deterministic = self.decoder == "greedy" or (self.decoder == "beam" and not data["beam_unbiased"])
            data["no_repeat_ngram"] = DEFAULT_NO_REPEAT_NGRAM if deterministic else 0
        return DecodeConfig(**data)

    def validate(self, vocab_size: int, music: MusicPart | None = None) -> None:
        """The decoder's rules, the same for the API, the CLI and the service: ArgumentError naming the first
        broken one. ``music``: the model's part, None for a text model (which takes no MIDI grammar settings)."""
        check_fields(self)
        if self.greedy and self.temperature != 1.0:
            raise ArgumentError(f"greedy decoding takes no temperature (got {self.temperature}): it always picks "
                                "the likeliest token")
        if self.greedy and self.decoder == "beam":
            raise ArgumentError("greedy and beam search are different decoders; choose one")
        if self.beam_unbiased and self.beam_sample:
            raise ArgumentError("beam_sample and beam_unbiased are different stochastic beam searches; choose one")
        width = self.beam_width or 1
        if width > vocab_size:
            raise ArgumentError(f"beam_width {self.beam_width} exceeds the model's vocabulary of {vocab_size} tokens")
        if self.decoder == "beam" and self.num_samples > width:
            raise ArgumentError(f"num_samples {self.num_samples} exceeds beam_width {self.beam_width}")
        self._validate_grammar(music)

    def _validate_grammar(self, music: MusicPart | None) -> None:
        if self.grammar_rules is not None and music is not None:
            unknown = sorted(set(self.grammar_rules) - set(music.known_rules))
            if unknown:
                raise ArgumentError(f"unknown grammar rule(s) {', '.join(unknown)}; this model's are "
                                    f"{', '.join(music.known_rules)}")
        # 0 and [] are what "off" resolves them to: allowed
        settings = self.max_polyphony or self.max_hold_s or self.grammar_rules
        if music is None and (self.grammar or settings):
            raise ArgumentError("the MIDI grammar (grammar, max_polyphony, max_hold_s, grammar_rules) needs a music "
                                "model")
        if self.grammar is False and settings:
            raise ArgumentError("max_polyphony, max_hold_s and grammar_rules apply to the MIDI grammar, which is "
                                "switched off")


@dataclass
class Sample:
    """One generated sequence: its token ids, their printable text, and the model's log-probability of them."""

    ids: list[int]
    text: str
    logprob: float  # natural log, the model's own (temperature 1)
    codec: Codec | None = field(default=None, repr=False, compare=False)  # what the ids mean (MIDI export)
    midi_path: Path | None = None  # where it was written as MIDI, if it was
    midi_stats: Any = field(default=None, repr=False)  # what was written there (chargen.codecs.midi.MidiStats)
    wav_path: Path | None = None  # where it was rendered as audio, if it was
    stopped: bool = False  # it ended at a stop string (DecodeConfig.stop), not at its length

    @property
    def nats_per_token(self) -> float:
        return -self.logprob / len(self.ids) if self.ids else 0.0

    def write_midi(self, path: str | Path, tempo_bpm: float = 120.0, program: int = 0,
                   max_note_s: float | None = 5.0) -> Path:
        """Write a music model's sample as a Standard MIDI File (atomically); returns the path."""
        from chargen.codecs.midi.export import write_midi

        vocab = getattr(self.codec, "vocab", None)
        if vocab is None:
            raise ArgumentError("only a music model's samples can be written as MIDI")
        self.midi_stats = write_midi(self.ids, Path(path), tempo_bpm=tempo_bpm, program=program, vocab=vocab,
                                     max_note_s=max_note_s)
        self.midi_path = Path(path)
        return self.midi_path

    def write_wav(self, path: str | Path, synth: Any = None, **midi_settings: Any) -> Path:
        """Write a music model's sample as audio (FluidSynth): the .mid beside the .wav, then the .wav."""
        from chargen.codecs.midi.audio import find_synth, render_wav

        wav = Path(path)
        synth = synth or find_synth()  # before writing anything: fail with nothing written
        render_wav(self.write_midi(wav.with_suffix(".mid"), **midi_settings), wav, synth)
        self.wav_path = wav
        return wav


@dataclass(frozen=True)
class ModelRef:
    """Which model a generation came from, as the history records it."""

    path: str  # the weights file, resolved
    sha256: str  # of the file when the model was loaded (it may be replaced while in use)
    model_config: dict[str, Any]
    codec: dict[str, Any]  # the codec's metadata

    @classmethod
    def of(cls, checkpoint: Any, sha256: str) -> ModelRef:
        """The reference of a loaded ``chargen.runs.checkpoint.Checkpoint`` whose file hashed to ``sha256``."""
        return cls(str(Path(checkpoint.path).resolve()), sha256, checkpoint.config.to_dict(),
                   checkpoint.codec.to_metadata())


class NonFiniteOutput(ChargenError):
    """The model's output is not a finite number: the model is broken, not the request."""


def check_finite(samples: list[Sample], expected: int) -> None:
    """A NaN or infinite log-probability is an error, never an output: it would be printed as data
    ("log-prob nan"), or as ``NaN``, which is not JSON. So is a beam search left with fewer than the
    ``expected`` samples (its beams with non-finite scores are dropped)."""
    for sample in samples:
        if not math.isfinite(sample.logprob):
            raise NonFiniteOutput(f"the model produced a non-finite log-probability ({sample.logprob}): its weights "
                                  "overflow or are damaged; use another checkpoint")
    if len(samples) < expected:
        raise NonFiniteOutput(f"the model produced {len(samples)} of {expected} sample(s) with a finite "
                              "log-probability (non-finite scores): its weights overflow or are damaged")


@dataclass
class GenerationResult:
    """A finished generation: the one record between the engine and the history (``chargen.records`` maps it to
    a history row; the CLI, the API and the service all log it as it is)."""

    samples: list[Sample]
    config: DecodeConfig  # resolved: explicit seed and n-gram block
    prime: str
    duration_s: float
    tokens: int = field(default=0)
    history_id: str | None = None  # its row in the history, once logged
    device: str = "cpu"  # where the batched steps ran ("cuda:0": chargen.machine.offload)
    model: ModelRef | None = None  # set by whoever ran it on a loaded checkpoint
    export: dict[str, Any] | None = None  # a music model's MIDI export settings (format, tempo, program, ...)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "decoder": self.config.decoder,
            "params": asdict(self.config),
            "prime": self.prime,
            "duration_s": self.duration_s,
            "tokens_per_s": self.tokens_per_s,
            "samples": [
                {"text": s.text, "logprob": s.logprob, "nats_per_token": s.nats_per_token} for s in self.samples
            ],
        }
