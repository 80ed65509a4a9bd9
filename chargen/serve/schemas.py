"""The request body of ``POST /v1/generate``, made from the one definition of the decode options.

Each decode field comes from :class:`chargen.sampling.DecodeConfig`'s option spec
(its default, bounds and help); the service adds what only a request has (model,
prime, format, stream). Strict types: JSON ``true`` is not a length and ``"3"`` is
not a number; floats must be finite (JSON ``NaN``/``Infinity`` are 422). Rules
that concern the decoder itself (greedy takes no temperature, beam width against
the vocabulary, ...) are not repeated here: ``DecodeConfig.validate`` applies
them, as for the CLI and the API.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from chargen.options import Spec, base_type, is_strings, specified_fields
from chargen.sampling.config import DecodeConfig
from chargen.serve.limits import DEFAULT_LENGTH


def field_constraints(spec: Spec, annotation: Any) -> dict[str, Any]:
    """pydantic ``Field`` keywords for a spec's bounds (and finiteness, for floats)."""
    bounds: dict[str, Any] = {}
    if spec.low is not None:
        bounds["gt" if spec.low_open else "ge"] = spec.low
    if spec.high is not None:
        bounds["lt" if spec.high_open else "le"] = spec.high
    if base_type(annotation) is float:
        bounds["allow_inf_nan"] = False
    if is_strings(annotation):  # at most so many strings
        return {"max_length": int(spec.high)} if spec.high is not None else {}
    if base_type(annotation) is int:
        bounds = {k: int(v) for k, v in bounds.items()}
    return bounds


def decode_fields(names: dict[str, str] | None = None) -> dict[str, Any]:
    """``create_model`` field definitions of every service decode option (``names``: renamed ones)."""
    fields: dict[str, Any] = {}
    for field, spec, annotation in specified_fields(DecodeConfig):
        if not spec.service:
            continue
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default  # type: ignore
        kind = annotation if default is not None or type(None) in typing.get_args(annotation) else annotation | None
        fields[(names or {}).get(field.name, field.name)] = (
            kind, Field(default, description=spec.help, **field_constraints(spec, annotation)))
    return fields


_REQUEST_FIELDS: dict[str, Any] = {
    "model": (str | None, Field(None, min_length=1, max_length=128,
                                description="Name of a served model (GET /v1/models); optional when one is served.")),
    "prime": (str | None, Field(None, description="Text to continue; for music models, MIDI tokens in their "
                                "printable form. Default: the model's default prime.")),
    **decode_fields(),
    # The service's own default length fits its cap (max_length).
    "length": (int | None, Field(None, ge=0, description=f"Tokens to generate per sample (capped by max_length). "
                                 f"Default: {DEFAULT_LENGTH}, or max_length if that is smaller.")),
    "format": (Literal["text", "midi"], "text"),
    "stream": (bool, Field(False, description="Answer with Server-Sent Events: token, then done (or error).")),
}

if TYPE_CHECKING:
    class GenerateRequest(BaseModel):
        model: str | None
        prime: str | None
        length: int | None
        format: Literal["text", "midi"]
        stream: bool

        def __getattr__(self, name: str) -> Any: ...
else:
    GenerateRequest = create_model("GenerateRequest", __config__=ConfigDict(extra="forbid", strict=True),
                                   **_REQUEST_FIELDS)


@functools.cache
def decode_field_names() -> tuple[str, ...]:
    """The service's decode option names (what :func:`decode_fields` defines), worked out once."""
    return tuple(name for name in decode_fields() if name != "length")


def decode_options(body: BaseModel) -> dict[str, Any]:
    """The DecodeConfig keywords a request gave (beam_width only when given: given at all means beam search)."""
    values = {name: getattr(body, name) for name in decode_field_names()}
    if values.get("beam_width") is None:
        values.pop("beam_width", None)
    return values
