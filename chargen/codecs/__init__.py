"""Codecs: a corpus as token ids and ids back as output. Every token has one printable character, so any
token stream can be primed, shown and stored as text.

  base.py       Codec: the interface, and the metadata a checkpoint stores to rebuild its codec
  registry.py   which codecs exist: names (stored in checkpoints) and corpus suffixes to classes
  text.py       TextCodec: one token per Unicode code point; the one rule for reading text files
  text_scan.py  UTF-8 corpora as code points at disk speed, in bounded memory
  midi/         MIDI: notes read from Standard MIDI Files, the event and note codecs, their grammars,
                the corpus texture, .mid export and .wav rendering
"""
