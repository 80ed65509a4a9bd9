"""Any music vocabulary's token stream as notes: the one place that knows both codecs' streams.

The event stream (:mod:`chargen.codecs.midi.events`) and the note stream
(:mod:`chargen.codecs.midi.note_vocab`) decode to the same normalized notes;
export, the statistics and the texture ask here, whichever codec wrote the ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chargen.codecs.midi.events import ids_to_notes
from chargen.codecs.midi.note_vocab import NoteVocab, note_ids_to_notes
from chargen.codecs.midi.vocab import DEFAULT_VOCAB, MidiStats, MusicVocab, Note


def stream_notes(ids: Sequence[int] | np.ndarray, vocab: MusicVocab = DEFAULT_VOCAB) -> list[Note]:
    """The normalized notes of a token stream of ``vocab`` (what export writes): dangling notes closed, stray
    note-offs dropped, overlaps resolved."""
    if isinstance(vocab, NoteVocab):
        return note_ids_to_notes(ids, vocab)
    return ids_to_notes(ids, vocab)  # type: ignore[arg-type]


def midi_stats(ids: Sequence[int] | np.ndarray, vocab: MusicVocab = DEFAULT_VOCAB) -> MidiStats:
    """Note count, sounding length and pitch range of a token stream as it would be written."""
    notes = stream_notes(ids, vocab)
    pitches = [n.pitch for n in notes]
    return MidiStats(
        tokens=len(ids),
        notes=len(notes),
        duration_s=max((n.end for n in notes), default=0) * vocab.step_s,
        lowest=min(pitches, default=None),
        highest=max(pitches, default=None),
    )
