"""The note codec (``midi-notes``): files -> one PITCH and DURATION per note (:mod:`chargen.codecs.midi.note_vocab`)."""

from __future__ import annotations

from typing import Any, ClassVar

from chargen.codecs.midi.codec import MusicCodec
from chargen.codecs.midi.note_vocab import DEFAULT_NOTE_VOCAB, NoteVocab, note_token_name, notes_to_note_ids
from chargen.codecs.midi.notes import midi_notes
from chargen.errors import ChargenError, CheckpointError


class NoteCodec(MusicCodec):
    """MIDI files as notes with explicit durations: a model cannot forget to end one."""

    name: ClassVar[str] = "midi-notes"
    what: ClassVar[str] = "MIDI note"

    def __init__(self, vocab: NoteVocab = DEFAULT_NOTE_VOCAB):
        super().__init__(vocab)

    @property
    def note_limit(self) -> int:
        return self.vocab.duration_base  # the pitches

    def encode_midi(self, mid: Any) -> list[int]:
        return notes_to_note_ids(midi_notes(mid, self.vocab), self.vocab)  # type: ignore[arg-type]

    def vocab_metadata(self) -> dict[str, Any]:
        return {"step_ms": self.vocab.step_ms, "max_shift_steps": self.vocab.max_shift_steps,
                "max_duration_steps": self.vocab.max_duration_steps, "velocity_bins": self.vocab.velocity_bins}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> NoteCodec:
        cls.check_format(meta)
        try:
            vocab = NoteVocab(meta["step_ms"], meta["max_shift_steps"], meta["max_duration_steps"],
                              meta["velocity_bins"])
        except (KeyError, ChargenError) as exc:
            raise CheckpointError(f"checkpoint has invalid MIDI note codec settings: {exc}") from None
        return cls(vocab)

    def token_name(self, token: int) -> str:
        """Readable name of one id (``p60``, ``d500ms``, ``+120ms``, ``v20``)."""
        return note_token_name(token, self.vocab)
