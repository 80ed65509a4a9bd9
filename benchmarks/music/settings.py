"""The decoding settings the music benchmark compares, and one model's figures under each.

Each setting is a :class:`DecodeConfig` change on top of plain sampling at
temperature 1.0: unconstrained (no grammar), each rule of the model's grammar
alone (:data:`chargen.codecs.midi.grammar.RULES` for the event codec,
:data:`chargen.codecs.midi.note_grammar.NOTE_RULES` for the note codec), each learnt
limit alone (the polyphony cap, the longest hold), for the event codec its old
default (every rule, cap and hold: what checkpoints without a stored default
still decode under), the default (what a new run of this codec decodes under:
``chargen.sampling.music_defaults.POLICIES``, made explicit), and beam
search under the default (``--beam-width 4``, which for new music runs
draws its beams: ``beam_unbiased``; one run per sample, seeds ``seed``,
``seed + 1``, ...).
Sampling settings draw all samples as one batch, measured by
:func:`benchmarks.music.renormalisation.measure` (the same tokens as
``Generator.generate``, plus where the mask moved the probability).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.music.renormalisation import Shift, measure
from benchmarks.music.stats import Figure, Summary, bootstrap, further_than, read_back
from chargen.codecs.midi.grammar import RULES
from chargen.runs.checkpoint import Checkpoint
from chargen.sampling import DecodeConfig, Generator
from chargen.sampling.music_defaults import POLICIES

MAX_NOTE_S = 5.0  # the export's held-note cap, as `chargen sample` writes files
UNCONSTRAINED, OLD_DEFAULT, DEFAULT = "unconstrained", "old default", "default"

#: DecodeConfig fields newer than the benchmark's first cached samples.
LATER_OPTIONS = ("beam_unbiased",)


@dataclass(frozen=True)
class Setting:
    name: str
    config: DecodeConfig
    runs: int = 1  # beam search: one run per sample (its own seed); sampling: all samples in one batch


@dataclass
class Evaluated:
    """One setting's figures (with intervals), the mask's measurement, and its piece count."""

    figures: dict[str, Figure]
    pieces: int
    shift: Shift | None = None
    further: dict[str, bool] = field(default_factory=dict)  # beyond the CI further from the corpus than unconstrained
    further_z: dict[str, float] = field(default_factory=dict)  # that difference in standard errors
    summary: Summary | None = None  # not serialised

    def to_dict(self) -> dict[str, Any]:
        return {"figures": {k: v.to_dict() for k, v in self.figures.items()}, "pieces": self.pieces,
                "renormalisation": self.shift.to_dict() if self.shift else None,
                "further_than_unconstrained": self.further, "further_z": self.further_z}


@dataclass
class Model:
    codec: str
    limits: dict[str, Any]  # the learnt cap and hold, the default's rules
    settings: dict[str, Evaluated]

    def to_dict(self) -> dict[str, Any]:
        return {"codec": self.codec, "limits": self.limits,
                "settings": {k: v.to_dict() for k, v in self.settings.items()}}


def settings(generator: Generator, samples: int, length: int, seed: int, beam_width: int = 4,
             beam: bool = True) -> Iterator[Setting]:
    """Every setting for this model, in table order (see the module docstring)."""
    music = generator.music
    assert music is not None
    base = DecodeConfig(length=length, temperature=1.0, num_samples=samples, seed=seed)
    yield Setting(UNCONSTRAINED, replace(base, grammar=False))
    for rule in music.known_rules:
        yield Setting(f"{rule} alone", replace(base, grammar=True, grammar_rules=(rule,), max_polyphony=0,
                                               max_hold_s=0.0))
    if music.learnt_cap:
        yield Setting("cap alone", replace(base, grammar=True, grammar_rules=(), max_polyphony=music.learnt_cap,
                                           max_hold_s=0.0))
    yield Setting("hold alone", replace(base, grammar=True, grammar_rules=(), max_polyphony=0,
                                        max_hold_s=music.learnt_hold_s))
    if music.known_rules == RULES:
        yield Setting(OLD_DEFAULT, replace(base, grammar=True, grammar_rules=RULES, max_polyphony=music.learnt_cap,
                                           max_hold_s=music.learnt_hold_s))
    yield Setting(DEFAULT, policy_config(base, generator))
    if beam:
        yield Setting(f"beam {beam_width}, default", replace(policy_config(base, generator), beam_width=beam_width,
                                                              num_samples=1), runs=samples)


def policy_config(base: DecodeConfig, generator: Generator) -> DecodeConfig:
    """``base`` under the default a new run of this codec stores (chargen.sampling.music_defaults.POLICIES),
    made explicit: a model trained before the default changed is measured under today's."""
    music = generator.music
    assert music is not None
    policy = POLICIES[generator.codec.name]
    return replace(base, grammar=True, grammar_rules=tuple(policy["rules"]),
                   max_polyphony=music.learnt_cap if policy["cap"] else 0,
                   max_hold_s=music.learnt_hold_s if policy["hold"] else 0.0,
                   beam_unbiased=policy.get("beam_unbiased", False))


