"""Packages whose names load on first use: ``import chargen.training`` must not import torch for ``--help``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, homes: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each public name in ``homes`` is imported from its module
    (the value) when first asked for."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home), name)

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(homes))

    return __getattr__, __dir__


def homes(module: str, *names: str) -> dict[str, str]:
    """``{name: module}`` for each name: one entry of a ``lazy_exports`` map per module."""
    return dict.fromkeys(names, module)
