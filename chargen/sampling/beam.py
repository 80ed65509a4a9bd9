"""Batched beam search: all K beams advance as one batch, one model step per generated token."""

from __future__ import annotations

import math

import torch

from chargen.model import State
from chargen.sampling.config import DecodeConfig
from chargen.sampling.decoder import sampling_logits, temper
from chargen.sampling.grammar import MusicRules, sequence_constraints
from chargen.sampling.ngram import advance_beams, effective_ban
from chargen.sampling.steppers import Stepper, reorder_state


@torch.inference_mode()
def beam_search(stepper: Stepper, logits: torch.Tensor, state: State, prime_ids: list[int], cfg: DecodeConfig,
                rng: torch.Generator, label: int | None = None,
                music: MusicRules | None = None) -> list[tuple[list[int], float]]:
    """The best ``cfg.num_samples`` beams as (ids, log-probability), best first, from the primed ``logits`` [1, V].

    The bookkeeping stays in a few whole-tensor ops per step, with no Python
    per beam unless a constraint (the n-gram block, the MIDI grammar) needs it:
    at K=8 the step itself is a few hundred microseconds, and every small op
    after it costs several. Scores are the model's own log-probabilities; bans
    only decide which candidates may be ranked.
    """
    k = cfg.beam_width or 1
    bias = stepper.label_bias(label, k)  # every beam has the generation's label
    vocab = logits.shape[-1]
    logits, state = logits.expand(k, -1), tuple(s.expand(-1, k, -1) for s in state)  # views: reordered below
    scores = torch.full((k, 1), float("-inf"), dtype=torch.float64)  # [K, 1] total log-likelihood
    scores[0] = 0.0  # all beams start identical: expand only the first
    perturbed, drawn_lp = scores.clone(), scores.clone()  # beam_unbiased: each beam's Gumbel key, tempered log-prob
    history: list[tuple[torch.Tensor, torch.Tensor]] = []  # per step: (parents, tokens); sequences built at the end
    constraints = sequence_constraints(cfg, music, prime_ids, 1)
    block = bool(constraints)
    blockers = constraints * k  # one shared until advance_beams forks it for a second child
    first = effective_ban(blockers[0].banned(), vocab) if block else ()
    rows, cols = [0] * len(first), list(first)  # bans for the coming step; only row 0 is alive at first
    for _ in range(cfg.length):
        candidates = torch.log_softmax(logits.double(), dim=-1).add_(scores)  # [K, V]: lp + score, in float64
        if rows:  # through numpy's view of the same memory: a quarter of the cost of torch's list indexing
            candidates.numpy()[rows, cols] = -math.inf
        if cfg.beam_unbiased:
            keys, phi = unbiased_step(candidates, logits, cfg, perturbed, drawn_lp, rng)
            chosen = torch.topk(keys.view(-1), k).indices  # the K largest keys: ranked by key, scored by the model
            parents = chosen.div(vocab, rounding_mode="floor")  # [K]
            tokens = chosen.remainder(vocab)  # [K]
            perturbed, drawn_lp = keys.view(-1)[chosen][:, None], phi.view(-1)[chosen][:, None]
            chosen_scores = candidates.view(-1)[chosen]
        elif cfg.beam_sample:
            # Magenta-style: draw candidates from the tempered distribution, keep the likeliest.
            probs = torch.softmax(sampling_logits(logits.float(), cfg), -1)
            allowed = torch.isfinite(candidates)
            probs = probs.masked_fill(~allowed, 0.0)
            alive = allowed.any(-1)
            starved = alive & ~(probs.sum(-1) > 0)  # all the tempered mass was on banned tokens (a tiny temperature)
            if bool(starved.any()):  # then the tempered distribution over the allowed tokens alone
                allowed_logits = logits.float().masked_fill(~allowed, float("-inf"))
                probs[starved] = torch.softmax(temper(allowed_logits[starved], cfg.temperature), -1)
            probs[~alive] = 1.0 / vocab  # rows that are dead anyway; keeps multinomial defined
            drawn = torch.multinomial(probs, k, replacement=False, generator=rng)  # [K, K]
            best = torch.topk(candidates.gather(1, drawn).view(-1), k)
            parents = best.indices.div(k, rounding_mode="floor")  # [K]
            tokens = drawn.view(-1)[best.indices]  # [K]
            chosen_scores = best.values
        else:
            best = torch.topk(candidates.view(-1), k)
            parents = best.indices.div(vocab, rounding_mode="floor")  # [K]
            tokens = best.indices.remainder(vocab)  # [K]
            chosen_scores = best.values
        scores = chosen_scores[:, None]
        history.append((parents, tokens))
        if block:
            blockers, rows, cols = advance_beams(blockers, parents.tolist(), tokens.tolist(), vocab)
        logits, state = stepper.step(tokens, reorder_state(state, parents), bias)
    final = scores[:, 0].tolist()
    finite = [i for i in sorted(range(k), key=lambda i: final[i], reverse=True) if math.isfinite(final[i])]
    steps = [(p.tolist(), t.tolist()) for p, t in history]
    beams = []
    for i in finite[: cfg.num_samples]:
        ids, row = [], i
        for parent_list, token_list in reversed(steps):
            ids.append(token_list[row])
            row = parent_list[row]
        ids.reverse()
        beams.append((ids, final[i]))
    return beams


def unbiased_step(candidates: torch.Tensor, logits: torch.Tensor, cfg: DecodeConfig, perturbed: torch.Tensor,
                  drawn_lp: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of stochastic beam search (Kool, van Hoof and Welling 2019, "Stochastic Beams and Where to Find
    Them"): each child's Gumbel key, drawn conditioned on its parent's key ``perturbed`` [K, 1] being the
    largest below it, and its log-probability under the tempered, filtered distribution ``drawn_lp`` [K, V].

    The K largest keys of the last step are K samples without replacement from that distribution, so the
    beams keep the texture of sampling; banned candidates (-inf in ``candidates``) get no key.
    """
    tempered = sampling_logits(logits.float(), cfg).double()
    tempered = tempered.masked_fill(~torch.isfinite(candidates), float("-inf"))
    phi = drawn_lp + torch.log_softmax(tempered, dim=-1)  # [K, V]; a row with no allowed token is all -inf
    uniform = torch.rand(phi.shape, generator=rng, dtype=torch.float64).clamp_(min=1e-300)
    keys = phi - torch.log(-torch.log(uniform))  # unconditioned Gumbel(phi) keys
    top = keys.max(dim=-1, keepdim=True).values
    # Conditioned on max = the parent's key: G = -log(exp(-parent) - exp(-top) + exp(-keys)), in a stable form.
    gap = (keys - top).clamp(max=0.0)
    log1mexp = torch.where(gap > -0.6931, torch.log(-torch.expm1(gap)), torch.log1p(-torch.exp(gap)))
    v = perturbed - keys + log1mexp
    conditioned = perturbed - v.clamp(min=0.0) - torch.log1p(torch.exp(-v.abs()))
    return conditioned.masked_fill(~torch.isfinite(phi), float("-inf")), phi
