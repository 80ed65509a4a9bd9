"""Decoders: temperature/top-k/top-p sampling, greedy, and batched beam search.

Every decoder reports the model's own log-probability (at temperature 1) of
what it produced, and all of them step through :class:`chargen.inference.Stepper`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from chargen.codec import Codec
from chargen.errors import ChargenError
from chargen.inference import Stepper, batch_stepper, expand_state, generation_threads, reorder_state
from chargen.model import CharRNN, State

#: n-gram length blocked by default for the deterministic decoders, whose
#: character-level output otherwise loops ("the same the same the same ...").
DEFAULT_NO_REPEAT_NGRAM = 12
TokenCallback = Callable[[int, str], None]
#: Primes up to this many tokens (besides the last) are stepped, not run through ``nn.LSTM``.
SHORT_PRIME = 8
#: Primed states kept per Generator, for primes up to PRIME_CACHE_TOKENS tokens.
PRIME_CACHE_SIZE = 32
PRIME_CACHE_TOKENS = 256


@dataclass
class DecodeConfig:
    length: int = 500
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    beam_width: int | None = None  # set (even to 1) = beam search
    beam_sample: bool = False
    num_samples: int = 1
    no_repeat_ngram: int | None = None  # None: DEFAULT for greedy/beam, off for sampling
    seed: int | None = None

    @property
    def decoder(self) -> str:
        if self.beam_width is not None or self.beam_sample:
            return "beam"
        return "greedy" if self.greedy else "sample"

    def resolved(self) -> DecodeConfig:
        """A copy with every default made explicit (a seed drawn if none), for logging and replay."""
        data = asdict(self)
        if data["seed"] is None:
            data["seed"] = random.SystemRandom().randrange(2**31)
        if data["no_repeat_ngram"] is None:
            data["no_repeat_ngram"] = DEFAULT_NO_REPEAT_NGRAM if self.decoder in ("greedy", "beam") else 0
        return DecodeConfig(**data)

    def validate(self, vocab_size: int) -> None:
        if self.length < 0:
            raise ChargenError(f"length must be >= 0 (got {self.length})")
        if not self.temperature > 0:
            raise ChargenError(f"temperature must be > 0 (got {self.temperature}); use --greedy for argmax decoding")
        if self.top_k is not None and self.top_k < 1:
            raise ChargenError(f"top-k must be >= 1 (got {self.top_k})")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ChargenError(f"top-p must be in (0, 1] (got {self.top_p})")
        width = self.beam_width or 1
        if width < 1:
            raise ChargenError(f"beam width must be >= 1 (got {self.beam_width})")
        if width > vocab_size:
            raise ChargenError(f"beam width {self.beam_width} exceeds the vocabulary size {vocab_size}")
        if self.num_samples < 1:
            raise ChargenError(f"num-samples must be >= 1 (got {self.num_samples})")
        if self.decoder == "beam" and self.num_samples > width:
            raise ChargenError(f"num-samples {self.num_samples} exceeds the beam width {self.beam_width}")
        if self.greedy and self.decoder == "beam":
            raise ChargenError("--greedy and --beam-width are different decoders; choose one")
        if self.no_repeat_ngram is not None and self.no_repeat_ngram < 0:
            raise ChargenError("no-repeat-ngram must be >= 0")


@dataclass
class Sample:
    ids: list[int]
    text: str
    logprob: float  # natural log, the model's own (temperature 1)

    @property
    def nats_per_token(self) -> float:
        return -self.logprob / len(self.ids) if self.ids else 0.0


@dataclass
class GenerationResult:
    samples: list[Sample]
    config: DecodeConfig  # resolved: explicit seed and n-gram block
    prime: str
    duration_s: float
    tokens: int = field(default=0)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "decoder": self.config.decoder,
            "params": asdict(self.config),
            "prime": self.prime,
            "duration_s": self.duration_s,
            "tokens_per_s": self.tokens_per_s,
            "samples": [
                {"text": s.text, "logprob": s.logprob, "nats_per_token": s.nats_per_token} for s in self.samples
            ],
        }


class NgramBlocker:
    """Bans the next token that would repeat an n-gram already in the sequence.

    Keeps, per sequence, a map from each (n-1)-gram to the tokens that have
    followed it, and the last n-1 tokens as a tuple. Beam search forks a
    blocker for every extra child of a beam each step, so the map is split in
    two: ``shared``, which is never changed once made (forks share it), and
    ``own``, the few entries added since, which a fork copies. When ``own``
    outgrows ``OWN_LIMIT`` it is folded into a new shared map: a fork then
    costs at most that many entries however long the sequence, and folding
    costs O(length) once every ``OWN_LIMIT`` tokens.
    """

    __slots__ = ("n", "shared", "own", "tail")
    OWN_LIMIT = 64

    def __init__(self, n: int, history: list[int]):
        self.n = n
        self.shared: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.own: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.tail: tuple[int, ...] = ()  # the last n-1 tokens, fewer at the start
        for token in history:
            self.push(token)
        self._fold()  # a long prime lands in shared in one go

    def push(self, token: int) -> tuple[int, ...]:
        """Add ``token``; returns what is banned next (``banned()``)."""
        n1 = self.n - 1
        if n1 < 0:
            return ()
        tail = self.tail
        if len(tail) == n1:
            own = self.own
            own[tail] = own.get(tail, ()) + (token,)
            tail = (tail + (token,))[1:]
            if len(own) > self.OWN_LIMIT:
                self._fold()
        else:
            tail = tail + (token,)
        self.tail = tail
        return self.banned()

    def _fold(self) -> None:
        if self.own:
            self.shared, self.own = self.seen, {}

    def banned(self) -> tuple[int, ...]:
        tail = self.tail
        if len(tail) != self.n - 1:
            return ()
        return self.shared.get(tail, ()) + self.own.get(tail, ())

    @property
    def seen(self) -> dict[tuple[int, ...], tuple[int, ...]]:
        """Every (n-1)-gram and the tokens that followed it, in order, as a new map."""
        merged = dict(self.shared)
        for key, followers in self.own.items():
            merged[key] = merged.get(key, ()) + followers
        return merged

    def fork(self) -> NgramBlocker:
        twin = NgramBlocker.__new__(NgramBlocker)
        twin.n, twin.shared, twin.own, twin.tail = self.n, self.shared, dict(self.own), self.tail
        return twin


def advance_beams(blockers: list[NgramBlocker], parents: list[int], tokens: list[int],
                  vocab: int) -> tuple[list[NgramBlocker], list[int], list[int]]:
    """Blockers of the children (parent, token) and their bans for the next step as (rows, columns).

    Every child needs its own copy of its parent's n-grams: the first child takes
    the original, the others fork it before any child pushes its token.
    """
    taken: set[int] = set()
    children = []
    for parent in parents:
        blocker = blockers[parent]
        children.append(blocker.fork() if id(blocker) in taken else blocker)
        taken.add(id(blocker))
    rows: list[int] = []
    cols: list[int] = []
    for row, (blocker, token) in enumerate(zip(children, tokens)):
        banned = blocker.push(token)
        if banned and (len(banned) < vocab or len(set(banned)) < vocab):  # a block that bans everything yields
            rows.extend([row] * len(banned))
            cols.extend(banned)
    return children, rows, cols


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Mask all but the top-k / nucleus tokens with -inf. logits: [B, V]."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the token that crosses p
        drop[..., 0] = False  # the likeliest token always stays, however small top_p is
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def draw_one(probs: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """One token per row of ``probs`` [B, V]: exactly ``torch.multinomial(probs, 1, generator=rng)[:, 0]``.

    Torch draws one sample as argmax(p / q), q ~ Exp(1); doing the same here
    skips its input validation, which costs more than the draw itself (21 vs
    8 us per token). tests/test_inference.py checks the two agree draw for draw.
    """
    return (probs / torch.empty_like(probs).exponential_(1, generator=rng)).argmax(dim=-1)


class Generator:
    """Generation from one loaded model; reusable across calls (weights fused once)."""

    def __init__(self, model: CharRNN, codec: Codec):
        self.model = model.cpu().eval()
        self.codec = codec
        self.stepper = Stepper(self.model)
        # Primed states of recent short primes: a server sees the same few (the default above all).
        self._primed: OrderedDict[tuple[int, ...], tuple[torch.Tensor, State]] = OrderedDict()
        self._primed_lock = threading.Lock()
        self._beam_stepper: Stepper | None = None  # made on the first beam search wider than 1

    @property
    def beam_stepper(self) -> Stepper:
        """The stepper for K > 1 beams (oneDNN-packed weights where available: faster at several rows)."""
        with self._primed_lock:
            if self._beam_stepper is None:
                self._beam_stepper = batch_stepper(self.model, self.stepper)
            return self._beam_stepper

    @torch.inference_mode()
    def prime_state(self, prime_ids: list[int]) -> tuple[torch.Tensor, State]:
        """Logits [1, V] after the prime and the state that produced them; fresh tensors each call."""
        key = tuple(prime_ids)
        with self._primed_lock:
            cached = self._primed.get(key)
            if cached is not None:
                self._primed.move_to_end(key)
        if cached is None:
            cached = self._run_prime(prime_ids)
            if len(key) <= PRIME_CACHE_TOKENS:
                with self._primed_lock:
                    self._primed[key] = cached
                    if len(self._primed) > PRIME_CACHE_SIZE:
                        self._primed.popitem(last=False)
        logits, state = cached
        return logits.clone(), tuple(s.clone() for s in state)  # callers own theirs

    def _run_prime(self, prime_ids: list[int]) -> tuple[torch.Tensor, State]:
        """Run all but the last prime token through the fused model; step the last.

        A short prime is stepped token by token instead: one ``nn.LSTM`` call
        has a fixed cost of about ten steps (5 ms at 2x512: oneDNN set-up).
        """
        state = self.stepper.initial_state(1)
        if len(prime_ids) > SHORT_PRIME + 1:
            _, state = self.model(torch.tensor([prime_ids[:-1]]), state)  # [1, P-1, V]
        else:
            for token in prime_ids[:-1]:
                _, state = self.stepper.step(torch.tensor([token]), state)
        return self.stepper.step(torch.tensor([prime_ids[-1]]), state)  # logits [1, V]

    def generate(
        self, prime: str | None, config: DecodeConfig, on_token: TokenCallback | None = None
    ) -> GenerationResult:
        config.validate(self.codec.vocab_size)
        config = config.resolved()
        prime_text = prime if prime else self.codec.default_prime
        prime_ids = self.codec.encode(prime_text)
        start = time.perf_counter()
        rng = torch.Generator().manual_seed(config.seed)
        with generation_threads():
            if config.decoder == "beam":
                samples = self._beam(prime_ids, config, rng)
            else:
                samples = self._sample(prime_ids, config, rng, on_token)
        duration = time.perf_counter() - start
        return GenerationResult(samples=samples, config=config, prime=prime or "", duration_s=duration,
                                tokens=config.length * (1 if config.decoder == "beam" else config.num_samples))

    @torch.inference_mode()
    def _sample(self, prime_ids: list[int], cfg: DecodeConfig, rng: torch.Generator,
                on_token: TokenCallback | None) -> list[Sample]:
        n = cfg.num_samples
        logits, state = self.prime_state(prime_ids)
        logits, state = logits.expand(n, -1), expand_state(state, n)
        block = bool(cfg.no_repeat_ngram)
        blockers = [NgramBlocker(cfg.no_repeat_ngram or 0, prime_ids) for _ in range(n)] if block else []
        symbols = self.codec.symbols
        steps_logits: list[torch.Tensor] = []  # log-probs are taken once at the end, not per token
        steps_tokens: list[torch.Tensor] = []
        step = self.stepper.step
        for _ in range(cfg.length):
            steps_logits.append(logits)
            scores = logits
            if block:
                for i, blocker in enumerate(blockers):
                    banned = blocker.banned()
                    if banned and len(set(banned)) < scores.shape[-1]:  # a block that bans everything yields
                        scores = scores.clone() if scores is logits else scores
                        scores[i, list(banned)] = float("-inf")
            if cfg.greedy:
                tokens = scores.argmax(dim=-1)  # [n]
            else:
                if cfg.temperature != 1.0:  # x / 1.0 == x: skipping it changes nothing
                    scores = scores / cfg.temperature
                tokens = draw_one(torch.softmax(filter_logits(scores, cfg.top_k, cfg.top_p), dim=-1), rng)
            steps_tokens.append(tokens)
            if block or on_token is not None:
                token_list = tokens.tolist()
                for i, token in enumerate(token_list):
                    if block:
                        blockers[i].push(token)
                    if on_token is not None:
                        on_token(i, symbols[token])
            logits, state = step(tokens, state)
        if not cfg.length:
            return [Sample(ids=[], text=self.codec.decode([]), logprob=0.0) for _ in range(n)]
        out = torch.stack(steps_tokens, dim=1)  # [n, T]
        # The model's own log-probs [n, T, V], in float64 as beam search scores them: taken once, it costs nothing.
        logprobs = torch.log_softmax(torch.stack(steps_logits, dim=1).double(), dim=-1)
        chosen = logprobs.gather(2, out[:, :, None]).squeeze(2).tolist()
        # Summed one token at a time, in order, as beam search accumulates its scores.
        return [
            Sample(ids=row, text=self.codec.decode(row), logprob=sum(chosen[i], 0.0))
            for i, row in enumerate(out.tolist())
        ]

    @torch.inference_mode()
    def _beam(self, prime_ids: list[int], cfg: DecodeConfig, rng: torch.Generator) -> list[Sample]:
        """All K beams advance as one batch: one model step per generated token.

        The bookkeeping stays in a few whole-tensor ops per step, with no Python
        per beam unless the n-gram block needs it: at K=8 the step itself is a
        few hundred microseconds, and every small op after it costs several.
        """
        k = cfg.beam_width or 1
        vocab = self.codec.vocab_size
        logits, state = self.prime_state(prime_ids)
        logits, state = logits.expand(k, -1), tuple(s.expand(-1, k, -1) for s in state)  # views: reordered below
        scores = torch.full((k, 1), float("-inf"), dtype=torch.float64)  # [K, 1] total log-likelihood
        scores[0] = 0.0  # all beams start identical: expand only the first
        history: list[tuple[torch.Tensor, torch.Tensor]] = []  # per step: (parents, tokens); sequences built at the end
        block = bool(cfg.no_repeat_ngram)
        blockers = [NgramBlocker(cfg.no_repeat_ngram or 0, prime_ids)] * k
        first = blockers[0].banned() if block and len(set(blockers[0].banned())) < vocab else ()
        rows, cols = [0] * len(first), list(first)  # bans for the coming step; only row 0 is alive at first
        step = (self.beam_stepper if k > 1 else self.stepper).step  # width 1 steps exactly as greedy does
        for _ in range(cfg.length):
            candidates = torch.log_softmax(logits.double(), dim=-1).add_(scores)  # [K, V]: lp + score, in float64
            if rows:  # through numpy's view of the same memory: a quarter of the cost of torch's list indexing
                candidates.numpy()[rows, cols] = -math.inf
            if cfg.beam_sample:
                # Magenta-style: draw candidates from the tempered distribution, keep the likeliest.
                probs = torch.softmax(filter_logits(logits.float() / cfg.temperature, cfg.top_k, cfg.top_p), -1)
                probs = probs.masked_fill(~torch.isfinite(candidates), 0.0)
                alive = probs.sum(-1) > 0
                probs[~alive] = 1.0 / vocab  # rows that are dead anyway; keeps multinomial defined
                drawn = torch.multinomial(probs, k, replacement=False, generator=rng)  # [K, K]
                best = torch.topk(candidates.gather(1, drawn).view(-1), k)
                parents = best.indices.div(k, rounding_mode="floor")  # [K]
                tokens = drawn.view(-1)[best.indices]  # [K]
            else:
                best = torch.topk(candidates.view(-1), k)
                parents = best.indices.div(vocab, rounding_mode="floor")  # [K]
                tokens = best.indices.remainder(vocab)  # [K]
            scores = best.values[:, None]
            history.append((parents, tokens))
            if block:
                blockers, rows, cols = advance_beams(blockers, parents.tolist(), tokens.tolist(), vocab)
            logits, state = step(tokens, reorder_state(state, parents))
        final = scores[:, 0].tolist()
        finite = [i for i in sorted(range(k), key=lambda i: final[i], reverse=True) if math.isfinite(final[i])]
        steps = [(p.tolist(), t.tolist()) for p, t in history]
        samples = []
        for i in finite[: cfg.num_samples]:
            ids, row = [], i
            for parent_list, token_list in reversed(steps):
                ids.append(token_list[row])
                row = parent_list[row]
            ids.reverse()
            samples.append(Sample(ids=ids, text=self.codec.decode(ids), logprob=final[i]))
        return samples


def sequence_logprob(model: CharRNN, prime_ids: list[int], ids: list[int]) -> float:
    """Log-probability of ``ids`` after ``prime_ids`` by one full forward pass (for checks)."""
    with torch.inference_mode():
        tokens = torch.tensor([prime_ids + ids])
        logits, _ = model.cpu().eval()(tokens[:, :-1])  # [1, P+N-1, V]
        logprobs = torch.log_softmax(logits.double(), dim=-1)[0, len(prime_ids) - 1 :]  # [N, V]
        return float(logprobs.gather(1, torch.tensor(ids)[:, None]).sum())
