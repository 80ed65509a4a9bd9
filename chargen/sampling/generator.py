"""Generation from one loaded model: the sampling/greedy loop, beam search, and a cache of primed states."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import torch

from chargen.checkpoint import Checkpoint
from chargen.codec import Codec
from chargen.inference import Stepper, batch_stepper, expand_state, generation_threads
from chargen.kernels import batch1_stepper
from chargen.midi.export import DEFAULT_MAX_NOTE_S
from chargen.model import CharRNN, State
from chargen.sampling.beam import beam_search
from chargen.sampling.config import DecodeConfig, GenerationResult, Sample
from chargen.sampling.decoder import choose_tokens
from chargen.sampling.grammar import MusicRules, sequence_constraints
from chargen.sampling.music_defaults import default_rules, is_music_codec, music_rules

TokenCallback = Callable[[int, str], None]
#: Primes up to this many tokens (besides the last) are stepped, not run through ``nn.LSTM``.
SHORT_PRIME = 8
#: Primed states kept per Generator, for primes up to PRIME_CACHE_TOKENS tokens.
PRIME_CACHE_SIZE = 32
PRIME_CACHE_TOKENS = 256


class Generator:
    """Generation from one loaded model; reusable across calls (weights fused once) and across threads."""

    def __init__(self, model: CharRNN, codec: Codec, polyphony_cap: int | None = None,
                 max_hold_s: float | None = None, music: MusicRules | None = None):
        self.model = model.cpu().eval()
        self.codec = codec
        # Music models decode under their grammar by default: ``music`` (from_checkpoint: the checkpoint's
        # defaults), else every rule with the cap given (None: no cap) and longest hold (None: the export's cap).
        if music is None and is_music_codec(codec):
            music = MusicRules(codec.vocab, polyphony_cap or 0,  # type: ignore[attr-defined]
                               DEFAULT_MAX_NOTE_S if max_hold_s is None else max_hold_s,
                               default_rules(codec.vocab))  # type: ignore[attr-defined]
        self.music = music
        self.stepper = batch1_stepper(self.model)  # torch's or numpy's mat-vecs, whichever is faster here
        # Primed states of recent short primes (and their label): a server sees the same few (the default above all).
        self._primed: OrderedDict[tuple[int | None, tuple[int, ...]], tuple[torch.Tensor, State]] = OrderedDict()
        self._primed_lock = threading.Lock()  # guards _primed
        self._beam_stepper: Stepper | None = None  # made on the first beam search wider than 1
        # Guards _beam_stepper's creation only: packing weights takes a while, and must not stall priming.
        self._beam_stepper_lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> Generator:
        """A generator for a loaded checkpoint, decoding music under the checkpoint's default grammar."""
        return cls(checkpoint.model, checkpoint.codec, music=music_rules(checkpoint))

    @property
    def beam_stepper(self) -> Stepper:
        """The stepper for K > 1 beams (oneDNN-packed weights where available: faster at several rows)."""
        with self._beam_stepper_lock:
            if self._beam_stepper is None:
                self._beam_stepper = batch_stepper(self.model, self.stepper)
            return self._beam_stepper

    def label_id(self, name: str | None) -> int | None:
        """The id of label ``name`` (see ``ModelConfig.label_id``: ChargenError for a label this model lacks)."""
        return self.model.config.label_id(name)

    @torch.inference_mode()
    def prime_state(self, prime_ids: list[int], label: int | None = None) -> tuple[torch.Tensor, State]:
        """Logits [1, V] after the prime and the state that produced them; fresh tensors each call.

        ``label``: a labelled model's label id (``label_id``), None on an unlabelled one.
        """
        if label is None:
            label = self.model.config.label_id(None)
        key = (label, tuple(prime_ids))
        with self._primed_lock:
            cached = self._primed.get(key)
            if cached is not None:
                self._primed.move_to_end(key)
        if cached is None:
            cached = self._run_prime(prime_ids, label)
            if len(prime_ids) <= PRIME_CACHE_TOKENS:
                with self._primed_lock:
                    self._primed[key] = cached
                    if len(self._primed) > PRIME_CACHE_SIZE:
                        self._primed.popitem(last=False)
        logits, state = cached
        return logits.clone(), tuple(s.clone() for s in state)  # callers own theirs

    def _run_prime(self, prime_ids: list[int], label: int | None) -> tuple[torch.Tensor, State]:
        """Run all but the last prime token through the fused model; step the last.

        A short prime is stepped token by token instead: one ``nn.LSTM`` call
        has a fixed cost of about ten steps (5 ms at 2x512: oneDNN set-up).
        """
        state = self.stepper.initial_state(1)
        bias = self.stepper.label_bias(label)
        if len(prime_ids) > SHORT_PRIME + 1:
            labels = None if label is None else torch.tensor([label])
            _, state = self.model(torch.tensor([prime_ids[:-1]]), state, labels)  # [1, P-1, V]
        else:
            for token in prime_ids[:-1]:
                _, state = self.stepper.step(torch.tensor([token]), state, bias)
        return self.stepper.step(torch.tensor([prime_ids[-1]]), state, bias)  # logits [1, V]

    def generate(
        self, prime: str | None, config: DecodeConfig, on_token: TokenCallback | None = None
    ) -> GenerationResult:
        config.validate(self.codec.vocab_size, self.music)
        label = self.label_id(config.label)
        config = config.resolved(self.music)
        prime_text = prime if prime else self.codec.default_prime
        prime_ids = self.codec.encode(prime_text)
        start = time.perf_counter()
        rng = torch.Generator().manual_seed(config.seed)
        with generation_threads():
            if config.decoder == "beam":
                samples = self._beam(prime_ids, config, rng, label)
            else:
                samples = self._sample(prime_ids, config, rng, on_token, label)
        duration = time.perf_counter() - start
        return GenerationResult(samples=samples, config=config, prime=prime or "", duration_s=duration,
                                tokens=config.length * (1 if config.decoder == "beam" else config.num_samples))

    @torch.inference_mode()
    def _sample(self, prime_ids: list[int], cfg: DecodeConfig, rng: torch.Generator,
                on_token: TokenCallback | None, label: int | None = None) -> list[Sample]:
        """Sampling and greedy: n rows stepped together, each token chosen by ``choose_tokens``.

        Memory stays bounded by the output itself: each step's logits are dropped
        once its tokens are chosen, and log-probabilities are summed as they come
        (in order from 0.0, in IEEE double: logged generations replay to the bit).
        """
        n = cfg.num_samples
        logits, state = self.prime_state(prime_ids, label)
        bias = self.stepper.label_bias(label, n)
        vocab = logits.shape[-1]
        logits, state = logits.expand(n, -1), expand_state(state, n)
        blockers = sequence_constraints(cfg, self.music, prime_ids, n)  # grammar and n-gram block
        noise_buffer = torch.empty(n, vocab)  # refilled each step: exponential_noise's draws, one allocation
        noise = None if cfg.greedy else (lambda: noise_buffer.exponential_(1, generator=rng))
        symbols = self.codec.symbols
        ids: list[list[int]] = [[] for _ in range(n)]
        totals = [0.0] * n
        for _ in range(cfg.length):
            choice = choose_tokens(logits, cfg, [b.banned() for b in blockers] if blockers else None, noise)
            for i, token in enumerate(choice.tokens.tolist()):
                ids[i].append(token)
                totals[i] += choice.logprobs[i]
                if blockers:
                    blockers[i].push(token)
                if on_token is not None:
                    on_token(i, symbols[token])
            logits, state = self.stepper.step(choice.tokens, state, bias)
        return [Sample(ids=row, text=self.codec.decode(row), logprob=total) for row, total in zip(ids, totals)]

    def _beam(self, prime_ids: list[int], cfg: DecodeConfig, rng: torch.Generator,
              label: int | None = None) -> list[Sample]:
        k = cfg.beam_width or 1
        logits, state = self.prime_state(prime_ids, label)
        stepper = self.beam_stepper if k > 1 else self.stepper  # width 1 steps exactly as greedy does
        return [Sample(ids=ids, text=self.codec.decode(ids), logprob=logprob)
                for ids, logprob in beam_search(stepper, logits, state, prime_ids, cfg, rng, label, self.music)]


def sequence_logprob(model: CharRNN, prime_ids: list[int], ids: list[int], label: int | None = None) -> float:
    """Log-probability of ``ids`` after ``prime_ids`` (label id ``label``) by one full forward pass (for checks)."""
    with torch.inference_mode():
        tokens = torch.tensor([prime_ids + ids])
        labels = None if label is None else torch.tensor([label])
        logits, _ = model.cpu().eval()(tokens[:, :-1], None, labels)  # [1, P+N-1, V]
        logprobs = torch.log_softmax(logits.double(), dim=-1)[0, len(prime_ids) - 1 :]  # [N, V]
        return float(logprobs.gather(1, torch.tensor(ids)[:, None]).sum())
