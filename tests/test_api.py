"""The public Python API (``import chargen``), in one process: train, load, generate, sample, score, history.

Its text must be the text of ``chargen sample`` with the same seed and options, and its errors the
CLI's one-line messages, as typed exceptions.
"""

from __future__ import annotations

import json
import re
import signal
import threading
from pathlib import Path

import pytest
from conftest import FABLES, REPO, invoke

import chargen


@pytest.fixture(scope="module")
def api_run(tmp_path_factory: pytest.TempPathFactory) -> chargen.Run:
    root = tmp_path_factory.mktemp("api-runs")
    return chargen.train(FABLES, size="tiny", max_steps=40, eval_every=20, batch_size=8, seq_len=32, threads=1,
                         run_name="api", out=root, progress=False, log=False, report=None)


def test_train_load_generate_sample_score_and_read_the_history(api_run: chargen.Run, isolated_home: Path) -> None:
    assert isinstance(api_run, chargen.Run) and api_run.step == 40 and not api_run.interrupted
    assert api_run.best_val_loss is not None and api_run.best_val_loss < 4.5
    model = chargen.load(api_run.dir)
    assert isinstance(model, chargen.Model) and model.info["steps"] == 40 and model.info["codec"] == "text"

    text = model.generate("The ", 80, temperature=0.8, seed=11)
    assert isinstance(text, str) and len(text) == 80
    cli = invoke("sample", "-c", str(api_run.dir), "--prime", "The ", "--len", "80", "-t", "0.8", "--seed", "11",
                 "--no-log", "-q")
    assert cli.returncode == 0 and cli.stdout == "The " + text + "\n"

    samples = model.sample("A ", 30, n=3, seed=5, top_k=10)
    assert len(samples) == 3 and all(len(s.text) == 30 and s.logprob < 0 for s in samples)
    assert len({s.text for s in samples}) > 1  # three rows, three draws
    cli_json = invoke("sample", "-c", str(api_run.dir), "--prime", "A ", "--len", "30", "-n", "3", "--seed", "5",
                      "--top-k", "10", "--json", "--no-log")
    assert [s["text"] for s in json.loads(cli_json.stdout)["samples"]] == [s.text for s in samples]

    nats = model.score("The fox and the crow were friends.")
    assert 0 < nats < 5
    file_nats = model.score(Path(FABLES))
    assert 0 < file_nats < 5

    logged = chargen.generations(n=10)
    assert [g.outputs[0].text for g in logged[:2]] == [samples[0].text, text]  # newest first (the sample of 3)
    assert len(logged[0].outputs) == 3 and logged[0].seed == 5
    assert chargen.scores(n=5)[0].file_path == str(FABLES.resolve())
    assert chargen.replay(logged[1].id).identical


def test_streaming_yields_the_same_text_as_it_is_made(api_run: chargen.Run, isolated_home: Path) -> None:
    model = chargen.load(api_run.dir, log=False)
    whole = model.generate("The ", 60, seed=3)
    stream = model.generate("The ", 60, seed=3, stream=True)
    pieces = list(stream)
    assert len(pieces) == 60 and "".join(pieces) == whole
    assert stream.result is not None and stream.result.samples[0].text == whole


def test_stop_strings_end_a_sample_before_them_everywhere(api_run: chargen.Run, isolated_home: Path) -> None:
    model = chargen.load(api_run.dir, log=False)
    free = model.generate("The ", 200, seed=2)
    stop = next(c for c in free[5:] if c.isalpha())  # a character the free text has after its start
    stopped = model.sample("The ", 200, seed=2, stop=[stop])[0]
    assert stopped.text == free[: free.index(stop)] and stopped.stopped
    assert "".join(model.generate("The ", 200, seed=2, stop=[stop], stream=True)) == stopped.text
    cli = invoke("sample", "-c", str(api_run.dir), "--prime", "The ", "--len", "200", "--seed", "2", "--stop", stop,
                 "--no-log", "-q")
    assert cli.stdout == "The " + stopped.text + "\n"


