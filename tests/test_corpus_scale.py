"""Corpora of any size (issue 30): the byte-table encoder gives exactly the old encoder's ids and errors, in
bounded memory; evaluations during training score a fixed sample of a large validation split only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chargen.codecs.text as text_codec
import chargen.codecs.text_scan as text_scan
import chargen.scoring.evaluate as evaluation
from chargen.codecs.text import TextCodec, code_points, iter_text_chunks
from chargen.errors import CorpusError
from chargen.model import CharRNN, ModelConfig
from chargen.runs.metrics import read_metrics
from chargen.runs.start import start_run
from chargen.scoring.evaluate import mean_loss, scored_tokens, token_losses
from chargen.training import StepBudget, TrainConfig, Trainer
from chargen.training.config import EVAL_TOKENS_FLOOR
from chargen.training.data import build_corpus, load_tokens, split_tokens, validation_batches, validation_layout
from tests.conftest import FABLES, REPO

# ----------------------------------------------------------------------------- the encoder


def reference_encoding(path: Path, encoding: str = "utf-8") -> tuple[str, list[int]]:
    """The encoder before byte tables (kept here as the reference): decode each chunk, take the sorted
    union of its code points for the vocabulary, then each code point's id by binary search."""
    seen = np.zeros(0, dtype="<u4")
    for chunk in iter_text_chunks(path, encoding):
        seen = np.union1d(seen, np.unique(code_points(chunk)))
    alphabet = seen.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")
    symbols = TextCodec(alphabet).symbols  # sorted; the empty corpus's error
    points = np.sort(code_points(symbols))
    ids: list[int] = []
    for chunk in iter_text_chunks(path, encoding):
        ids.extend(np.searchsorted(points, code_points(chunk)).tolist())
    return symbols, ids


def outcome(make) -> object:
    try:
        return make()
    except CorpusError as exc:
        return f"error: {exc}"


#: Pieces of files: ASCII, line ends of every kind, a BOM, 2-, 3- and 4-byte characters, and bytes that are
#: not UTF-8 (a lone continuation, a cut or overlong sequence, 0xff) and NUL.
PIECES = [b"a", b"Zq ", b"\n", b"\r", b"\r\n", b"\xef\xbb\xbf", "é".encode(), "你".encode(), "😀".encode(),
          b"\x80", b"\xe0\x80", b"\xf0\x9f", b"\xff", b"\x00"]
files = st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join)


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=files, chunk=st.integers(1, 9), block=st.integers(1, 5), bom=st.booleans())
def test_the_byte_table_encoder_gives_the_reference_ids_and_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, chunk: int, block: int, bom: bool) -> None:
    monkeypatch.setattr(text_codec, "CHUNK_BYTES", chunk)  # both readers cut the file at the same offsets
    monkeypatch.setattr(text_scan, "BLOCK_BYTES", block)
    path = tmp_path / "corpus.txt"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    want = outcome(lambda: reference_encoding(path))
    got = outcome(lambda: (lambda codec: (codec.symbols, codec.encode_file(path).tolist()))(TextCodec.fit([path])))
    assert got == want


