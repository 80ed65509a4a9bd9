"""chargen: character-level (and MIDI-event) recurrent language models."""

__version__ = "0.1.0"
