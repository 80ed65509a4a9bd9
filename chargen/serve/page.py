"""The page ``chargen serve`` answers at ``/``: plain files in ``static/``, served as they are.

``index.html`` links its style sheets and scripts from this server only (``/static/...``), so the page's
Content-Security-Policy (``chargen.serve.shield``) allows no inline code and no external asset at all.
``page.js`` streams a generation with fetch + ReadableStream (reading the SSE by hand, since EventSource
cannot POST) and, for music models, draws a piano roll; ``player.js``, ``history.js`` and ``curves.js`` are
the panels below the output; ``start.js`` runs last and starts the page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("static")
STATIC_PATH = "/static"
INDEX = STATIC_DIR / "index.html"


def static_files() -> StaticFiles:
    """The page's style sheets and scripts, at ``STATIC_PATH``."""
    return StaticFiles(directory=STATIC_DIR)
