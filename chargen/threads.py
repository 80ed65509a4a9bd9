"""Training threads that follow the cores actually free.

torch uses one intra-op thread per core by default. When another process holds a
core, every OpenMP barrier then waits out a scheduler time slice: measured on two
cores with one busy-looping neighbour, 4.9 k chars/s at two threads against 7.6 k
at one. So training starts from the cores that look free (the CPUs it may run on,
less the load average) and then lets real training steps decide: at the start and
after each evaluation a ``ThreadTuner`` runs a few steps at each candidate count,
in alternating short rounds, and keeps the fastest. The steps are real training,
so the probe costs only the difference in speed over a dozen steps. ``--threads N``
fixes the count and turns all of this off.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

#: Steps run after a switch before timing (the thread pool resizes, caches refill).
SETTLE_STEPS = 1
#: Timed steps per candidate per round, and rounds (candidates take turns: a burst of load slows one
#: round of each rather than one candidate); a candidate's pace is its best step.
TIMED_STEPS = 2
ROUNDS = 2
#: More threads must be at least this much faster to be kept: below it, the fewer threads win
#: (they also leave a core to the neighbour).
MARGIN = 1.05
#: A probe step this many times slower than the best step so far ends that count's probe at once:
#: beside a busy neighbour one step at too many threads was measured 1000x slower (2 s against 2 ms).
ABORT_RATIO = 3.0


def usable_cores() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """Runnable processes averaged over the last minute (Linux), or None where unknown."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def own_load(cores: int) -> float:
    """This process's share of the load average, roughly: its CPU seconds over the last minute's 60 s.

    Exact for a process younger than a minute (a ``chargen train`` that just measured
    precisions and sizes), an overestimate for an older one; the first probe corrects both.
    """
    times = os.times()
    return min(float(cores), (times.user + times.system) / 60)


def free_cores(cores: int, load: float | None) -> int:
    """Cores not taken by other processes: ``cores`` less the (rounded) load, at least one; all without a load."""
    if load is None:
        return cores
    return max(1, min(cores, cores - int(load + 0.5)))


def candidate_counts(cores: int) -> list[int]:
    """Thread counts worth trying: one, all, and half between (on larger machines)."""
    return sorted({1, max(1, cores // 2), cores})


class ThreadTuner:
    """Picks torch's intra-op thread count for training from measured step times.

    ``before_step`` sets the count for the next step; ``after_step`` is told how long
    the step took; ``revisit`` starts a new probe (at the start and after evaluations).
    """

    def __init__(self, fixed: int | None = None, cores: int | None = None,
                 load: Callable[[], float | None] = load_average, own: Callable[[int], float] = own_load):
        self.fixed = fixed
        self.cores = usable_cores() if cores is None else cores
        self.load = load
        self.candidates = [fixed] if fixed else candidate_counts(self.cores)
        start_load = load()
        self.threads = fixed or free_cores(self.cores, None if start_load is None
                                           else max(0.0, start_load - own(self.cores)))
        self.history: list[tuple[int, int]] = []  # (step, threads) each time the count settles on another
        self._plan: list[tuple[int, bool]] = []  # probe steps still to run: (threads, timed)
        self._best: dict[int, float] = {}
        self._current: tuple[int, bool] | None = None
        torch.set_num_threads(self.threads)

    @property
    def probing(self) -> bool:
        return bool(self._plan) or self._current is not None

    def revisit(self, step: int = 0) -> None:
        """Measure the candidates again over the next steps (a no-op with --threads or one candidate)."""
        if len(self.candidates) < 2:
            return
        # Counts above the cores others leave free are not tried: one such step beside a busy
        # neighbour can take seconds. The load average counts this run's own threads: not others'.
        load = self.load()
        free = free_cores(self.cores, None if load is None else max(0.0, load - self.threads))
        trial = [c for c in self.candidates if c <= free or c == self.threads]
        if len(trial) < 2:
            self._settle(trial[0] if trial else 1, step)
            return
        # The current count first: the others are measured against it (and aborted when far slower).
        order = [self.threads] + [c for c in trial if c != self.threads]
        self._plan = [(threads, timed) for _ in range(ROUNDS) for threads in order
                      for timed in [False] * SETTLE_STEPS + [True] * TIMED_STEPS]
        self._best = {}

    def before_step(self) -> None:
        if not self._plan:
            return
        self._current = self._plan.pop(0)
        if torch.get_num_threads() != self._current[0]:
            torch.set_num_threads(self._current[0])

    def after_step(self, seconds: float, step: int) -> None:
        if self._current is None:
            return
        threads, timed = self._current
        self._current = None
        fastest = min(self._best.values(), default=float("inf"))
        if seconds > ABORT_RATIO * fastest:  # hopeless: no more steps at this count in this probe
            self._plan = [entry for entry in self._plan if entry[0] != threads]
            timed = True
        if timed:
            self._best[threads] = min(self._best.get(threads, float("inf")), seconds)
        if not self._plan:
            self._settle(pick(self._best, self.threads), step)

    def _settle(self, threads: int, step: int) -> None:
        self.threads = threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if not self.history or self.history[-1][1] != threads:
            self.history.append((step, threads))


def pick(best_seconds: dict[int, float], current: int) -> int:
    """The count with the fastest step; more threads only when MARGIN faster than fewer."""
    if not best_seconds:
        return current
    choice = min(best_seconds)
    for threads in sorted(best_seconds):
        if best_seconds[threads] * MARGIN < best_seconds[choice]:
            choice = threads
    return choice
