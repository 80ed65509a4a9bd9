"""The request body of ``POST /v1/generate``.

Strict types: JSON ``true`` is not a length and ``"3"`` is not a number. Floats
must be finite (JSON ``NaN``/``Infinity`` are 422). Rules that concern the
decoder itself (greedy takes no temperature, beam width against the vocabulary,
...) are not repeated here: ``DecodeConfig.validate`` applies them, as for the CLI.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chargen.serve.limits import DEFAULT_LENGTH


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, min_length=1, max_length=128,
                              description="Name of a served model (GET /v1/models); optional when one is served.")
    prime: str | None = Field(None, description="Text to continue; for music models, MIDI tokens in their "
                              "printable form. Default: the model's default prime.")
    length: int | None = Field(None, ge=0, description=f"Tokens to generate per sample (capped by max_length). "
                               f"Default: {DEFAULT_LENGTH}, or max_length if that is smaller.")
    temperature: float = Field(1.0, gt=0, allow_inf_nan=False,
                               description="Softmax temperature; greedy takes none (1.0, which changes nothing).")
    top_k: int | None = Field(None, ge=1, le=1_000_000)
    top_p: float | None = Field(None, gt=0, le=1.0, allow_inf_nan=False)
    greedy: bool = False
    beam_width: int | None = Field(None, ge=1, description="Beam search with this many beams; given at all "
                                   "(even 1) means beam search. Capped by max_beam_width.")
    beam_sample: bool = False
    num_samples: int = Field(1, ge=1, description="Samples generated together (capped by max_samples).")
    no_repeat_ngram: int | None = Field(None, ge=0, le=10_000)
    seed: int | None = Field(None, ge=0, lt=2**63)
    label: str | None = Field(None, min_length=1, max_length=200,
                              description="Conditioning label of a labelled model (GET /v1/models lists them).")
    grammar: bool | None = Field(None, description="Music models: decode under the MIDI grammar (note-offs only "
                                 "for sounding notes, no second note-on, a polyphony cap). Default: on for music "
                                 "models; text models take none.")
    max_polyphony: int | None = Field(None, ge=0, le=128, description="Music models: most notes sounding at once "
                                      "under the grammar; 0 = no cap. Default: the cap learnt from the corpus.")
    max_hold_s: float | None = Field(None, ge=0, le=3600, allow_inf_nan=False, description="Music models: no note "
                                     "held longer than this many seconds under the grammar; 0 = no limit. "
                                     "Default: the hold learnt from the corpus (at most 5).")
    format: Literal["text", "midi"] = "text"
    stream: bool = Field(False, description="Answer with Server-Sent Events: token, then done (or error).")
