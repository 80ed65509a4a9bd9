"""Conditioning labels: the mechanism, cheaply (tiny models, a few steps).

The label joins every step's input in training (``CharRNN``) and is a per-row
gate bias in generation (``Stepper``); both must give the same numbers. A
labelled run keeps each token's label beside it (labels.npy) through the batch
windows and the split; the label a generation asked for reaches the decoder
from the CLI, the service (real HTTP) and the history's replay alike.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from service_support import ServerProcess
from test_service_scheduler import run_batched

from chargen.cli import cli
from chargen.codecs.text import TextCodec
from chargen.errors import ChargenError
from chargen.history import History
from chargen.model import CharRNN, ModelConfig
from chargen.runs.checkpoint import load_checkpoint, save_weights
from chargen.runs.layout import LABELS, LAST, TOKENS, read_run_json
from chargen.runs.start import resume_run, start_run
from chargen.sampling import DecodeConfig, Generator
from chargen.sampling.steppers import Stepper, batch_stepper
from chargen.scoring.evaluate import label_loss_matrix
from chargen.training import TrainConfig
from chargen.training.data import StreamBatcher, load_tokens, split_tokens
from tests.conftest import FABLES, REPO, assert_one_line_error, run_cli

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,\n"


def labelled_model(cell: str = "lstm", layers: int = 2, seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(vocab_size=len(ALPHABET), cell=cell, layers=layers, hidden=24, embedding=8,
                                labels=["verse", "prose", "song"], label_embedding=6)).eval()
    with torch.no_grad():  # a trained model's labels matter: make these ones matter too
        model.label_embed.weight.mul_(4)
    return model


@pytest.fixture(scope="module")
def labelled_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labelled") / "labelled.safetensors"
    save_weights(path, labelled_model(), TextCodec(ALPHABET), {"best_val_loss": 2.5, "step": 0})
    return path


def label_corpus(folder: Path) -> Path:
    """Two labels of clearly different text in two subfolders."""
    text = FABLES.read_text(encoding="utf-8")[:12000]
    (folder / "lower").mkdir(parents=True)
    (folder / "upper").mkdir()
    (folder / "lower" / "a.txt").write_text(text.lower(), encoding="utf-8")
    (folder / "upper" / "b.txt").write_text(text.upper(), encoding="utf-8")
    (folder / "loose.txt").write_text("not in a label folder", encoding="utf-8")
    return folder


TINY = {"batch_size": 4, "seq_len": 16, "lr": 1e-2, "eval_every": 5, "seed": 3, "threads": 1}


# ------------------------------------------------------------------ model and stepper


def test_unlabelled_model_has_no_label_weights_or_metadata() -> None:
    config = ModelConfig(vocab_size=10, layers=1, hidden=8, embedding=4)
    model = CharRNN(config)
    assert model.label_embed is None and not any("label" in key for key in model.state_dict())
    assert "labels" not in config.to_dict() and "label_embedding" not in config.to_dict()
    assert model.rnn.weight_ih_l0.shape[1] == 4
    with pytest.raises(ChargenError, match="no labels"):
        config.label_id("verse")
    assert config.label_id(None) is None


def test_label_rule_names_the_labels() -> None:
    config = labelled_model().config
    assert [config.label_id(name) for name in ("verse", "prose", "song", None)] == [0, 1, 2, 3]
    with pytest.raises(ChargenError, match="unknown label 'poem'; this model's labels: verse, prose, song"):
        config.label_id("poem")
    with pytest.raises(ChargenError, match="distinct"):
        ModelConfig(vocab_size=5, labels=["a", "a"])
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_stepper_label_bias_matches_the_full_forward(cell: str) -> None:
    model = labelled_model(cell)
    tokens = torch.randint(0, len(ALPHABET), (3, 12), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2, 3])  # three rows, three labels (3: none), as the service batches them
    want, _ = model(tokens, None, labels)
    for stepper in (Stepper(model), batch_stepper(model, Stepper(model))):
        bias = torch.cat([stepper.label_bias(int(label)) for label in labels])
        state = stepper.initial_state(3)
        got = []
        for t in range(tokens.shape[1]):
            logits, state = stepper.step(tokens[:, t], state, bias)
            got.append(logits)
        torch.testing.assert_close(torch.stack(got, dim=1), want, atol=1e-5, rtol=1e-5)
    no_label, _ = model(tokens)
    torch.testing.assert_close(model(tokens, None, torch.full((3,), 3))[0], no_label)


def test_the_label_changes_what_is_generated() -> None:
    generator = Generator(labelled_model(), TextCodec(ALPHABET))
    results = {label: generator.generate("the ", DecodeConfig(length=40, seed=5, label=label))
               for label in ("verse", "prose", None)}
    texts = {label: result.samples[0].text for label, result in results.items()}
    assert len(set(texts.values())) == 3, texts
    assert results["verse"].config.label == "verse"
    with pytest.raises(ChargenError, match="unknown label"):
        generator.generate(None, DecodeConfig(length=5, label="poem"))
    beams = {label: generator.generate("the ", DecodeConfig(length=20, beam_width=3, label=label)).samples[0].text
             for label in ("verse", "song")}
    assert beams["verse"] != beams["song"]


# ------------------------------------------------------------------ data


def test_batch_labels_travel_with_the_windows() -> None:
    ids = np.arange(1000, dtype=np.int64) % 7
    labels = (np.arange(1000) // 100).astype(np.uint8)  # a label change every 100 tokens, mid-stream
    batcher = StreamBatcher(ids, 4, 16, labels=labels)
    for step in (0, 3, batcher.steps_per_epoch + 2):
        x, _ = batcher.batch(step)
        pos = (step % batcher.steps_per_epoch) * 16
        starts = np.arange(4)[:, None] * batcher.stream_len + pos + np.arange(16)[None, :]
        assert torch.equal(batcher.batch_labels(step), torch.from_numpy(labels[starts].astype(np.int64)))
        assert torch.equal(x, torch.from_numpy(ids[starts]))
    split = split_tokens(ids, 0.1, 4, 16, train_tokens=850, labels=labels)
    assert len(split.train) == len(split.train_labels) == 850 and split.val_labels[0] == 8


def test_labels_from_folders_trains_and_every_label_has_validation(tmp_path: Path) -> None:
    corpus = label_corpus(tmp_path / "corpus")
    warnings: list[str] = []
    result = start_run([corpus], TrainConfig(max_steps=6, **TINY), "tiny", run_name="lab", out=tmp_path / "runs",
                       progress=False, warn=warnings.append, labels_from="folders")
    assert any("outside the label subfolders" in w for w in warnings)
    loaded = load_checkpoint(result.run_dir / LAST)
    assert loaded.config.labels == ["lower", "upper"]
    ids, labels = load_tokens(result.run_dir / TOKENS), load_tokens(result.run_dir / LABELS)
    corpus_info = read_run_json(result.run_dir)["corpus"]
    assert len(ids) == len(labels) == corpus_info["tokens"]
    split = split_tokens(ids, 0.1, 4, 16, corpus_info["train_tokens"], labels)
    assert set(np.unique(split.val_labels)) == set(np.unique(split.train_labels)) == {0, 1}
    # Lowercase text lies in the "lower" label's tokens only: the labels follow their files.
    upper = set(loaded.codec.encode("ABCDEFGHIJ"))
    assert not np.isin(ids[labels == 0], list(upper)).any() and np.isin(ids[labels == 1], list(upper)).any()
    matrix = label_loss_matrix(loaded.model, split.val, split.val_labels, 16)
    assert matrix.shape == (2, 2) and np.isfinite(matrix).all()
    resumed = resume_run(result.run_dir, TrainConfig(max_steps=8, threads=1), progress=False, warn=lambda m: None)
    assert resumed.step == 8


def test_single_label_run_and_cli_usage_errors(tmp_path: Path) -> None:
    result = start_run([FABLES], TrainConfig(max_steps=2, **TINY), "tiny", run_name="one", out=tmp_path,
                       progress=False, warn=lambda m: None, label="fables")
    assert load_checkpoint(result.run_dir / LAST).config.labels == ["fables"]
    info = run_cli("info", str(result.run_dir))
    assert "labels       fables" in info.stdout
    assert json.loads(run_cli("info", str(result.run_dir), "--json").stdout)["labels"] == ["fables"]
    bad = run_cli("sample", "-c", str(result.run_dir), "--label", "poems", "--no-log")
    assert bad.returncode == 2
    assert_one_line_error(bad, "unknown label 'poems'", "labels: fables")
    bad_train = run_cli("train", str(FABLES), "--labels-from", "folders", "--out", str(tmp_path))
    assert bad_train.returncode == 2
    assert_one_line_error(bad_train, "labels_from='folders' takes one corpus folder")


def test_sample_label_on_an_unlabelled_model_is_a_usage_error(run: Path) -> None:
    result = run_cli("sample", "--label", "verse", "--no-log")
    assert result.returncode == 2
    assert_one_line_error(result, "this model has no labels")
    assert "labels" not in run_cli("info").stdout.replace("label", "")  # nothing to list


def test_history_records_the_label_and_replays_it(labelled_checkpoint: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    outputs = {}
    for label in ("song", "prose"):
        result = run_cli("sample", "-c", str(labelled_checkpoint), "--label", label, "--len", "30", "--seed", "2",
                         "--database", url, "--json")
        assert result.returncode == 0, result.stderr
        sample = json.loads(result.stdout)["samples"][0]
        outputs[label] = (sample["text"], sample["logprob"])
    assert outputs["song"] != outputs["prose"]  # (the same noise may draw the same text; never the same log-prob)
    with History(url) as history:
        records = history.list_generations(limit=None)
    assert sorted(r.params["label"] for r in records) == ["prose", "song"]
    for record in records:
        replay = run_cli("history", "replay", record.id, "--database", url, "--json")
        assert replay.returncode == 0 and json.loads(replay.stdout)["identical"], replay.stderr


# ------------------------------------------------------------------ the service


def via_cli(checkpoint: Path, label: str | None, seed: int, greedy: bool = False) -> list[tuple[str, float]]:
    args = ["sample", "-c", str(checkpoint), "--json", "--no-log", "-q", "--len", "25", "--seed", str(seed),
            "-n", "2", *(["--label", label] if label else []), *(["--greedy"] if greedy else [])]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [(s["text"], s["logprob"]) for s in json.loads(result.stdout)["samples"]]


@pytest.mark.slow
def test_service_labels_match_the_cli_also_when_batched_together(labelled_checkpoint: Path) -> None:
    cases = [("verse", 1, False), ("prose", 1, False), (None, 1, False), ("song", 4, True), ("verse", 9, False)]
    want = [via_cli(labelled_checkpoint, label, seed, greedy) for label, seed, greedy in cases]
    assert len({tuple(w) for w in want[:3]}) == 3  # the same seed, three labels: three outputs
    got: list = [None] * len(cases)
    with ServerProcess([str(labelled_checkpoint)]) as server:
        models = httpx.get(server.url + "/v1/models").json()["models"]
        assert models[0]["labels"] == ["verse", "prose", "song"]

        def ask(index: int) -> None:
            label, seed, greedy = cases[index]
            body = {"length": 25, "seed": seed, "num_samples": 2, "greedy": greedy,
                    **({"label": label} if label else {})}
            response = httpx.post(server.url + "/v1/generate", json=body, timeout=60)
            got[index] = [(s["text"], s["logprob"]) for s in response.json()["samples"]]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(cases))]  # one batch, mixed labels
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        bad = httpx.post(server.url + "/v1/generate", json={"length": 5, "label": "poem"}, timeout=60)
    # The texts are the same; a log-probability may differ in its last digits, because BLAS rounds a product
    # differently for a batch of 2 rows than for 10 (seen with MKL on an AMD AVX2 CPU: 1 ulp below 4 rows).
    assert [[text for text, _ in rows] for rows in got] == [[text for text, _ in rows] for rows in want]
    assert [[logprob for _, logprob in rows] for rows in got] == [
        [pytest.approx(logprob, rel=1e-6) for _, logprob in rows] for rows in want]
    assert bad.status_code == 400 and "unknown label 'poem'; this model's labels: verse, prose, song" in bad.text


def test_one_scheduler_batch_with_mixed_labels_gives_each_its_own() -> None:
    """Rows of several labels in one Stepper step (a per-row bias), as the generator gives each alone."""
    generator = Generator(labelled_model(layers=1), TextCodec(ALPHABET))
    requests = [("the ", DecodeConfig(length=40, seed=1, label=label, num_samples=2))
                for label in ("verse", "prose", None, "song")] + [("a", DecodeConfig(length=20, greedy=True,
                                                                                     label="prose"))]
    results = run_batched(generator, requests)
    for (prime, config), (kind, payload) in zip(requests, results):
        assert kind == "done", payload
        expected = generator.generate(prime, config).samples
        assert [s.ids for s in payload[0]] == [s.ids for s in expected], config.label
    assert len({tuple(payload[0][0].ids) for _, payload in results[:4]}) == 4



@pytest.mark.parametrize("codec", ["auto", "midi"])
def test_labels_from_folders_of_midi_files_in_either_music_codec(tmp_path: Path, codec: str) -> None:
    """Subfolders of .mid files as labels: auto reads them with the note codec, --codec midi as events; each
    label's tokens are its own files' and a labelled sample writes a .mid that pretty_midi reads."""
    pretty_midi = pytest.importorskip("pretty_midi")
    from chargen.codecs.registry import codec_class

    basics = REPO / "corpora" / "midi-basics"
    corpus = tmp_path / "corpus"
    for label, pattern in (("chorales", "chorale-*.mid"), ("scales", "scale-*.mid")):
        (corpus / label).mkdir(parents=True)
        for path in sorted(basics.glob(pattern))[:4]:
            (corpus / label / path.name).write_bytes(path.read_bytes())
    result = start_run([corpus], TrainConfig(max_steps=4, **TINY), "tiny", run_name="music", out=tmp_path / "runs",
                       progress=False, warn=lambda m: None, labels_from="folders", codec_name=codec)
    loaded = load_checkpoint(result.run_dir / LAST)
    expected_codec = "midi-notes" if codec == "auto" else codec
    assert loaded.codec.name == expected_codec and loaded.config.labels == ["chorales", "scales"]
    ids, labels = load_tokens(result.run_dir / TOKENS), load_tokens(result.run_dir / LABELS)
    reader = codec_class(expected_codec)()
    chorales = np.concatenate([reader.encode_file(p) for p in sorted((corpus / "chorales").glob("*.mid"))])
    assert np.array_equal(ids[labels == 0], chorales)
    out = tmp_path / "scale.mid"
    sampled = run_cli("sample", "-c", str(result.run_dir), "--label", "scales", "--len", "200", "--seed", "1",
                      "-o", str(out), "--no-log")
    assert sampled.returncode == 0, sampled.stderr
    assert [n for inst in pretty_midi.PrettyMIDI(str(out)).instruments for n in inst.notes]


def _transposed_copies(source: Path, folder: Path, semitones: int) -> None:
    """``source``'s .mid files moved by ``semitones`` (drums left alone), written to ``folder``."""
    import mido

    folder.mkdir(parents=True)
    for path in sorted(source.glob("*.mid")):
        song = mido.MidiFile(str(path))
        for track in song.tracks:
            for index, message in enumerate(track):
                if message.type in ("note_on", "note_off") and message.channel != 9:
                    track[index] = message.copy(note=min(max(message.note + semitones, 0), 127))
        song.save(str(folder / path.name))


