"""Generation from one loaded model: the sampling/greedy loop, beam search, and a cache of primed states."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from chargen.codecs.base import Codec
from chargen.codecs.midi.export import DEFAULT_MAX_NOTE_S
from chargen.machine.kernels import batch1_stepper
from chargen.machine.offload import DeviceStepper, Offload, generation_device
from chargen.model import CharRNN, State
from chargen.runs.checkpoint import Checkpoint
from chargen.sampling.beam import beam_search
from chargen.sampling.config import (
    DecodeConfig,
    GenerationResult,
    NonFiniteOutput,
    Sample,
    check_finite,
    check_prime_length,
)
from chargen.sampling.decoder import choose_tokens
from chargen.sampling.grammar import MusicRules, sequence_constraints
from chargen.sampling.music_defaults import default_rules, is_music_codec, music_rules
from chargen.sampling.steppers import Stepper, batch_stepper, expand_state, generation_threads
from chargen.sampling.stop import RowTexts, truncate_at_stop

TokenCallback = Callable[[int, str], None]
#: Primes up to this many tokens (besides the last) are stepped, not run through ``nn.LSTM``.
SHORT_PRIME = 8
#: Primed states kept per Generator, for primes up to PRIME_CACHE_TOKENS tokens.
PRIME_CACHE_SIZE = 32
PRIME_CACHE_TOKENS = 256


@dataclass
class Prepared:
    """A generation checked and ready to run: the resolved config, the prime as given and encoded, the label id."""

    config: DecodeConfig
    prime: str
    prime_ids: list[int]
    label: int | None


class Generator:
    """Generation from one loaded model; reusable across calls (weights fused once) and across threads."""

    def __init__(self, model: CharRNN, codec: Codec, polyphony_cap: int | None = None,
                 max_hold_s: float | None = None, device: str | torch.device = "cpu", device_rows: int | None = None,
                 music: MusicRules | None = None):
        """``device``: where batched steps may run (``chargen.machine.offload``: auto is CUDA where present), from the
        batch size measured to pay there, or ``device_rows``; priming and batch-1 steps stay on the CPU."""
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
        # Batched steps on an accelerator from the rows where it pays; None on the CPU.
        self.offload = Offload.for_generator(self.model, generation_device(device), self.stepper, device_rows)
        # Primed states of recent short primes (and their label): a server sees the same few (the default above all).
        self._primed: OrderedDict[tuple[int | None, tuple[int, ...]], tuple[torch.Tensor, State]] = OrderedDict()
        self._primed_lock = threading.Lock()  # guards _primed
        self._beam_stepper: Stepper | None = None  # made on the first beam search wider than 1
        # Guards _beam_stepper's creation only: packing weights takes a while, and must not stall priming.
        self._beam_stepper_lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: str | torch.device = "cpu") -> Generator:
        """A generator for a loaded checkpoint, decoding music under the checkpoint's default grammar."""
        return cls(checkpoint.model, checkpoint.codec, device=device, music=music_rules(checkpoint))

    def steps_for(self, rows: int) -> Stepper:
        """The stepper for steps of ``rows`` rows: the device's where it pays there (``chargen.machine.offload``)."""
        return self.offload.stepper if self.offload is not None and self.offload.pays(rows) else self.stepper

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
        has a fixed cost of about ten steps (oneDNN's set-up).
        """
        state = self.stepper.initial_state(1)
        bias = self.stepper.label_bias(label)
        if len(prime_ids) > SHORT_PRIME + 1:
            labels = None if label is None else torch.tensor([label])
            _, state = self.model(torch.tensor([prime_ids[:-1]]), state, labels)  # [1, P-1, V]
        else:
            for token in prime_ids[:-1]:
                _, state = self.stepper.step(torch.tensor([token]), state, bias)
        logits, state = self.stepper.step(torch.tensor([prime_ids[-1]]), state, bias)  # logits [1, V]
        if not bool(torch.isfinite(logits).all()):  # once per prime: a broken model fails before any output
            raise NonFiniteOutput("the model produced a non-finite output after the prime (NaN or infinity): its "
                                  "weights overflow or are damaged; use another checkpoint")
        return logits, state

    def prepare(self, prime: str | None, config: DecodeConfig) -> Prepared:
        """Check ``config`` and the prime against this model (ArgumentError, UnknownTokensError), resolve the
        config (a seed drawn if none) and encode the prime: everything that can fail before the first token."""
        config.validate(self.codec.vocab_size, self.music)
        label = self.label_id(config.label)
        resolved = config.resolved(self.music)
        prime_text = prime if prime else self.codec.default_prime
        check_prime_length(len(prime_text))  # before encoding: at least one character per token
        prime_ids = self.codec.encode(prime_text)
        return Prepared(resolved, prime or "", prime_ids, label)

    def steps(self, prepared: Prepared) -> Iterator[list[str]]:
        """A generation, step by step: yields each step's new text per row ("" where a row holds text back
        or has stopped; beam search yields each beam's whole text once, at the end); returns
        (StopIteration.value) the GenerationResult."""
        config, prime_ids, label = prepared.config, prepared.prime_ids, prepared.label
        start = time.perf_counter()
        rng = torch.Generator().manual_seed(config.seed)
        device = "cpu"
        with generation_threads():
            if config.decoder == "beam":
                samples = self._beam(prime_ids, config, rng, label)
                yield [sample.text for sample in samples]
            else:
                stepper = self.steps_for(config.num_samples)
                device = str(stepper.device) if isinstance(stepper, DeviceStepper) else "cpu"
                samples = yield from self._sample(prime_ids, config, rng, label, stepper)
        duration = time.perf_counter() - start
        check_finite(samples, config.num_samples if config.length else 0)
        return GenerationResult(samples=samples, config=config, prime=prepared.prime, duration_s=duration,
                                tokens=config.length * (1 if config.decoder == "beam" else config.num_samples),
                                device=device)

    def generate(self, prime: str | None, config: DecodeConfig,
                 on_token: TokenCallback | None = None) -> GenerationResult:
        """The whole generation; ``on_token(row, text)`` is told each row's new text as it comes (not beams)."""
        prepared = self.prepare(prime, config)
        steps = self.steps(prepared)
        beam = prepared.config.decoder == "beam"
        while True:
            try:
                texts = next(steps)
            except StopIteration as finished:
                return finished.value
            if on_token is not None and not beam:
                for row, text in enumerate(texts):
                    if text:
                        on_token(row, text)

    @torch.inference_mode()
    def _sample(self, prime_ids: list[int], cfg: DecodeConfig, rng: torch.Generator,
                label: int | None = None, stepper: Stepper | None = None) -> Iterator[list[str]]:
        """Sampling and greedy: n rows stepped together (by ``stepper``: the device's where it pays), each token
        chosen by ``choose_tokens`` on the CPU; yields each step's new text per row and returns the samples.

        Memory stays bounded by the output itself: each step's logits are dropped
        once its tokens are chosen, and log-probabilities are summed as they come
        (in order from 0.0, in IEEE double: logged generations replay to the bit).
        The tokens are chosen on the CPU whatever steps the rows (``chargen.machine.offload``).
        """
        n = cfg.num_samples
        logits, state = self.prime_state(prime_ids, label)
        stepper = stepper or self.steps_for(n)
        bias = stepper.label_bias(label, n)
        vocab = logits.shape[-1]
        logits, state = logits.expand(n, -1), expand_state(state, n)
        if isinstance(stepper, DeviceStepper):
            state = stepper.to_device(state)
        blockers = sequence_constraints(cfg, self.music, prime_ids, n)  # grammar and n-gram block
        noise_buffer = torch.empty(n, vocab)  # refilled each step: exponential_noise's draws, one allocation
        noise = None if cfg.greedy else (lambda: noise_buffer.exponential_(1, generator=rng))
        symbols = self.codec.symbols
        rows = RowTexts(n, cfg.stop)
        for _ in range(cfg.length):
            choice = choose_tokens(logits, cfg, [b.banned() for b in blockers] if blockers else None, noise)
            tokens = choice.tokens.tolist()
            if blockers:
                for blocker, token in zip(blockers, tokens):
                    blocker.push(token)
            yield rows.push(tokens, choice.logprobs, symbols)
            if rows.all_stopped:
                break
            logits, state = stepper.step(choice.tokens, state, bias)
        tail = rows.finish()
        if any(tail):
            yield tail
        return rows.samples(self.codec)

    def _beam(self, prime_ids: list[int], cfg: DecodeConfig, rng: torch.Generator,
              label: int | None = None) -> list[Sample]:
        k = cfg.beam_width or 1
        logits, state = self.prime_state(prime_ids, label)
        stepper = self.beam_stepper if k > 1 else self.stepper  # width 1 steps exactly as greedy does
        samples = []
        for ids, logprob in beam_search(stepper, logits, state, prime_ids, cfg, rng, label, self.music):
            cut = truncate_at_stop(self.codec.decode(ids), cfg.stop)
            stopped = cut < len(ids)
            if stopped:  # a stop string ends the beam: the model's log-probability of what is kept
                ids, logprob = ids[:cut], sequence_logprob(self.model, prime_ids, ids[:cut], label)
            samples.append(Sample(ids=ids, text=self.codec.decode(ids), logprob=logprob, codec=self.codec,
                                  stopped=stopped))
        return samples


def sequence_logprob(model: CharRNN, prime_ids: list[int], ids: list[int], label: int | None = None) -> float:
    """Log-probability of ``ids`` after ``prime_ids`` (label id ``label``) by one full forward pass (for checks)."""
    if not ids:
        return 0.0
    with torch.inference_mode():
        tokens = torch.tensor([prime_ids + ids])
        labels = None if label is None else torch.tensor([label])
        logits, _ = model.cpu().eval()(tokens[:, :-1], None, labels)  # [1, P+N-1, V]
        logprobs = torch.log_softmax(logits.double(), dim=-1)[0, len(prime_ids) - 1 :]  # [N, V]
        return float(logprobs.gather(1, torch.tensor(ids)[:, None]).sum())
