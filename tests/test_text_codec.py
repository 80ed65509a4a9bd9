from pathlib import Path

import numpy as np
import pytest

from chargen.codecs.registry import codec_from_metadata
from chargen.codecs.text import TextCodec
from chargen.errors import CorpusError, UnknownTokensError
from chargen.training.data import build_corpus, find_corpus_files, load_tokens, split_tokens, token_dtype


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


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 1 << 20])
def test_bom_is_dropped_and_crlf_becomes_lf_however_the_file_is_chunked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    import chargen.codecs.text as text_codec

    monkeypatch.setattr(text_codec, "CHUNK_BYTES", chunk_bytes)
    corpus = tmp_path / "windows.txt"
    corpus.write_bytes("\ufeffline one\r\nline two\r\n\rlone CR stays\r\n".encode())
    text = "".join(text_codec.iter_text_chunks(corpus))
    assert text == "line one\nline two\n\rlone CR stays\n"
    assert text == text_codec.normalize_text(corpus.read_bytes().decode())
    codec = TextCodec.fit([corpus])
    assert "\ufeff" not in codec.symbols and "\r" in codec.symbols  # the lone CR is a real character
    assert codec.decode(codec.encode_file(corpus).tolist()) == text


def test_bom_only_counts_at_the_start_of_a_file(tmp_path: Path) -> None:
    corpus = tmp_path / "zwnbsp.txt"
    corpus.write_text("a\ufeffb", encoding="utf-8")
    assert "\ufeff" in TextCodec.fit([corpus]).symbols


def test_folder_with_text_and_midi_is_the_same_error_as_naming_the_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("some text\n")
    (tmp_path / "tune.mid").write_bytes(b"MThd")
    with pytest.raises(CorpusError, match="corpus mixes midi-notes and text files; choose one with codec") as folder:
        find_corpus_files([tmp_path])
    with pytest.raises(CorpusError) as one_by_one:
        find_corpus_files([tmp_path / "notes.txt", tmp_path / "tune.mid"])
    assert str(folder.value) == str(one_by_one.value)
    assert find_corpus_files([tmp_path], "text") == ("text", [tmp_path / "notes.txt"])
    assert find_corpus_files([tmp_path], "midi") == ("midi", [tmp_path / "tune.mid"])
    assert find_corpus_files([tmp_path], "midi-notes") == ("midi-notes", [tmp_path / "tune.mid"])


def test_folder_discovery_uses_each_codecs_suffixes(tmp_path: Path) -> None:
    from chargen.codecs.registry import CODECS, codec_for_suffix

    for name, cls in CODECS.items():
        for i, suffix in enumerate(cls.suffixes):
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / f"f{i}{suffix.upper()}").write_bytes(b"x")
        files = sorted((tmp_path / name).iterdir())
        # auto: the first codec of the registry that reads the suffix (.mid: the note codec); named: that one
        assert find_corpus_files([tmp_path / name]) == (codec_for_suffix(files[0]), files)
        assert find_corpus_files([tmp_path / name], name) == (name, files)
    assert codec_for_suffix(tmp_path / "x.MID") == "midi-notes"


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_fifo_or_device_as_corpus_says_what_it_is(tmp_path: Path, special: str) -> None:
    import os

    path = Path(special)
    if special == "fifo":
        path = tmp_path / "pipe.txt"
        os.mkfifo(path)
    with pytest.raises(CorpusError) as error:
        find_corpus_files([path])
    message = str(error.value)
    assert "no such" not in message
    assert ("FIFO" if special == "fifo" else "character device") in message


def test_a_corrupt_file_is_skipped_without_leaving_its_tokens_behind(tmp_path: Path) -> None:
    from chargen.codecs.midi.note_codec import NoteCodec as MidiCodec  # the codec auto picks for .mid

    basics = sorted((Path(__file__).resolve().parents[1] / "corpora" / "midi-basics").glob("*.mid"))[:2]
    folder = tmp_path / "midi"
    folder.mkdir()
    for piece in basics:
        (folder / piece.name).write_bytes(piece.read_bytes())
    (folder / "b-broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    warnings: list[str] = []
    codec, info = build_corpus([folder], tmp_path / "tokens.npy", warn=warnings.append)
    good = [p for p in sorted(folder.glob("*.mid")) if "broken" not in p.name]
    expected = np.concatenate([MidiCodec().encode_file(p) for p in good])
    assert np.array_equal(load_tokens(tmp_path / "tokens.npy"), expected)
    assert info.files == 2 and len(info.skipped) == 1 and any("skipped 1 of 3" in w for w in warnings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["midi", "tokens.npy"]  # no temporary file left


def test_a_failed_encoding_leaves_no_cache_file(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc" * 100)
    with pytest.raises(CorpusError, match="outside the vocabulary"):
        build_corpus([corpus], tmp_path / "out" / "tokens.npy", codec=TextCodec("ab"))
    assert list((tmp_path / "out").iterdir()) == []


def test_codec_base_class_does_not_import_its_subclasses() -> None:
    import subprocess
    import sys

    code = ("import sys, chargen.codecs.base; "
            "print(sorted(m for m in sys.modules if m in ('chargen.codecs.text', 'chargen.codecs.midi')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_an_encoding_whose_decoder_refuses_the_file_is_a_corpus_error(tmp_path: Path) -> None:
    corpus = tmp_path / "plain.txt"
    corpus.write_text("hello world\n" * 10)
    with pytest.raises(CorpusError, match="cannot be read as utf-16"):  # found by tests/test_cli_fuzz.py
        TextCodec.fit([corpus], encoding="utf-16")
