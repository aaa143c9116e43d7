"""The answer in words and as data: the headline and verdict at the top of every page and the
``<study>.json`` summary beside it, both built from :class:`~lookbench.report.analysis.Analysis`
so they can never disagree with the tables and figures.

Every verdict line says one of three things: a direction with its interval, "equivalent"
(the interval holds no difference beyond a stated margin), or that the seeds cannot tell, with
the smallest difference they could have seen and how many seeds would decide it. "No clear
difference" alone is never printed: it reads as "no difference" when it means "too few seeds".
"""

from __future__ import annotations

import math
from typing import Any

from lookbench import stats
from lookbench.comparison.matched import (
    Cost,
    Matched,
    Side,
    Unmatched,
    describe_setting,
)
from lookbench.comparison.metrics import EXPLANATIONS, SHARED
from lookbench.comparison.rules import eps_key
from lookbench.comparison.sweeps import Line
from lookbench.hparams import HYPERPARAMETERS
from lookbench.hparams import label as hp_label
from lookbench.report.analysis import Analysis
from lookbench.report.data import StudyData
from lookbench.report.units import units_of

SCHEMA_VERSION = 2
METHOD = ("each seed is one sweep of the comparison's settings (the same initialisation and "
          "data order for both optimizers); every figure is worked out within a sweep and "
          "summarised by its median over sweeps, with the order-statistic interval of that "
          "median (the sign test inverted), which holds its coverage whatever the runs' "
          "distribution (coverage measured in tests/report/test_coverage.py)")
CAVEAT_BEST = ("each optimizer's best configuration over its own grid, chosen on these same "
               "runs: a maximum over more configurations tends to be higher, so this is not a "
               "robustness measure")


# -- numbers in words -------------------------------------------------------------------------
def fmt_score(v: float | None, data: StudyData) -> str:
    """A score as the whole page writes it (``units.Units.score``): ``97.69%``, ``0.1234``."""
    return units_of(data).score(v)


def fmt_diff(v: float | None, data: StudyData, unit: bool = True) -> str:
    """A difference of scores (``units.Units.diff``): ``+0.09 pp``, ``-0.00123``."""
    return units_of(data).diff(v, unit)


def fmt_count(v: float | None, signed: bool = False) -> str:
    """``3``, ``3.5``; ``+1``, ``-1`` and ``0`` when signed."""
    if v is None or not math.isfinite(v):
        return "–"
    text = f"{v:g}" if v != int(v) else f"{int(v)}"
    return ("+" + text if v > 0 else text) if signed else text


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    size = abs(n)
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if size >= scale / 10:
            return f"{n / scale:.2g} {unit}" if size < scale * 10 else f"{n / scale:.0f} {unit}"
    return f"{n} bytes"


def fmt_level(coverage: float | None) -> str:
    return f"{coverage:.0%}" if coverage is not None else "–"


def _interval_text(line: Line, fmt) -> str:
    """``−1 [−2, −1] (96% interval over 9 sweeps)`` or the estimate alone (``fmt(v, False)``
    writes a bound without its unit)."""
    iv = line.interval
    if iv is None or not iv.bracketed:
        return fmt(line.estimate)
    return (f"{fmt(line.estimate)} [{fmt(iv.low, False)}, {fmt(iv.high, False)}] "
            f"({fmt_level(iv.coverage)} interval over {iv.n} sweeps)")


def judgement(line: Line, fmt, who: str, unit_words: str, seeds_word: str = "seeds") -> str:
    """What one line lets us say, in words (``fmt`` writes the line's values)."""
    if line.exact:
        tail = " (a deterministic task: exact, no interval)"
        if line.label == "equivalent":
            return f"the same{tail}"
        better = "Lookahead" if line.label == "lookahead_better" else who
        return f"{better} ahead by {fmt(abs(line.estimate)).lstrip('+')}{tail}"
    text = _interval_text(line, fmt)
    if line.label == "lookahead_better":
        return f"Lookahead ahead: {text}"
    if line.label == "baseline_better":
        return f"{who} ahead: {text}"
    if line.label == "equivalent":
        margin = f"{fmt(line.margin).lstrip('+')} {unit_words}".strip()
        return f"no difference beyond ±{margin}: {text}"
    iv = line.interval
    lead = (fmt(line.estimate) + ", but" if iv is None or not iv.bracketed else text + ":")
    return f"{lead} {_cannot_tell(line, lambda v: fmt(v).lstrip('+'), seeds_word)}"


