"""One definition of an option: its default, help, bounds and CLI spelling, on a dataclass field.

``DecodeConfig`` and ``TrainConfig`` declare their fields with :func:`option`; from
that one place come the library's checks (:func:`check_fields`), the CLI's click
options (``chargen.cli.options``) and the service's request schema
(``chargen.serve.schemas``). So a bound, a default or a help text is written once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from chargen.errors import ArgumentError

METADATA_KEY = "chargen"


@dataclass(frozen=True)
class Spec:
    """How one field is offered to users. Bounds apply to numbers (and to each item of a tuple)."""

    help: str
    flag: str | None = None  # CLI spelling; default "--" + the name with dashes
    short: str | None = None  # e.g. "-t"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    switch: bool = False  # a bool offered as --x/--no-x (None = the model decides), not a plain flag
    default_text: str | None = None  # what a None default means, for help texts
    cli: bool = True  # offered by the CLI
    service: bool = True  # accepted in service requests


def option(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field with its :class:`Spec`; ``default`` ``list`` means a new empty list each time."""
    if default is list:
        return dataclasses.field(default_factory=list, metadata={METADATA_KEY: Spec(help, **spec)})
    return dataclasses.field(default=default, metadata={METADATA_KEY: Spec(help, **spec)})


def is_strings(annotation: Any) -> bool:
    """Whether a field holds a list of strings (``list[str]``)."""
    return typing.get_origin(base_type(annotation)) is list


def spec_of(field: dataclasses.Field[Any]) -> Spec | None:
    return field.metadata.get(METADATA_KEY)


@functools.cache  # typing.get_type_hints costs about 100 us: the service asks once per request
def specified_fields(cls: type) -> tuple[tuple[dataclasses.Field[Any], Spec, Any], ...]:
    """(field, spec, resolved type) of each field of dataclass ``cls`` declared with :func:`option`."""
    hints = typing.get_type_hints(cls)
    return tuple((f, s, hints[f.name]) for f in dataclasses.fields(cls) if (s := spec_of(f)) is not None)


def base_type(annotation: Any) -> Any:
    """``int`` for ``int | None``; the annotation itself otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def bounds_text(spec: Spec) -> str:
    """``> 0``, ``in [0, 1)``, ... for messages."""
    if spec.low is not None and spec.high is not None:
        return f"in {'(' if spec.low_open else '['}{spec.low:g}, {spec.high:g}{')' if spec.high_open else ']'}"
    if spec.low is not None:
        return f"{'>' if spec.low_open else '>='} {spec.low:g}"
    if spec.high is not None:
        return f"{'<' if spec.high_open else '<='} {spec.high:g}"
    return ""


def check_value(name: str, value: Any, annotation: Any, spec: Spec) -> None:
    """ArgumentError naming ``name`` when ``value`` is not of its field's type, finite and in bounds."""
    if value is None:
        if type(None) in typing.get_args(annotation):
            return
        raise ArgumentError(f"{name} must be given")
    kind = base_type(annotation)
    if kind is bool:
        if not isinstance(value, bool):
            raise ArgumentError(f"{name} must be True or False, not {value!r}")
        return
    if kind is str:
        if not isinstance(value, str):
            raise ArgumentError(f"{name} must be a string, not {value!r}")
        if spec.choices is not None and value not in spec.choices:
            raise ArgumentError(f"{name} must be one of {', '.join(spec.choices)}, not {value!r}")
        return
    if is_strings(kind):  # e.g. stop strings
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise ArgumentError(f"{name} must be a list of non-empty strings, not {value!r}")
        if spec.high is not None and len(value) > spec.high:
            raise ArgumentError(f"{name} takes at most {spec.high:g} strings, not {len(value)}")
        return
    items = value if typing.get_origin(kind) is tuple else (value,)
    number = base_type(typing.get_args(kind)[0]) if typing.get_origin(kind) is tuple else kind
    if typing.get_origin(kind) is tuple and (not isinstance(value, tuple | list) or len(value) != 2):
        raise ArgumentError(f"{name} must be a pair (low, high), not {value!r}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise ArgumentError(f"{name} must be a number, not {value!r}")
        if number is int and not isinstance(item, int):
            raise ArgumentError(f"{name} must be a whole number, not {value!r}")
        if not math.isfinite(item):
            raise ArgumentError(f"{name} must be a finite number, not {value!r}")
        too_low = spec.low is not None and (item <= spec.low if spec.low_open else item < spec.low)
        too_high = spec.high is not None and (item >= spec.high if spec.high_open else item > spec.high)
        if too_low or too_high:
            raise ArgumentError(f"{name} must be {bounds_text(spec)}, not {value!r}")


def check_fields(config: Any) -> None:
    """Check every :func:`option` field of dataclass instance ``config`` against its type and bounds."""
    for field, spec, annotation in specified_fields(type(config)):
        check_value(field.name, getattr(config, field.name), annotation, spec)


def unknown_keywords(given: dict[str, Any], known: set[str], what: str) -> None:
    """ArgumentError naming keywords of ``given`` that are not ``known`` (a typo must not pass silently)."""
    unknown = sorted(set(given) - known)
    if unknown:
        raise ArgumentError(f"unknown {what} option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
