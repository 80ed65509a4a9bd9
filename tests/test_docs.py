"""The documentation cannot go stale: the CLI reference is the commands' own help."""

from __future__ import annotations

import importlib.util

from conftest import REPO


def _script(name: str):  # noqa: ANN202 - a module loaded from scripts/
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_every_commands_help() -> None:
    reference = _script("cli_reference")
    assert (REPO / "docs" / "cli.md").read_text() == reference.render(), \
        "docs/cli.md is stale: run python scripts/cli_reference.py"