def _cannot_tell(line: Line, fmt, seeds_word: str = "seeds", on_margin: bool = True) -> str:
    """``9 seeds cannot tell (a difference smaller than 1.20 pp would go unseen); about 17
    seeds would decide it`` (``fmt`` writes the unseen difference)."""
    iv = line.interval
    n = iv.n if iv is not None else 0
    if iv is None or not iv.bracketed:
        out = (f"{n} {seeds_word} cannot tell (no interval holds 95% with fewer than "
               f"{line.fewest})")
    else:
        out = f"{n} {seeds_word} cannot tell"
        if line.detectable is not None and math.isfinite(line.detectable):
            out += f" (a difference smaller than {fmt(line.detectable)} would go unseen)"
    if line.seeds_needed is not None:
        out += f"; about {line.seeds_needed} {seeds_word} would decide it"
    elif on_margin:
        out += "; more seeds are unlikely to decide it (it sits on the margin)"
    return out


# -- a matched comparison ------------------------------------------------------------------------
def _which(side: Side, eps: float) -> str:
    """`` (0.03, 0.3, 1)``: the learning rates good in at least half the sweeps, said so where
    there are more or fewer of them than a typical sweep's count."""
    good = side.lr_good[eps_key(eps)]
    if not good:
        return ""
    listed = ", ".join(f"{v:g}" for v in good)
    same = len(good) == side.lrs[eps_key(eps)].estimate
    return f" ({listed})" if same else f" (good in at least half the sweeps: {listed})"


def _lr_phrase(side: Side, eps: float, total: int) -> str:
    """``3 of 7 (0.03–1)``: learning rates within ε in a typical sweep, and which."""
    return f"{fmt_count(side.lrs[eps_key(eps)].estimate)} of {total}{_which(side, eps)}"


def _axes(m: Matched, inner: str | None) -> str:
    return " × ".join(hp_label(c, inner) for i, c in enumerate(SHARED)
                      if c == "lr" or len({k[i] for k in m.keys}) > 1)


def cost_phrase(cost: Cost | None, baseline: str) -> str:
    """``it costs 1.06× [1.03–1.09] sgd's time per training step and 67 kB more memory``."""
    if cost is None:
        return ("what it costs was not measured (the study's folder has no cost.json: "
                "`lookbench run` times it once the study is complete, unless "
                "LOOKBENCH_COST_SECONDS=0)")
    if cost.skipped:
        return f"its cost was not timed: {cost.skipped}"
    r = cost.ratio
    if r is None:
        return "its cost was not timed"
    ratio = f"{r.estimate:.2f}×"
    if r.low is not None and r.high is not None:
        ratio += f" [{r.low:.2f}–{r.high:.2f}]"
    memory = ""
    if cost.extra_bytes is not None:
        memory = (f" and {fmt_bytes(cost.extra_bytes)} more optimizer memory"
                  if cost.extra_bytes > 0 else
                  f" and {fmt_bytes(-cost.extra_bytes)} less optimizer memory"
                  if cost.extra_bytes < 0 else " and no more optimizer memory")
    where = f" on {cost.device}" if cost.device else ""
    return f"it costs {ratio} {baseline}'s time per training step{where}{memory}"


def _count_headline(m: Matched) -> str:
    """The headline's judgement of the learning-rate counts."""
    line, b = m.headline_line, m.baseline
    count = lambda v, unit=True: fmt_count(v, signed=True)  # noqa: E731
    if line.exact:
        return {"lookahead_better": "exactly, so Lookahead tolerates more of the range",
                "baseline_better": f"exactly, so {b} tolerates more of the range",
                "equivalent": "exactly: as many"}[line.label]
    if line.label == "lookahead_better":
        return f"Lookahead tolerates more of the range ({_interval_text(line, count)})"
    if line.label == "baseline_better":
        return f"{b} tolerates more of the range ({_interval_text(line, count)})"
    if line.label == "equivalent":
        return f"as many, within one learning rate ({_interval_text(line, count)})"
    return _cannot_tell(line, lambda v: f"{v:.1f} learning rates", on_margin=False)


