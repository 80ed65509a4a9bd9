"""Issue 14: the training threads start at the cores measured free and are probed only up to them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from chargen.machine.threads import (
    OthersMeter,
    ThreadTuner,
    counts_to_probe,
    free_cores,
    others_busy,
    read_cpu_ticks,
    usable_cpus,
)


@pytest.fixture(autouse=True)
def restore_torch_threads() -> Iterator[None]:
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def stat_text(*cpus: tuple[int, int]) -> str:
    """A /proc/stat with one line per CPU from (busy, idle) ticks: busy split over user and system."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    for index, (busy, idle) in enumerate(cpus):
        lines.append(f"cpu{index} {busy - busy // 3} 0 {busy // 3} {idle} 0 0 0 0 0 0")
    return "\n".join(lines + ["intr 1 2 3", "ctxt 99", "btime 1"]) + "\n"


# ----------------------------------------------------------------------------- the pure arithmetic


def test_others_busy_is_the_busy_cores_less_this_process() -> None:
    # two cores over one second (200 ticks), this process asleep: a busy-looping neighbour is one core
    assert others_busy(100, 200, cpus=2, own_cpu_s=0.0, wall_s=1.0) == pytest.approx(1.0)
    # both cores busy, two thirds of each ours (our two threads and the neighbour share them): 0.67 others
    assert others_busy(200, 200, cpus=2, own_cpu_s=4 / 3, wall_s=1.0) == pytest.approx(2 / 3)
    # a quiet machine with this run's two threads on both cores: nobody else
    assert others_busy(200, 200, cpus=2, own_cpu_s=2.0, wall_s=1.0) == 0.0
    assert others_busy(195, 200, cpus=2, own_cpu_s=2.0, wall_s=1.0) == 0.0  # never negative
    assert others_busy(0, 0, cpus=2, own_cpu_s=0.0, wall_s=1.0) is None  # no ticks: unknown


@pytest.mark.parametrize(("others", "cores", "free"), [
    (0.0, 2, 2), (0.3, 2, 2),  # quiet (a little background): both cores
    (1.0, 2, 1), (2 / 3, 2, 1),  # one busy neighbour, alone or sharing with our two threads: one core
    (3.0, 2, 1),  # never below one
    (None, 2, 2),  # unknown: all of them (the probe's abort guards this case)
    (4.2, 16, 12),
])
def test_free_cores_from_the_others_busy(others: float | None, cores: int, free: int) -> None:
    assert free_cores(cores, others) == free


def test_counts_to_probe_stay_at_or_below_the_free_cores() -> None:
    assert counts_to_probe([1, 2], free=2, current=2, first=True) == [1, 2]  # quiet start: both
    assert counts_to_probe([1, 2], free=1, current=1, first=True) == [1]  # busy start: nothing to probe
    assert counts_to_probe([1, 8, 16], free=12, current=12, first=True) == [1, 8, 12]  # the free count itself
    assert counts_to_probe([1, 8, 16], free=16, current=8, first=False) == [8, 16]  # cores freed: upward only
    assert counts_to_probe([1, 2], free=2, current=1, first=False) == [1, 2]


# ----------------------------------------------------------------------------- reading /proc/stat


