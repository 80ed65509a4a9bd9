"""The event vocabulary: token id layout, velocity bins, and the note and stats records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from chargen.errors import ChargenError

SYMBOL_BASE = 0x1401
# U+1401..U+167F are printable, non-space; U+1680 is OGHAM SPACE MARK.
SYMBOL_LIMIT = 0x1680


class TimedVocab:
    """What both MIDI vocabularies share (a mixin of methods, no fields): the time step, the velocity bins, and
    the check of their settings."""

    step_ms: int
    velocity_bins: int

    @property
    def size(self) -> int:
        raise NotImplementedError

    def check_settings(self, bounds: tuple[tuple[str, int, int], ...]) -> None:
        """ChargenError unless each named setting is an integer in its bounds and every token has a character."""
        for field, low, high in bounds:
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ChargenError(f"MIDI {field} must be an integer in {low}..{high}, not {value!r}")
        if SYMBOL_BASE + self.size > SYMBOL_LIMIT:
            raise ChargenError(
                f"MIDI vocabulary of {self.size} tokens is too large for one character each "
                f"(at most {SYMBOL_LIMIT - SYMBOL_BASE})"
            )

    @property
    def step_s(self) -> float:
        return self.step_ms / 1000.0

    def velocity_bin(self, velocity: int) -> int:
        """Bin of a MIDI velocity 1..127 (equal-width bins over 1..127)."""
        return (min(max(velocity, 1), 127) - 1) * self.velocity_bins // 127

    def bin_velocity(self, vbin: int) -> int:
        """A velocity inside ``vbin`` (its upper median), so it re-encodes to ``vbin``."""
        members = [v for v in range(1, 128) if self.velocity_bin(v) == vbin]
        return members[len(members) // 2]


@dataclass(frozen=True)
class MidiVocab(TimedVocab):
    """The event vocabulary; fixed entirely by these settings, never by data."""

    step_ms: int = 10
    max_shift_steps: int = 100
    velocity_bins: int = 32

    def __post_init__(self) -> None:
        self.check_settings((("step_ms", 1, 1000), ("max_shift_steps", 1, 1000), ("velocity_bins", 1, 127)))

    # Id layout: NOTE_ON 0..127, NOTE_OFF 128..255, TIME_SHIFT, VELOCITY.
    @property
    def note_off_base(self) -> int:
        return 128

    @property
    def shift_base(self) -> int:
        return 256

    @property
    def velocity_base(self) -> int:
        return 256 + self.max_shift_steps

    @property
    def size(self) -> int:
        return 256 + self.max_shift_steps + self.velocity_bins



DEFAULT_VOCAB = MidiVocab()


class Note(NamedTuple):
    """A note on the quantized grid: times in steps, velocity as a bin."""

    pitch: int
    start: int
    end: int
    velocity: int


@dataclass(frozen=True)
class MidiStats:
    tokens: int
    notes: int
    duration_s: float
    lowest: int | None
    highest: int | None


class MusicVocab(Protocol):
    """What export and the statistics need of a music codec's vocabulary (MidiVocab, NoteVocab)."""

    @property
    def step_ms(self) -> int: ...

    @property
    def step_s(self) -> float: ...

    @property
    def velocity_bins(self) -> int: ...

    @property
    def size(self) -> int: ...

    def velocity_bin(self, velocity: int) -> int: ...

    def bin_velocity(self, vbin: int) -> int: ...