def headline(analysis: Analysis, data: StudyData) -> str:
    """One sentence a user repeats: where each trains well, whether the seeds can tell, and
    what Lookahead costs."""
    m = next((c for c in analysis.comparisons if isinstance(c, Matched)), None)
    inner = _inner(data)
    who = f"Lookahead({inner})" if inner else "Lookahead"
    if m is None:
        if not analysis.comparisons:
            return f"On {data.task}, this study holds no Lookahead and baseline pair to compare."
        c = analysis.comparisons[0]
        return (f"On {data.task}, {who} and {c.baseline} share too few settings to compare how "
                f"much tuning each needs; {cost_phrase(c.cost, c.baseline)}.")
    eps = analysis.rules.primary
    total = len(m.learning_rates)
    la, base = m.lookahead.lrs[eps_key(eps)], m.base.lrs[eps_key(eps)]
    return (f"On {data.task}, {who} at {describe_setting(m.setting).rsplit(',', 1)[0]} trains "
            f"to within {eps_words(eps, analysis)} of the best at {fmt_count(la.estimate)} of "
            f"{total} learning rates{_which(m.lookahead, eps)} in a typical sweep, "
            f"{m.baseline} at {fmt_count(base.estimate)}{_which(m.base, eps)}: "
            f"{_count_headline(m)}; {cost_phrase(m.cost, m.baseline)}.")


def eps_words(eps: float, analysis: Analysis) -> str:
    """``1%`` (relative), or ``0.02`` in the metric's units (``--absolute``)."""
    return f"{eps:g}" if analysis.rules.absolute else f"{eps * 100:g}%"


def _inner(data: StudyData) -> str | None:
    return data.inner


def matched_sentences(m: Matched, analysis: Analysis, data: StudyData) -> list[str]:
    b, total = m.baseline, len(m.learning_rates)
    inner = _inner(data)
    sweeps = len(m.seeds)
    score = lambda v, unit=True: fmt_diff(v, data, unit)  # noqa: E731
    count = lambda v, unit=True: fmt_count(v, signed=True)  # noqa: E731
    out = [f"Compared on the {m.configurations} settings of {_axes(m, inner)} that both ran, "
           f"Lookahead at {describe_setting(m.setting)} ({m.setting_reason}), over {sweeps} "
           f"sweep{'s' if sweeps != 1 else ''} (each seed runs every setting once, with the same "
           "initialisation and data order for both)."]
    if not m.seeds:
        out.append("No seed has run every shared setting of both yet, so there is nothing to "
                   "compare: run the study to the end.")
        return out
    for eps in m.rules.within:
        key = eps_key(eps)
        out.append(f"Learning rates within {eps_words(eps, analysis)} of the sweep's best: "
                   f"Lookahead {_lr_phrase(m.lookahead, eps, total)}, {b} "
                   f"{_lr_phrase(m.base, eps, total)}; Lookahead − {b}: "
                   f"{judgement(m.lines[f'lrs@{key}'], count, b, 'learning rate')}.")
    lower = "" if data.maximize else "; a loss: lower is better"
    out.append(f"Score at the same settings (Lookahead − {b}, averaged over the "
               f"{m.configurations} settings{lower}): "
               f"{judgement(m.lines['mean'], score, b, '')}.")
    out.append(f"Each one's best setting in a sweep (Lookahead − {b}{lower}): "
               f"{judgement(m.lines['best'], score, b, '')}.")
    fl, fb = m.lookahead.failures, m.base.failures
    if abs(fl.total - fb.total) > 1e-12:
        def words(f) -> str:
            parts = [f"diverged {f.diverged:.0%}"]
            if m.rules.chance is not None or m.rules.initial is not None:  # else unknowable
                parts.append(("no better than chance " if data.maximize else
                              "no lower than the loss at initialisation ")
                             + f"{f.untrained:.0%}")
            if f.failed:
                parts.append(f"errors {f.failed:.0%}")
            return f"{f.total:.0%} ({', '.join(parts)})"
        out.append(f"Runs that did not train: Lookahead {words(fl)}, {b} {words(fb)}.")
    out.append(cost_phrase(m.cost, b)[0].upper() + cost_phrase(m.cost, b)[1:] + ".")
    out += [f[0].upper() + f[1:] + "." for f in m.flags]
    return out


def unmatched_sentences(u: Unmatched, analysis: Analysis, data: StudyData) -> list[str]:
    score = lambda v, unit=True: fmt_diff(v, data, unit)  # noqa: E731
    out = [u.reason]
    if u.shared is not None:
        out.append(f"At that configuration, Lookahead − {u.baseline}: "
                   f"{judgement(u.shared, score, u.baseline, '')}.")
    best = analysis.best_lines.get(u.baseline)
    if best is not None:
        out.append(f"Each tuned on its own grid, Lookahead's best − {u.baseline}'s best: "
                   f"{judgement(best, score, u.baseline, '')} ({CAVEAT_BEST}).")
    text = cost_phrase(u.cost, u.baseline)
    out.append(text[0].upper() + text[1:] + ".")
    return out


