"""Errors that reach the user as one line, never as a traceback."""


class ChargenError(Exception):
    """A problem the user can fix: bad input, missing file, bad option.

    The CLI prints ``chargen: error: <message>`` and exits 1; the service
    turns it into a 4xx answer. The message must stand on its own in one line.
    """


class CorpusError(ChargenError):
    """The corpus cannot be read or is unusable for training."""


class CorruptFileError(ChargenError):
    """One input file is unreadable (corrupt MIDI, say); callers may skip it."""


class CheckpointError(ChargenError):
    """A checkpoint is missing, foreign, truncated or unsafe."""


class UnknownTokensError(ChargenError):
    """Prime text contains symbols that are not in the model's vocabulary."""