def sampled(generator: Generator, setting: Setting, cache: Path | None = None) -> tuple[Shift | None, list[list[int]]]:
    """The setting's token ids (and the mask's measurement, for sampling), kept in ``cache`` (a folder) by
    the setting's exact configuration, so that a rerun samples only what changed."""
    # Options added since a sample was cached, left at their default (None), do not change its key.
    config = {k: v for k, v in asdict(setting.config).items() if not (k in LATER_OPTIONS and v is None)}
    key = hashlib.sha256(json.dumps([config, setting.runs], sort_keys=True).encode()).hexdigest()
    path = cache / f"samples-{key[:16]}.json" if cache is not None else None
    if path is not None and path.is_file():
        stored = json.loads(path.read_text())
        return (Shift(**stored["shift"]) if stored["shift"] else None), stored["ids"]
    shift = None
    if setting.runs == 1 and setting.config.decoder == "sample":
        shift, rows = measure(generator, setting.config)
    else:
        rows = []
        for run in range(setting.runs):
            config = replace(setting.config, seed=(setting.config.seed or 0) + run)
            rows.extend(s.ids for s in generator.generate(None, config).samples)
    if path is not None:
        path.write_text(json.dumps({"config": asdict(setting.config), "runs": setting.runs,
                                    "shift": shift.to_dict() if shift else None, "ids": rows}))
    return shift, rows


def evaluate_setting(generator: Generator, setting: Setting, reference: Summary,
                     cache: Path | None = None) -> Evaluated:
    """The setting's samples, exported and read back, and their figures against the corpus ``reference``."""
    vocab = generator.codec.vocab  # type: ignore[attr-defined]
    shift, rows = sampled(generator, setting, cache)
    summary = Summary([read_back(ids, vocab, MAX_NOTE_S) for ids in rows])
    return Evaluated(bootstrap(summary, reference.profile()), len(summary.pieces), shift, summary=summary)


def evaluate_model(checkpoint: Checkpoint, reference: Summary, samples: int, length: int, seed: int,
                   beam_width: int = 4, cache: Path | None = None) -> Model:
    """Every setting of one model; samples are kept in the folder ``cache`` if given (:func:`sampled`)."""
    generator = Generator.from_checkpoint(checkpoint)
    music = generator.music
    assert music is not None
    out = {}
    for setting in settings(generator, samples, length, seed, beam_width):
        out[setting.name] = evaluate_setting(generator, setting, reference, cache)
    free = out[UNCONSTRAINED].summary
    assert free is not None
    for name, evaluated in out.items():
        if name != UNCONSTRAINED and evaluated.summary is not None:
            evaluated.further, evaluated.further_z = further_than(evaluated.summary, free, reference,
                                                                  reference.profile())
    limits = {"cap": music.learnt_cap, "hold_s": music.learnt_hold_s, "default_rules": list(music.rules),
              "default_cap": music.polyphony_cap, "default_hold_s": music.max_hold_s}
    return Model(checkpoint.codec.name, limits, out)
