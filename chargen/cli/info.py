"""``chargen info`` and ``chargen plot``: what a run is and how its training went."""

from __future__ import annotations

import json
from pathlib import Path

import click

from chargen.cli.group import cli, warn
from chargen.cli.types import (
    RunOrPath,
)


@cli.command()
@click.argument("checkpoint", type=RunOrPath(), required=False, metavar="[PATH|RUN]")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(checkpoint: str | None, as_json: bool) -> None:
    """Describe a checkpoint: model, vocabulary, corpus, training progress."""
    from chargen.checkpoint import load_checkpoint, read_run_json, resolve_checkpoint
    from chargen.curves import trend
    from chargen.sampling.grammar import learnt_max_hold_s, learnt_polyphony_cap
    from chargen.sampling.music_defaults import corpus_statistics, stored_policy

    loaded = load_checkpoint(resolve_checkpoint(checkpoint))
    training = loaded.training
    best = training.get("best_val_loss")
    music = loaded.codec.music
    cap, cap_source = learnt_polyphony_cap(loaded) if music else (None, "")
    hold, hold_source = learnt_max_hold_s(loaded) if music else (None, "")
    texture, texture_source = corpus_statistics(loaded) if music else (None, "")
    policy = stored_policy(loaded) if music else None
    curve = trend(loaded.path.parent)
    data = {
        "path": str(loaded.path),
        "sha256": loaded.sha256,
        "model_config": loaded.config.to_dict(),
        "parameters": loaded.model.num_parameters(),
        "codec": loaded.codec.name,
        "vocab_size": loaded.codec.vocab_size,
        "vocabulary": loaded.codec.symbols,
        "labels": list(loaded.config.labels),
        "corpus_sha256": training.get("corpus_sha256"),
        "corpus_tokens": training.get("corpus_tokens"),
        "corpus_paths": training.get("corpus_paths"),
        "steps": training.get("step"),
        "best_val_loss_nats": best,
        "best_val_loss_bpc": best / 0.6931471805599453 if best is not None else None,
        "chargen_version": training.get("chargen_version"),
        "status": (read_run_json(loaded.path.parent) or {}).get("status"),
        "trend": curve.to_dict() if curve else None,
        "polyphony_cap": cap,
        "max_hold_s": hold,
        "corpus_texture": texture,
        "grammar_defaults": policy,
        "parent": training.get("parent"),
    }
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    cfg = loaded.config
    click.echo(f"checkpoint   {data['path']}")
    click.echo(f"model        {cfg.layers}x{cfg.hidden} {cfg.cell.upper()}, embedding {cfg.embedding}, "
               f"dropout {cfg.dropout}{f', weight drop {cfg.weight_drop}' if cfg.weight_drop else ''}, "
               f"{data['parameters']:,} parameters")
    symbols = json.dumps(loaded.codec.symbols, ensure_ascii=False)
    click.echo(f"codec        {data['codec']}, {data['vocab_size']} tokens: {symbols}")
    if cfg.labels:
        click.echo(f"labels       {', '.join(cfg.labels)} (sample --label NAME)")
    click.echo(f"corpus       {', '.join(data['corpus_paths'] or [])} ({data['corpus_tokens']:,} tokens, "
               f"sha256 {str(data['corpus_sha256'])[:16]}...)")
    click.echo(f"trained      {data['steps']} steps")
    if cap_source:
        click.echo(f"polyphony    cap {cap}, {cap_source}" if cap is not None else f"polyphony    cap {cap_source}")
        click.echo(f"longest hold {hold:g} s, {hold_source}")
        if texture:
            click.echo(f"texture      polyphony {texture['polyphony']:g}, median note {texture['median_note_s']:g} s, "
                       f"{texture['notes_per_s']:g} notes/s, pitch {texture['pitch_mean']:g} "
                       f"± {texture['pitch_sd']:g} ({texture_source})")
        if policy is not None:
            limits = [name for name, on in (("cap", policy["cap"]), ("hold", policy["hold"])) if on]
            click.echo(f"decoding     grammar rules {', '.join(policy['rules']) or 'none'}; learnt limits applied: "
                       f"{', '.join(limits) or 'none'} (sample --no-grammar: none)")
    if best is not None:
        click.echo(f"best val     {best:.4f} nats/char ({data['best_val_loss_bpc']:.3f} bpc)")
    if data["status"]:
        click.echo(f"run status   {data['status']}")
    parent = data["parent"]
    if isinstance(parent, dict):
        added = parent.get("new_symbols") or ""
        click.echo(f"fine-tuned   from {parent.get('run')} ({parent.get('checkpoint_path')}, sha256 "
                   f"{str(parent.get('checkpoint_sha256'))[:16]}...)"
                   + (f"; {len(added)} new symbol(s) {json.dumps(added, ensure_ascii=False)}" if added else ""))
    if curve:
        click.echo(f"trend        {curve.summary}")


@cli.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=Path("curve.png"),
              show_default=True, help="PNG file to write.")
@click.option("--x", "x_axis", type=click.Choice(["steps", "minutes"]), default="steps", show_default=True,
              help="Horizontal axis.")
def plot(runs: tuple[str, ...], output: Path, x_axis: str) -> None:
    """Draw the validation (solid) and training (dashed) loss of one or several runs on one chart.

    \b
    Needs matplotlib: pip install 'chargen[plot]'.
      chargen plot fables-small fables-medium -o curves.png --x minutes
    """
    from chargen.checkpoint import resolve_run_dir
    from chargen.plotting import plot_runs

    plotted = plot_runs([resolve_run_dir(run) for run in runs], output, x_axis)
    warn(f"wrote {plotted.path} ({len(runs)} run(s), {len(plotted.labels)} lines)")
