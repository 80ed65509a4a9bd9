"""``--minutes M`` without a size: the model size a budget of M minutes buys on this machine.

The rule, compute-optimal sizing in its simplest form: take the largest preset that
sees at least ``TOKENS_PER_PARAM`` training tokens per parameter in M minutes at the
speed measured here; if none does, the smallest. The corpus's size does not cap the
model (the best checkpoint is kept before a large model overfits a small corpus);
a run whose model could memorise its corpus gets dropout (``dropout_for``), and far
past that weight drop (``weight_drop_for``), by passes over the corpus times
parameters per corpus token.

"The speed measured here" is the rate a run sustains: the median of a few timed steps
(``measured_speed``; a best step is a burst), divided by what the run's evaluations
will cost (``evaluation_slowdown``). With measuring off (``CHARGEN_MEASURE=0``) a
nominal speed stands in for it.

K is 1 token per parameter, not Chinchilla's 20 (a ratio for transformers on sub-word
tokens and large corpora): at these budgets a character LSTM's limit is overfitting
sooner than tokens seen. The learning rate scales as 1/sqrt(width) from 5e-3 at 512
hidden units (narrower layers take larger steps); the batch stays 32 (a larger one did
not train faster on these CPUs). Both, and the dropout, apply only where the user left
them at their defaults. The constants were chosen by ``benchmarks/quality_curve.py``
and ``benchmarks/quality_probe.py`` (their runs: BENCHMARKS.md and its archive).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from chargen.machine.cache import measuring
from chargen.machine.device import resolve_device
from chargen.machine.threads import ThreadTuner
from chargen.model import PRESETS, ModelConfig, flops_per_token
from chargen.training.budget import evaluation_in_steps
from chargen.training.config import TrainConfig
from chargen.training.data import split_tokens

TOKENS_PER_PARAM = 1.0
#: Training FLOP/s assumed for sizing when measuring is off (CHARGEN_MEASURE=0): about two cores' worth.
NOMINAL_FLOPS = 20e9
#: Dropout by passes over the corpus x parameters per corpus token: none up to 8, then 0.1 more per
#: doubling, at most 0.3 (char-rnn's advice: when the train loss falls well below the validation loss, add
#: dropout; the thresholds are benchmarks/quality_probe.py's).
DROPOUT_FREE, DROPOUT_STEP, DROPOUT_MAX = 8.0, 0.1, 0.3
#: Weight drop (DropConnect on the recurrent weights, ``ModelConfig.weight_drop``) once the pressure is past
#: WEIGHT_DROP_FROM, far past where dropout is at its most: on a tiny corpus it curbs overfitting, where at
#: lower pressures it slowed learning more than it helped.
WEIGHT_DROP_FROM, WEIGHT_DROP = 256.0, 0.25
#: Presets the budget chooses among, smallest first.
ORDER = ("tiny", "small", "medium", "large")
REFERENCE_HIDDEN, REFERENCE_LR = 512, 5e-3
#: A larger preset is measured only if FLOPs scaling from the last measured one, made this much more
#: optimistic, could still pass: measuring it would be wasted time. Small models use the cores far worse
#: than large ones (per-call overheads), so a smaller preset's speed understates a larger one's.
OPTIMISM = 4.0


@dataclass
class SizeChoice:
    preset: str
    lr: float
    batch_size: int
    speeds: dict[str, float]  # chars/s measured per preset
    reason: str
    dropout: float = 0.0
    epochs: float = 0.0  # passes over the training split the budget buys at the measured speed
    weight_drop: float = 0.0


def parameters(model_config: ModelConfig) -> int:
    """The parameter count of a model, without building it."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[model_config.cell]
    total, width = model_config.vocab_size * model_config.embedding, model_config.embedding
    for _ in range(model_config.layers):
        total += gates * model_config.hidden * (width + model_config.hidden + 2)
        width = model_config.hidden
    return total + model_config.hidden * model_config.vocab_size + model_config.vocab_size


def preset_config(vocab_size: int, preset: str, cell: str = "lstm") -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, cell=cell, **PRESETS[preset])


def lr_for(hidden: int) -> float:
    return REFERENCE_LR * math.sqrt(REFERENCE_HIDDEN / hidden)


def dropout_for(epochs: float, params_per_token: float) -> float:
    """Dropout for a model of ``params_per_token`` parameters per corpus token that passes ``epochs`` times
    over its corpus (pure)."""
    pressure = epochs * params_per_token
    if pressure <= DROPOUT_FREE:
        return 0.0
    doublings = math.ceil(math.log2(pressure / DROPOUT_FREE) - 1e-9)
    return round(min(DROPOUT_MAX, DROPOUT_STEP * doublings), 2)


def weight_drop_for(epochs: float, params_per_token: float) -> float:
    """Weight drop for the same pressure as ``dropout_for`` (pure)."""
    return WEIGHT_DROP if epochs * params_per_token > WEIGHT_DROP_FROM else 0.0


