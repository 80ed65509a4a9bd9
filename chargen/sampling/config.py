"""What a generation asks for (:class:`DecodeConfig`) and what it returns (:class:`Sample`, results)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from chargen.errors import ChargenError

if TYPE_CHECKING:
    from chargen.sampling.grammar import MusicRules

#: n-gram length blocked by default for the deterministic decoders, whose
#: character-level output otherwise loops ("the same the same the same ...").
DEFAULT_NO_REPEAT_NGRAM = 12
#: Music models: the longest a note may be held under the grammar when the model knows no learnt hold
#: (seconds; 0 = no limit): the export's held-note cap (chargen.midi.export.DEFAULT_MAX_NOTE_S), so the
#: model releases the notes the export would otherwise cut (BENCHMARKS.md, "Music quality").
DEFAULT_MAX_HOLD_S = 5.0


@dataclass
class DecodeConfig:
    length: int = 500
    temperature: float = 1.0  # greedy takes none: 1.0, which changes nothing, is the only value it accepts
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    beam_width: int | None = None  # set (even to 1) = beam search
    beam_sample: bool = False
    num_samples: int = 1
    no_repeat_ngram: int | None = None  # None: DEFAULT for greedy/beam, off for sampling
    seed: int | None = None
    label: str | None = None  # a labelled model's conditioning label; None: no label
    # The MIDI grammar (chargen.sampling.grammar): None = on for music models (off for text);
    # max_polyphony None = the checkpoint's learnt cap, 0 = no cap; max_hold_s None = its learnt hold, 0 = none;
    # grammar_rules None = the model's default rules (chargen.midi.grammar.RULES), [] = only the limits;
    # resolved: a sorted list (as JSON gives it back, so a logged config and a fresh one compare equal).
    grammar: bool | None = None
    max_polyphony: int | None = None
    max_hold_s: float | None = None
    grammar_rules: Sequence[str] | None = None

    @property
    def decoder(self) -> str:
        if self.beam_width is not None or self.beam_sample:
            return "beam"
        return "greedy" if self.greedy else "sample"

    def resolved(self, music: MusicRules | None = None) -> DecodeConfig:
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
        if data["no_repeat_ngram"] is None:
            data["no_repeat_ngram"] = DEFAULT_NO_REPEAT_NGRAM if self.decoder in ("greedy", "beam") else 0
        return DecodeConfig(**data)

    def validate(self, vocab_size: int, music: MusicRules | None = None) -> None:
        """The decoder's rules, the same for the CLI and the service: ChargenError naming the first broken one.

        ``music``: the model's part, None for a text model (which takes no MIDI grammar settings).
        """
        if self.length < 0:
            raise ChargenError(f"length must be >= 0 (got {self.length})")
        if not self.temperature > 0:  # NaN fails this too
            raise ChargenError(f"temperature must be > 0 (got {self.temperature}); use --greedy for argmax decoding")
        if self.greedy and self.temperature != 1.0:
            raise ChargenError(f"--greedy takes no --temperature (got {self.temperature}): greedy decoding "
                               "always picks the likeliest token")
        if self.top_k is not None and self.top_k < 1:
            raise ChargenError(f"top-k must be >= 1 (got {self.top_k})")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ChargenError(f"top-p must be in (0, 1] (got {self.top_p})")
        width = self.beam_width or 1
        if width < 1:
            raise ChargenError(f"beam width must be >= 1 (got {self.beam_width})")
        if width > vocab_size:
            raise ChargenError(f"beam width {self.beam_width} exceeds the vocabulary size {vocab_size}")
        if self.num_samples < 1:
            raise ChargenError(f"num-samples must be >= 1 (got {self.num_samples})")
        if self.decoder == "beam" and self.num_samples > width:
            raise ChargenError(f"num-samples {self.num_samples} exceeds the beam width {self.beam_width}")
        if self.greedy and self.decoder == "beam":
            raise ChargenError("--greedy and --beam-width are different decoders; choose one")
        if self.no_repeat_ngram is not None and self.no_repeat_ngram < 0:
            raise ChargenError("no-repeat-ngram must be >= 0")
        self._validate_grammar(music)

    def _validate_grammar(self, music: MusicRules | None) -> None:
        if self.max_polyphony is not None and self.max_polyphony < 0:
            raise ChargenError(f"max-polyphony must be >= 0, 0 = no cap (got {self.max_polyphony})")
        if self.max_hold_s is not None and not self.max_hold_s >= 0:  # NaN fails this too
            raise ChargenError(f"max-hold-s must be >= 0, 0 = no limit (got {self.max_hold_s})")
        if self.grammar_rules is not None:
            unknown = sorted(set(self.grammar_rules) - set(music.known_rules if music is not None else ()))
            if unknown and music is not None:
                raise ChargenError(f"unknown grammar rule(s) {', '.join(map(str, unknown))}; this model's are "
                                   f"{', '.join(music.known_rules)}")
        # 0 and () are what "off" resolves them to: allowed
        settings = self.max_polyphony or self.max_hold_s or self.grammar_rules
        if music is None and (self.grammar or settings):
            raise ChargenError("the MIDI grammar (grammar, max-polyphony, max-hold-s) needs a music model")
        if self.grammar is False and settings:
            raise ChargenError("max-polyphony, max-hold-s and grammar rules apply to the MIDI grammar, "
                               "which is switched off")


@dataclass
class Sample:
    ids: list[int]
    text: str
    logprob: float  # natural log, the model's own (temperature 1)

    @property
    def nats_per_token(self) -> float:
        return -self.logprob / len(self.ids) if self.ids else 0.0


@dataclass
class GenerationResult:
    samples: list[Sample]
    config: DecodeConfig  # resolved: explicit seed and n-gram block
    prime: str
    duration_s: float
    tokens: int = field(default=0)

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
