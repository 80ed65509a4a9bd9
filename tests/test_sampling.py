"""Decoders against the model's own probabilities, and the repetition remedy."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from chargen.model import CharRNN, ModelConfig
from chargen.runs.checkpoint import load_checkpoint
from chargen.runs.layout import BEST
from chargen.sampling import DecodeConfig, Generator, NgramBlocker, advance_beams, filter_logits, sequence_logprob


@pytest.fixture(scope="module")
def generator(trained_run: Path) -> Generator:
    loaded = load_checkpoint(trained_run / BEST)
    return Generator(loaded.model, loaded.codec)


def test_beam_width_one_is_greedy(generator: Generator) -> None:
    for block in (0, 12):
        greedy = generator.generate("The ", DecodeConfig(length=80, greedy=True, no_repeat_ngram=block))
        beam = generator.generate("The ", DecodeConfig(length=80, beam_width=1, no_repeat_ngram=block))
        assert beam.config.decoder == "beam"
        assert beam.samples[0].text == greedy.samples[0].text
        assert beam.samples[0].logprob == pytest.approx(greedy.samples[0].logprob, abs=1e-6)


def test_beams_are_sorted_and_scored_with_the_models_own_logprob(generator: Generator) -> None:
    result = generator.generate("The fox ", DecodeConfig(length=60, beam_width=6, num_samples=6, no_repeat_ngram=0))
    scores = [s.logprob for s in result.samples]
    assert scores == sorted(scores, reverse=True) and len(scores) == 6
    prime_ids = generator.codec.encode("The fox ")
    for sample in result.samples:
        assert sample.logprob == pytest.approx(sequence_logprob(generator.model, prime_ids, sample.ids), abs=1e-3)
    greedy = generator.generate("The fox ", DecodeConfig(length=60, greedy=True, no_repeat_ngram=0))
    assert scores[0] >= greedy.samples[0].logprob - 1e-6  # a wider search never scores worse


def test_every_decoder_reports_its_logprob(generator: Generator) -> None:
    prime_ids = generator.codec.encode("A ")
    for config in (DecodeConfig(length=50, seed=5, temperature=0.7, top_k=20),
                   DecodeConfig(length=50, seed=5, top_p=0.8),
                   DecodeConfig(length=50, greedy=True),
                   DecodeConfig(length=50, beam_width=3, beam_sample=True, seed=5, num_samples=2)):
        result = generator.generate("A ", config)
        for sample in result.samples:
            assert sample.logprob == pytest.approx(sequence_logprob(generator.model, prime_ids, sample.ids), abs=1e-3)


def test_seeded_sampling_is_reproducible_and_batches_are_independent(generator: Generator) -> None:
    config = DecodeConfig(length=80, seed=11, num_samples=3)
    first, second = generator.generate("The ", config), generator.generate("The ", config)
    assert [s.text for s in first.samples] == [s.text for s in second.samples]
    assert len({s.text for s in first.samples}) == 3


def test_top_k_one_and_tiny_top_p_are_greedy(generator: Generator) -> None:
    greedy = generator.generate("The ", DecodeConfig(length=40, greedy=True, no_repeat_ngram=0)).samples[0].text
    assert generator.generate("The ", DecodeConfig(length=40, top_k=1, seed=3)).samples[0].text == greedy
    assert generator.generate("The ", DecodeConfig(length=40, top_p=1e-6, seed=3)).samples[0].text == greedy
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert torch.isinf(filter_logits(logits, 2, None)).tolist() == [[True, True, False, False]]
    kept = ~torch.isinf(filter_logits(logits, None, 0.7))
    assert kept.tolist() == [[False, False, True, True]]


def longest_repeat_count(text: str, n: int) -> int:
    counts: dict[str, int] = {}
    for i in range(len(text) - n + 1):
        counts[text[i : i + n]] = counts.get(text[i : i + n], 0) + 1
    return max(counts.values()) if counts else 0


def test_ngram_block_removes_the_loop_plain_beam_search_falls_into(generator: Generator) -> None:
    plain = generator.generate("The ", DecodeConfig(length=300, beam_width=6, no_repeat_ngram=0)).samples[0].text
    # char-rnn issue 138: plain character-level beam search settles into a loop
    assert longest_repeat_count(plain, 12) >= 5, plain
    blocked = generator.generate("The ", DecodeConfig(length=300, beam_width=6, no_repeat_ngram=12)).samples[0].text
    assert longest_repeat_count("The " + blocked, 12) == 1, blocked
    assert len(set(blocked)) > 10, blocked  # still text, not a degenerate stream


def test_beam_children_copy_their_parents_ngrams_before_any_child_adds_its_own() -> None:
    parent = NgramBlocker(3, [1, 2, 3, 1])  # seen: (1, 2) -> 3, (2, 3) -> 1; tail (3, 1)
    children, rows, cols = advance_beams([parent], parents=[0, 0], tokens=[2, 4], vocab=10)
    assert children[0] is not children[1]
    assert children[0].seen[(3, 1)] == (2,) and children[1].seen[(3, 1)] == (4,)  # not (2, 4): no leak
    assert children[0].banned() == (3,) and children[1].banned() == ()  # "1 2 3" again is banned
    assert (rows, cols) == ([0], [3])
    everything = NgramBlocker(2, [1, 1, 1, 2, 1])  # after 1, both tokens have been seen: the block yields
    assert advance_beams([everything], parents=[0], tokens=[1], vocab=2)[1:] == ([], [])


def test_forked_blockers_ban_exactly_the_repeats_of_their_own_sequence() -> None:
    """Many steps of random forks, past several folds of ``own`` into ``shared``, against a brute-force scan."""
    import random

    rng = random.Random(7)
    n, vocab, width = 4, 6, 5  # 216 tails: enough to fold, few enough that bans are frequent
    prime = [rng.randrange(vocab) for _ in range(10)]
    blockers = [NgramBlocker(n, prime)] * width
    sequences = [list(prime)] * width
    banned_any = 0
    for _ in range(400):  # > OWN_LIMIT entries per lineage: folds happen while forks share maps
        parents = sorted(rng.randrange(width) for _ in range(width))
        tokens = [rng.randrange(vocab) for _ in range(width)]
        blockers, rows, cols = advance_beams(blockers, parents, tokens, vocab)
        sequences = [sequences[p] + [t] for p, t in zip(parents, tokens)]
        for row, (blocker, sequence) in enumerate(zip(blockers, sequences)):
            tail = sequence[len(sequence) - n + 1 :]
            want = {sequence[i + n - 1] for i in range(len(sequence) - n + 1) if sequence[i : i + n - 1] == tail}
            assert set(blocker.banned()) == want
            got = {c for r, c in zip(rows, cols) if r == row}
            assert got == (want if len(want) < vocab else set())  # a ban of every token yields
            banned_any += bool(want)
    assert banned_any > 100
    assert min(len(b.shared) for b in blockers) > NgramBlocker.OWN_LIMIT  # every lineage has folded


def test_extreme_settings_never_crash() -> None:
    """Found by fuzzing the service: a vanishing top-p, or an n-gram block that bans every token."""
    from chargen.codecs.text import TextCodec

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=2, layers=1, hidden=8, embedding=4))
    generator = Generator(model, TextCodec("ab"))
    assert len(generator.generate("a", DecodeConfig(length=30, top_p=1e-50, seed=1)).samples[0].text) == 30
    for config in (DecodeConfig(length=30, no_repeat_ngram=1, seed=1),
                   DecodeConfig(length=30, greedy=True, no_repeat_ngram=2),
                   DecodeConfig(length=30, beam_width=2, no_repeat_ngram=1)):
        assert len(generator.generate("ab", config).samples[0].text) == 30


def tiny_generator(seed: int = 0) -> Generator:
    from chargen.codecs.text import TextCodec

    codec = TextCodec("abcde \n")
    torch.manual_seed(seed)
    return Generator(CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=1, hidden=16, embedding=4)), codec)


@pytest.mark.parametrize("temperature", [1e-30, 1e-40, 1e-320, 5e-324])
def test_vanishing_temperature_is_greedy_not_token_0(temperature: float) -> None:
    """Issue 15 item 11: below float32's range the division gave +/-inf and NaN, and every token was 0."""
    generator = tiny_generator()
    greedy = generator.generate("ab", DecodeConfig(length=60, greedy=True, no_repeat_ngram=0)).samples[0]
    cold = generator.generate("ab", DecodeConfig(length=60, temperature=temperature, seed=3)).samples[0]
    assert cold.ids == greedy.ids and cold.logprob == greedy.logprob
    assert set(cold.ids) != {0}


