"""What a music checkpoint decodes under by default: which grammar rules and which learnt limits.

A run stores its codec's default (its *policy*) with the weights
(``training["grammar_defaults"]``: the rules on, and whether the learnt cap and
hold apply), so that a later change of the default never changes how an
existing checkpoint samples. A checkpoint that stores none (trained before the
policy existed) decodes as it always did: every rule, the learnt cap and hold.

The policies for new runs are chosen by ``benchmarks/music_quality.py``
(BENCHMARKS.md, "Music quality"): a rule stays a default only where it brings
the samples closer to the corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from chargen.codecs.midi.grammar import RULES
from chargen.codecs.midi.note_grammar import NOTE_RULES
from chargen.codecs.midi.note_vocab import NoteVocab
from chargen.codecs.midi.texture import cap_of, corpus_texture, hold_of, statistics_of
from chargen.codecs.midi.vocab import MidiVocab
from chargen.runs.layout import TOKENS
from chargen.sampling.grammar import MusicRules, learnt_max_hold_s, learnt_polyphony_cap

if TYPE_CHECKING:
    from chargen.codecs.base import Codec
    from chargen.runs.checkpoint import Checkpoint

POLICY_KEY = "grammar_defaults"
#: How checkpoints without a stored policy decode (every rule of their grammar, both limits): unchanged for them.
LEGACY_POLICY: dict[str, Any] = {"rules": None, "cap": True, "hold": True, "beam_unbiased": False}
#: What new runs store, per codec (see the module docstring for how they were chosen).
POLICIES: dict[str, dict[str, Any]] = {
    "midi": {"rules": [], "cap": False, "hold": False, "beam_unbiased": True},
    "midi-notes": {"rules": ["duration", "restrike"], "cap": False, "hold": True, "beam_unbiased": True},
}


def is_music_codec(codec: Codec) -> bool:
    return codec.music


def default_rules(vocab: MidiVocab | NoteVocab) -> tuple[str, ...]:
    """Every rule of a vocabulary's grammar (a Generator built without a checkpoint applies them all)."""
    return NOTE_RULES if isinstance(vocab, NoteVocab) else RULES


def training_policy(codec: Codec) -> dict[str, Any] | None:
    """The policy a new run of ``codec`` stores with its weights (None for text)."""
    policy = POLICIES.get(codec.name) if is_music_codec(codec) else None
    return None if policy is None else dict(policy, rules=list(policy["rules"]))


def music_training_info(codec: Codec, tokens: Path) -> dict[str, Any]:
    """What a music run stores with its weights, from its encoded corpus ``tokens`` (``tokens.npy``):
    the learnt limits (``polyphony_cap``, ``max_hold_s``), the corpus's own texture
    (``corpus_texture``, :func:`chargen.codecs.midi.texture.statistics_of`) and the codec's policy."""
    vocab = codec.vocab  # type: ignore[attr-defined]
    found = corpus_texture(tokens, vocab)
    return {"polyphony_cap": cap_of(found), "max_hold_s": hold_of(found, vocab),
            "corpus_texture": statistics_of(found, vocab), POLICY_KEY: training_policy(codec)}


def corpus_statistics(checkpoint: Checkpoint) -> tuple[dict[str, Any] | None, str]:
    """A music checkpoint's corpus texture (``chargen info``) and where it comes from (None: unknown).

    Runs store it with the weights; for older ones it is computed from the
    ``tokens.npy`` beside them, if it is still there.
    """
    stored = checkpoint.training.get("corpus_texture")
    if isinstance(stored, dict):
        return stored, "of the training corpus"
    tokens = checkpoint.path.parent / TOKENS
    vocab = getattr(checkpoint.codec, "vocab", None)
    if vocab is not None and tokens.is_file():
        try:
            return statistics_of(corpus_texture(tokens, vocab), vocab), f"computed from {tokens}"
        except (OSError, ValueError):
            pass
    return None, "unknown (older checkpoint without its run's tokens.npy)"


def stored_policy(checkpoint: Checkpoint) -> dict[str, Any]:
    """The checkpoint's stored policy, or the legacy one; malformed parts fall back to the legacy ones."""
    stored = checkpoint.training.get(POLICY_KEY)
    known = set(default_rules(checkpoint.codec.vocab))  # type: ignore[attr-defined]
    if not isinstance(stored, dict):
        return dict(LEGACY_POLICY, rules=sorted(known))
    rules = stored.get("rules")
    if not isinstance(rules, list) or not all(isinstance(r, str) and r in known for r in rules):
        rules = sorted(known)
    return {"rules": rules, "cap": stored.get("cap") is not False, "hold": stored.get("hold") is not False,
            "beam_unbiased": stored.get("beam_unbiased") is True}


def music_rules(checkpoint: Checkpoint) -> MusicRules | None:
    """A music checkpoint's part in decoding (None for text): its learnt limits and the default it stores."""
    codec = checkpoint.codec
    if not is_music_codec(codec):
        return None
    cap = learnt_polyphony_cap(checkpoint)[0] or 0
    hold = learnt_max_hold_s(checkpoint)[0]
    policy = stored_policy(checkpoint)
    return MusicRules(codec.vocab, cap if policy["cap"] else 0, hold if policy["hold"] else 0.0,  # type: ignore
                      tuple(sorted(policy["rules"])), policy["beam_unbiased"], corpus_cap=cap, corpus_hold_s=hold)
