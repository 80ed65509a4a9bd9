"""Run the check: each step in turn, its failure a row; the table on stdout, its JSON beside."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.gpu_check import processes, steps
from benchmarks.gpu_check.table import FAILED, Row, markdown, write_json

REPO = Path(__file__).resolve().parents[2]
SHARED_CORPUS = REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"
FABLES = REPO / "corpora" / "fables.txt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: CUDA where present, else the CPU")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: the whole check in seconds (tests)")
    parser.add_argument("--steps", default="1,2,3,4,5,6", help="the steps to run, e.g. 5,6 (default: all)")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "gpu_check.json",
                        help="where the table goes as JSON")
    args = parser.parse_args(argv)
    # cuBLAS's deterministic workspace (before CUDA starts; the children inherit it): step 4 compares weights.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    import torch

    from chargen.machine.offload import generation_device

    device = generation_device(args.device)
    corpus, note = (SHARED_CORPUS, "tiny-shakespeare") if SHARED_CORPUS.is_file() else (FABLES, "fables")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chargen-gpu-check-") as scratch:
        work = Path(os.environ.get("GPU_CHECK_WORK") or scratch)
        # Runs, calibrations and thresholds of the check's own: nothing of the user's is read or written.
        os.environ.update(CHARGEN_HOME=str(work / "home"), CHARGEN_CHECKPOINTS=str(work / "runs"),
                          CHARGEN_CACHE=str(work / "cache"), CHARGEN_MEASURE="1")  # it checks what auto measures
        os.environ.pop("CHARGEN_DATABASE_URL", None)
        torch.manual_seed(0)
        ctx = steps.Context(device, steps.Sizes.for_run(args.tiny), corpus, note, work)
        plan: list[tuple[str, Callable[[], list[Row]]]] = [
            ("1 matmul peak", lambda: steps.matmul_peak(ctx)),
            ("2 train medium", lambda: steps.training(ctx, "medium")),
            ("2 train large", lambda: steps.training(ctx, "large")),
            (f"3 --minutes {ctx.sizes.minutes:g}", lambda: steps.minutes(ctx)),
            ("4 torchrun", lambda: processes.torchrun(ctx)),
            ("5 sample CPU vs device", lambda: steps.sampling(ctx)),
            ("6 serve", lambda: processes.serving(ctx)),
        ]
        chosen = {part.strip() for part in args.steps.split(",")}
        rows: list[Row] = []
        for name, run in plan:
            if name.split()[0] not in chosen:
                continue
            started = time.monotonic()
            print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
            try:
                rows += run()
            except Exception as exc:  # noqa: BLE001 - a failed step is a row; the next step still runs
                rows.append(Row(name, "(the step)", "", FAILED, ctx.env, note=processes.one_line(exc)))
            print(f"gpu_check: {name} done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    print(markdown(rows))
    command = shlex.join(["python", "-m", "benchmarks.gpu_check", *(sys.argv[1:] if argv is None else argv)])
    meta = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": time.monotonic() - began,
            "corpus": str(corpus), "tiny": args.tiny, "device": str(device)}
    write_json(args.json, rows, meta)
    failed = sum(row.check == FAILED for row in rows)
    print(f"gpu_check: {len(rows)} rows, {failed} failed, {time.monotonic() - began:.0f} s; JSON: {args.json}",
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
