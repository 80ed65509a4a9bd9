"""The music benchmark's results: the acceptance checks, the JSON record and the Markdown section."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.music.settings import DEFAULT, UNCONSTRAINED, Model
from benchmarks.music.stats import FAMILY_Z, STATISTICS, Figure, Summary, bootstrap
from benchmarks.music.training import Level
from chargen.sampling.music_defaults import POLICIES

#: The acceptance bounds: relative (15 %) on these, absolute (1.5 semitones) on the pitch mean.
RELATIVE = {"polyphony": 0.15, "median": 0.15, "per_s": 0.15, "pitch_sd": 0.15}
ABSOLUTE = {"pitch_mean": 1.5}


@dataclass
class Result:
    corpus: str
    note: str
    level: Level | None  # None: a corpus skipped here, or one given checkpoint
    reference: Summary | None
    trained: dict[str, dict[str, Any]]  # codec -> steps, best val, weights
    models: dict[str, Model]  # codec -> figures; the first is the default's codec

    def corpus_figures(self) -> dict[str, Figure]:
        if self.reference is None:
            return {}
        if not hasattr(self, "_figures"):
            self._figures = bootstrap(self.reference, self.reference.profile())
        return self._figures

    def to_dict(self) -> dict[str, Any]:
        return {"corpus": self.corpus, "note": self.note, "level": self.level.name if self.level else None,
                "level_settings": vars(self.level) if self.level else None,
                "corpus_pieces": len(self.reference.pieces) if self.reference else 0,
                "corpus_figures": {k: v.to_dict() for k, v in self.corpus_figures().items()},
                "trained": self.trained, "models": {k: m.to_dict() for k, m in self.models.items()}}


def within(figures: dict[str, Figure], corpus: dict[str, Figure]) -> dict[str, bool]:
    """Per bounded statistic: is the setting's figure within the acceptance bound of the corpus's?"""
    out = {k: abs(figures[k].value - corpus[k].value) <= bound * corpus[k].value for k, bound in RELATIVE.items()}
    out.update({k: abs(figures[k].value - corpus[k].value) <= bound for k, bound in ABSOLUTE.items()})
    return out


def acceptance(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Per corpus and level: the default and beam search within the bounds, and the default never further
    from the corpus than unconstrained sampling beyond the interval."""
    rows = []
    for result in results:
        if not result.models or result.reference is None:
            continue
        model = next(iter(result.models.values()))
        corpus = result.corpus_figures()
        beam = next((v for k, v in model.settings.items() if k.startswith("beam")), None)
        default = model.settings[DEFAULT]
        rows.append({
            "corpus": result.corpus, "level": result.level.name if result.level else None, "codec": model.codec,
            "default_within": within(default.figures, corpus),
            "beam_within": within(beam.figures, corpus) if beam else None,
            "default_further_than_unconstrained": [k for k, v in default.further.items() if v],
        })
    return rows


def verdicts(results: Sequence[Result]) -> dict[str, dict[str, list[str]]]:
    """Per codec and rule (or limit) alone: where it was further from the corpus than unconstrained sampling by
    more than :data:`FAMILY_Z` standard errors ("corpus level: statistic (z)"). A rule stays a default only
    where this is empty."""
    out: dict[str, dict[str, list[str]]] = {}
    for result in results:
        for codec, model in result.models.items():
            for name, evaluated in model.settings.items():
                if name.endswith(" alone"):
                    worse = [f"{STATISTICS[k][0]} ({z:.1f})" for k, z in evaluated.further_z.items() if z > FAMILY_Z]
                    where = f"{result.corpus} {result.level.name if result.level else ''}".strip()
                    out.setdefault(codec, {}).setdefault(name[: -len(" alone")], [])
                    if worse:
                        out[codec][name[: -len(" alone")]].append(f"{where}: {', '.join(worse)}")
    return out


