"""Primes read from files: bounded in bytes and in tokens, and never silently empty.

A prime is a start, not a corpus: its file may hold at most ``MAX_PRIME_BYTES`` (text and MIDI
alike), and it is at most ``chargen.sampling.config.MAX_PRIME_TOKENS`` tokens long when it reaches
the model. A MIDI file whose notes are all dropped (drums only) or that holds none gives no prime
at all: that is an error, not an empty prime that would quietly start from nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from chargen.codecs.base import Codec
from chargen.errors import ChargenError
from chargen.files.user_paths import MAX_PRIME_BYTES, require_file
from chargen.sampling.config import check_prime_length

NO_NOTES = "no notes to read (a file of drums only has none: channel 10 is dropped)"


def midi_tokens(codec: Codec, path: Path) -> np.ndarray:
    """Token ids of MIDI file ``path``; ChargenError when it has no notes."""
    ids = codec.encode_file(path)
    if len(ids) == 0:
        raise ChargenError(f"{path}: {NO_NOTES}")
    return ids


def midi_prime(codec: Codec, path: Path, tokens: int) -> str:
    """The first ``tokens`` tokens of MIDI file ``path`` as prime text (a file of at most MAX_PRIME_BYTES)."""
    require_file(path, "MIDI prime")
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise ChargenError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size > MAX_PRIME_BYTES:
        raise ChargenError(f"{path}: larger than {MAX_PRIME_BYTES >> 20} MiB, too big for a MIDI prime "
                           "(a prime is a start: cut the file)")
    ids = midi_tokens(codec, path)[:tokens]
    check_prime_length(len(ids))
    return codec.decode(ids.tolist())
