"""Where the MIDI grammar's banned probability goes: the renormalisation over allowed tokens, measured.

Sampling under a constraint masks the banned tokens and renormalises the
rest: the banned mass is spread over the allowed tokens in proportion to
their probability. This module samples exactly as ``Generator._sample`` does
(same stepper, noise and token choice: the same tokens) and records, at every step, the
model's distribution before and after the mask: the mass banned, and the
share of each token class (NOTE_ON / NOTE_OFF / TIME_SHIFT / VELOCITY, or
PITCH / DURATION / ... for the note codec) and the expected NOTE_ON pitch,
before and after. Averaged over steps, the difference is what the mask itself
moves, step by step, apart from where the piece then goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from chargen.sampling import DecodeConfig, Generator
from chargen.sampling.constraints import ban_mask
from chargen.sampling.decoder import choose_tokens
from chargen.sampling.grammar import sequence_constraints
from chargen.sampling.steppers import expand_state, generation_threads


@dataclass
class Shift:
    """Per-step means of what the mask moved (after - before), over all steps of all rows."""

    steps: int = 0
    banned_mass: float = 0.0  # mean probability the model put on banned tokens
    masked_steps: float = 0.0  # share of steps where anything with probability > 1e-6 was banned
    class_before: dict[str, float] = field(default_factory=dict)
    class_after: dict[str, float] = field(default_factory=dict)
    pitch_before: float = 0.0  # expected NOTE_ON pitch, weighted by each step's NOTE_ON mass after the mask
    pitch_after: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"steps": self.steps, "banned_mass": self.banned_mass, "masked_steps": self.masked_steps,
                "class_before": self.class_before, "class_after": self.class_after,
                "pitch_before": self.pitch_before, "pitch_after": self.pitch_after}


def token_classes(vocab: object) -> dict[str, slice]:
    """The id ranges of a music vocabulary's token classes."""
    if hasattr(vocab, "duration_base"):
        return {"pitch": slice(0, 128), "duration": slice(128, vocab.shift_base),  # type: ignore[attr-defined]
                "shift": slice(vocab.shift_base, vocab.velocity_base),  # type: ignore[attr-defined]
                "velocity": slice(vocab.velocity_base, vocab.size)}  # type: ignore[attr-defined]
    return {"on": slice(0, 128), "off": slice(128, 256), "shift": slice(256, vocab.velocity_base),  # type: ignore
            "velocity": slice(vocab.velocity_base, vocab.size)}  # type: ignore[attr-defined]


@torch.inference_mode()
def measure(generator: Generator, config: DecodeConfig) -> tuple[Shift, list[list[int]]]:
    """Sample ``config`` (sampling, not beam) as ``Generator.generate`` does, measuring the mask at every step.

    Returns the measurement and the samples' token ids (the same ids ``generate`` gives for this config).
    """
    cfg = config.resolved(generator.music)
    prime_ids = generator.codec.encode(generator.codec.default_prime)
    n = cfg.num_samples
    rng = torch.Generator().manual_seed(cfg.seed)
    logits, state = generator.prime_state(prime_ids)
    bias = generator.stepper.label_bias(None, n)
    logits, state = logits.expand(n, -1), expand_state(state, n)
    blockers = sequence_constraints(cfg, generator.music, prime_ids, n)
    vocab_size = logits.shape[-1]
    noise_buffer = torch.empty(n, vocab_size)
    classes = token_classes(generator.codec.vocab)  # type: ignore[attr-defined]
    pitches = np.arange(128, dtype=np.float64)
    before_sum = dict.fromkeys(classes, 0.0)
    after_sum = dict.fromkeys(classes, 0.0)
    banned_total = masked = pitch_b = pitch_a = weight = 0.0
    ids: list[list[int]] = [[] for _ in range(n)]
    with generation_threads():
        for _ in range(cfg.length):
            bans = [b.banned() for b in blockers] if blockers else None
            p = torch.softmax(logits.double(), dim=-1).numpy()
            q = p * ~ban_mask(blockers, vocab_size) if blockers else p.copy()
            kept = q.sum(axis=1)
            banned_total += float((1.0 - kept).sum())
            masked += float((1.0 - kept > 1e-6).sum())
            q /= np.maximum(kept, 1e-300)[:, None]
            for name, span in classes.items():
                before_sum[name] += float(p[:, span].sum())
                after_sum[name] += float(q[:, span].sum())
            on_b, on_a = p[:, :128], q[:, :128]
            w, w_b = on_a.sum(axis=1), on_b.sum(axis=1)
            ok = (w > 0) & (w_b > 0)
            pitch_b += float((w * (on_b @ pitches) / np.maximum(w_b, 1e-300))[ok].sum())
            pitch_a += float((on_a @ pitches)[ok].sum())
            weight += float(w[ok].sum())
            choice = choose_tokens(logits, cfg, bans, lambda: noise_buffer.exponential_(1, generator=rng))
            for i, token in enumerate(choice.tokens.tolist()):
                ids[i].append(token)
                if blockers:
                    blockers[i].push(token)
            logits, state = generator.stepper.step(choice.tokens, state, bias)
    steps = cfg.length * n
    shift = Shift(steps, banned_total / steps, masked / steps,
                  {k: v / steps for k, v in before_sum.items()}, {k: v / steps for k, v in after_sum.items()},
                  pitch_b / weight if weight else float("nan"), pitch_a / weight if weight else float("nan"))
    return shift, ids
