"""Records as lines on a terminal: cut to its width in columns (wide characters count two), one line each,
controls escaped; or as JSON. ``chargen history`` lists generations, runs and scores through these."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
import wcwidth

from chargen.terminal import printable

if TYPE_CHECKING:
    from chargen.history import GenerationRecord, ScoreRecord, TrainingRunRecord

R = TypeVar("R", "GenerationRecord", "TrainingRunRecord", "ScoreRecord")


def char_width(ch: str) -> int:
    """Terminal columns of one character (wcwidth: wide East Asian 2, combining 0); control characters are
    never printed here (``_one_line`` replaces them; wcwidth says -1), so count as none."""
    return max(0, wcwidth.wcwidth(ch))


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal columns, ending in … when cut."""
    if sum(char_width(ch) for ch in text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = char_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def one_line(text: str) -> str:
    # ⏎ keeps line structure visible; other control characters would move the cursor: escaped.
    return printable(text.replace("\r\n", "\n").replace("\n", "⏎").replace("\t", " "))


def local_time(record: GenerationRecord | TrainingRunRecord | ScoreRecord) -> str:
    return record.created_at.astimezone().strftime("%Y-%m-%d %H:%M")


def decoder_summary(record: GenerationRecord) -> str:
    params = record.params
    if record.decoder == "beam":
        summary = f"beam w={params.get('beam_width', '?')}"
    elif record.decoder == "sample":
        temperature = params.get("temperature")
        summary = "sample" if temperature is None else f"sample t={temperature:g}"
    else:
        summary = record.decoder
    if len(record.outputs) > 1:
        summary += f" ×{len(record.outputs)}"
    return summary


def preview(record: GenerationRecord) -> str:
    text = record.outputs[0].text if record.outputs else ""
    label = "" if record.codec.get("name", "text") == "text" else f"[{record.codec.get('name')}] "
    return label + one_line(text)


def terminal_width() -> int:
    return shutil.get_terminal_size().columns


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def print_records(records: list[R], as_json: bool, line: Callable[[R, int], str]) -> None:
    """All records as one JSON array, or one line each cut to the terminal, short ids aligned."""
    if as_json:
        click.echo(dumps([r.to_dict() for r in records]))
        return
    columns = terminal_width()
    id_width = max((len(r.short_id) for r in records), default=0)
    for r in records:
        click.echo(fit(line(r, id_width), columns))
