"""``chargen serve``: the HTTP service over the same engine."""

from __future__ import annotations

import click

from chargen.cli.group import cli
from chargen.cli.types import (
    HUGE,
    FiniteFloat,
    RunOrPath,
)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback should come with --token.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--checkpoint", "-c", "checkpoints", type=RunOrPath(named=True), multiple=True,
              metavar="[NAME=]PATH|RUN",
              help="Model to serve; repeat for several. NAME= sets the name clients use "
              "[default name: the run folder's; default model: the newest run].")
@click.option("--token", envvar="CHARGEN_API_TOKEN", show_envvar=True,
              help="Require 'Authorization: Bearer TOKEN' on every endpoint but /healthz (printable ASCII).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Also answer requests for this host name (repeatable; '*': any). A loopback server answers "
              "only localhost, 127.0.0.1 and ::1, so no web page can reach it by rebinding its own name; "
              "another bind answers only these names when given.")
@click.option("--database", metavar="URL", help="History database [default: $CHARGEN_DATABASE_URL, "
              "else $CHARGEN_HOME/history.db].")
@click.option("--no-log", is_flag=True, help="Do not record generations in the history.")
@click.option("--max-length", type=click.IntRange(1, HUGE), default=2000, show_default=True,
              help="Most tokens per sample one request may ask for.")
@click.option("--max-beam-width", type=click.IntRange(1, 1024), default=8, show_default=True)
@click.option("--max-samples", type=click.IntRange(1, HUGE), default=8, show_default=True,
              help="Most samples per request.")
@click.option("--max-prime-chars", type=click.IntRange(1, HUGE), default=8000, show_default=True)
@click.option("--max-body-bytes", type=click.IntRange(1024, HUGE), default=65536, show_default=True)
@click.option("--body-timeout", type=FiniteFloat(min=0, max=3600, min_open=True), default=5.0, show_default=True,
              metavar="SECONDS", help="A request body not complete after this long is answered 408.")
@click.option("--max-batch", type=click.IntRange(1, HUGE), default=64, show_default=True,
              help="Sampling streams stepped together per model; more requests wait their turn.")
@click.option("--max-queue", type=click.IntRange(1, HUGE), default=256, show_default=True,
              help="Requests running or waiting per model; more are answered 503.")
@click.option("--threads", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="torch CPU threads; batching, not threads, serves concurrent requests.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where batched sampling steps may run: auto is CUDA where present, from the batch size measured "
              "to pay there (smaller batches stay on the CPU).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
def serve(host: str, port: int, checkpoints: tuple[str, ...], token: str | None, allowed_hosts: tuple[str, ...],
          database: str | None, no_log: bool, max_length: int, max_beam_width: int, max_samples: int,
          max_prime_chars: int, max_body_bytes: int, body_timeout: float, max_batch: int, max_queue: int,
          threads: int, device: str, log_level: str) -> None:
    """Serve models over HTTP: generation (JSON or streamed), history, and a web page at /.

    \b
    Endpoints: POST /v1/generate (chargen's), POST /v1/completions and GET /v1/models
    (OpenAI's API: point the openai package at base_url http://HOST:PORT/v1 with the
    token as api_key), GET /v1/generations[/ID][.mid], GET /metrics (Prometheus),
    GET /healthz, /openapi.json; with --token every one but /healthz needs it.
    \b
    Examples:
      chargen serve -c fables-small
      chargen serve -c text=fables-small -c music=bach-medium --port 8080
      curl -s localhost:8000/v1/generate -H 'content-type: application/json' -d '{"prime": "The ", "length": 200}'
      curl -s localhost:8000/v1/completions -H 'content-type: application/json' -d '{"prompt": "A", "max_tokens": 50}'
    Stop with Ctrl-C or SIGTERM: running generations end with an error and are not logged.
    """
    from chargen.serve import Limits
    from chargen.serve import serve as run_service
    from chargen.serve.ports import require_free_port

    if max_samples > max_batch:
        raise click.UsageError(f"--max-samples {max_samples} cannot exceed --max-batch {max_batch}")
    limits = Limits(max_length=max_length, max_beam_width=max_beam_width, max_samples=max_samples,
                    max_prime_chars=max_prime_chars, max_body_bytes=max_body_bytes, max_batch=max_batch,
                    max_queue=max_queue, body_timeout_s=body_timeout)
    require_free_port(host, port)
    run_service(host, port, list(checkpoints), token=token or None, database=database, history=not no_log,
                limits=limits, threads=threads, log_level=log_level, device=device, allowed_hosts=allowed_hosts)
