"""Errors that reach the user as one line, never as a traceback.

Every error chargen raises on purpose is a :class:`ChargenError`: the Python API
raises it as it is, the CLI prints ``chargen: error: <message>`` (exit 1, or 2
for an :class:`ArgumentError`), and the service answers it with a 4xx. Messages
name keyword arguments (``batch_size``), never a CLI flag, since the CLI is only
one of the library's clients.
"""


class ChargenError(Exception):
    """A problem the user can fix: bad input, missing file, bad option.

    The message must stand on its own in one line.
    """


class ArgumentError(ChargenError, ValueError):
    """An argument is out of range, of the wrong type, or conflicts with another (the CLI exits 2)."""


class CorpusError(ChargenError):
    """The corpus cannot be read or is unusable for training."""


class CorruptFileError(ChargenError):
    """One input file is unreadable (corrupt MIDI, say); callers may skip it."""


class CheckpointError(ChargenError):
    """A checkpoint is missing, foreign, truncated or unsafe."""


class UnknownTokensError(ChargenError):
    """Prime text contains symbols that are not in the model's vocabulary."""


class ChargenWarning(UserWarning):
    """Something the user should know once, that does not stop the work (the CLI prints it as one line)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C (or SIGTERM) after saving: ``run`` continues with ``chargen.train(resume=...)``.

    A KeyboardInterrupt, so a script stops as on any Ctrl-C; a notebook can catch it and keep ``run``.
    """

    def __init__(self, message: str, run: object = None):
        super().__init__(message)
        self.run = run
