"""``chargen history``: browse, show, export and delete logged generations; list runs and scores.

The main CLI adds this group with ``cli.add_command(history)``. Every command
takes ``--database URL`` (else ``$CHARGEN_DATABASE_URL``, else
``$CHARGEN_HOME/history.db``), on the group or on the command itself.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from chargen.cli.listing import decoder_summary, dumps, fit, local_time, preview, print_records
from chargen.cli.types import COUNT_RANGE, FiniteFloat, OutputFile
from chargen.errors import ChargenError
from chargen.history.errors import HistoryUnavailable
from chargen.history.location import DATABASE_ENV, display_url, resolve_database_url, sqlite_file
from chargen.terminal import confirm, printable

if TYPE_CHECKING:  # the store itself is imported when a command runs: SQLAlchemy costs ~0.3 s
    from chargen.history import GenerationRecord, History, ScoreRecord, TrainingRunRecord

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R", "GenerationRecord", "TrainingRunRecord", "ScoreRecord")
_DATABASE_KEY = "chargen.history.database"


def _database_option(func: F) -> F:
    return click.option(
        "--database",
        metavar="URL",
        help=f"History database: SQLAlchemy URL or SQLite file path "
        f"[default: ${DATABASE_ENV}, else $CHARGEN_HOME/history.db].",
    )(func)


def _errors_to_exit(func: F) -> F:
    """Print ChargenError as one line on stderr and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ChargenError as exc:
            click.echo(f"chargen: error: {printable(exc)}", err=True)
            raise click.exceptions.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def database_url(database: str | None) -> str:
    """The URL a history subcommand uses: its own --database, the group's, env, default."""
    return _url(database)


def _url(database: str | None) -> str:
    # A --database on the command wins over one given to the group.
    chosen = database or click.get_current_context().meta.get(_DATABASE_KEY)
    return resolve_database_url(chosen)


def _open_if_exists(database: str | None) -> History | None:
    """The history, or None when its SQLite file does not exist.

    These commands only read or delete, so they never create a database: a
    mistyped --database path must not leave a new empty file behind.
    """
    url = _url(database)
    path = sqlite_file(url)
    if path is not None and not os.path.exists(path):
        return None
    from chargen.history import History

    return History(url)


def _open(database: str | None) -> History:
    store = _open_if_exists(database)
    if store is None:
        path = sqlite_file(_url(database))
        raise HistoryUnavailable(f"no history database at {path} (nothing has been logged there yet)")
    return store


def _listed(database: str | None, read: Callable[[History], list[R]]) -> list[R]:
    """The records ``read`` lists; none when the SQLite file does not exist."""
    store = _open_if_exists(database)
    if store is None:
        return []
    with store:
        return read(store)


def _get_generation(database: str | None, generation_id: str) -> GenerationRecord:
    with _open(database) as store:
        return store.get_generation(generation_id)


# --------------------------------------------------------------------------
# Commands


