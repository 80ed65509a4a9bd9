"""Prototype: the MIDI grammar applied in Generator-style decoding loops (sampling, greedy, beam).

The decoder itself is chargen.sampling's (being unified elsewhere); these loops
mirror it step for step with the grammar's bans as a [B, V] mask, to show the
interface suffices for all three decoders before it is wired in: the samples
respect the cap, and the log-probability stays the model's own.
"""

from __future__ import annotations

import io
import math

import mido
import pytest
import torch

from chargen.constraints import ban_mask
from chargen.inference import expand_state, reorder_state
from chargen.midi_codec import MidiCodec
from chargen.midi_export import decode_to_midi
from chargen.midi_grammar import MidiGrammar
from chargen.model import CharRNN, ModelConfig
from chargen.sampling import Generator, advance_beams, draw_one, sequence_logprob

CAP = 4


@pytest.fixture(scope="module")
def generator() -> Generator:
    """An untrained model made eager for notes (sharper output layer, NOTE_ONs favoured).

    Unconstrained, even its greedy and beam outputs pile up a dozen notes, so
    every decoder below has something for the grammar to stop.
    """
    torch.manual_seed(0)
    codec = MidiCodec()
    model = CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=1, hidden=32, embedding=16))
    with torch.no_grad():
        model.head.weight.mul_(10.0)
        model.head.bias[: codec.vocab.note_off_base] += 1.0
    return Generator(model, codec)


def sample_loop(gen: Generator, prime: list[int], length: int, n: int, cap: int | None, seed: int,
                greedy: bool = False) -> list[tuple[list[int], float]]:
    """Generator._sample's loop with the grammar's mask applied before the draw (cap None: no grammar)."""
    logits, state = gen.prime_state(prime)
    logits, state = logits.expand(n, -1), expand_state(state, n)
    grammars = [MidiGrammar(cap, prime, gen.codec.vocab) for _ in range(n)] if cap is not None else []
    rng = torch.Generator().manual_seed(seed)
    tokens_out: list[list[int]] = [[] for _ in range(n)]
    logprob = [0.0] * n
    for _ in range(length):
        scores = logits
        if grammars:
            scores = logits.masked_fill(torch.from_numpy(ban_mask(grammars, logits.shape[-1])), -math.inf)
        tokens = scores.argmax(dim=-1) if greedy else draw_one(torch.softmax(scores, dim=-1), rng)
        own = torch.log_softmax(logits.double(), dim=-1)  # the model's own, not the masked distribution
        for i, token in enumerate(tokens.tolist()):
            tokens_out[i].append(token)
            logprob[i] += float(own[i, token])
            if grammars:
                grammars[i].push(token)
        logits, state = gen.stepper.step(tokens, state)
    return list(zip(tokens_out, logprob))


def beam_loop(gen: Generator, prime: list[int], length: int, k: int, cap: int) -> tuple[list[int], float]:
    """Generator._beam's loop with grammars in place of n-gram blockers (advance_beams forks them)."""
    vocab = gen.codec.vocab_size
    logits, state = gen.prime_state(prime)
    logits, state = logits.expand(k, -1), tuple(s.expand(-1, k, -1) for s in state)
    scores = torch.full((k, 1), -math.inf, dtype=torch.float64)
    scores[0] = 0.0
    grammars = [MidiGrammar(cap, prime, gen.codec.vocab)] * k
    first = grammars[0].banned()
    rows, cols = [0] * len(first), list(first)
    history = []
    for _ in range(length):
        candidates = torch.log_softmax(logits.double(), dim=-1).add_(scores)
        candidates.numpy()[rows, cols] = -math.inf
        best = torch.topk(candidates.view(-1), k)
        parents, tokens = best.indices.div(vocab, rounding_mode="floor"), best.indices.remainder(vocab)
        scores = best.values[:, None]
        history.append((parents.tolist(), tokens.tolist()))
        grammars, rows, cols = advance_beams(grammars, parents.tolist(), tokens.tolist(), vocab)
        logits, state = gen.stepper.step(tokens, reorder_state(state, parents))
    ids, row = [], 0  # topk sorts: row 0 is the best beam
    for parent_list, token_list in reversed(history):
        ids.append(token_list[row])
        row = parent_list[row]
    return ids[::-1], float(scores[0, 0])


def peak_polyphony(ids: list[int]) -> int:
    """Most notes sounding at once in the exported file, read back by mido."""
    buffer = io.BytesIO()
    decode_to_midi(ids, max_note_s=5.0).save(file=buffer)
    buffer.seek(0)
    sounding: set[int] = set()
    peak = 0
    for msg in mido.MidiFile(file=buffer):
        if msg.type == "note_on" and msg.velocity > 0:
            sounding.add(msg.note)
            peak = max(peak, len(sounding))
        elif msg.type in ("note_on", "note_off"):
            sounding.discard(msg.note)
    return peak


def test_sampling_with_the_mask_respects_the_cap_where_plain_sampling_does_not(generator: Generator) -> None:
    prime = [generator.codec.vocab.velocity_base + 20]
    free = sample_loop(generator, prime, 400, 3, None, seed=1)
    assert max(peak_polyphony(ids) for ids, _ in free) > CAP  # without the grammar the cap means nothing
    constrained = sample_loop(generator, prime, 400, 3, CAP, seed=1)
    for ids, logprob in constrained:
        assert 0 < peak_polyphony(ids) <= CAP
        # The reported log-probability is the model's own, not the renormalised masked one.
        assert logprob == pytest.approx(sequence_logprob(generator.model, prime, ids), rel=1e-6)


def test_greedy_with_the_mask_respects_the_cap(generator: Generator) -> None:
    (free, _), = sample_loop(generator, [300], 300, 1, None, seed=0, greedy=True)
    assert peak_polyphony(free) > 3
    (ids, _), = sample_loop(generator, [300], 300, 1, 3, seed=0, greedy=True)
    assert peak_polyphony(ids) == 3
    grammar = MidiGrammar(3, [300])
    for token in ids:
        assert grammar.allows(token)
        grammar.push(token)


def test_beam_search_with_grammars_through_advance_beams_respects_the_cap(generator: Generator) -> None:
    prime = [generator.codec.vocab.velocity_base + 20]
    ids, score = beam_loop(generator, prime, 200, 4, 3)
    assert peak_polyphony(ids) == 3
    grammar = MidiGrammar(3, prime)
    for token in ids:
        assert grammar.allows(token)
        grammar.push(token)
    assert score == pytest.approx(sequence_logprob(generator.model, prime, ids), rel=1e-6)