def _verdict_table(results: Sequence[Result]) -> list[str]:
    lines = ["| codec | rule or limit, alone | further from the corpus than unconstrained (standard errors) | "
             "stays a default? | in today's default |", "|---|---|---|---|---|"]
    for codec, rules in verdicts(results).items():
        policy = POLICIES.get(codec, {})
        for rule, failures in rules.items():
            today = policy.get(rule, False) if rule in ("cap", "hold") else rule in policy.get("rules", [])
            lines.append(f"| {codec} | {rule} | {'; '.join(failures) or 'nowhere'} | "
                         f"{'no' if failures else 'yes'} | {'yes' if today else 'no'} |")
    return lines


def _cell(figure: Figure, digits: int) -> str:
    if figure.value != figure.value:
        return "–"
    return f"{figure.value:.{digits}f} ({figure.low:.{digits}f}–{figure.high:.{digits}f})"


def _mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _acceptance_table(results: Sequence[Result]) -> list[str]:
    lines = ["| corpus | level | codec | default within bounds | beam within bounds | "
             "default further than unconstrained (beyond CI) |", "|---|---|---|---|---|---|"]
    for row in acceptance(results):
        def show(flags: dict[str, bool] | None) -> str:
            if flags is None:
                return "–"
            failed = [STATISTICS[k][0] for k, ok in flags.items() if not ok]
            return "yes" if not failed else "**no**: " + ", ".join(failed)
        further = [STATISTICS[k][0] for k in row["default_further_than_unconstrained"]]
        lines.append(f"| {row['corpus']} | {row['level']} | {row['codec']} | {show(row['default_within'])} | "
                     f"{show(row['beam_within'])} | {'**' + ', '.join(further) + '**' if further else 'none'} |")
    return lines


HEADLINE = ("polyphony", "pitch_mean", "pitch_sd", "median", "per_s")


def _headline_table(results: Sequence[Result]) -> list[str]:
    """The bounded statistics: the corpus, the event codec's old default, the default, and beam search."""
    heads = [STATISTICS[k][0] for k in HEADLINE]
    lines = ["| corpus | level | decoding | " + " | ".join(heads) + " |", "|---|---|---|" + "---:|" * len(heads)]
    for result in results:
        if not result.models or result.reference is None:
            continue
        level = result.level.name if result.level else ""
        corpus = result.corpus_figures()
        lines.append(f"| {result.corpus} | {level} | corpus | "
                     + " | ".join(f"{corpus[k].value:.{STATISTICS[k][2]}f}" for k in HEADLINE) + " |")
        default_codec = next(iter(result.models))
        picks = [(codec, name) for codec, model in result.models.items() for name in model.settings
                 if name == "old default" or (codec == default_codec and (name == DEFAULT or name.startswith("beam")))]
        for codec, name in picks:
            figures = result.models[codec].settings[name].figures
            cells = []
            for k in HEADLINE:
                value, ref = figures[k].value, corpus[k].value
                off = f"{value - ref:+.1f}" if k in ABSOLUTE else f"{100 * (value - ref) / ref:+.0f} %"
                cells.append(f"{value:.{STATISTICS[k][2]}f} ({off})")
            lines.append(f"| | | `{codec}` {name} | " + " | ".join(cells) + " |")
    return lines


def _figures_table(result: Result) -> list[str]:
    heads = [f"{title}{' (' + unit + ')' if unit else ''}" for title, unit, _ in STATISTICS.values()]
    lines = ["| model | setting | pieces | " + " | ".join(heads) + " |", "|---|---|---:|" + "---:|" * len(heads)]
    corpus = result.corpus_figures()
    lines.append(f"| corpus | | {len(result.reference.pieces) if result.reference else 0} | "
                 + " | ".join(_cell(corpus[k], d) for k, (_, _, d) in STATISTICS.items()) + " |")
    for codec, model in result.models.items():
        for name, evaluated in model.settings.items():
            cells = []
            for key, (_, _, digits) in STATISTICS.items():
                cell = _cell(evaluated.figures[key], digits)
                cells.append(f"**{cell}**" if evaluated.further.get(key) else cell)
            lines.append(f"| {codec} | {name} | {evaluated.pieces} | " + " | ".join(cells) + " |")
    return lines


