"""Fine-tuning (``chargen train CORPUS --init-from RUN``): weights, vocabulary, lineage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from chargen.codecs.text import TextCodec
from chargen.files.atomic import sha256_file
from chargen.runs.checkpoint import load_checkpoint
from chargen.runs.layout import BEST, LAST, RUN_JSON, TOKENS, read_run_json
from chargen.runs.lookup import resolve_checkpoint
from chargen.runs.start import resume_run, start_run
from chargen.sampling import DecodeConfig, Generator
from chargen.training import TrainConfig
from chargen.training.data import load_tokens
from chargen.training.finetune import grow_vocabulary, prepare_finetune
from tests.conftest import REPO, assert_one_line_error, run_cli

#: Corpus A has no b, j, k, q, x, z; corpus B is made of words full of them.
WORDS_A = ["the cat sat", "a dog ran", "then the hen", "cats and dogs", "a rat sat on the mat"]
WORDS_B = ["zebra quiz", "jazz box", "quick kiwi", "the fox jumped"]
TINY = ("--batch-size", "8", "--seq-len", "32", "--eval-every", "20", "--lr", "1e-2", "--threads", "1", "--quiet")


def quiet(message: str) -> None:
    pass


def _corpus(path: Path, words: list[str], count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text(" ".join(words[i] for i in rng.integers(0, len(words), count)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def corpora(tmp_path: Path) -> tuple[Path, Path]:
    return _corpus(tmp_path / "a.txt", WORDS_A, 400, 1), _corpus(tmp_path / "b.txt", WORDS_B, 400, 2)


def test_text_fine_tune_extends_the_vocabulary_learns_new_characters_and_records_its_parent(
        corpora: tuple[Path, Path], isolated_home: Path) -> None:
    a_txt, b_txt = corpora
    root = isolated_home / "checkpoints"
    made_a = run_cli("train", str(a_txt), "--size", "tiny", "--max-steps", "40", "--run-name", "A", *TINY)
    assert made_a.returncode == 0, made_a.stderr
    made_b = run_cli("train", str(b_txt), "--init-from", "A", "--max-steps", "120", "--run-name", "B", *TINY)
    assert made_b.returncode == 0, made_b.stderr
    new = "".join(sorted(set(b_txt.read_text()) - set(a_txt.read_text())))
    assert set(new) == set("bfijkpquwxz") and "vocabulary extended by 11 character(s)" in made_b.stderr

    parent_weights = root / "A" / BEST
    a, b = load_checkpoint(parent_weights), load_checkpoint(root / "B" / BEST)
    # A's characters keep their ids; the new ones are appended, never mapped onto old ones.
    assert b.codec.symbols == a.codec.symbols + new and b.config.vocab_size == a.config.vocab_size + len(new)
    assert b.codec.decode(load_tokens(root / "B" / TOKENS).tolist()) == b_txt.read_text()
    assert {k: v for k, v in b.config.to_dict().items() if k != "vocab_size"} == \
        {k: v for k, v in a.config.to_dict().items() if k != "vocab_size"}

    # It learned the new characters: sampling from a prime made of them yields more of them.
    result = Generator(b.model, b.codec).generate("jazz box ", DecodeConfig(length=200, seed=3, temperature=0.8))
    assert set(result.samples[0].text) & set(new), result.samples[0].text
    greedy = Generator(b.model, b.codec).generate("quick ", DecodeConfig(length=40, greedy=True))
    assert set(greedy.samples[0].text) & set(new), greedy.samples[0].text
    primed = run_cli("sample", "-c", "B", "--prime", "the cat sat ", "--len", "20", "--seed", "1", "--no-log")
    assert primed.returncode == 0, primed.stderr  # A's characters still prime the model

    parent = {"run": "A", "checkpoint_path": str(parent_weights.resolve()),
              "checkpoint_sha256": sha256_file(parent_weights)}
    assert parent.items() <= read_run_json(root / "B")["parent"].items()
    assert parent.items() <= b.training["parent"].items() and b.training["parent"]["new_symbols"] == new
    info = run_cli("info", "B", "--json")
    assert info.returncode == 0 and parent.items() <= json.loads(info.stdout)["parent"].items()
    assert "fine-tuned   from A" in run_cli("info", "B").stdout

    runs = run_cli("history", "runs", "--json")
    assert runs.returncode == 0, runs.stderr
    by_checkpoint = {Path(r["checkpoint_path"]).parent.name: r for r in json.loads(runs.stdout)}
    assert by_checkpoint["A"]["parent"] is None
    assert by_checkpoint["B"]["parent"]["run_id"] == by_checkpoint["A"]["id"]
    assert by_checkpoint["B"]["parent"]["checkpoint_sha256"] == parent["checkpoint_sha256"]
    listed = run_cli("history", "runs").stdout.splitlines()
    assert f"from A ({by_checkpoint['A']['short_id']})" in listed[0]


def test_new_rows_start_sensibly_and_every_other_weight_is_the_parents(corpora: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    a_txt, b_txt = corpora
    config = TrainConfig(batch_size=8, seq_len=32, max_steps=5, eval_every=5, threads=1)
    start_run([a_txt], config, preset="tiny", run_name="A", out=tmp_path / "runs", progress=False, warn=quiet)
    codec, _, model_config, init = prepare_finetune(str(tmp_path / "runs" / "A"), [b_txt], tmp_path / "t.npy",
                                                    "auto", "utf-8", {}, seed=1)
    parent = load_checkpoint(tmp_path / "runs" / "A" / BEST)
    old = parent.config.vocab_size
    assert model_config.vocab_size == codec.vocab_size == old + 11
    for name, tensor in parent.model.state_dict().items():
        grown = init.weights[name]
        if name in ("embed.weight", "head.weight", "head.bias"):
            assert torch.equal(grown[:old], tensor) and grown.shape[0] == codec.vocab_size
        else:
            assert torch.equal(grown, tensor), name
    embed, rows = parent.model.embed.weight.detach(), init.weights["embed.weight"][old:]
    assert torch.allclose(rows.mean(dim=0), embed.mean(dim=0), atol=3 * float(embed.std()))
    assert len({tuple(r.tolist()) for r in rows}) == len(rows)  # distinct: the noise tells them apart
    assert torch.count_nonzero(init.weights["head.weight"][old:]) == 0
    assert torch.all(init.weights["head.bias"][old:] == parent.model.head.bias.min())


def test_grow_vocabulary_without_new_symbols_is_the_identity() -> None:
    weights = {"embed.weight": torch.randn(5, 3), "head.weight": torch.randn(5, 4), "head.bias": torch.randn(5)}
    assert grow_vocabulary(weights, 5, 5, torch.Generator()) is weights


def test_an_extended_text_codec_keeps_old_ids_and_encodes_appended_characters() -> None:
    codec = TextCodec("cab").extended("zé")
    assert codec.symbols == "abczé"
    assert codec.encode_chunk("béza").tolist() == [1, 4, 3, 0]
    assert TextCodec.from_metadata(codec.to_metadata()).symbols == "abczé"  # the order survives a checkpoint
    assert TextCodec("cab").symbols == "abc"  # a fitted vocabulary is still sorted


@pytest.mark.slow
def test_fine_tuned_run_resumes_and_keeps_its_parent(corpora: tuple[Path, Path], tmp_path: Path) -> None:
    a_txt, b_txt = corpora
    config = TrainConfig(batch_size=8, seq_len=32, max_steps=4, eval_every=4, threads=1)
    root = tmp_path / "runs"
    start_run([a_txt], config, preset="tiny", run_name="A", out=root, progress=False, warn=quiet)
    first = start_run([b_txt], config, run_name="B", out=root, progress=False, warn=quiet, init_from=str(root / "A"))
    resumed = resume_run(root / "B", TrainConfig(max_steps=8), progress=False, warn=quiet)
    assert (first.step, resumed.step) == (4, 8)
    assert load_checkpoint(root / "B" / LAST).training["parent"]["run"] == "A"
    assert json.loads((root / "B" / RUN_JSON).read_text())["parent"]["run"] == "A"


@pytest.mark.parametrize("codec", ["midi-notes", "midi"])
def test_midi_run_fine_tunes_on_another_midi_folder(tmp_path: Path, codec: str) -> None:
    basics = REPO / "corpora" / "midi-basics"
    folders = {"arpeggios": "arpeggio-*.mid", "chorales": "chorale-*.mid"}
    for name, pattern in folders.items():
        (tmp_path / name).mkdir()
        for path in sorted(basics.glob(pattern)):
            shutil.copy(path, tmp_path / name)
    flags = ("--batch-size", "4", "--seq-len", "32", "--eval-every", "5", "--max-steps", "5", "--threads", "1",
             "--quiet", "--no-log", "--out", str(tmp_path / "runs"))
    made = run_cli("train", str(tmp_path / "arpeggios"), "--codec", codec, "--size", "tiny", "--run-name", "arp",
                   *flags)
    assert made.returncode == 0, made.stderr
    tuned = run_cli("train", str(tmp_path / "chorales"), "--init-from", str(tmp_path / "runs" / "arp"),
                    "--run-name", "chorales", *flags)
    assert tuned.returncode == 0, tuned.stderr
    parent, child = (load_checkpoint(tmp_path / "runs" / name / LAST) for name in ("arp", "chorales"))
    # --codec auto reads the .mid files the parent's way (either music codec)
    assert child.codec.name == codec and child.codec.symbols == parent.codec.symbols
    assert child.config == parent.config
    assert child.training["parent"]["run"] == "arp" and child.training["parent"]["new_symbols"] == ""
    assert child.training["corpus_paths"] == [str(tmp_path / "chorales")]


@pytest.mark.parametrize("extra, fragment", [
    (("--layers", "2"), "layers cannot be combined with init_from"),
    (("--size", "small", "--cell", "gru"), "size, cell cannot be combined with init_from"),
    (("--resume", "A"), "may be given with resume"),
])
def test_shape_options_and_resume_conflict_with_init_from(corpora: tuple[Path, Path], extra: tuple[str, ...],
                                                          fragment: str) -> None:
    result = run_cli("train", str(corpora[1]), "--init-from", "A", *extra)
    assert result.returncode == 2
    assert_one_line_error(result, fragment)


def test_init_from_a_missing_run_or_another_codec_is_a_clean_error(corpora: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    missing = run_cli("train", str(corpora[1]), "--init-from", "nowhere", "--max-steps", "2")
    assert missing.returncode == 1
    assert_one_line_error(missing, "nowhere")
    config = TrainConfig(batch_size=8, seq_len=32, max_steps=2, eval_every=2, threads=1)
    start_run([corpora[0]], config, preset="tiny", run_name="A", out=tmp_path / "runs", progress=False, warn=quiet)
    midi = run_cli("train", str(REPO / "corpora" / "midi-basics"), "--init-from", str(tmp_path / "runs" / "A"),
                   "--max-steps", "2", "--run-name", "M", "--out", str(tmp_path / "runs"))
    assert midi.returncode == 1
    assert_one_line_error(midi, "uses the text codec", "read as midi")
    assert not (tmp_path / "runs" / "M").exists()  # nothing half-made left behind


def test_the_shipped_starter_model_fine_tunes_by_name(tmp_path: Path) -> None:
    """``--init-from starter``: the model shipped in the package (what ``make demo`` fine-tunes)."""
    import chargen
    from chargen import starter

    assert starter.PATH.is_file() and resolve_checkpoint("starter") == starter.PATH
    run = chargen.train(REPO / "corpora" / "fables.txt", init_from="starter", max_steps=3, batch_size=8, seq_len=32,
                        threads=1, out=tmp_path, run_name="ft", progress=False, log=False, report=None)
    child = load_checkpoint(run.dir / LAST)
    assert child.training["parent"]["checkpoint_path"] == str(starter.PATH.resolve())
    assert child.config.hidden == load_checkpoint(starter.PATH).config.hidden
    assert set(REPO.joinpath("corpora", "fables.txt").read_text()) <= set(child.codec.symbols)