def test_greedy_with_a_temperature_is_refused_by_the_config_itself() -> None:
    from chargen.errors import ChargenError

    generator = tiny_generator()
    with pytest.raises(ChargenError, match="greedy decoding takes no temperature"):
        generator.generate("ab", DecodeConfig(length=5, greedy=True, temperature=0.5))
    generator.generate("ab", DecodeConfig(length=5, greedy=True, temperature=1.0))  # 1 changes nothing: allowed


def test_a_ban_on_every_token_yields_for_that_step_in_every_decoder() -> None:
    """One rule (effective_ban): with 7 symbols and no_repeat_ngram=1, step 8 has every token banned."""
    from chargen.sampling import choose_tokens, effective_ban

    assert effective_ban((0, 1, 2), 3) == () and effective_ban((0, 1, 1), 3) == (0, 1, 1)
    logits = torch.tensor([[0.0, 3.0, 1.0]])
    banned_all = choose_tokens(logits, DecodeConfig(greedy=True), [(0, 1, 2)])
    assert banned_all.tokens.tolist() == [1]  # the likeliest, not token 0
    assert choose_tokens(logits, DecodeConfig(greedy=True), [(1,)]).tokens.tolist() == [2]
    generator = tiny_generator()
    for config in (DecodeConfig(length=20, greedy=True, no_repeat_ngram=1),
                   DecodeConfig(length=20, no_repeat_ngram=1, seed=2)):
        ids = generator.generate("a", config).samples[0].ids
        assert len(set(ids[:6])) == 6  # nothing repeats until every token is banned ("a" is the prime)


