"""Secrets in a database URL are never shown (issue 27, item 4): the password of ``user:password@`` and
every secret-like query parameter (``password``, ``sslpassword``, names holding pass, secret, token, key)
are masked by ``display_url``, in ``history path``, in every error message and in serve's start-up error."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from service_support import free_port, make_checkpoint

from chargen.history.location import display_url
from tests.conftest import assert_one_line_error, invoke, run_cli

SECRETS = ("SECRET", "S2", "K3Y", "T0K", "pw")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


URLS = [
    "postgresql://u@127.0.0.1:{port}/db?password=SECRET",
    "postgresql://u:pw@127.0.0.1:{port}/db?sslpassword=S2&application_name=chargen",
    "postgresql+psycopg://u@127.0.0.1:{port}/db?api_key=K3Y&x_token=T0K&connect_timeout=2",
    "postgresql://u:pw@[::1?password=SECRET",  # does not even parse
]


@pytest.mark.parametrize("url", URLS)
def test_display_url_masks_every_secret(url: str) -> None:
    shown = display_url(url.format(port=5432))
    for secret in SECRETS:
        assert secret not in shown, shown
    assert "***" in shown and "u" in shown


def test_display_url_keeps_what_is_not_secret() -> None:
    assert display_url("postgresql://u:pw@db:5433/chargen?application_name=x&sslmode=require") == (
        "postgresql://u:***@db:5433/chargen?application_name=x&sslmode=require")
    assert display_url("sqlite:////tmp/h.db") == "/tmp/h.db"


@pytest.mark.parametrize("url", URLS)
def test_history_commands_never_print_a_secret(url: str) -> None:
    url = url.format(port=closed_port())
    shown = invoke("history", "path", "--database", url)
    assert shown.returncode == 0 and "***" in shown.stdout
    for command in (["history", "list"], ["history", "runs"], ["history", "scores"]):
        result = invoke(*command, "--database", url)
        assert_one_line_error(result)
        assert "internal error" not in result.stderr
        for secret in SECRETS:
            assert secret not in result.stdout + result.stderr, (command, result.stderr)


def test_serve_start_up_error_hides_the_password(tmp_path: Path) -> None:
    make_checkpoint(tmp_path / "tiny.safetensors")
    url = f"postgresql://u@127.0.0.1:{closed_port()}/db?password=SECRET"
    result = run_cli("serve", "-c", str(tmp_path / "tiny.safetensors"), "--port", str(free_port()), "--database", url,
                     timeout=60)
    assert_one_line_error(result, "password=***")
    assert "SECRET" not in result.stderr


def test_sample_warning_hides_the_password(run: Path) -> None:
    url = f"postgresql://u@127.0.0.1:{closed_port()}/db?password=SECRET"
    result = invoke("sample", "--len", "5", "--database", url)
    assert result.returncode == 0 and "not logged" in result.stderr and "SECRET" not in result.stderr