def test_errors_are_typed_with_the_clis_messages(api_run: chargen.Run, isolated_home: Path) -> None:
    with pytest.raises(chargen.CheckpointError) as missing:
        chargen.load("no-such-run")
    cli = invoke("sample", "-c", "no-such-run")
    assert cli.returncode == 1 and cli.stderr.strip() == f"chargen: error: {missing.value}"

    model = chargen.load(api_run.dir, log=False)
    with pytest.raises(chargen.ArgumentError) as cold:
        model.generate(temperature=-1)
    assert isinstance(cold.value, chargen.ChargenError) and isinstance(cold.value, ValueError)
    assert "temperature" in str(cold.value) and "--" not in str(cold.value)
    with pytest.raises(chargen.ArgumentError) as beams:
        model.sample(n=3, beam_width=2)
    cli = invoke("sample", "-c", str(api_run.dir), "--beam-width", "2", "-n", "3")
    assert cli.returncode == 2 and cli.stderr.strip() == f"chargen: error: {beams.value}"
    with pytest.raises(chargen.ArgumentError, match="unknown decode option"):
        model.generate(temprature=0.5)
    with pytest.raises(chargen.ArgumentError, match="unknown training option"):
        chargen.train(FABLES, max_step=3)
    with pytest.raises(chargen.ArgumentError) as no_corpus:
        chargen.train()
    assert "--" not in str(no_corpus.value)


def test_train_defaults_are_the_clis_and_a_run_without_a_limit_has_a_budget(tmp_path: Path) -> None:
    """Defined once: the CLI's --help shows TrainConfig's defaults, and a run given no limit gets 10 minutes."""
    help_text = " ".join(invoke("train", "--help").stdout.split())
    defaults = chargen.TrainConfig()
    assert f"[default: {defaults.batch_size}]" in help_text and f"[default: {defaults.seq_len}]" in help_text
    assert "[default: 10 when no other limit is given]" in help_text
    from chargen.training.config import DEFAULT_MINUTES

    assert DEFAULT_MINUTES == 10


@pytest.mark.slow
def test_ctrl_c_saves_and_raises_training_interrupted_and_resume_goes_on(tmp_path: Path) -> None:
    timer = threading.Timer(3.0, lambda: signal.raise_signal(signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(chargen.TrainingInterrupted) as stopped:
            chargen.train(FABLES, size="tiny", max_steps=100_000, batch_size=8, seq_len=32, threads=1,
                          run_name="stop", out=tmp_path, progress=False, log=False, report=None)
    finally:
        timer.cancel()
    assert isinstance(stopped.value, KeyboardInterrupt)
    run = stopped.value.run
    assert isinstance(run, chargen.Run) and run.interrupted and 0 < run.step < 100_000
    resumed = chargen.train(resume=run.dir, max_steps=run.step + 3, progress=False, log=False, report=None)
    assert resumed.step == run.step + 3 and not resumed.interrupted


def test_a_music_model_writes_midi_from_python(tmp_path: Path, isolated_home: Path) -> None:
    import pretty_midi

    run = chargen.train(REPO / "corpora" / "midi-basics", size="tiny", max_steps=30, batch_size=8, seq_len=64,
                        threads=1, run_name="music", out=tmp_path, progress=False, log=False, report=None)
    model = run.load(log=False)
    assert model.is_music
    sample = model.sample(length=400, seed=1)[0]
    path = sample.write_midi(tmp_path / "piece.mid")
    assert path == tmp_path / "piece.mid" and sum(len(i.notes) for i in pretty_midi.PrettyMIDI(str(path)).instruments)
    text_sample = chargen.Sample(ids=[0], text="a", logprob=0.0)
    with pytest.raises(chargen.ArgumentError, match="music model"):
        text_sample.write_midi(tmp_path / "no.mid")


@pytest.mark.slow
def test_the_readmes_python_example_runs(tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """The README's Python API block, executed as it is written (so it cannot go stale)."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"<!-- tested: python api -->\s*```python\n(.*?)```", readme, re.S)
    assert blocks, "the README's Python API example is marked <!-- tested: python api -->"
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("CHARGEN_CHECKPOINTS", str(tmp_path / "checkpoints"))
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - the project's own README
    assert isinstance(namespace.get("model"), chargen.Model)
