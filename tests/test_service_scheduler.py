"""The service's batching scheduler, in process: batched draws give each request the CLI's output.

The HTTP tests (test_service.py) check the same through the real server; here many
requests with different settings, lengths and seeds share one batch, long enough that
each request's sampling noise is drawn ahead several times (NOISE_AHEAD ticks at once).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from chargen.codecs.text import TextCodec
from chargen.model import CharRNN, ModelConfig
from chargen.sampling import DecodeConfig, Generator
from chargen.serve import NOISE_AHEAD, BatchScheduler, Job


def run_batched(generator: Generator, requests: list[tuple[str, DecodeConfig]]) -> list[Any]:
    scheduler = BatchScheduler("m", generator, max_batch=64)
    results: list[Any] = [None] * len(requests)
    finished = threading.Semaphore(0)

    def emitter(slot: int):
        def emit(kind: str, payload: Any) -> None:
            if kind in ("done", "error"):
                results[slot] = (kind, payload)
                finished.release()
        return emit

    jobs = []
    for slot, (prime, config) in enumerate(requests):
        jobs.append(Job(config.resolved(), generator.codec.encode(prime), emitter(slot), stream=False))
    for job in jobs:  # all queued before the worker starts: they share every tick
        scheduler.submit(job)
    scheduler.start()
    try:
        for _ in requests:
            assert finished.acquire(timeout=60)
    finally:
        scheduler.stop()
    assert scheduler.stats.max_batch_requests == len(requests)
    return results


def test_batched_requests_match_the_cli_generator_seed_for_seed() -> None:
    codec = TextCodec("abcdefghij \n")
    torch.manual_seed(0)
    generator = Generator(CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=2, hidden=32, embedding=8)), codec)
    length = 2 * NOISE_AHEAD + 7  # refills its noise twice, the last block short
    requests = [
        ("abc", DecodeConfig(length=length, seed=1)),
        ("abc", DecodeConfig(length=length, seed=2)),  # same settings, another seed: same group, own noise
        ("ba ", DecodeConfig(length=length - 20, seed=3, num_samples=3)),  # leaves the batch early
        ("ab", DecodeConfig(length=length, seed=4, temperature=0.7, top_k=4)),  # another group
        ("j", DecodeConfig(length=length, seed=5, top_p=0.8, no_repeat_ngram=3)),
        ("abc", DecodeConfig(length=length, greedy=True)),
    ]
    results = run_batched(generator, requests)
    for (prime, config), (kind, payload) in zip(requests, results):
        assert kind == "done", payload
        samples = payload[0]  # (samples, seconds, device)
        expected = generator.generate(prime, config).samples
        assert [s.ids for s in samples] == [s.ids for s in expected], config
        assert [s.logprob for s in samples] == pytest.approx([s.logprob for s in expected], rel=1e-5)
    texts = [payload[0][0].text for _, payload in results[:2]]
    assert texts[0] != texts[1]  # the two seeds really drew differently


def test_requests_joining_mid_cycle_keep_their_streams() -> None:
    """Driven tick by tick: requests admitted at different points of the noise cycle, leaving at others."""
    codec = TextCodec("abcdefghij \n")
    torch.manual_seed(1)
    generator = Generator(CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=1, hidden=24, embedding=8)), codec)
    scheduler = BatchScheduler("m", generator, max_batch=64)
    done: dict[int, Any] = {}
    plan = {0: [DecodeConfig(length=NOISE_AHEAD + 9, seed=10)],
            5: [DecodeConfig(length=2 * NOISE_AHEAD, seed=11, num_samples=2), DecodeConfig(length=40, greedy=True)],
            NOISE_AHEAD + 3: [DecodeConfig(length=NOISE_AHEAD - 1, seed=12, top_k=3)]}
    configs = []
    with torch.inference_mode():
        for tick in range(4 * NOISE_AHEAD):
            for config in plan.get(tick, []):
                slot = len(configs)
                configs.append(config.resolved())
                scheduler._admit(Job(configs[-1], codec.encode("ab"),
                                      lambda kind, payload, slot=slot: done.__setitem__(slot, (kind, payload)), False))
            scheduler._tick()
    assert sorted(done) == list(range(len(configs)))
    for slot, config in enumerate(configs):
        kind, (samples, *_) = done[slot]
        assert kind == "done"
        assert [s.ids for s in samples] == [s.ids for s in generator.generate("ab", config).samples], config


def test_history_writer_commits_groups_and_a_bad_entry_costs_only_its_own_row(tmp_path) -> None:
    from concurrent.futures import Future

    from chargen.history import History
    from chargen.sampling import GenerationResult
    from chargen.sampling.config import ModelRef
    from chargen.serve import HistoryError, HistoryLog, HistoryWriter

    codec = TextCodec("ab ")
    model = CharRNN(ModelConfig(vocab_size=codec.vocab_size, layers=1, hidden=8, embedding=4))
    url = f"sqlite:///{tmp_path / 'history.db'}"
    writer = HistoryWriter(HistoryLog(url))
    config = DecodeConfig(length=3, seed=1).resolved()

    def entry(prime: str, sha256: Any = "a" * 64) -> GenerationResult:
        return GenerationResult([], config, prime, 0.1, model=ModelRef("/x/best.safetensors", sha256,
                                                                         model.config.to_dict(), codec.to_metadata()))

    batch: list[tuple[GenerationResult, Future[str]]] = [
        (entry("one"), Future()), (entry("bad", sha256=None), Future()), (entry("three"), Future())]
    writer._write(batch)  # one group as the writer thread would take it: the bad entry fails the transaction
    assert isinstance(batch[1][1].exception(), HistoryError)
    ids = [batch[0][1].result(), batch[2][1].result()]
    queued = [writer.submit(entry(f"queued {i}")) for i in range(20)]
    writer.close()  # writes what is queued before it stops
    ids += [future.result(timeout=0) for future in queued]
    assert isinstance(writer.submit(entry("late")).exception(), HistoryError)  # closed: refused, not dropped
    with History(url) as history:
        rows = history.list_generations(limit=None)
    assert sorted(r.id for r in rows) == sorted(ids)
    assert {r.prime for r in rows} == {"one", "three"} | {f"queued {i}" for i in range(20)}