def _mask_table(result: Result) -> list[str]:
    lines = ["| model | setting | banned mass per step | steps with a ban | token classes before -> after the mask "
             "| mean NOTE_ON/PITCH pitch before -> after |", "|---|---|---:|---:|---|---:|"]
    for codec, model in result.models.items():
        for name, evaluated in model.settings.items():
            shift = evaluated.shift
            if shift is None or name == UNCONSTRAINED:
                continue
            classes = ", ".join(f"{k} {shift.class_before[k]:.2f}->{shift.class_after[k]:.2f}"
                                for k in shift.class_before)
            lines.append(f"| {codec} | {name} | {shift.banned_mass:.3f} | {shift.masked_steps:.2f} | {classes} | "
                         f"{shift.pitch_before:.2f} -> {shift.pitch_after:.2f} |")
    return lines


def markdown(results: Sequence[Result], command: str) -> str:
    """The BENCHMARKS.md section."""
    lines = ["## Music quality (issue 28: benchmarks/music_quality.py)", "",
             f"Generated {datetime.date.today().isoformat()} by `{command}`. Quality, not speed: every model is "
             "trained by steps with one thread, so the figures do not depend on machine load. Each figure is "
             "the value over all pieces with its 95 % bootstrap interval over pieces; **bold**: further from "
             "the corpus than unconstrained sampling of the same model, beyond that interval. Bounds: within 15 % "
             "of the corpus on polyphony, median note length, notes/s and pitch sd, within 1.5 semitones on "
             "the pitch mean.", "", "### Acceptance", ""]
    lines += _acceptance_table(results)
    lines += ["", "### The event codec's old default against the default (the note codec) and beam search", ""]
    lines += _headline_table(results)
    lines += ["", "### Which rule stays a default", "",
              "Each rule and each learnt limit alone against unconstrained sampling of the same model, on every "
              "corpus, level and statistic: a rule stays in the codec's default "
              "(`chargen.sampling.music_defaults.POLICIES`, what new runs store) only if it is nowhere further "
              f"from the corpus by more than {FAMILY_Z} standard errors of the difference (the 2.5 % one-sided "
              "level shared by the 60 tests each rule faces, Bonferroni; at 1.96 a rule without any effect would "
              "fail one test in 40 by chance).", ""]
    lines += _verdict_table(results)
    for result in results:
        if result.level is None and not result.models:
            lines += ["", f"### {result.corpus}", "", result.note]
            continue
        title = f"{result.corpus}, {result.level.name}" if result.level else result.corpus
        lines += ["", f"### {title}", "", result.note + "."]
        for codec, info in result.trained.items():
            lines.append(f"- `{codec}`: {info['steps']} steps, best validation {info['best_val']:.3f} nats/token "
                         f"at step {info['best_step']} ({info['weights'].rsplit('/', 1)[-1]}).")
        for codec, model in result.models.items():
            lim = model.limits
            lines.append(f"- `{codec}` learnt cap {lim['cap']}, hold {lim['hold_s']:g} s; default: rules "
                         f"{', '.join(lim['default_rules']) or 'none'}, cap {lim['default_cap'] or 'none'}, "
                         f"hold {lim['default_hold_s'] or 'none'}.")
        lines += [""] + _figures_table(result) + ["", "Where the mask moved the probability (sampling settings):",
                                                   ""] + _mask_table(result)
    return "\n".join(lines)


def headline(rows: Sequence[dict[str, Any]]) -> list[dict[str, object]]:
    """The summary's rows: per corpus and decoder, each level's verdict on the bounds (from :func:`acceptance`)."""
    names = {"polyphony": "polyphony", "median": "median note", "per_s": "notes/s", "pitch_sd": "pitch sd",
             "pitch_mean": "pitch mean"}
    out: list[dict[str, object]] = []
    for corpus in dict.fromkeys(row["corpus"] for row in rows):
        for key, decoder in (("default_within", "default sampling"), ("beam_within", "beam 4")):
            verdicts = []
            for row in (r for r in rows if r["corpus"] == corpus and r[key] is not None):
                missed = [names.get(k, k) for k, ok in row[key].items() if not ok]
                verdicts.append(f"{row['level']}: " + (f"no ({', '.join(missed)})" if missed else "yes"))
            out.append({"figure": f"{decoder} within the corpus's bounds, by training level", "value":
                        "; ".join(verdicts), "target": "yes at both levels", "corpus": corpus})
    return out