def test_read_cpu_ticks_sums_only_the_allowed_cpus(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(stat_text((30, 70), (90, 10), (5, 95)))
    ticks = read_cpu_ticks({0, 2}, stat)
    assert ticks is not None and (ticks.busy, ticks.total, ticks.cpus) == (35, 200, 2)
    assert read_cpu_ticks({7}, stat) is None  # none of ours listed
    assert read_cpu_ticks({0}, tmp_path / "missing") is None  # no /proc (macOS, Windows)
    stat.write_text("cpu0 12 x 4\n")
    assert read_cpu_ticks({0}, stat) is None  # garbage: unknown, not an error


def test_the_meter_watches_before_training_and_reads_the_stretch_since_later(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(stat_text((10, 10), (10, 10)))
    clock = {"own": 5.0, "wall": 100.0}

    def sleep(seconds: float) -> None:  # 0.15 s pass: a neighbour holds cpu1, this process sleeps
        clock["wall"] += seconds
        stat.write_text(stat_text((10, 25), (25, 10)))

    meter = OthersMeter({0, 1}, window=0.15, path=stat, own_clock=lambda: clock["own"],
                        wall_clock=lambda: clock["wall"], sleep=sleep)
    assert meter() == pytest.approx(1.0)
    # 0.1 s later (sooner than the window): the previous figure, nothing read
    clock["wall"] += 0.1
    assert meter() == pytest.approx(1.0)
    # ten seconds of training at two threads, both cores ours: the neighbour has gone
    clock["wall"] += 9.9
    clock["own"] += 20.0
    stat.write_text(stat_text((1010, 25), (1025, 10)))
    assert meter() == pytest.approx(0.0)


def test_without_proc_stat_the_meter_falls_back_to_the_load_average(tmp_path: Path) -> None:
    slept: list[float] = []
    meter = OthersMeter({0, 1}, path=tmp_path / "missing", sleep=slept.append)
    figure = meter()
    assert not slept  # nothing to watch: no wait either
    assert figure is None or 0.0 <= figure  # the load average, where the platform has one


def test_the_meter_reads_this_machine() -> None:
    cpus = usable_cpus()
    figure = OthersMeter(cpus)()
    assert figure is None or 0.0 <= figure <= len(cpus) + 0.5  # what others use of our CPUs, at most all


# ----------------------------------------------------------------------------- the tuner's decisions


def scripted(*figures: float | None) -> Iterator[float | None]:
    return iter(figures)


def run_probe(tuner: ThreadTuner, seconds: dict[int, float], step: int = 0) -> list[int]:
    """Drive a probe with fake step times per thread count; the counts it ran."""
    seen = []
    while tuner.probing:
        tuner.before_step()
        seen.append(torch.get_num_threads())
        step += 1
        tuner.after_step(seconds[torch.get_num_threads()], step)
    return seen


def test_a_busy_neighbour_means_one_thread_from_the_start_and_no_probe() -> None:
    figures = scripted(1.0, 1.0, 0.98)
    tuner = ThreadTuner(cores=2, others=lambda: next(figures))
    assert tuner.threads == 1 and torch.get_num_threads() == 1  # the calibration and sizing run at this count
    for step in (0, 200):  # the start of fit and an evaluation
        tuner.revisit(step)
        assert not tuner.probing and tuner.threads == 1


def test_a_quiet_machine_keeps_both_cores_and_is_probed_once() -> None:
    figures = scripted(0.05, 0.0, 0.1, 0.0)
    tuner = ThreadTuner(cores=2, others=lambda: next(figures))
    assert tuner.threads == 2
    tuner.revisit(0)
    assert set(run_probe(tuner, {1: 1.0, 2: 0.6})) == {1, 2} and tuner.threads == 2
    for step in (200, 400):  # still quiet: no more probing at evaluations
        tuner.revisit(step)
        assert not tuner.probing and tuner.threads == 2 and torch.get_num_threads() == 2


def test_the_count_follows_a_neighbour_that_comes_and_goes() -> None:
    figures = scripted(0.0, 0.0, 0.7, 0.0, 1.0)
    tuner = ThreadTuner(cores=2, others=lambda: next(figures))
    tuner.revisit(0)
    run_probe(tuner, {1: 1.0, 2: 0.6})
    assert tuner.threads == 2
    tuner.revisit(200)  # a neighbour came: straight down, no probe at two threads beside it
    assert not tuner.probing and tuner.threads == 1 and torch.get_num_threads() == 1
    tuner.revisit(400)  # it went: probe upward
    assert tuner.probing
    run_probe(tuner, {1: 1.0, 2: 0.6}, step=400)
    assert tuner.threads == 2
    tuner.revisit(600)  # back again
    assert tuner.threads == 1
    assert [threads for _, threads in tuner.history] == [2, 1, 2, 1]


def test_a_probe_is_left_to_finish_and_fixed_threads_never_measure() -> None:
    calls: list[int] = []

    def others() -> float:
        calls.append(1)
        return 0.0

    tuner = ThreadTuner(cores=2, others=others)
    tuner.revisit(0)
    tuner.before_step()
    tuner.revisit(1)  # an evaluation inside the probe (eval_every 1): it goes on
    assert tuner.probing and len(calls) == 2
    fixed = ThreadTuner(fixed=2, cores=2, others=others)
    fixed.revisit(0)
    assert len(calls) == 2 and fixed.threads == 2 and not fixed.probing
    single = ThreadTuner(cores=1, others=others)
    single.revisit(0)
    assert len(calls) == 2 and single.threads == 1