def test_a_corpus_over_several_chunks_encodes_as_the_reference(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_codec, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(text_scan, "BLOCK_BYTES", 1000)
    text = FABLES.read_text()
    path = tmp_path / "mixed.txt"  # ASCII blocks, blocks with 2-4 byte characters, CRLF across boundaries
    path.write_bytes(("\ufeff" + text[:20000].replace("\n", "\r\n") + "café 你好 😀\r" + text[20000:]).encode())
    symbols, ids = reference_encoding(path)
    codec, info = build_corpus([path], tmp_path / "tokens.npy")
    assert codec.symbols == symbols and load_tokens(tmp_path / "tokens.npy").tolist() == ids
    assert info.tokens == len(ids)


def test_errors_name_the_same_byte_offsets_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_codec, "CHUNK_BYTES", 64)
    monkeypatch.setattr(text_scan, "BLOCK_BYTES", 16)
    cases = {"cut.txt": b"x" * 63 + "é".encode()[:1] + b"yz",  # a character cut at a chunk's end, then bad
             "end.txt": b"x" * 100 + "你".encode()[:2],  # cut by the end of the file
             "nul.txt": b"x" * 70 + b"\x00",
             "late.txt": b"x" * 130 + b"\xff" + b"x" * 10 + b"\x00"}  # the first of two problems is named
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        error = outcome(lambda path=path: TextCodec.fit([path]))
        assert isinstance(error, str) and error == outcome(lambda path=path: reference_encoding(path)), name
    assert "byte offset 63 (invalid continuation byte)" in outcome(lambda: TextCodec.fit([tmp_path / "cut.txt"]))
    assert "byte offset 100 (unexpected end of data)" in outcome(lambda: TextCodec.fit([tmp_path / "end.txt"]))
    assert "NUL byte at offset 70" in outcome(lambda: TextCodec.fit([tmp_path / "nul.txt"]))


def test_other_encodings_and_characters_outside_the_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("abc déf\r\nñ".encode("latin-1"))
    assert outcome(lambda: TextCodec.fit([path], "latin-1").encode_file(path).tolist()) == \
        reference_encoding(path, "latin-1")[1]
    plain = tmp_path / "plain.txt"
    plain.write_text("abcxyz")
    with pytest.raises(CorpusError, match=r"outside the vocabulary: \['x', 'y', 'z'\]"):
        list(TextCodec("abc").encode_pieces(plain))
    wide = TextCodec("".join(chr(0x4E00 + i) for i in range(300)) + "a")  # ids need 16 bits
    assert wide.encode_chunk("a一").tolist() == [0, 1]