def test_logprobs_are_the_models_own_summed_in_order() -> None:
    """Accumulated step by step (no per-step logits kept), the total is the forward pass's, in float64."""
    generator = tiny_generator(1)
    result = generator.generate("abc", DecodeConfig(length=200, temperature=0.7, top_k=4, seed=9, num_samples=2))
    for sample in result.samples:
        expected = sequence_logprob(generator.model, generator.codec.encode("abc"), sample.ids)
        assert sample.logprob == pytest.approx(expected, abs=1e-6)


def test_unbiased_beams_are_draws_from_the_model_without_replacement() -> None:
    """Stochastic beam search (beam_unbiased): one beam is a sample of the model's sequence distribution, so
    over many seeds the two-token sequences come as often as the model gives them (a likeliest-first beam
    would pick one every time), and K beams of one token are K different tokens."""
    gen = tiny_generator(3)
    base = DecodeConfig(length=2, beam_width=1, beam_unbiased=True, no_repeat_ngram=0)
    prime = gen.codec.decode([0])
    logits, state = gen.prime_state([0])
    first = torch.log_softmax(logits[0].double(), -1)
    seen: dict[tuple[int, ...], int] = {}
    draws = 3000
    for seed in range(draws):
        ids = tuple(gen.generate(prime, DecodeConfig(**{**base.__dict__, "seed": seed})).samples[0].ids)
        seen[ids] = seen.get(ids, 0) + 1
    for ids, count in sorted(seen.items(), key=lambda kv: -kv[1])[:4]:
        step_logits, _ = gen.stepper.step(torch.tensor([ids[0]]), state, None)
        expected = math.exp(first[ids[0]] + torch.log_softmax(step_logits[0].double(), -1)[ids[1]])
        assert abs(count / draws - expected) < 4 * math.sqrt(expected * (1 - expected) / draws) + 1e-3, ids
    assert len(seen) > 4  # sequences the likeliest-first beam never gives
    wide = gen.generate(prime, DecodeConfig(length=1, beam_width=7, num_samples=7, beam_unbiased=True, seed=1))
    assert len({tuple(s.ids) for s in wide.samples}) == 7
    with pytest.raises(Exception, match="different stochastic beam searches"):
        DecodeConfig(beam_width=2, beam_unbiased=True, beam_sample=True).validate(gen.codec.vocab_size)
