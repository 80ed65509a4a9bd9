"""click options made from the library's option specs (:mod:`chargen.options`), so each is defined once.

Every derived option defaults to None, "not given": the library applies its own
default, and ``--help`` shows that default, read from the dataclass.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from chargen.cli.types import FiniteFloat, IntPair
from chargen.options import Spec, base_type, is_strings, specified_fields

F = TypeVar("F", bound=Callable[..., Any])


def _click_type(annotation: Any, spec: Spec) -> Any:
    kind = base_type(annotation)
    if spec.choices is not None:
        return click.Choice(spec.choices)
    if kind is int:
        low, high = (None if bound is None else int(bound) for bound in (spec.low, spec.high))
        return click.IntRange(low, high, min_open=spec.low_open, max_open=spec.high_open)
    if kind is float:
        return FiniteFloat(spec.low, spec.high, min_open=spec.low_open, max_open=spec.high_open)
    if typing.get_origin(kind) is tuple:
        return IntPair(int(spec.low or 0), int(spec.high or 0))
    return str


def _default_text(field: dataclasses.Field[Any], spec: Spec) -> str | None:
    if spec.default_text is not None:
        return spec.default_text
    if field.default is None or field.default is False or field.default is dataclasses.MISSING:  # (lists too)
        return None
    return f"{field.default:g}" if isinstance(field.default, float) else str(field.default)


def click_option(field: dataclasses.Field[Any], spec: Spec, annotation: Any, help: str | None = None) -> Any:
    """The click option of one field (its value None when not given)."""
    flag = spec.flag or "--" + field.name.replace("_", "-")
    shown = _default_text(field, spec)
    text = (help or spec.help) + (f" [default: {shown}]" if shown else "")
    names = [flag, *([spec.short] if spec.short else []), field.name]
    if is_strings(annotation):
        return click.option(*names, multiple=True, metavar=spec.metavar, help=text)
    if base_type(annotation) is bool:
        if spec.switch:
            return click.option(f"{flag}/--no-{flag[2:]}", field.name, default=None, help=text)
        return click.option(*names, is_flag=True, default=None, help=text)
    return click.option(*names, type=_click_type(annotation, spec), default=None, metavar=spec.metavar, help=text)


def spec_options(cls: type, only: Iterable[str] | None = None, skip: Iterable[str] = (),
                 help: dict[str, str] | None = None) -> Callable[[F], F]:
    """A decorator adding a click option for each CLI option field of dataclass ``cls``, in field order."""
    wanted = set(only) if only is not None else None
    fields = [(f, s, a) for f, s, a in specified_fields(cls)
              if s.cli and f.name not in set(skip) and (wanted is None or f.name in wanted)]

    def decorate(func: F) -> F:
        for field, spec, annotation in reversed(fields):
            func = click_option(field, spec, annotation, (help or {}).get(field.name))(func)
        return func

    return decorate


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The options a user gave: those not None (flags not given are None too; a repeatable option, empty)."""
    return {k: v for k, v in values.items() if v is not None and v != ()}
