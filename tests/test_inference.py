"""The fused one-token step against the training forward; the decoders' thread setting and draw."""

from __future__ import annotations

import pytest
import torch

from chargen.model import CharRNN, ModelConfig
from chargen.sampling import steppers as inference
from chargen.sampling.steppers import PackedStepper, Stepper, batch_stepper, generation_threads


def model_for(cell: str, layers: int = 2) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=layers, hidden=16, embedding=8)).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 3])
def test_step_matches_the_training_forward(cell: str, layers: int) -> None:
    model = model_for(cell, layers)
    tokens = torch.randint(0, 11, (3, 9))
    logits, final = model(tokens)  # [3, 9, 11]
    stepper = Stepper(model)
    state = stepper.initial_state(3)
    for t in range(9):
        step_logits, state = stepper.step(tokens[:, t], state)
        torch.testing.assert_close(step_logits, logits[:, t], atol=1e-5, rtol=1e-4)
    for got, want in zip(state, final):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 3])
def test_packed_step_for_beams_matches_the_training_forward(cell: str, layers: int) -> None:
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN: beams step through the plain Stepper (covered above)")
    model = model_for(cell, layers)
    stepper = batch_stepper(model, Stepper(model))
    assert isinstance(stepper, PackedStepper)  # oneDNN is here, so the packed path must be the one in use
    tokens = torch.randint(0, 11, (8, 9))
    logits, final = model(tokens)  # [8, 9, 11]
    state = stepper.initial_state(8)
    with torch.inference_mode():
        for t in range(9):
            step_logits, state = stepper.step(tokens[:, t], state)
            torch.testing.assert_close(step_logits, logits[:, t], atol=1e-5, rtol=1e-4)
    for got, want in zip(state, final):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def reference_lstm_step(stepper: Stepper, tokens: torch.Tensor, state: tuple[torch.Tensor, ...],
                        bias: torch.Tensor | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The LSTM step as the engine computed it before its scratch buffers (fresh tensors, chunk, stack):
    the same ops on the same values, so the buffered step must equal it bit for bit (same seeded samples)."""
    new_h, new_c, x = [], [], tokens
    for layer in range(stepper.layers):
        h, c_prev = state[0][layer], state[1][layer]
        if layer == 0:
            rows = stepper.input_table.index_select(0, tokens)
            gates = (rows if bias is None else rows.add_(bias)).addmm_(h, stepper.w_hh[0])
        else:
            gates = torch.addmm(stepper.bias[layer], h, stepper.w_hh[layer]).addmm_(x, stepper.w_ih[layer])
        i, f, o, s = gates.sigmoid_().chunk(4, dim=1)
        c = torch.addcmul(f * c_prev, i, s, value=2).sub_(i)
        x = o * c.tanh()
        new_h.append(x)
        new_c.append(c)
    return torch.addmm(stepper.head_b, x, stepper.head_w), (torch.stack(new_h), torch.stack(new_c))


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("labelled", [False, True])
def test_lstm_step_equals_the_unbuffered_step_bit_for_bit(rows: int, labelled: bool) -> None:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, layers=3, hidden=24, embedding=8,
                                labels=["a", "b"] if labelled else [])).eval()
    stepper = Stepper(model)
    bias = stepper.label_bias(1, rows)
    state = want_state = tuple(torch.rand(s.shape) - 0.5 for s in stepper.initial_state(rows))
    tokens = torch.randint(0, 11, (rows,))
    with torch.inference_mode():
        for _ in range(12):
            logits, state = stepper.step(tokens, state, bias)
            want, want_state = reference_lstm_step(stepper, tokens, want_state, bias)
            assert torch.equal(logits, want)
            assert all(torch.equal(got, expected) for got, expected in zip(state, want_state))
            tokens = logits.argmax(dim=-1)


def test_lstm_steps_of_alternating_batch_sizes_stay_exact() -> None:
    """The scratch buffer follows the batch size (a server's batches vary from step to step)."""
    stepper = Stepper(model_for("lstm", 2))
    with torch.inference_mode():
        for rows in (1, 4, 1, 2, 4):
            state = tuple(torch.rand(s.shape) - 0.5 for s in stepper.initial_state(rows))
            tokens = torch.arange(rows) % 11
            logits, (h, c) = stepper.step(tokens, state)
            want, (want_h, want_c) = reference_lstm_step(stepper, tokens, state, None)
            assert torch.equal(logits, want) and torch.equal(h, want_h) and torch.equal(c, want_c)


def test_lstm_steps_in_concurrent_threads_do_not_share_scratch() -> None:
    """One stepper serves the service's concurrent generations: each thread's gates buffer is its own."""
    import threading

    stepper = Stepper(model_for("lstm"))
    with torch.inference_mode():
        alone = [stepper.step(torch.tensor([t % 11]), stepper.initial_state(1))[0] for t in range(40)]
    results: dict[int, list[torch.Tensor]] = {}
    start = threading.Barrier(4)

    def run(offset: int) -> None:
        start.wait()
        with torch.inference_mode():
            results[offset] = [stepper.step(torch.tensor([(t + offset) % 11]), stepper.initial_state(1))[0]
                               for t in range(40)]

    threads = [threading.Thread(target=run, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for offset, logits in results.items():
        assert all(torch.equal(got, alone[(t + offset) % 11]) for t, got in enumerate(logits))


def test_batch_stepper_falls_back_when_the_packed_products_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    model = model_for("lstm")
    plain = Stepper(model)
    monkeypatch.setattr(inference, "_linear", lambda x, packed, bias: torch.zeros(x.shape[0], packed.shape[0]))
    assert batch_stepper(model, plain) is plain
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert batch_stepper(model, plain) is plain


def test_step_outside_inference_mode_returns_plain_results() -> None:
    stepper = Stepper(model_for("lstm"))
    logits, (h, c) = stepper.step(torch.tensor([1]), stepper.initial_state(1))
    assert logits.shape == (1, 11) and h.shape == c.shape == (2, 1, 16)


def test_generation_threads_restores_torchs_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    with generation_threads():
        assert torch.get_num_threads() == inference.GENERATION_THREADS
        with generation_threads():  # nested (or another thread's) generation
            pass
        assert torch.get_num_threads() == inference.GENERATION_THREADS
    assert torch.get_num_threads() == before
    monkeypatch.setattr(inference, "GENERATION_THREADS", None)
    with generation_threads():
        assert torch.get_num_threads() == before


def test_draw_one_is_torch_multinomial_draw_for_draw() -> None:
    from chargen.sampling import draw_one, filter_logits

    for seed in range(200):
        torch.manual_seed(seed)
        logits = torch.randn(1 + seed % 8, 65) * (seed % 4)
        if seed % 3 == 0:  # zero-probability tokens, as top-k/top-p leave them
            logits = filter_logits(logits, 5, None)
        probs = torch.softmax(logits, dim=-1)
        ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        for _ in range(5):
            assert torch.equal(draw_one(probs, ours), torch.multinomial(probs, 1, generator=theirs).squeeze(1))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_decoders_score_with_the_forward_pass_and_repeat_with_a_seed(cell: str) -> None:
    from chargen.codecs.text import TextCodec
    from chargen.sampling import DecodeConfig, Generator, sequence_logprob

    codec = TextCodec("abcdefghij ")
    torch.manual_seed(1)
    model = CharRNN(ModelConfig(vocab_size=codec.vocab_size, cell=cell, layers=2, hidden=32, embedding=8))
    generator = Generator(model, codec)
    prime_ids = codec.encode("abc ")
    for config in (DecodeConfig(length=60, seed=4), DecodeConfig(length=60, seed=4, num_samples=3, top_k=4),
                   DecodeConfig(length=60, greedy=True), DecodeConfig(length=60, beam_width=8, num_samples=8),
                   DecodeConfig(length=60, beam_width=4, beam_sample=True, seed=2, num_samples=2)):
        first, again = generator.generate("abc ", config), generator.generate("abc ", config)
        assert [(s.text, s.logprob) for s in first.samples] == [(s.text, s.logprob) for s in again.samples]
        for sample in first.samples:
            assert sample.logprob == pytest.approx(sequence_logprob(model, prime_ids, sample.ids), abs=1e-4)


@pytest.mark.parametrize("length", [1, 2, 9, 10, 30])  # stepped up to SHORT_PRIME + 1 tokens, nn.LSTM beyond
def test_prime_state_matches_the_forward_pass(length: int) -> None:
    from chargen.codecs.text import TextCodec
    from chargen.sampling import Generator

    codec = TextCodec("abcdefghij ")
    torch.manual_seed(length)
    model = CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=2, hidden=16, embedding=8)).eval()
    prime = torch.randint(0, codec.vocab_size, (length,)).tolist()
    logits, (h, c) = Generator(model, codec).prime_state(prime)
    want, (h_want, c_want) = model(torch.tensor([prime]))
    torch.testing.assert_close(logits, want[:, -1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(h, h_want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(c, c_want, atol=1e-5, rtol=1e-4)


def test_beam_width_one_scores_exactly_like_greedy() -> None:
    from chargen.codecs.text import TextCodec
    from chargen.sampling import DecodeConfig, Generator

    codec = TextCodec("abcdefghij ")
    torch.manual_seed(3)
    generator = Generator(CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=2, hidden=32, embedding=8)), codec)
    for block in (0, 4):
        greedy = generator.generate("abc", DecodeConfig(length=200, greedy=True, no_repeat_ngram=block)).samples[0]
        beam = generator.generate("abc", DecodeConfig(length=200, beam_width=1, no_repeat_ngram=block)).samples[0]
        assert (beam.ids, beam.logprob) == (greedy.ids, greedy.logprob)


def test_prime_state_cache_returns_equal_fresh_tensors() -> None:
    from chargen.codecs.text import TextCodec
    from chargen.sampling import Generator

    codec = TextCodec("abcdefghij ")
    torch.manual_seed(5)
    generator = Generator(CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=2, hidden=16, embedding=8)), codec)
    prime = codec.encode("abc abc")
    logits, (h, c) = generator.prime_state(prime)
    want = (logits.clone(), h.clone(), c.clone())
    with torch.inference_mode():  # a caller scribbling on its copy must not reach the next one
        logits.fill_(0), h.fill_(0), c.fill_(0)
    again, (h2, c2) = generator.prime_state(prime)
    for got, expected in zip((again, h2, c2), want):
        assert torch.equal(got, expected)
    other, _ = generator.prime_state(codec.encode("ji"))
    assert not torch.equal(other, again)


def test_building_the_beam_stepper_does_not_hold_the_prime_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each lock guards one thing: priming goes on while the first wide beam search packs its weights."""
    import chargen.sampling.generator as generator_module
    from chargen.codecs.text import TextCodec
    from chargen.sampling import Generator

    codec = TextCodec("abcdefghij ")
    generator = Generator(CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=1, hidden=16, embedding=8)), codec)
    real = generator_module.batch_stepper
    seen: list[bool] = []

    def building(model, fallback):  # type: ignore[no-untyped-def]
        seen.append(generator._primed_lock.locked())  # held here, every prime would wait for the packing
        return real(model, fallback)

    monkeypatch.setattr(generator_module, "batch_stepper", building)
    assert generator.beam_stepper is generator.beam_stepper  # built once
    assert seen == [False]
