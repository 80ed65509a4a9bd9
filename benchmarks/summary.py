"""BENCHMARKS.md's opening table, made from the benchmarks' result files (``benchmarks/results/*.json``).

    python -m benchmarks.summary     # rewrite the table between its markers in BENCHMARKS.md

Each row is one headline figure of one benchmark's latest run: the figure, its value and target, the
corpus, the machine, the date and the command that measured it. The benchmarks' own sections follow the
table in BENCHMARKS.md; older logs are in docs/benchmarks-archive.md.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from benchmarks.common import REPO, RESULTS, write_section

START = "<!-- benchmarks/summary.py: start (generated from benchmarks/results/*.json; run the script) -->"
END = "<!-- benchmarks/summary.py: end -->"


def _machine(m: dict[str, Any]) -> str:
    flags = ", ".join(m.get("flags", [])) or "no vector flags of note"
    load = "/".join(str(x) for x in m.get("load", []))
    return f"{m.get('cpu', '?')} ({flags}), {m.get('cores', '?')} cores, torch {m.get('torch', '?')}, load {load}"


def table(results: list[dict[str, Any]]) -> str:
    lines = ["## Current figures", "",
             "One row per headline figure of each benchmark's latest run (the sections below give each run in full).",
             "", "| benchmark | figure | value | target | corpus | machine | date | command |",
             "|---|---|---|---|---|---|---|---|"]
    for result in sorted(results, key=lambda r: r["benchmark"]):
        for row in result["headline"]:
            lines.append(f"| {result['benchmark']} | {row['figure']} | {row['value']} | {row.get('target') or ''} | "
                         f"{row.get('corpus') or ''} | {_machine(result['machine'])} | {result['date']} | "
                         f"`{result['command']}` |")
    return "\n".join(lines)


def main() -> int:
    results = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))]
    results = [r for r in results if isinstance(r, dict) and r.get("headline")]
    body = table(results)
    write_section(REPO / "BENCHMARKS.md", body, START, END)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