MEMORY = """
import resource, sys, time
from pathlib import Path
from chargen.training.data import build_corpus, load_tokens
from chargen.files.atomic import sha256_file
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
codec, info = build_corpus([Path(sys.argv[1])], Path(sys.argv[2]))
sha256_file(sys.argv[2])
tokens = load_tokens(Path(sys.argv[2]))
print(info.tokens, len(tokens), codec.vocab_size, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


@pytest.mark.slow
def test_encoding_a_large_corpus_takes_bounded_memory(tmp_path: Path) -> None:
    # ~64 MB: mostly ASCII, a few other characters in every MB, Windows line ends.
    line = ("The quick brown fox jumps over the lazy dog, again and again; " * 3 + "\r\n").encode()
    block = line * (1_000_000 // len(line)) + "naïve café — 你好\n".encode()
    corpus = tmp_path / "big.txt"
    with open(corpus, "wb") as handle:
        for _ in range(64):
            handle.write(block)
    result = subprocess.run([sys.executable, "-c", MEMORY, str(corpus), str(tmp_path / "tokens.npy")],
                            capture_output=True, text=True, timeout=300, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    tokens, stored, vocab, grown_mb = (int(v) for v in result.stdout.split())
    assert tokens == stored == 64 * (len(block.decode()) - block.count(b"\r\n"))
    assert grown_mb < 100, f"peak RSS grew by {grown_mb} MB while encoding a 64 MB corpus"


# ----------------------------------------------------------------------------- the evaluation sample


def tiny_model(vocab: int = 30, seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(vocab_size=vocab, layers=1, hidden=16, embedding=8))


def test_the_sample_is_the_start_of_every_stream_and_the_whole_split_under_the_cap() -> None:
    ids = np.arange(10_001) % 30
    assert validation_layout(len(ids), 256, 16) == (16, 625, 625)
    assert validation_layout(len(ids), 256, 16, 10_000) == (16, 625, 625)  # under the cap: everything
    assert validation_layout(len(ids), 256, 16, 1_600) == (16, 625, 100)
    sample = list(validation_batches(ids, 256, 16, 1_600))
    assert len(sample) == 1 and sample[0][0].shape == (16, 100)
    assert sample[0][0][:, 0].tolist() == [625 * i % 30 for i in range(16)]  # spread over the whole split
    assert [x.tolist() for x, _ in validation_batches(ids, 256, 16, 1_600)] == [x.tolist() for x, _ in sample]
    assert scored_tokens(len(ids), 100, max_tokens=1_600) == 1_600 and scored_tokens(len(ids), 100) == 10_000


def test_a_loss_under_the_cap_is_exactly_the_whole_splits_and_a_sample_is_the_same_every_time() -> None:
    model = tiny_model()
    ids = np.random.default_rng(1).integers(0, 30, 20_000)
    whole = mean_loss(model, ids, 100)
    assert mean_loss(model, ids, 100, max_tokens=50_000) == whole  # to the bit
    losses = token_losses(model, ids, 100)
    assert whole == float(losses.sum(dtype=np.float64) / losses.size)
    sampled = mean_loss(model, ids, 100, max_tokens=4_096)
    assert sampled != whole and sampled == mean_loss(model, ids, 100, max_tokens=4_096)
    assert sampled == float(token_losses(model, ids, 100, max_tokens=4_096).mean(dtype=np.float64))


def test_a_split_over_the_exact_limit_is_scored_window_by_window(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    ids = np.random.default_rng(2).integers(0, 30, 30_000)
    exact = mean_loss(model, ids, 100)
    monkeypatch.setattr(evaluation, "EXACT_TOKENS", 1_000)
    streamed = mean_loss(model, ids, 100)
    assert streamed != exact or True  # the order of the float64 sums may differ in the last bits...
    assert streamed == pytest.approx(exact, rel=1e-12)  # ...and no more


def test_the_cap_is_sized_by_the_training_between_evaluations() -> None:
    assert TrainConfig().evaluation_tokens() == round(0.3 * 200 * 32 * 100)
    assert TrainConfig(eval_every=20).evaluation_tokens() == EVAL_TOKENS_FLOOR
    assert TrainConfig(eval_tokens=5000).evaluation_tokens() == 5000
    assert TrainConfig(eval_tokens=0).evaluation_tokens() is None  # the whole split, on request
    assert EVAL_TOKENS_FLOOR > 111_540  # tiny-shakespeare's validation split is always scored whole


def test_the_whole_split_at_a_budgets_end_only_when_it_fits() -> None:
    budget = StepBudget(minutes=10, start_step=0, eval_every=100, val_tokens=1000, tokens_per_step=100, fit=True,
                        whole_tokens=50_000)
    assert budget.whole_evaluation_fits(eval_s=2.0, evals_done=2)  # 1 s each: the whole ~50 s of 600
    assert not budget.whole_evaluation_fits(eval_s=20.0, evals_done=2)  # ~500 s: more than a quarter
    unsampled = StepBudget(minutes=10, start_step=0, eval_every=100, val_tokens=1000, tokens_per_step=100, fit=True)
    assert not unsampled.whole_evaluation_fits(eval_s=2.0, evals_done=2)


def test_a_run_of_fixed_length_scores_the_whole_split_when_it_costs_a_quarter_of_the_run_at_most() -> None:
    ids = np.random.default_rng(3).integers(0, 30, 60_000)
    data = split_tokens(ids, 0.5, 4, 16)
    trainer = Trainer(ModelConfig(vocab_size=30, layers=1, hidden=16, embedding=8),
                      TrainConfig(batch_size=4, seq_len=16, max_steps=5, eval_tokens=3_000, threads=1,
                                  precision="fp32"), data)
    assert trainer.sampled and trainer.whole_val_tokens // trainer.val_tokens == 10
    trainer.eval_s, trainer.evals_done = 1.0, 2  # 0.5 s a sample: the whole split ~5 s
    trainer.state.elapsed_s = 30.0
    assert trainer._whole_fits(None)
    trainer.state.elapsed_s = 10.0 - trainer.session_s  # a short run on a large split: the end skips it
    assert not trainer._whole_fits(None)
    assert 4.9 <= trainer.whole_estimate_s() <= 5.1


def quiet(message: str) -> None:
    pass


def train_tiny(tmp_path: Path, name: str, **config: object):
    corpus = tmp_path / "fables.txt"
    corpus.write_text(FABLES.read_text()[:40_000])
    settings = dict(batch_size=4, seq_len=16, max_steps=6, eval_every=3, seed=2, threads=1, val_fraction=0.2)
    settings.update(config)
    lines: list[str] = []
    result = start_run([corpus], TrainConfig(**settings), "tiny", {"hidden": 32, "embedding": 8}, name,
                       progress=False, warn=lines.append)
    return result, lines


def test_training_scores_a_large_split_on_its_sample_and_the_whole_split_at_the_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Whether the end affords the whole split is a timing rule (a share of the run so far); a run of six steps
    # is over in moments, so here it may take as long as it likes: this test is about what is scored.
    import chargen.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "WHOLE_SHARE", 1e9)
    sampled, lines = train_tiny(tmp_path, "sampled", eval_tokens=2_048)
    whole, _ = train_tiny(tmp_path, "whole", eval_tokens=0)
    records, full = read_metrics(sampled.run_dir), read_metrics(whole.run_dir)
    assert [r["val_sample"] for r in records] == [True, True] and records[0]["val_tokens"] == 2_048
    assert [r["val_sample"] for r in full] == [False, False] and full[0]["val_tokens"] > 7_000
    assert records[-1]["whole_val_loss"] == pytest.approx(full[-1]["val_loss"], abs=1e-6)  # same weights
    assert sampled.whole_val_loss == records[-1]["whole_val_loss"] and sampled.val_sampled
    assert records[0]["val_loss"] != full[0]["val_loss"]
    final = [line for line in lines if line.startswith("final")]
    assert "on a 2,048-token sample" in final[0] and "whole split" in final[0], lines
    # The sample's figures are what the run compared: its best is the best sample loss.
    assert sampled.best_val_loss == min(r["val_loss"] for r in records)
    data = split_tokens(load_tokens(sampled.run_dir / "tokens.npy"), 0.2, 4, 16)
    assert len(data.val) > 2_048


def test_a_split_under_the_cap_trains_exactly_as_without_a_cap(tmp_path: Path) -> None:
    capped, lines = train_tiny(tmp_path, "capped", eval_tokens=1_000_000)
    uncapped, _ = train_tiny(tmp_path, "uncapped", eval_tokens=0)
    one, two = read_metrics(capped.run_dir), read_metrics(uncapped.run_dir)
    assert [r["val_loss"] for r in one] == [r["val_loss"] for r in two]  # to the bit
    assert not capped.val_sampled and capped.whole_val_loss is None and one[-1]["whole_val_loss"] is None
    assert not any("sample" in line or "whole split" in line for line in lines)
    run_json = json.loads((capped.run_dir / "run.json").read_text())
    assert run_json["train_config"]["eval_tokens"] == 1_000_000


def resident_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_the_corpus_a_run_has_read_leaves_its_resident_memory(tmp_path: Path) -> None:
    from chargen.training.data import release_pages

    path = tmp_path / "tokens.npy"
    np.save(path, np.arange(64 << 20, dtype=np.int64).astype(np.uint8))  # 64 MB of token ids
    tokens = load_tokens(path)
    split = split_tokens(tokens, 0.1, 4, 16)
    before = resident_file_kb()
    assert int(split.train[::4096].sum(dtype=np.int64)) >= 0 and int(split.val.sum(dtype=np.int64)) >= 0
    read = resident_file_kb()
    assert read - before > 40_000  # every page read is resident...
    release_pages(split.train)
    assert resident_file_kb() < before + 10_000  # ...until released (the whole mapping, from any view of it)
    assert int(split.val[:10].sum()) == int(np.arange(len(tokens) - len(split.val), len(tokens) - len(split.val) + 10,
                                                      dtype=np.int64).astype(np.uint8).sum())  # still readable
    release_pages(np.zeros(10))  # an array in memory: nothing to do
