"""``python -m benchmarks.gpu_check.child MEMORY_PREFIX CHARGEN_ARGS...``: the ``chargen`` command line, which
on exit writes its process's peak memory (the CUDA allocator's and the RSS) to ``MEMORY_PREFIX.<pid>.json``.

The check starts ``chargen serve`` and the torchrun workers through it: their memory is not this process's.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import signal
import sys


def _write(prefix: str) -> None:
    import torch

    cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open(f"{prefix}.{os.getpid()}.json", "w") as handle:
        json.dump({"cuda_peak_bytes": cuda, "rss_peak_bytes": rss}, handle)


def main() -> None:
    prefix, args = sys.argv[1], sys.argv[2:]
    atexit.register(_write, prefix)
    # uvicorn re-raises the SIGTERM that stopped it once it has shut down: exit through Python then, so that
    # the memory is written (by default the signal would end the process before atexit runs).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.argv = ["chargen", *args]
    from chargen.cli import main as chargen_main

    chargen_main()


if __name__ == "__main__":
    main()