@pytest.mark.slow
def test_a_labelled_music_model_plays_each_label_in_its_own_register(tmp_path: Path) -> None:
    """A music model trained on two labels, the same pieces an octave and a half down ("low") and up ("high"):
    `chargen sample --label` steers the register (read back by pretty_midi, not by chargen); the API gives
    the same file for the same seed and label, and the history replays it."""
    pretty_midi = pytest.importorskip("pretty_midi")
    from chargen import load

    basics = REPO / "corpora" / "midi-basics"
    corpus = tmp_path / "corpus"
    _transposed_copies(basics, corpus / "low", -18)
    _transposed_copies(basics, corpus / "high", 18)
    trained = run_cli("train", str(corpus), "--labels-from", "folders", "--size", "tiny", "--max-steps", "200",
                      "--batch-size", "16", "--seq-len", "64", "--threads", "1", "--seed", "5", "--run-name", "reg",
                      "--out", str(tmp_path / "runs"), "--quiet")
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "runs" / "reg"

    def mean_pitch(path: Path) -> float:
        notes = [n.pitch for inst in pretty_midi.PrettyMIDI(str(path)).instruments for n in inst.notes]
        assert len(notes) >= 20, f"{path.name}: only {len(notes)} notes"
        return float(np.mean(notes))

    pitches = {}
    for label in ("low", "high"):
        out = tmp_path / f"{label}.mid"
        sampled = run_cli("sample", "-c", str(run), "--label", label, "--len", "600", "--seed", "7", "-o", str(out),
                          "--json")
        assert sampled.returncode == 0, sampled.stderr
        pitches[label] = mean_pitch(out)
    assert pitches["high"] - pitches["low"] > 12, pitches  # the corpora's registers are 36 semitones apart

    model = load(str(run), log=False)
    assert model.info["labels"] == ["high", "low"]
    via_api = model.sample(length=600, seed=7, label="high")[0]
    via_api.write_midi(tmp_path / "api.mid")
    assert (tmp_path / "api.mid").read_bytes() == (tmp_path / "high.mid").read_bytes()

    history_id = json.loads(sampled.stdout)["history_id"]
    replayed = run_cli("history", "export", str(history_id), "-o", str(tmp_path / "export.mid"))
    assert replayed.returncode == 0, replayed.stderr
    assert (tmp_path / "export.mid").read_bytes() == (tmp_path / "high.mid").read_bytes()
