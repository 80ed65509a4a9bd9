import numpy as np

from chargen.training.data import StreamBatcher, validation_batches


def test_batches_are_contiguous_streams_shifted_by_one() -> None:
    ids = np.arange(1000) % 251
    batcher = StreamBatcher(ids, batch_size=4, seq_len=10)
    x0, y0 = batcher.batch(0)
    x1, _ = batcher.batch(1)
    assert x0.shape == (4, 10) and (x0[:, 1:] == y0[:, :-1]).all()
    # the next batch continues each stream where the previous one stopped
    assert (x1[:, 0] == y0[:, -1]).all()
    assert (x0[1, 0] == batcher.stream_len % 251).item()
    assert batcher.starts_epoch(0) and batcher.starts_epoch(batcher.steps_per_epoch)
    # data position is a function of the step: a resumed run reads the same batch
    assert (batcher.batch(batcher.steps_per_epoch + 3)[0] == batcher.batch(3)[0]).all()


def test_validation_batches_cover_the_split_once() -> None:
    ids = np.arange(1001)
    seen = []
    for x, y in validation_batches(ids, seq_len=50, streams=4):
        assert (x[:, 1:] == y[:, :-1]).all()
        seen.extend(y.flatten().tolist())
    assert len(seen) == len(set(seen)) == 1000
