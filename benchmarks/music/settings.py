"""The decoding settings the music benchmark compares, and sampling them into pieces.

Each setting is a :class:`DecodeConfig` change on top of plain sampling at
temperature 1.0 (beam search: ``--beam-width 4 --beam-sample``). For a model of
the event codec (``midi``) the rules of :mod:`chargen.midi.grammar` one at a
time; for the note codec (``midi-notes``) those of :mod:`chargen.midi.note_grammar`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from benchmarks.music.stats import Piece, read_back
from chargen.sampling import DecodeConfig, Generator

MAX_NOTE_S = 5.0  # the export's held-note cap, as `chargen sample` writes files


@dataclass(frozen=True)
class Setting:
    name: str
    config: DecodeConfig
    runs: int = 1  # beam search: one run per sample (its own seed); sampling: all samples in one batch


def settings(generator: Generator, samples: int, length: int, seed: int, beam_width: int = 4) -> Iterator[Setting]:
    """Every setting for this model: unconstrained, each rule alone, the old default, the default, beam."""
    music = generator.music
    assert music is not None
    base = DecodeConfig(length=length, temperature=1.0, num_samples=samples, seed=seed)
    yield Setting("unconstrained", replace(base, grammar=False))
    for rule in music.known_rules:
        yield Setting(f"{rule} alone", replace(base, grammar=True, grammar_rules=(rule,), max_polyphony=0,
                                               max_hold_s=0.0))
    if music.polyphony_cap:
        yield Setting("cap alone", replace(base, grammar=True, grammar_rules=(), max_polyphony=music.learnt_cap,
                                           max_hold_s=0.0))
    yield Setting("hold alone", replace(base, grammar=True, grammar_rules=(), max_polyphony=0,
                                        max_hold_s=music.learnt_hold_s))
    yield Setting("all rules (old default)", replace(base, grammar=True, grammar_rules=music.known_rules,
                                                     max_polyphony=music.learnt_cap, max_hold_s=music.learnt_hold_s))
    yield Setting("default", base)
    yield Setting(f"beam {beam_width} (default rules)",
                  replace(base, beam_width=beam_width, beam_sample=True, num_samples=1), runs=samples)


def sample_pieces(generator: Generator, setting: Setting, max_note_s: float = MAX_NOTE_S) -> list[Piece]:
    """The setting's samples, exported and read back."""
    vocab = generator.codec.vocab  # type: ignore[attr-defined]
    pieces = []
    for run in range(setting.runs):
        config = replace(setting.config, seed=(setting.config.seed or 0) + run) if setting.runs > 1 else setting.config
        result = generator.generate(None, config)
        pieces.extend(read_back(s.ids, vocab, max_note_s) for s in result.samples)
    return pieces