def choose_size(minutes: float, speeds: dict[str, float], params: dict[str, int], train_tokens: int) -> SizeChoice:
    """The preset for a ``minutes`` budget from measured ``speeds`` (chars/s) and parameter counts (pure)."""
    seconds = minutes * 60
    chosen, reason = None, ""
    for preset in ORDER:
        if preset not in speeds or preset not in params:
            continue
        seen = speeds[preset] * seconds / params[preset]
        if seen < TOKENS_PER_PARAM:
            reason = reason or f"{preset} would see {seen:.1f} tokens per parameter (< {TOKENS_PER_PARAM:g})"
            continue
        chosen = preset
    if chosen is None:
        chosen = next(p for p in ORDER if p in speeds)
        reason = f"no preset sees {TOKENS_PER_PARAM:g} tokens per parameter in {minutes:g} minutes: the smallest"
    else:
        seen = speeds[chosen] * seconds / params[chosen]
        reason = f"sees {seen:.1f} tokens per parameter" + (f"; {reason}" if reason else "")
    hidden = PRESETS[chosen]["hidden"]
    epochs = speeds[chosen] * seconds / max(1, train_tokens)
    params_per_token = params[chosen] / max(1, train_tokens)
    dropout = max(dropout_for(epochs, params_per_token), float(PRESETS[chosen]["dropout"]))
    return SizeChoice(preset=chosen, lr=lr_for(hidden), batch_size=32, speeds=dict(speeds), reason=reason,
                      dropout=dropout, epochs=epochs, weight_drop=weight_drop_for(epochs, params_per_token))


def size_for_budget(vocab_size: int, config: TrainConfig, train_tokens: int, cell: str,
                    measure: Callable[[ModelConfig], float]) -> SizeChoice:
    """Measure presets smallest first (``measure`` gives chars/s) until a larger one cannot pass; choose."""
    assert config.minutes is not None
    seconds = config.minutes * 60
    speeds: dict[str, float] = {}
    params = {p: parameters(preset_config(vocab_size, p, cell)) for p in ORDER}
    last: str | None = None
    for preset in ORDER:
        model_config = preset_config(vocab_size, preset, cell)
        if last is not None:
            estimate = OPTIMISM * speeds[last] * flops_per_token(preset_config(vocab_size, last, cell)) / max(
                1, flops_per_token(model_config))
            if estimate * seconds / params[preset] < TOKENS_PER_PARAM:
                break
        speeds[preset] = measure(model_config)
        last = preset
    return choose_size(config.minutes, speeds, params, train_tokens)


def evaluation_slowdown(config: TrainConfig, train_tokens: int, val_tokens: int) -> float:
    """How much slower than its training steps a run trains once its evaluations are counted (pure)."""
    tokens_per_step = config.batch_size * config.seq_len
    config = config.with_eval_interval(max(1, train_tokens // tokens_per_step))
    scored = min(val_tokens, config.evaluation_tokens() or val_tokens)  # a large split: its sample
    return 1.0 + evaluation_in_steps(scored, tokens_per_step) / config.eval_every


def apply_choice(config: TrainConfig, choice: SizeChoice) -> TrainConfig:
    """The config with the choice's lr and batch where the user left those at their defaults."""
    defaults = TrainConfig.__dataclass_fields__
    changes: dict[str, object] = {}
    if config.lr == defaults["lr"].default:
        changes["lr"] = choice.lr
    if config.batch_size == defaults["batch_size"].default:
        changes["batch_size"] = choice.batch_size
    return replace(config, **changes)


def size_run(tokens: np.ndarray, vocab_size: int, config: TrainConfig, cell: str,
             report: Callable[[str], None], dropout: float | None = None,
             weight_drop: float | None = None) -> tuple[str, TrainConfig, SizeChoice]:
    """The preset and config for a new ``--minutes`` run on ``tokens`` without an explicit size (an explicit
    ``dropout`` or ``weight_drop`` is kept)."""
    from chargen.machine.calibrate import measured_speed

    data = split_tokens(tokens, config.val_fraction, config.batch_size, config.seq_len)
    device = resolve_device(config.device)
    ThreadTuner(config.threads)  # measure at the thread count the run will start with (the calibration's key)
    slowdown = evaluation_slowdown(config, len(data.train), len(data.val))

    def speed(model_config: ModelConfig) -> float:  # chars/s a run of this shape sustains here
        if not measuring():  # a nominal machine, not this one
            return NOMINAL_FLOPS / (3 * flops_per_token(model_config)) / slowdown
        return measured_speed(model_config, config, data, device) / slowdown

    choice = size_for_budget(vocab_size, config, len(data.train), cell, speed)
    config = apply_choice(config, choice)
    if dropout is not None:
        choice = replace(choice, dropout=dropout)
    if weight_drop is not None:
        choice = replace(choice, weight_drop=weight_drop)
    speeds = ", ".join(f"{name} {speed:,.0f}" for name, speed in choice.speeds.items())
    report(f"size {choice.preset} for {config.minutes:g} minutes ({choice.reason}; chars/s {speeds}); "
           f"lr {config.lr:.2g}, batch {config.batch_size}, dropout {choice.dropout:g}"
           f"{' (given)' if dropout is not None else ''}, weight drop {choice.weight_drop:g}"
           f"{' (given)' if weight_drop is not None else ''} (~{choice.epochs:.1f} passes over the corpus)")
    return choice.preset, config, choice
