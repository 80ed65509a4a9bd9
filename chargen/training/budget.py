"""``StepBudget``: how many steps a ``--minutes`` budget fits, from the speed actually measured.

The lr schedule (warmup, cosine decay) needs a total number of steps, but a
wall-clock budget only gives seconds. The budget measures the pace of training
steps and of evaluations as the run goes and refits the total, so the cosine
reaches its floor when the time runs out, also when the machine gets slower or
faster during the run (other processes, thermal limits).
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: The first steps are not measured: allocator growth and oneDNN/cuDNN kernel selection
#: make them several times slower than the steady state.
WARMUP_STEPS = 5
#: Steps measured before the first fit: fewer give a pace dominated by noise.
MIN_MEASURED_STEPS = 20
#: After the first fit, refit every this many steps (cheap: a few float operations).
REFIT_EVERY = 25
#: No refits in the last 10% of the budget: the schedule's tail stays put, and a late slowdown
#: is caught by the deadline itself (the loop stops when the time is up, whatever the plan).
REFIT_UNTIL = 0.9
#: ...except to shorten it: in the tail, a pace that would leave the schedule unfinished at the deadline
#: (a neighbour started) cuts the total to what still fits. The lr then only moves down, and the run
#: still ends with its schedule complete. Paced over at least this many steps since the last sample.
TAIL_MIN_STEPS = 5
#: The pace is that of the most recent half of the measured time: it follows a change of speed
#: within a few refits, yet averages over enough steps to include evaluations.
RECENT_SHARE = 0.5
#: Without a measured evaluation yet, one is estimated as a forward pass over the validation split,
#: at a third of a training step's cost per token (forward only; backward costs about twice forward).
FORWARD_SHARE = 1 / 3
#: A run whose evaluations score a sample scores the whole validation split at its end, when that is
#: estimated to cost at most this share of a --minutes budget (the schedule leaves it room), or of a run
#: of a fixed length so far (chargen.training.trainer); else not.
WHOLE_SHARE = 0.25


def evaluation_in_steps(val_tokens: int, tokens_per_step: int) -> float:
    """What one evaluation is estimated to cost, in training steps: a forward pass over the validation
    split at FORWARD_SHARE of a step's cost per token (the budget until it has timed one, and sizing)."""
    return FORWARD_SHARE * val_tokens / max(1, tokens_per_step)


class StepBudget:
    """The deadline of a ``--minutes`` run and the schedule length that fits it.

    ``observe`` is called before every step with the time spent outside training
    steps so far (evaluations, checkpoints); it returns a new total when it refits.
    """

    def __init__(self, minutes: float, start_step: int, eval_every: int, val_tokens: int, tokens_per_step: int,
                 fit: bool, clock: Callable[[], float] = time.monotonic, started: float | None = None,
                 whole_tokens: int = 0):
        self.clock = clock
        # ``started``: when the command began its set-up (sizing, precision calibration): the budget is
        # the user's wall-clock, so what was spent before the first step counts against it.
        self.start = clock() if started is None else started
        self.seconds = minutes * 60
        self.deadline = self.start + self.seconds
        self.fit = fit  # False when steps or epochs fix the total: the deadline alone applies
        self.eval_every = eval_every
        self.val_tokens = val_tokens  # scored by an evaluation during the run (the sample, where there is one)
        self.whole_tokens = whole_tokens  # scored by the whole split's evaluation at the end; 0: none
        self.tokens_per_step = tokens_per_step
        self.first_step = start_step
        self._samples: list[tuple[int, float, float]] = []  # (step, time, overhead seconds so far)
        self._fitted = False
        self._total: int | None = None  # the last total returned

    def expired(self) -> bool:
        return self.clock() >= self.deadline

    def observe(self, step: int, overhead_s: float, evals_done: int) -> int | None:
        """A new total number of steps when it is time to (re)fit, else None."""
        if not self.fit or step < self.first_step + WARMUP_STEPS:
            return None
        now = self.clock()
        first = not self._samples
        measured = 0 if first else step - self._samples[0][0]
        due = (not self._fitted and measured >= MIN_MEASURED_STEPS) or (
            self._fitted and step % REFIT_EVERY == 0 and now - self.start < REFIT_UNTIL * self.seconds)
        if first or due:
            self._samples.append((step, now, overhead_s))
        if not due:
            in_tail = self._fitted and now - self.start >= REFIT_UNTIL * self.seconds
            return self._shorten(step, now, overhead_s, evals_done) if in_tail else None
        self._fitted = True
        self._total = self._fit(step, now, overhead_s, evals_done, self._recent_pace())
        return self._total

    def _fit(self, step: int, now: float, overhead_s: float, evals_done: int, per_step: float) -> int:
        per_eval = (overhead_s / evals_done if evals_done
                    else per_step * evaluation_in_steps(self.val_tokens, self.tokens_per_step))
        remaining = self.deadline - now - per_eval - self._whole_s(per_eval)  # the final evaluations must fit too
        return step + max(1, int(remaining / (per_step + per_eval / self.eval_every)))

    def _whole_s(self, per_eval: float) -> float:
        """The whole split's evaluation at the end, estimated from an evaluation's cost; 0 when it is not
        to be done (no sample, or more than WHOLE_SHARE of the budget)."""
        if not self.whole_tokens:
            return 0.0
        estimate = per_eval * self.whole_tokens / max(1, self.val_tokens)
        return estimate if estimate <= WHOLE_SHARE * self.seconds else 0.0

    def whole_evaluation_fits(self, eval_s: float, evals_done: int) -> bool:
        """Whether the run's end scores the whole split too (its cost told from the ``evals_done`` evaluations
        of the sample so far, ``eval_s`` seconds together)."""
        return bool(self.whole_tokens and evals_done and self._whole_s(eval_s / evals_done))

    def _shorten(self, step: int, now: float, overhead_s: float, evals_done: int) -> int | None:
        """In the tail: a smaller total when the pace since the last sample would miss the deadline."""
        old_step, then, old_overhead = self._samples[-1]
        if self._total is None or step - old_step < TAIL_MIN_STEPS or step >= self._total:
            return None
        per_step = max(1e-9, (now - then) - (overhead_s - old_overhead)) / (step - old_step)
        total = self._fit(step, now, overhead_s, evals_done, per_step)
        if total >= self._total:
            return None
        self._total = total
        return total

    def _recent_pace(self) -> float:
        """Seconds per training step (evaluations and saves excluded) over the recent share of the time."""
        step, now, overhead = self._samples[-1]
        cutoff = now - RECENT_SHARE * (now - self._samples[0][1])
        base = 0
        for index, (old_step, then, _) in enumerate(self._samples):
            if then > cutoff or step - old_step < MIN_MEASURED_STEPS:
                break
            base = index
        old_step, then, old_overhead = self._samples[base]
        del self._samples[1:base]  # never the base again: the cutoff only moves on (the first one sets it)
        return max(1e-9, (now - then) - (overhead - old_overhead)) / max(1, step - old_step)
