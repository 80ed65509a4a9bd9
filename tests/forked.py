"""Many real ``chargen`` processes at once, for the price of one start-up.

Tests of concurrent writers need several processes writing one database at the same moment. Started as
``python -m chargen`` each, every one pays Python's and torch's start-up (about 2 s of CPU on a 2-core
machine, 30 s for 16). Here one interpreter imports chargen, torch and SQLAlchemy once, then forks one child
per command: each child is a separate process with its own file descriptors, database connections and
exit status, running the console script's own entry point (``chargen.cli.main``) on its arguments.
Nothing is opened before the fork (no engine, no thread pool), so the children share no connection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_PARENT = r"""
import json, os, sys
import torch  # imported once, before the fork: the children share its pages
import chargen.api.model, chargen.cli, chargen.history.store, chargen.records, chargen.sampling.generator

commands, folder = json.loads(sys.argv[1]), sys.argv[2]
children = []
for number, args in enumerate(commands):
    pid = os.fork()
    if pid == 0:  # the child: a chargen process with its own stdout and stderr files
        code = 70
        try:
            for fd, name in ((1, "out"), (2, "err")):
                target = os.open(os.path.join(folder, f"{number}.{name}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(target, fd)
                os.close(target)
            try:
                sys.argv = ["chargen", *args]  # what the console script sees
                chargen.cli.main()
                code = 0
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    children.append(pid)
print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]))
"""


def run_forked(commands: Sequence[Sequence[str]], folder: Path, env: dict[str, str] | None = None,
               timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Run each ``chargen ARGS`` of ``commands`` as its own process, all at once; their exit codes and output."""
    folder.mkdir(parents=True, exist_ok=True)
    environment = dict(env if env is not None else os.environ, PYTHONPATH=str(REPO))
    parent = subprocess.run([sys.executable, "-c", _PARENT, json.dumps([list(c) for c in commands]), str(folder)],
                            capture_output=True, text=True, timeout=timeout, env=environment)
    if parent.returncode != 0:
        raise AssertionError(f"the forking parent failed ({parent.returncode}): {parent.stderr[-2000:]}")
    codes = json.loads(parent.stdout.splitlines()[-1])
    return [subprocess.CompletedProcess(["chargen", *command], code, (folder / f"{n}.out").read_text(),
                                        (folder / f"{n}.err").read_text())
            for n, (command, code) in enumerate(zip(commands, codes, strict=True))]
