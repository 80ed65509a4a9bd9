"""Training threads that follow the cores actually free.

torch uses one intra-op thread per core by default. When another process holds a
core, every OpenMP barrier then waits out a scheduler time slice: beside a busy
neighbour, two threads on two cores train slower than one, and a single step at
too many threads can take a thousand times longer.

So the count is never *probed* above the cores that others leave free. Those are
measured, not guessed from the load average (a one-minute average that lags a
neighbour by tens of seconds and counts this run's own threads): before training,
``/proc/stat`` is watched for a fraction of a second and the cores busy with other
processes are all busy cores less this process's own CPU time; at each evaluation
the same sum over the steps since costs nothing. Training starts at the free count.
Real training steps then decide between the counts up to it: at the start, and
again only when cores have been freed since the last decision (a neighbour that
arrives just lowers the count; a quiet machine is probed once). ``--threads N``
fixes the count and turns all of this off, as ``CHARGEN_MEASURE=0`` does (all usable cores then).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import torch

from chargen.machine.cache import measuring

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
#: beside a busy neighbour one step at too many threads can be a thousand times slower.
ABORT_RATIO = 3.0
#: Seconds the CPUs are watched before training. /proc/stat counts in 1/100 s, so on two cores
#: 0.15 s is 30 ticks: a busy neighbour reads as 1.0 +- 0.07 cores.
SAMPLE_SECONDS = 0.15
PROC_STAT = Path("/proc/stat")


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (all of them where affinity is unknown)."""
    try:
        return set(os.sched_getaffinity(0)) or {0}
    except (AttributeError, OSError):
        return set(range(max(1, os.cpu_count() or 1)))


def usable_cores() -> int:
    """How many CPUs this process may run on."""
    return len(usable_cpus())


def load_average() -> float | None:
    """Runnable processes averaged over the last minute (Linux, macOS), or None where unknown."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def own_load(cores: int) -> float:
    """This process's share of the load average, roughly: its CPU seconds over the last minute's 60 s.

    Exact for a process younger than a minute, an overestimate for an older one.
    """
    times = os.times()
    return min(float(cores), (times.user + times.system) / 60)


@dataclass(frozen=True)
class CpuTicks:
    """Cumulative /proc/stat times of some CPUs, in 1/100 s."""

    busy: int  # anything but idle and iowait (steal too: the hypervisor took the core)
    total: int
    cpus: int  # how many CPUs were summed


def read_cpu_ticks(cpus: Collection[int], path: Path = PROC_STAT) -> CpuTicks | None:
    """The CPUs' times from /proc/stat, or None where there is none (not Linux) or it does not parse."""
    busy = total = seen = 0
    try:
        for line in path.read_text().splitlines():
            name, _, rest = line.partition(" ")
            if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cpus:
                continue
            # user nice system idle iowait irq softirq steal (guest time is already inside user)
            fields = [int(field) for field in rest.split()[:8]]
            idle = sum(fields[3:5])
            total += sum(fields)
            busy += sum(fields) - idle
            seen += 1
    except (OSError, ValueError):
        return None
    return CpuTicks(busy, total, seen) if seen and total else None


def others_busy(busy_ticks: int, total_ticks: int, cpus: int, own_cpu_s: float, wall_s: float) -> float | None:
    """Cores kept busy by other processes over a stretch: the busy share of ``cpus`` less this process's own
    CPU time (all its threads, OpenMP's spinning ones included) per second. None when the stretch is empty."""
    if total_ticks <= 0 or wall_s <= 0:
        return None
    return max(0.0, cpus * busy_ticks / total_ticks - own_cpu_s / wall_s)


def free_cores(cores: int, load: float | None) -> int:
    """Cores not taken by others: ``cores`` less the cores they keep busy (rounded), at least one;
    all of them when that is unknown."""
    if load is None:
        return cores
    return max(1, min(cores, cores - int(load + 0.5)))


