"""The project's own MIDI corpus (corpora/midi-basics): present, small, reproducible, usable.

These tests need nothing outside the repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import mido
import numpy as np
import pytest

from chargen.codecs.midi import MidiCodec, ids_to_notes, midi_stats
from chargen.codecs.midi.export import write_midi
from chargen.codecs.registry import codec_class

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "corpora" / "midi-basics"
FILES = sorted(CORPUS.glob("*.mid"))


def _generator() -> ModuleType:
    """scripts/make_midi_corpus.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_midi_corpus", REPO / "scripts" / "make_midi_corpus.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_corpus_is_there_and_small() -> None:
    assert (CORPUS / "README.md").is_file()
    assert 30 <= len(FILES) <= 60
    assert sum(p.stat().st_size for p in FILES) < 300_000
    assert MidiCodec.suffixes == (".mid", ".midi") and codec_class("midi") is MidiCodec


def test_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    files = _generator().build_corpus()
    assert sorted(files) == [p.name for p in FILES]
    for name, mid in files.items():
        mid.save(tmp_path / name)
        assert (tmp_path / name).read_bytes() == (CORPUS / name).read_bytes(), name


def test_corpus_variety() -> None:
    kinds = {p.name.split("-")[0] for p in FILES}
    assert kinds == {"scale", "arpeggio", "chorale", "melody"}
    types, tempos, keys, tempo_changes = set(), set(), set(), 0
    for path in FILES:
        mid = mido.MidiFile(path)
        types.add(mid.type)
        file_tempos = [m.tempo for t in mid.tracks for m in t if m.type == "set_tempo"]
        tempos.add(file_tempos[0])
        tempo_changes += len(file_tempos) > 1
        keys.update(m.key for t in mid.tracks for m in t if m.type == "key_signature")
    assert types == {0, 1} and len(tempos) >= 8 and len(keys) >= 10 and tempo_changes >= 5


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_corpus_file_round_trips(path: Path, tmp_path: Path) -> None:
    codec = MidiCodec()
    ids = codec.encode_file(path)
    stats = midi_stats(ids)
    assert stats.notes >= 8 and 3 < stats.duration_s < 120
    out = tmp_path / "again.mid"
    write_midi(ids, out)
    assert np.array_equal(codec.encode_file(out), ids)
    # The chorales really are four-part: four notes sound together.
    if path.name.startswith("chorale"):
        notes = ids_to_notes(ids)
        assert max(sum(n.start <= m.start < n.end for n in notes) for m in notes) == 4
