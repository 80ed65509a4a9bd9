"""The MIDI grammar through the real decoder (chargen.sampling): sampling, greedy and beam search alike.

Whatever the decoder, the settings and the prime, a music model's output under
the grammar exports a file with no note-off without its note-on and never more
notes at once than the cap; the reported log-probability stays the model's own;
the resolved settings (on by default, the learnt cap) replay to the same tokens.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chargen.codecs.midi import MidiCodec, ids_to_notes
from chargen.codecs.midi.export import DEFAULT_MAX_NOTE_S, decode_to_midi
from chargen.codecs.text import TextCodec
from chargen.errors import ChargenError
from chargen.model import CharRNN, ModelConfig
from chargen.sampling import DecodeConfig, Generator, sequence_logprob
from chargen.sampling.config import DEFAULT_MAX_HOLD_S
from tests.test_midi_grammar import _check_stream, _longest_note_s, _read_back

CAP = 4
V = MidiCodec().vocab


def eager_model(codec: MidiCodec) -> CharRNN:
    """An untrained model made eager for notes (sharper output layer, NOTE_ONs favoured).

    Unconstrained, even its greedy and beam outputs pile up a dozen notes, so
    every decoder has something for the grammar to stop.
    """
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=1, hidden=32, embedding=16))
    with torch.no_grad():
        model.head.weight.mul_(10.0)
        model.head.bias[: codec.vocab.note_off_base] += 1.0
    return model


@pytest.fixture(scope="module")
def generator() -> Generator:
    codec = MidiCodec()
    return Generator(eager_model(codec), codec, polyphony_cap=CAP)  # as if learnt from its corpus


def peak(ids: list[int]) -> int:
    return _read_back(decode_to_midi(ids, max_note_s=5.0))[1]


DECODERS = {
    "sample": {"temperature": 1.0, "num_samples": 2},
    "hot": {"temperature": 1.5, "top_k": 40},
    "greedy": {"greedy": True},
    "beam": {"beam_width": 3, "num_samples": 2},
    "beam-sample": {"beam_width": 3, "beam_sample": True},
}


@pytest.mark.slow
def test_on_by_default_for_music_with_the_learnt_cap_and_off_when_asked(generator: Generator) -> None:
    for name, options in DECODERS.items():
        free = generator.generate(None, DecodeConfig(length=300, seed=1, grammar=False, **options))
        assert max(peak(s.ids) for s in free.samples) > CAP, name  # without the grammar the cap means nothing
        assert (free.config.grammar, free.config.max_polyphony, free.config.max_hold_s) == (False, 0, 0.0)
        result = generator.generate(None, DecodeConfig(length=300, seed=1, **options))
        assert (result.config.grammar, result.config.max_polyphony, result.config.max_hold_s) == (True, CAP, 5.0)
        assert all(0 < peak(s.ids) <= CAP for s in result.samples), name
        # The reported log-probability is the model's own, not the renormalised masked one.
        prime = generator.codec.encode(generator.codec.default_prime)
        for s in result.samples:
            assert s.logprob == pytest.approx(sequence_logprob(generator.model, prime, s.ids), rel=1e-6)
        # Replay from the recorded settings: the same tokens, the same floats.
        again = generator.generate(None, DecodeConfig(**vars(result.config)))
        assert [(s.ids, s.logprob) for s in again.samples] == [(s.ids, s.logprob) for s in result.samples]


def test_the_default_longest_hold_is_the_export_held_note_cap() -> None:
    assert DEFAULT_MAX_HOLD_S == DEFAULT_MAX_NOTE_S


def test_max_polyphony_overrides_the_learnt_cap_and_zero_is_no_cap(generator: Generator) -> None:
    two = generator.generate(None, DecodeConfig(length=300, seed=2, max_polyphony=2))
    assert peak(two.samples[0].ids) == 2
    uncapped = generator.generate(None, DecodeConfig(length=300, seed=2, max_polyphony=0))
    assert uncapped.config.grammar and peak(uncapped.samples[0].ids) > CAP
    _check_stream([], uncapped.samples[0].ids, 0)  # still no orphan note-off, no second note-on


def test_a_model_without_a_known_cap_decodes_with_the_grammar_but_no_cap() -> None:
    codec = MidiCodec()
    result = Generator(eager_model(codec), codec).generate(None, DecodeConfig(length=200, seed=3))
    assert (result.config.grammar, result.config.max_polyphony) == (True, 0)
    _check_stream([], result.samples[0].ids, 0)


def test_text_models_take_no_grammar_settings() -> None:
    codec = TextCodec("ab c")
    generator = Generator(CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=1, hidden=8, embedding=4)), codec)
    assert generator.generate("a", DecodeConfig(length=5, seed=1)).config.grammar is False
    for bad in ({"grammar": True}, {"max_polyphony": 3}, {"max_hold_s": 1.0}):
        with pytest.raises(ChargenError, match="needs a music model"):
            generator.generate("a", DecodeConfig(length=5, seed=1, **bad))


def test_settings_for_a_switched_off_grammar_are_refused(generator: Generator) -> None:
    with pytest.raises(ChargenError, match="switched off"):
        generator.generate(None, DecodeConfig(length=5, grammar=False, max_polyphony=3))
    with pytest.raises(ChargenError, match="max_polyphony must be"):
        generator.generate(None, DecodeConfig(length=5, max_polyphony=-1))


prime_ids = st.lists(st.integers(0, V.size - 1), max_size=30)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(decoder=st.sampled_from(sorted(DECODERS)), seed=st.integers(0, 2**31 - 1), prime=prime_ids,
       cap=st.none() | st.integers(1, 6), max_hold_s=st.sampled_from([0.0, 0.0, 0.3, 5.0]),
       no_repeat_ngram=st.none() | st.integers(0, 3))
@pytest.mark.slow
def test_any_output_under_the_grammar_exports_cleanly_within_the_cap(
        generator: Generator, decoder: str, seed: int, prime: list[int], cap: int | None, max_hold_s: float,
        no_repeat_ngram: int | None) -> None:
    config = DecodeConfig(length=120, seed=seed, max_polyphony=cap, max_hold_s=max_hold_s,
                          no_repeat_ngram=no_repeat_ngram, **DECODERS[decoder])
    result = generator.generate(generator.codec.decode(prime) or None, config)
    limit = cap if cap is not None else CAP
    for sample in result.samples:
        _check_stream(prime, sample.ids, limit)  # token by token: the rules, the n-gram block never overrules them
        if not ids_to_notes(sample.ids):
            continue
        mid = decode_to_midi(sample.ids, max_note_s=5.0)  # the sample alone, as `chargen sample` writes it
        orphans, most = _read_back(mid)
        assert orphans == 0 and most <= limit
        if max_hold_s:
            assert _longest_note_s(mid) <= max_hold_s + 1e-3