def candidate_counts(cores: int) -> list[int]:
    """Thread counts worth trying: one, all, and half between (on larger machines)."""
    return sorted({1, max(1, cores // 2), cores})


def counts_to_probe(candidates: list[int], free: int, current: int, first: bool) -> list[int]:
    """The counts a probe compares: never above the free cores (where a step can take 1000x longer), the
    free count itself among them; after the first probe only upward from the current count (the probe
    runs because cores were freed)."""
    counts = {c for c in candidates if c <= free} | {free}
    return sorted(c for c in counts if first or c >= current)


class OthersMeter:
    """How many cores other processes keep busy, measured since the previous call.

    The first call watches the CPUs for ``window`` seconds; later ones read the stretch
    since the previous call (the training in between), so they cost nothing; one that
    comes sooner than ``window`` returns the previous figure. Without /proc/stat it falls
    back to the load average less this process's own CPU use.
    """

    def __init__(self, cpus: Collection[int], window: float = SAMPLE_SECONDS, path: Path = PROC_STAT,
                 own_clock: Callable[[], float] = time.process_time, wall_clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.cpus, self.window, self.path = set(cpus), window, path
        self.own_clock, self.wall_clock, self.sleep = own_clock, wall_clock, sleep
        self._last: tuple[CpuTicks | None, float, float] | None = None  # (ticks, own CPU s, wall s)
        self._figure: float | None = None

    def _reading(self) -> tuple[CpuTicks | None, float, float]:
        return read_cpu_ticks(self.cpus, self.path), self.own_clock(), self.wall_clock()

    def __call__(self) -> float | None:
        first = self._last is None
        if self._last is None:
            self._last = self._reading()
            if self._last[0] is not None:
                self.sleep(self.window)
        ticks, own, wall = now = self._reading()
        last_ticks, last_own, last_wall = self._last
        if not first and wall - last_wall < self.window:
            return self._figure
        if ticks is not None and last_ticks is not None and ticks.cpus == last_ticks.cpus:
            self._figure = others_busy(ticks.busy - last_ticks.busy, ticks.total - last_ticks.total,
                                       ticks.cpus, own - last_own, wall - last_wall)
        else:
            load = load_average()
            ours = own_load(len(self.cpus)) if first else (own - last_own) / (wall - last_wall)
            self._figure = None if load is None else max(0.0, load - ours)
        self._last = now
        return self._figure


class ThreadTuner:
    """Picks torch's intra-op thread count for training: the free cores, then the fastest count up to them.

    Construction sets the count to the cores free now (a fraction of a second's look
    unless ``fixed``); ``revisit`` measures again (at the start of training and after
    evaluations) and lowers the count or starts a probe; during a probe ``before_step``
    sets the count for the next step and ``after_step`` is told how long the step took.
    ``others`` says how many cores other processes keep busy (tests give a fake one).
    """

    def __init__(self, fixed: int | None = None, cores: int | None = None,
                 others: Callable[[], float | None] | None = None):
        cpus = usable_cpus()
        self.cores = len(cpus) if cores is None else cores
        self.fixed = fixed or (None if measuring() or others is not None else self.cores)  # measuring off: all
        self.candidates = [self.fixed] if self.fixed else candidate_counts(self.cores)
        self.others = others or OthersMeter(cpus)
        # When the count was last decided, this many cores were free: a probe runs when more are.
        self._free: int | None = None
        self.threads = self.fixed or (self.cores if len(self.candidates) < 2 else free_cores(self.cores,
                                                                                            self.others()))
        self.history: list[tuple[int, int]] = []  # (step, threads) each time the count settles on another
        self._plan: list[tuple[int, bool]] = []  # probe steps still to run: (threads, timed)
        self._best: dict[int, float] = {}
        self._current: tuple[int, bool] | None = None
        torch.set_num_threads(self.threads)

    @property
    def probing(self) -> bool:
        return bool(self._plan) or self._current is not None

    def revisit(self, step: int = 0) -> None:
        """Measure the free cores again: fewer than the count lowers it at once; more than at the last
        decision (or no decision yet) starts a probe. A no-op with --threads, one core or a probe running."""
        if len(self.candidates) < 2 or self.probing:
            return
        free = free_cores(self.cores, self.others())
        known, self._free = self._free, free
        if free < self.threads:  # a neighbour came: too many threads can make a step 1000x slower
            self._settle(free, step)
            return
        if known is not None and free <= known:  # no core freed since the last decision
            return
        trial = counts_to_probe(self.candidates, free, self.threads, first=known is None)
        if len(trial) < 2:
            self._settle(trial[-1], step)
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
