"""The check's one table: rows of measured figures, each with its device, torch, CUDA and device name."""

from __future__ import annotations

import contextlib
import json
import platform
import re
import resource
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

OK, FAILED, FIGURE = "ok", "FAILED", "-"  # a checked figure that held or failed; a figure with nothing to check


@dataclass
class Env:
    """Where a row was measured."""

    device: str
    device_name: str
    torch: str
    cuda: str

    @classmethod
    def of(cls, device: torch.device) -> Env:
        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
        else:
            name = cpu_name()
        return cls(str(device), name, torch.__version__, torch.version.cuda or "-")


@dataclass
class Row:
    step: str  # "1 matmul peak", "2 train medium", ...
    figure: str  # what was measured
    value: str  # the figure, with its unit
    check: str  # OK, FAILED, or FIGURE
    env: Env
    memory: str = "-"  # peak memory of the step
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # the raw numbers, for the JSON


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mib(count: float | None) -> str:
    return "-" if count is None else f"{count / 2**20:,.0f} MiB"


class PeakMemory:
    """The peak memory of a step run in this process: the CUDA allocator's on a GPU, else the peak RSS (its
    high-water mark reset where Linux allows, so each step reads its own)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak: int | None = None
        self.kind = "GPU" if device.type == "cuda" else "RSS"

    @contextlib.contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")
        try:
            yield self
        finally:
            if self.device.type == "cuda":
                self.peak = torch.cuda.max_memory_allocated(self.device)
            else:
                self.peak = rss_peak()

    def text(self) -> str:
        return f"{mib(self.peak)} {self.kind}" if self.peak is not None else "-"


def rss_peak() -> int:
    """This process's peak RSS in bytes (VmHWM, which clear_refs resets; else ru_maxrss)."""
    with contextlib.suppress(OSError, ValueError):
        found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
        if found:
            return int(found.group(1)) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


COLUMNS = ("step", "figure", "value", "check", "peak memory", "device", "device name", "torch", "CUDA", "note")


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        cells = [row.step, row.figure, row.value, row.check, row.memory, row.env.device, row.env.device_name,
                 row.env.torch, row.env.cuda, row.note]
        lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def write_json(path: Path, rows: list[Row], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "failed": sum(row.check == FAILED for row in rows),
               "rows": [{**{k: v for k, v in asdict(row).items() if k != "env"}, **asdict(row.env)} for row in rows]}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    tmp.replace(path)
