"""Where chargen keeps its per-user files (the history database, for now)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from chargen.errors import ChargenError


def chargen_home(create: bool = True) -> Path:
    """``$CHARGEN_HOME``, else the platform's per-user folder for chargen (platformdirs: ~/.config/chargen on
    Linux, where chargen always kept it).

    The folder is created when ``create`` is true, so a first run on a fresh
    machine can write its history without any setup.
    """
    configured = os.environ.get("CHARGEN_HOME")
    home = Path(configured).expanduser() if configured else \
        Path(platformdirs.user_config_dir("chargen", appauthor=False, roaming=True))
    if create:
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChargenError(f"cannot create chargen home folder {home}: {exc.strerror or exc}") from None
    return home