def sampler_sentences(analysis: Analysis, data: StudyData) -> list[str]:
    """Random and TPE studies: no shared grid; say what their numbers can mean."""
    score = lambda v, unit=True: fmt_diff(v, data, unit)  # noqa: E731
    out = []
    for c in analysis.comparisons:
        b = c.baseline
        if analysis.sampler == "tpe":
            out.append(f"TPE chose where to sample, concentrating where it found good results, so "
                       f"shares and medians describe where it searched, not how wide the good "
                       f"region is; Lookahead and {b} are compared by the best each found.")
        else:
            out.append("Each optimizer's configurations were drawn at random from its own "
                       "ranges (Lookahead's include k and α), so there is no shared grid; the "
                       "shares within ε are the chance that a random draw from each one's "
                       "ranges is that good, and the expected-best curves compare them as a "
                       "random search would use them.")
        best = analysis.best_lines.get(b)
        if best is not None:
            out.append(f"Best found, Lookahead − {b}: {judgement(best, score, b, '')} "
                       f"({CAVEAT_BEST}).")
        text = cost_phrase(c.cost, b)
        out.append(text[0].upper() + text[1:] + ".")
    return out


def grouped_sentences(analysis: Analysis, data: StudyData
                      ) -> list[tuple[Matched | Unmatched | None, list[str]]]:
    """The verdict's sentences, per comparison (``None``: sentences about the study as a
    whole: no pair to compare, or a random/TPE study without a shared grid)."""
    if not analysis.comparisons:
        return [(None, ["This study holds no Lookahead and baseline pair to compare."])]
    if analysis.sampler in ("random", "tpe") and not any(
            isinstance(c, Matched) for c in analysis.comparisons):
        return [(None, sampler_sentences(analysis, data))]
    return [(c, matched_sentences(c, analysis, data) if isinstance(c, Matched)
             else unmatched_sentences(c, analysis, data)) for c in analysis.comparisons]


def sentences(analysis: Analysis, data: StudyData) -> list[str]:
    """The verdict: a few plain sentences per baseline (the headline comes before them)."""
    return [t for _, group in grouped_sentences(analysis, data) for t in group]


# -- the JSON summary ----------------------------------------------------------------------------
def _number(v: Any) -> Any:
    """A plain JSON number: integral floats of counts as ints, non-finite as null."""
    if v is None:
        return None
    v = float(v)
    if not math.isfinite(v):
        return None
    return int(v) if v.is_integer() else v


def _interval_json(iv: stats.Interval | None, count: bool = False) -> dict[str, Any] | None:
    if iv is None:
        return None
    num = _number if count else (lambda x: None if x is None or not math.isfinite(x) else
                                 float(x))
    return {"estimate": num(iv.estimate), "low": num(iv.low), "high": num(iv.high),
            "coverage": iv.coverage, "sweeps": iv.n}


def _line_json(line: Line | None, count: bool = False) -> dict[str, Any] | None:
    if line is None:
        return None
    num = _number if count else (lambda x: None if x is None or not math.isfinite(x) else
                                 float(x))
    iv = line.interval
    return {"estimate": num(line.estimate), "low": num(iv.low) if iv else None,
            "high": num(iv.high) if iv else None, "coverage": iv.coverage if iv else None,
            "sweeps": iv.n if iv else None, "margin": line.margin, "label": line.label,
            "exact": line.exact,
            "detectable": None if line.detectable is None or not math.isfinite(line.detectable)
            else line.detectable, "seeds_needed": line.seeds_needed}


def _side_json(side: Side, within: tuple[float, ...]) -> dict[str, Any]:
    keys = [eps_key(e) for e in within]
    f = side.failures
    return {
        "configs": side.configurations,
        "learning_rates_within": {k: _interval_json(side.lrs[k], count=True) for k in keys},
        "lr_good": {k: side.lr_good[k] for k in keys},
        "lr_span_decades": {k: side.span(float(k)) for k in keys},
        "share_within": {k: _interval_json(side.share(float(k))) for k in keys},
        "expected_configs_to_good": {k: side.expected_to_good(float(k)) for k in keys},
        "best": _interval_json(side.best), "best_config": side.best_config,
        "median": side.median,
        "failures": {"runs": f.runs, "diverged": f.diverged, "failed": f.failed,
                     "did_not_train": f.untrained, "total": f.total},
        "best_at_grid_edge": side.edge,
    }


def _setting_json(setting: dict) -> dict[str, Any]:
    out = {}
    for k, v in setting.items():
        v = v.item() if hasattr(v, "item") else v
        out[k] = int(v) if k == "k" and v is not None else v
    return out