class _ListByDefault(click.Group):
    """A group that hands options given before any subcommand to ``list``: ``chargen history -n 3``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", {})["ignore_unknown_options"] = True  # -n reaches `list`
        super().__init__(*args, **kwargs)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                             list[str]]:
        if args and args[0].startswith("-"):  # an option the group does not take: one of `list`'s
            return "list", self.commands["list"], args
        return super().resolve_command(ctx, args)


@click.group(cls=_ListByDefault, invoke_without_command=True)
@_database_option
@click.pass_context
def history(ctx: click.Context, database: str | None) -> None:
    """Browse the log of generations, training runs and scores.

    Every `chargen sample` is logged with its checkpoint, decoder settings,
    seed, prime and outputs. Without a subcommand, lists the newest ones,
    taking `list`'s options (`chargen history -n 5 -q fox`).
    """
    ctx.meta[_DATABASE_KEY] = database
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_generations)


def _generation_command(*options: Callable[[F], F]) -> Callable[[F], click.Command]:
    """A subcommand on one generation: its ID argument, then ``options``, then --database."""

    def decorate(func: F) -> click.Command:
        func = _database_option(_errors_to_exit(func))
        for option in reversed(options):
            func = option(func)
        return history.command()(click.argument("generation_id", metavar="ID")(func))

    return decorate


@history.command("list")
@click.option("-n", "--count", type=COUNT_RANGE, default=20, show_default=True,
              help="How many to show, newest first; 0 shows all.")
@click.option("-q", "--query", metavar="TEXT", help="Only generations whose prime or output contains TEXT (any case).")
@click.option("--checkpoint", metavar="PATH",
              help="Only generations from this checkpoint (its path, or its sha256).")
@click.option("--json", "as_json", is_flag=True, help="Print full records as a JSON array.")
@_database_option
@_errors_to_exit
def list_generations(count: int, query: str | None, checkpoint: str | None, as_json: bool,
                     database: str | None) -> None:
    """List logged generations, newest first, one line each."""
    records = _listed(database, lambda store: store.list_generations(limit=count or None, query=query,
                                                                     checkpoint=checkpoint))
    decoder_width = max((len(decoder_summary(r)) for r in records), default=0)

    def line(r: GenerationRecord, id_width: int) -> str:
        return printable(f"{r.short_id:<{id_width}}  {local_time(r)}  {decoder_summary(r):<{decoder_width}}  "
                         f"{preview(r)}")

    print_records(records, as_json, line)


@_generation_command(click.option("--json", "as_json", is_flag=True, help="Print the full record as JSON."),
                     click.option("--raw", is_flag=True, help="Print the prime and outputs as stored, control "
                                  "characters included (default: escaped, e.g. ESC as \\x1b)."))
def show(generation_id: str, as_json: bool, raw: bool, database: str | None) -> None:
    """Show one generation in full; ID may be any unique prefix.

    Stored text came from whoever generated it (a service client, say): control characters in it
    are shown escaped, so that they cannot drive the terminal, unless --raw."""
    record = _get_generation(database, generation_id)
    text = (lambda value: value) if raw else (lambda value: printable(value, keep_newlines=True))
    if as_json:
        click.echo(dumps(record.to_dict()))
        return
    fields = [
        ("id", record.id),
        ("created", f"{record.created_at.astimezone():%Y-%m-%d %H:%M:%S %Z}"),
        ("checkpoint", f"{printable(record.checkpoint_path)} (sha256 {printable(record.checkpoint_sha256[:16])}…)"),
        ("run", record.run_id or "-"),
        ("codec", record.codec.get("name", "?")),
        ("decoder", record.decoder),
        ("params", printable(" ".join(f"{k}={v}" for k, v in record.params.items())) or "-"),
        ("seed", "-" if record.seed is None else str(record.seed)),
        ("prime", repr(record.prime)),
        ("duration", f"{record.duration_s:.2f} s"
                     + ("" if record.chars_per_s is None else f" ({record.chars_per_s:,.0f} chars/s)")),
        ("logprob", "-" if record.total_logprob is None else f"{record.total_logprob:.2f} nats"),
        ("chargen", record.chargen_version),
    ]
    for name, value in fields:
        click.echo(f"{name:<11}{printable(value)}")
    for i, sample in enumerate(record.outputs):
        logprob = "" if sample.logprob is None else f", logprob {sample.logprob:.2f}"
        midi = "" if sample.midi_path is None else f", {printable(sample.midi_path)}"
        click.echo(f"--- sample {i + 1}/{len(record.outputs)}{logprob}{midi} ---")
        click.echo(text(record.prime + sample.text), color=raw or None)  # --raw: as stored, not even styles cut


@history.command()
@click.argument("generation_id", metavar="ID")
@click.option("-o", "--output", type=OutputFile(),
              help="Write here instead of stdout (required for MIDI).")
@click.option("--sample", "sample_number", type=click.IntRange(min=1), default=1, show_default=True,
              help="Which of the --num-samples outputs to export.")
@click.option("--no-prime", is_flag=True, help="Leave out the prime; export only the generated part.")
@click.option("--tempo-bpm", type=FiniteFloat(20, 400),
              help="MIDI tempo [default: as logged, else 120].")
@click.option("--program", type=click.IntRange(0, 127), help="MIDI instrument [default: as logged, else 0].")
@_database_option
@_errors_to_exit
def export(generation_id: str, output: Path | None, sample_number: int, no_prime: bool, tempo_bpm: float | None,
           program: int | None, database: str | None) -> None:
    """Write one output of a generation: text as text, MIDI as a .mid file."""
    record = _get_generation(database, generation_id)
    if sample_number > len(record.outputs):
        raise ChargenError(f"generation {record.short_id} has {len(record.outputs)} sample(s), not {sample_number}")
    content = ("" if no_prime else record.prime) + record.outputs[sample_number - 1].text
    from chargen.codecs.registry import is_music

    if is_music(record.codec.get("name")):
        if output is None:
            raise ChargenError("exporting a MIDI generation needs -o FILE.mid")
        _export_midi(record, content, output, tempo_bpm, program)
    elif output is None:
        click.echo(content)
    else:
        from chargen.files.atomic import atomic_write

        atomic_write(output, lambda tmp: tmp.write_text(content, encoding="utf-8"))
    if output is not None:
        click.echo(f"wrote {output}", err=True)


def _export_midi(record: GenerationRecord, content: str, output: Path, tempo_bpm: float | None,
                 program: int | None) -> None:
    # Imported here: the MIDI stack (mido) is only needed for MIDI output.
    from chargen.codecs.registry import codec_from_metadata

    try:
        from chargen.codecs.midi.export import write_midi
    except ImportError:
        raise ChargenError("MIDI export is not available: chargen.codecs.midi.export is missing") from None

    def logged(key: str, default: Any) -> Any:
        return record.params.get(key, record.codec.get(key, default))

    codec = codec_from_metadata(record.codec)
    # The codec's own vocabulary (step size, ranges) decides how ids become notes.
    extra = {"vocab": codec.vocab} if hasattr(codec, "vocab") else {}
    write_midi(
        codec.encode(content),
        output,
        tempo_bpm=tempo_bpm if tempo_bpm is not None else logged("tempo_bpm", 120),
        program=program if program is not None else logged("program", 0),
        max_note_s=logged("max_note_s", None),
        **extra,
    )


@_generation_command(click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation."))
def rm(generation_id: str, yes: bool, database: str | None) -> None:
    """Delete one generation and its outputs; ID may be any unique prefix."""
    with _open(database) as store:
        record = store.get_generation(generation_id)
        if not yes:
            summary = fit(f"{local_time(record)} {decoder_summary(record)}: {preview(record)}", 60)
            if not confirm(f"Delete generation {record.id} ({printable(summary)})?"):
                click.echo(f"kept {record.id}", err=True)
                raise click.exceptions.Exit(1)
        store.delete_generation(record.id)
    click.echo(f"deleted {record.id}")


@history.command()
@_database_option
@_errors_to_exit
def path(database: str | None) -> None:
    """Print where the history is kept (file path, or URL without password)."""
    click.echo(display_url(_url(database)))


@history.command()
@click.option("-n", "--count", type=COUNT_RANGE, default=20, show_default=True,
              help="How many to show, newest first; 0 shows all.")
@click.option("--json", "as_json", is_flag=True, help="Print full records as a JSON array.")
@_database_option
@_errors_to_exit
def runs(count: int, as_json: bool, database: str | None) -> None:
    """List logged training runs, newest first, one line each; a fine-tuned run names its parent."""

    records = _listed(database, lambda store: store.list_runs(limit=count or None))
    short_ids = {r.id: r.short_id for r in records}

    def line(r: TrainingRunRecord, id_width: int) -> str:
        loss = "-" if r.best_val_loss is None else f"{r.best_val_loss:.4f}"
        parent = ""
        if r.parent:
            logged = r.parent.get("run_id")
            parent = f"  from {r.parent.get('run')}" + (f" ({short_ids.get(logged, logged)})" if logged else "")
        return printable(f"{r.short_id:<{id_width}}  {local_time(r)}  {r.steps:>7} steps  val {loss}{parent}  "
                         f"{Path(r.corpus_path).name} → {r.checkpoint_path}")

    print_records(records, as_json, line)


@history.command()
@click.option("-n", "--count", type=click.IntRange(min=0), default=20, show_default=True,
              help="How many to show, newest first; 0 shows all.")
@click.option("--checkpoint", metavar="PATH",
              help="Only scores under this checkpoint (a path, or its sha256).")
@click.option("--json", "as_json", is_flag=True, help="Print full records as a JSON array.")
@_database_option
@_errors_to_exit
def scores(count: int, checkpoint: str | None, as_json: bool, database: str | None) -> None:
    """List logged `chargen score` results, newest first, one line per scored file."""

    def line(r: ScoreRecord, id_width: int) -> str:
        unknown = f"  {r.unknown_count} unknown" if r.unknown_count else ""
        return printable(f"{r.short_id:<{id_width}}  {local_time(r)}  {r.nats_per_token:.4f} nats/{r.unit}  "
                         f"{r.bits_per_token:.4f} bits/{r.unit}  {r.scored:>9,} {r.unit}s{unknown}  {r.file_path}  "
                         f"← {Path(r.checkpoint_path).parent.name}/{Path(r.checkpoint_path).name}")

    print_records(_listed(database, lambda store: store.list_scores(limit=count or None, checkpoint=checkpoint)),
                   as_json, line)
