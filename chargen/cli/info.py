"""``chargen info``: what a run is and how its training went (a thin client of ``Model.info``)."""

from __future__ import annotations

import json
from typing import Any

import click

from chargen.cli.group import cli
from chargen.cli.types import RunOrPath
from chargen.terminal import printable


@cli.command()
@click.argument("checkpoint", type=RunOrPath(), required=False, metavar="[PATH|RUN]")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(checkpoint: str | None, as_json: bool) -> None:
    """Describe a checkpoint: model, vocabulary, corpus, training progress."""
    from chargen.api import load

    data = load(checkpoint, log=False).info
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for line in _lines(data):
        click.echo(line)


def _lines(data: dict[str, Any]) -> list[str]:
    cfg = data["model_config"]
    lines = [
        f"checkpoint   {printable(data['path'])}",
        f"model        {cfg['layers']}x{cfg['hidden']} {cfg['cell'].upper()}, embedding {cfg['embedding']}, "
        f"dropout {cfg['dropout']}{f', weight drop {w}' if (w := cfg.get('weight_drop')) else ''}, "
        f"{data['parameters']:,} parameters",
        f"codec        {data['codec']}, {data['vocab_size']} tokens: "
        f"{printable(json.dumps(data['vocabulary'], ensure_ascii=False))}",
    ]
    if data["labels"]:
        lines.append(f"labels       {printable(', '.join(data['labels']))} (sample --label NAME)")
    tokens = data["corpus_tokens"]
    tokens_text = "?" if tokens is None else f"{tokens:,}"
    lines.append(f"corpus       {printable(', '.join(data['corpus_paths'] or []))} ({tokens_text} tokens, "
                 f"sha256 {printable(str(data['corpus_sha256'])[:16])}...)")
    lines.append(f"trained      {data['steps']} steps")
    if data["polyphony_cap_source"]:
        cap = data["polyphony_cap"]
        lines.append(f"polyphony    cap {cap}, {data['polyphony_cap_source']}" if cap is not None
                     else f"polyphony    cap {data['polyphony_cap_source']}")
        lines.append(f"longest hold {data['max_hold_s']:g} s, {data['max_hold_source']}")
        if texture := data["corpus_texture"]:
            lines.append(f"texture      polyphony {texture['polyphony']:g}, "
                         f"median note {texture['median_note_s']:g} s, {texture['notes_per_s']:g} notes/s, "
                         f"pitch {texture['pitch_mean']:g} "
                         f"± {texture['pitch_sd']:g} ({printable(data['corpus_texture_source'])})")
        if (policy := data["grammar_defaults"]) is not None:
            limits = [name for name in ("cap", "hold") if policy[name]]
            lines.append(f"decoding     grammar rules {', '.join(policy['rules']) or 'none'}; learnt limits applied: "
                         f"{', '.join(limits) or 'none'} (sample --no-grammar: none)")
    if data["best_val_loss_nats"] is not None:
        lines.append(f"best val     {data['best_val_loss_nats']:.4f} nats/char ({data['best_val_loss_bpc']:.3f} bpc)")
    if data["status"]:
        lines.append(f"run status   {printable(data['status'])}")
    parent = data["parent"]
    if isinstance(parent, dict):
        added = parent.get("new_symbols") or ""
        lines.append(printable(f"fine-tuned   from {parent.get('run')} ({parent.get('checkpoint_path')}, sha256 "
                               f"{str(parent.get('checkpoint_sha256'))[:16]}...)"
                               + (f"; {len(added)} new symbol(s) {json.dumps(added, ensure_ascii=False)}"
                                  if added else "")))
    if data["trend"]:
        lines.append(f"trend        {data['trend']['summary']}")
    return lines
