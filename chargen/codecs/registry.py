"""Which codecs exist: names (stored in checkpoints) and corpus suffixes to codec classes.

The base class in ``chargen.codecs.base`` knows nothing of its subclasses; this
module is the one place that lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chargen.codecs.base import Codec
from chargen.codecs.midi import MidiCodec
from chargen.codecs.midi.note_codec import NoteCodec
from chargen.codecs.text import TextCodec
from chargen.errors import CheckpointError

# In order of preference where several read one suffix: .mid files are read by the note codec unless
# --codec midi says otherwise (BENCHMARKS.md, "Music quality": its samples keep the corpus's texture).
CODECS: dict[str, type[Codec]] = {cls.name: cls for cls in (TextCodec, NoteCodec, MidiCodec)}


def codec_class(name: str) -> type[Codec]:
    return CODECS[name]


def codec_from_metadata(meta: dict[str, Any]) -> Codec:
    """Rebuild the codec a checkpoint was trained with."""
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or name not in CODECS:
        raise CheckpointError(f"checkpoint uses unknown codec {name!r}")
    return CODECS[name].from_metadata(meta)


def is_music(name: str | None) -> bool:
    """Whether the codec named ``name`` (as a checkpoint or history row stores it) is a music codec."""
    cls = CODECS.get(name or "")
    return bool(cls is not None and cls.music)


def codec_for_suffix(path: Path) -> str | None:
    """Name of the codec whose corpus files end like ``path``, or None."""
    suffix = path.suffix.lower()
    return next((name for name, cls in CODECS.items() if suffix in cls.suffixes), None)
