"""The page's panels below the output: each a module with its CSS, HTML and script.

:func:`splice` puts them where the page template marks ``/*panels:css*/``,
``<!--panels:html-->`` and ``//panels:script``; the page stays one
self-contained file (one inline script: the panels call the page's functions
and it calls theirs, such as ``loadPlayer`` and ``loadHistory``).
"""

from __future__ import annotations

from chargen.serve.panels import curves, history, player

PANELS = (player, history, curves)

#: Called by the page once the model list is in: the panels that depend on it refresh.
_GLUE = r"""
function modelsLoaded() {
  historyModels();
  loadHistory();
  loadCurves();
}
"""


def splice(template: str) -> str:
    marks = {"/*panels:css*/": "".join(p.CSS for p in PANELS),
             "<!--panels:html-->": "".join(p.HTML for p in PANELS),
             "//panels:script": "".join(p.SCRIPT for p in PANELS) + _GLUE}
    for mark, text in marks.items():
        if template.count(mark) != 1:
            raise ValueError(f"the page template must hold {mark} exactly once")
        template = template.replace(mark, text.strip("\n"))
    return template