def _cost_json(cost: Cost | None) -> dict[str, Any] | None:
    if cost is None:
        return None
    if cost.skipped:
        return {"skipped": cost.skipped}
    return {"time_per_step_ratio": _interval_json(cost.ratio), "extra_bytes": cost.extra_bytes,
            "device": cost.device}


def _comparison_json(c: Matched | Unmatched, analysis: Analysis,
                     data: StudyData) -> dict[str, Any]:
    if isinstance(c, Unmatched):
        return {"baseline": c.baseline, "matched": False, "reason": c.reason,
                "shared_difference": _line_json(c.shared), "cost": _cost_json(c.cost),
                "verdict": {"label": c.label}}
    within = c.rules.within
    return {
        "baseline": c.baseline, "matched": True,
        "lookahead_setting": {**_setting_json(c.setting), "reason": c.setting_reason,
                              "chosen_on_these_runs": c.setting_chosen_on_data},
        "baseline_setting": _setting_json(c.baseline_setting),
        "configurations": c.configurations, "learning_rates": c.learning_rates,
        "sweeps": len(c.seeds), "seeds": c.seeds, "stand_in": c.stand_in,
        "comparison_best": c.best,
        "optimizers": {"lookahead": _side_json(c.lookahead, within),
                       c.baseline: _side_json(c.base, within)},
        "lines": {**{f"learning_rates_within@{eps_key(e)}":
                     _line_json(c.lines[f"lrs@{eps_key(e)}"], count=True) for e in within},
                  "mean_score": _line_json(c.lines["mean"]),
                  "best_score": _line_json(c.lines["best"])},
        "cost": _cost_json(c.cost),
        "flags": c.flags,
        "verdict": {"label": c.label, "decided": c.decided},
    }


# Fields that count something, or hold a whole-number hyperparameter (k, an average's start):
# written as JSON integers wherever they appear in the summary (``5``, never ``5.0``).
INT_FIELDS = frozenset({"schema_version", "seeds", "epochs", "sweeps", "configs",
                        "configurations", "runs", "seeds_needed",
                        *(h.name for h in HYPERPARAMETERS if h.kind == "int")})


def integers(value: Any, key: str | None = None) -> Any:
    """``value`` with every whole number under an ``INT_FIELDS`` key (or in a list under one,
    such as ``seeds``) as an ``int``: pandas gives a column with a missing value as floats."""
    if isinstance(value, dict):
        return {k: integers(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [integers(v, key) for v in value]
    if key in INT_FIELDS and not isinstance(value, bool):
        item = getattr(value, "item", None)
        v = item() if item is not None else value
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v
    return value


def summary(analysis: Analysis, data: StudyData) -> dict[str, Any]:
    """The JSON summary written beside the page (``<study>.json``); counts and whole-number
    hyperparameters are integers (``integers``)."""
    return integers(_summary(analysis, data))


def _summary(analysis: Analysis, data: StudyData) -> dict[str, Any]:
    rules = analysis.rules
    comparisons = [_comparison_json(c, analysis, data) for c in analysis.comparisons]
    matched = next((c for c in comparisons if c.get("matched")), None)
    return {
        "schema_version": SCHEMA_VERSION,
        "study": data.name, "task": data.task, "metric": data.metric,
        "higher_is_better": data.maximize, "sampler": analysis.sampler,
        "seeds": int(data.trials["seed"].nunique()),
        "epochs": int(data.trials["epochs"].max()),
        "headline": headline(analysis, data),
        "rules": {"within": list(rules.within), "absolute": rules.absolute,
                  "good": rules.describe(), "chance_level": rules.chance,
                  "initial_loss": rules.initial, "loss_floor": rules.floor,
                  "deterministic": rules.exact},
        "inference": {"method": METHOD, "level": analysis.level, "minimum": analysis.minimum,
                      "looks": analysis.looks},
        "whole_study": {
            "best": analysis.study_best,
            "note": "the whole study's best clean configuration, for the whole-grid figures; "
                    "no comparison uses it",
            "optimizers": {
                r.optimizer: {
                    "configs": r.configurations, "best": r.best,
                    "best_seed_range": list(r.best_range) if r.best_range else None,
                    "median": r.median, "divergence_rate": r.divergence_rate,
                    "did_not_train_rate": r.untrained_rate,
                    "share_within": {k: r.good[k] / r.configurations for k in r.good},
                } for r in analysis.whole}},
        "matched": matched,
        "comparisons": comparisons,
        "best_of_each_grid": {b: {**(_line_json(line) or {}), "caveat": CAVEAT_BEST}
                              for b, line in analysis.best_lines.items() if line is not None},
        "definitions": EXPLANATIONS,
        "verdict": " ".join(sentences(analysis, data)),
    }
