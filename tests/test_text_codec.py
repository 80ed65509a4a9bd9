from pathlib import Path

import numpy as np
import pytest

from chargen.codec import codec_from_metadata
from chargen.data import build_corpus, find_corpus_files, load_tokens, split_tokens, token_dtype
from chargen.errors import CorpusError, UnknownTokensError
from chargen.text_codec import TextCodec


def test_code_points_are_single_tokens(tmp_path: Path) -> None:
    corpus = tmp_path / "u.txt"
    corpus.write_text("café 你好 café\n", encoding="utf-8")
    codec = TextCodec.fit([corpus])
    assert "é" in codec.symbols and "你" in codec.symbols
    ids = codec.encode("é你")
    assert len(ids) == 2
    assert codec.decode(ids) == "é你"
    assert list(codec.encode_file(corpus)) == codec.encode("café 你好 café\n")


def test_metadata_round_trip() -> None:
    codec = TextCodec("hello\n")
    again = codec_from_metadata(codec.to_metadata())
    assert again.symbols == codec.symbols and again.name == "text"


def test_unknown_prime_characters_are_named() -> None:
    codec = TextCodec("abc")
    with pytest.raises(UnknownTokensError) as error:
        codec.encode("abxyz")
    assert "'x'" in str(error.value) and "'z'" in str(error.value) and "3 character" in str(error.value)


def test_non_utf8_reports_file_and_byte_offset(tmp_path: Path) -> None:
    corpus = tmp_path / "latin.txt"
    corpus.write_bytes("abc déf".encode("latin-1"))
    with pytest.raises(CorpusError) as error:
        TextCodec.fit([corpus])
    assert "latin.txt" in str(error.value) and "byte offset 5" in str(error.value)
    codec = TextCodec.fit([corpus], encoding="latin-1")
    assert "é" in codec.symbols


def test_binary_file_is_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "blob.txt"
    corpus.write_bytes(b"abc\x00\x01\x02" * 10)
    with pytest.raises(CorpusError, match="binary"):
        TextCodec.fit([corpus])


def test_corpus_cache_is_compact_and_memory_mapped(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox\n" * 50)
    codec, info = build_corpus([corpus], tmp_path / "tokens.npy")
    ids = load_tokens(tmp_path / "tokens.npy")
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint8
    assert info.tokens == len(ids) == 1000 and info.files == 1 and len(info.sha256) == 64
    assert codec.decode(ids[:20].tolist()) == "the quick brown fox\n"
    assert token_dtype(300) == np.uint16 and token_dtype(70000) == np.int32


def test_folder_of_text_files_is_read_recursively(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.txt").write_text("one\n")
    (tmp_path / "two.txt").write_text("two\n")
    (tmp_path / "notes.md").write_text("ignored")
    codec_name, files = find_corpus_files([tmp_path])
    assert codec_name == "text" and [f.name for f in files] == ["one.txt", "two.txt"]


def test_split_is_first_90_last_10_and_too_small_says_how_much(tmp_path: Path) -> None:
    ids = np.arange(10_000) % 7
    split = split_tokens(ids, 0.1, batch_size=4, seq_len=10)
    assert len(split.train) == 9000 and len(split.val) == 1000
    assert (split.val == ids[9000:]).all()
    with pytest.raises(CorpusError, match=r"needs at least \d+"):
        split_tokens(ids[:300], 0.1, batch_size=32, seq_len=100)
