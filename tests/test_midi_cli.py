"""MIDI through the real command: train on a folder, sample to .mid, read back independently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest

from chargen.codecs.midi import MidiCodec
from chargen.codecs.midi.grammar import RULES
from chargen.codecs.midi.note_codec import NoteCodec
from chargen.sampling.music_defaults import POLICIES, POLICY_KEY
from tests.conftest import REPO, assert_one_line_error, invoke, run_cli, shared_path

BASICS = REPO / "corpora" / "midi-basics"


def _train(root: Path, *codec: str) -> Path:
    result = run_cli("train", str(BASICS), *codec, "--size", "tiny", "--max-steps", "120", "--eval-every", "60",
                     "--batch-size", "16", "--seq-len", "64", "--lr", "0.01", "--threads", "1",
                     "--transpose", "-3..3", "--run-name", "basics", "--out", str(root), "--quiet")
    assert result.returncode == 0, result.stderr
    return root / "basics"


@pytest.fixture(scope="module")
def midi_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run on a folder of .mid files as a user starts it: the default codec (midi-notes)."""
    return _train(tmp_path_factory.mktemp("midi-ck"))


@pytest.fixture(scope="module")
def event_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the event codec (--codec midi), the Performance-RNN events older checkpoints all use."""
    return _train(tmp_path_factory.mktemp("event-ck"), "--codec", "midi")


@pytest.fixture(scope="module")
def legacy_event_run(event_run: Path) -> Path:
    """An event-codec checkpoint as runs before decoding defaults were stored wrote it (limits, no default)."""
    from chargen.runs.checkpoint import load_checkpoint, save_weights

    loaded = load_checkpoint(event_run / "best.safetensors")
    legacy = event_run / "legacy.safetensors"
    save_weights(legacy, loaded.model, loaded.codec,
                 {k: v for k, v in loaded.training.items() if k not in (POLICY_KEY, "corpus_texture")})
    return legacy


@pytest.mark.parametrize("run", ["midi_run", "event_run"])
def test_sampled_midi_is_a_valid_file_read_by_an_independent_parser(run: str, tmp_path: Path,
                                                                    request: pytest.FixtureRequest) -> None:
    pretty_midi = pytest.importorskip("pretty_midi")
    midi_run = request.getfixturevalue(run)
    out = tmp_path / "piece.mid"
    result = run_cli("sample", "-c", str(midi_run), "--len", "600", "--seed", "3", "--temperature", "0.9",
                     "-o", str(out), "--json", "--tempo", "90", "--program", "40")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["samples"][0]["midi_path"] == str(out)
    pm = pretty_midi.PrettyMIDI(str(out))
    notes = [n for inst in pm.instruments for n in inst.notes]
    assert notes and all(n.end > n.start for n in notes)
    assert max(n.end - n.start for n in notes) <= 5.0 + 1e-3  # --max-note-seconds; 1 ms of tick rounding
    assert pm.instruments[0].program == 40
    mid = mido.MidiFile(out)
    assert mid.type == 1
    for track in mid.tracks:
        assert sum(msg.type == "end_of_track" for msg in track) == 1
        assert all(isinstance(msg.time, int) and msg.time >= 0 for msg in track)


@pytest.mark.parametrize("run, codec", [("midi_run", NoteCodec()), ("event_run", MidiCodec())])
def test_midi_tokens_command_and_prime_midi(run: str, codec, request: pytest.FixtureRequest) -> None:
    midi_run = request.getfixturevalue(run)
    piece = sorted(BASICS.glob("*.mid"))[0]
    chosen = [] if codec.name == "midi-notes" else ["--codec", codec.name]  # the default: the note codec
    shown = run_cli("midi", "tokens", str(piece), *chosen)
    ids = codec.encode_file(piece)
    assert shown.stdout.rstrip("\n") == codec.decode(ids.tolist())
    events = json.loads(run_cli("midi", "tokens", str(piece), "--json", *chosen).stdout)
    assert events["ids"] == ids.tolist() and events["notes"] > 0 and events["codec"] == codec.name
    assert events["events"][:3] == [codec.token_name(i) for i in ids[:3]]
    primed = run_cli("sample", "-c", str(midi_run), "--prime-midi", str(piece), "--prime-len", "40",
                     "--len", "100", "--format", "text", "--seed", "1")
    assert primed.returncode == 0, primed.stderr
    assert primed.stdout.startswith(codec.decode(ids[:40].tolist()))


def test_invalid_midi_files_are_skipped_and_counted(tmp_path: Path) -> None:
    invalid = shared_path("midi-invalid")
    corpus = tmp_path / "mixed"
    shutil.copytree(invalid, corpus)
    for piece in sorted(BASICS.glob("*.mid"))[:20]:
        shutil.copy(piece, corpus / piece.name)
    result = run_cli("train", str(corpus), "--codec", "midi", "--size", "tiny", "--max-steps", "2",
                     "--batch-size", "4", "--seq-len", "32", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("chargen: skipping")]
    assert len(warnings) >= 10
    assert any("skipped" in line and "usable" in line for line in result.stderr.splitlines())


def test_a_folder_of_only_corrupt_midi_is_one_clear_error(tmp_path: Path) -> None:
    corpus = tmp_path / "bad"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"broken{i}.mid").write_bytes(b"MThd\x00\x00\x00\x06" + np.random.default_rng(i).bytes(40))
    result = run_cli("train", str(corpus), "--max-steps", "1")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert lines[-1].startswith("chargen: error: no usable tokens") and "3 of 3 files skipped" in lines[-1]


def test_text_model_refuses_midi_options(trained_run: Path) -> None:
    assert_one_line_error(invoke("sample", "-c", str(trained_run), "--format", "midi"), "needs a MIDI model")
    assert_one_line_error(invoke("train", str(REPO / "corpora" / "fables.txt"), "--transpose", "-2..2",
                                  "--max-steps", "1"), "transpose applies to MIDI")


@pytest.mark.parametrize("run", ["midi_run", "event_run"])
def test_the_run_stores_its_limits_corpus_texture_and_default_and_info_shows_them(
        run: str, request: pytest.FixtureRequest) -> None:
    from chargen.runs.checkpoint import load_checkpoint

    midi_run = request.getfixturevalue(run)
    loaded = load_checkpoint(midi_run / "best.safetensors")
    training = loaded.training
    assert training["polyphony_cap"] == 4  # the chorales: SATB
    assert training["max_hold_s"] == 5.0  # midi-basics: 99 % of its notes are 5.16 s or shorter; the export's cap
    assert training[POLICY_KEY] == POLICIES[loaded.codec.name]
    texture = training["corpus_texture"]  # midi-basics as tokens.npy has it (the same in either codec)
    assert texture["median_note_s"] == 0.5 and 2.0 < texture["polyphony"] < 2.6 and 60 < texture["pitch_mean"] < 70
    assert 2.0 < texture["notes_per_s"] < 3.0 and 10 < texture["pitch_sd"] < 16
    shown = json.loads(run_cli("info", str(midi_run), "--json").stdout)
    assert (shown["polyphony_cap"], shown["max_hold_s"]) == (4, 5.0)
    assert shown["corpus_texture"] == texture and shown["grammar_defaults"] == POLICIES[loaded.codec.name]
    text = run_cli("info", str(midi_run)).stdout
    assert "polyphony    cap 4, learnt from the training corpus" in text
    assert "longest hold 5 s, learnt from the training corpus" in text
    assert (f"texture      polyphony {texture['polyphony']:g}, median note 0.5 s, {texture['notes_per_s']:g} notes/s, "
            f"pitch {texture['pitch_mean']:g} ± {texture['pitch_sd']:g} (of the training corpus)") in text


def test_sample_grammar_options(midi_run: Path, legacy_event_run: Path, trained_run: Path) -> None:
    def params(*args: str, run: Path = midi_run) -> dict:
        result = run_cli("sample", "-c", str(run), "--len", "50", "--seed", "2", "--format", "text", "--json",
                         "--no-log", *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["params"]

    policy = POLICIES["midi-notes"]
    assert {k: params()[k] for k in ("grammar", "max_polyphony", "max_hold_s", "grammar_rules")} == {
        "grammar": True, "max_polyphony": 4 if policy["cap"] else 0, "max_hold_s": 5.0 if policy["hold"] else 0.0,
        "grammar_rules": sorted(policy["rules"])}
    # An event-codec checkpoint that stores no default decodes as it always did: every rule, the learnt limits.
    assert {k: params(run=legacy_event_run)[k] for k in ("grammar", "max_polyphony", "max_hold_s", "grammar_rules")} \
        == {"grammar": True, "max_polyphony": 4, "max_hold_s": 5.0, "grammar_rules": sorted(RULES)}
    assert params("--max-polyphony", "2")["max_polyphony"] == 2
    assert {k: params("--no-grammar")[k] for k in ("grammar", "max_polyphony", "grammar_rules")} == {
        "grammar": False, "max_polyphony": 0, "grammar_rules": []}
    result = run_cli("sample", "-c", str(midi_run), "--no-grammar", "--max-polyphony", "2", "--len", "5")
    assert result.returncode == 2 and "switched off" in result.stderr
    result = run_cli("sample", "-c", str(trained_run), "--max-polyphony", "2", "--len", "5")
    assert result.returncode == 2 and "needs a music model" in result.stderr


def test_an_older_checkpoint_gets_its_limits_from_the_run_tokens_else_fallbacks(event_run: Path,
                                                                                 tmp_path: Path) -> None:
    from chargen.runs.checkpoint import load_checkpoint, save_weights
    from chargen.sampling import learnt_max_hold_s, learnt_polyphony_cap

    midi_run = event_run
    loaded = load_checkpoint(midi_run / "best.safetensors")
    older = {k: v for k, v in loaded.training.items()
             if k not in ("polyphony_cap", "max_hold_s", POLICY_KEY, "corpus_texture")}
    beside_tokens = midi_run / "older.safetensors"
    save_weights(beside_tokens, loaded.model, loaded.codec, older)
    source = f"computed from {midi_run / 'tokens.npy'}"
    assert learnt_polyphony_cap(load_checkpoint(beside_tokens)) == (4, source)
    assert learnt_max_hold_s(load_checkpoint(beside_tokens)) == (5.0, source)
    # A cap stored by an earlier version (the onset percentile) and no hold: the cap kept, the hold computed.
    save_weights(beside_tokens, loaded.model, loaded.codec, dict(older, polyphony_cap=3))
    assert learnt_polyphony_cap(load_checkpoint(beside_tokens)) == (3, "learnt from the training corpus")
    assert learnt_max_hold_s(load_checkpoint(beside_tokens)) == (5.0, source)
    save_weights(beside_tokens, loaded.model, loaded.codec, older)
    alone = tmp_path / "alone.safetensors"
    shutil.move(beside_tokens, alone)
    cap, source = learnt_polyphony_cap(load_checkpoint(alone))
    assert cap is None and "no cap" in source
    hold, source = learnt_max_hold_s(load_checkpoint(alone))
    assert hold == 5.0 and "held-note cap" in source
    shown = run_cli("sample", "-c", str(alone), "--len", "20", "--seed", "1", "--format", "text", "--json", "--no-log")
    assert {k: json.loads(shown.stdout)["params"][k] for k in ("max_polyphony", "max_hold_s")} == {
        "max_polyphony": 0, "max_hold_s": 5.0}
    info = run_cli("info", str(alone)).stdout
    assert "no cap" in info and "texture      " not in info  # nothing to compute the texture from


def test_a_stored_hold_is_the_default_and_max_hold_s_overrides_it(legacy_event_run: Path, tmp_path: Path) -> None:
    from chargen.runs.checkpoint import load_checkpoint, save_weights

    loaded = load_checkpoint(legacy_event_run)
    path = tmp_path / "held.safetensors"
    save_weights(path, loaded.model, loaded.codec, dict(loaded.training, max_hold_s=1.25))

    def params(*args: str) -> dict:
        result = run_cli("sample", "-c", str(path), "--len", "300", "--seed", "4", "--format", "text", "--json",
                         "--no-log", *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    learnt = params()
    assert learnt["params"]["max_hold_s"] == 1.25
    assert params("--max-hold-s", "3")["params"]["max_hold_s"] == 3.0
    assert "longest hold 1.25 s, learnt from the training corpus" in run_cli("info", str(path)).stdout


@pytest.mark.parametrize("run", ["midi_run", "legacy_event_run"])
def test_replay_is_byte_identical_with_the_grammar_and_rows_from_before_it_replay_without(
        run: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import sqlite3

    midi_run = request.getfixturevalue(run)
    url = f"sqlite:///{tmp_path / 'history.db'}"
    for options in (["--temperature", "1.0", "-n", "2"], ["--beam-width", "3"], ["--no-grammar"]):
        result = run_cli("sample", "-c", str(midi_run), "--len", "150", "--seed", "5", "--format", "text",
                         "--database", url, "--require-log", "-q", *options)
        assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "history.db") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM generations ORDER BY created_at")]
        # The ungrammatical row as it was logged before the grammar existed: no grammar settings at all.
        db.execute("UPDATE generations SET params = json_remove(params, '$.grammar', '$.max_polyphony', "
                   "'$.max_hold_s', '$.grammar_rules') WHERE id = ?", (ids[-1],))
        if run == "legacy_event_run":  # grammatical rows as logged before rules could be chosen: all of them
            db.execute("UPDATE generations SET params = json_remove(params, '$.grammar_rules') WHERE id != ?",
                       (ids[-1],))
    assert len(ids) == 3
    for gen_id in ids:
        replay = run_cli("history", "replay", gen_id, "--database", url, "--json")
        assert replay.returncode == 0, replay.stderr
        data = json.loads(replay.stdout)
        assert data["identical"] and data["replayed"] == data["recorded"]
