"""Everything the report says about one study, worked out once: the rules a comparison judges
by, the matched comparison of Lookahead with each baseline (each a closed world), what the
timing pass measured, and the whole-grid figures for exploring. Pages, figures and the JSON
summary all read from here, so a number means the same thing wherever it appears."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lookbench import stats
from lookbench.comparison.matched import (
    Cost,
    Matched,
    Unmatched,
    compare,
    paired_line,
    ranking_scores,
)
from lookbench.comparison.metrics import (
    Robustness,
    annotate,
    best_score,
    completed_values,
    config_keys,
    config_scores,
    matching,
    robustness_by_optimizer,
)
from lookbench.comparison.rules import WITHIN, Rules
from lookbench.comparison.sweeps import Line
from lookbench.report.data import StudyData


@dataclass(frozen=True)
class Analysis:
    """One study's numbers (see :mod:`lookbench.comparison.metrics` and ``matched`` for the
    definitions)."""

    rules: Rules
    study_best: float | None  # the whole study's best clean configuration: labelled, never compared
    stand_in: float  # what a failed run scores in the whole-grid figures
    scores: pd.DataFrame  # one row per configuration of the whole study, annotated
    whole: list[Robustness]  # per optimizer over its own whole grid
    comparisons: list[Matched | Unmatched]  # Lookahead against each baseline
    best_lines: dict[str, Line | None]  # baseline -> each one's best over its own grid
    sampler: str  # grid, random, tpe, or unknown
    level: float  # the coverage each interval aims for
    minimum: float
    looks: list[int]  # a sequential study's looks (seed counts); empty otherwise

    @property
    def baselines(self) -> list[str]:
        return [c.baseline for c in self.comparisons]

    def whole_of(self, optimizer: str) -> Robustness | None:
        return next((r for r in self.whole if r.optimizer == optimizer), None)


def rules_of(data: StudyData) -> Rules:
    """The study's rules: its direction, what its task knows, and the tolerances asked for."""
    maximize = data.maximize
    rules = Rules(maximize=maximize, chance=data.chance_level if maximize else None,
                  initial=None if maximize else data.initial_loss,
                  floor=None if maximize else data.loss_floor, exact=data.deterministic)
    return rules.with_within(data.within or WITHIN, data.absolute)


def level_of(data: StudyData) -> tuple[float, float, list[int]]:
    """The level of every interval: 95% (at least 93%), shared out over the looks of a study
    that adds seeds until it decides (``max_seeds``), so that all its looks hold together."""
    start, cap = data.seed_plan
    if cap is None or cap <= start:
        return stats.LEVEL, stats.MINIMUM, []
    looks, level, minimum = stats.looks(start, cap)
    return level, minimum, looks


def cost_of(data: StudyData, baseline: str) -> Cost | None:
    """What the study's timing pass measured for Lookahead against ``baseline``."""
    raw = data.cost
    if raw is None:
        return None
    if raw.get("skipped"):
        return Cost(None, None, None, skipped=str(raw["skipped"]))
    ratio = (raw.get("ratios") or {}).get(baseline)
    if not isinstance(ratio, dict):
        return Cost(None, None, raw.get("device"),
                    skipped=f"the timing pass did not time {baseline}")
    interval = stats.Interval(float(ratio["estimate"]), ratio.get("low"), ratio.get("high"),
                              int(ratio.get("rounds") or 0), ratio.get("coverage"))
    extra = (raw.get("extra_bytes") or {}).get(baseline)
    optimizers = raw.get("optimizers") or {}
    step_s = {o: float(v["step_s"]) for o, v in optimizers.items()
              if isinstance(v, dict) and isinstance(v.get("step_s"), (int, float))}
    state = {o: int(v["state_bytes"]) for o, v in optimizers.items()
             if isinstance(v, dict) and isinstance(v.get("state_bytes"), int)}
    return Cost(interval, int(extra) if extra is not None else None, raw.get("device"),
                step_s=step_s, state_bytes=state)


def _best_runs(trials: pd.DataFrame, optimizer: str, metric: str, maximize: bool
               ) -> pd.DataFrame:
    """The runs of ``optimizer``'s best configuration over its own grid (by its mean ranking
    score, a failed run counting as the worst possible)."""
    runs = trials[trials["optimizer"] == optimizer]
    scored = runs.assign(_rank=ranking_scores(runs, metric, maximize))
    keys = config_keys(scored)
    means = scored.groupby(keys, dropna=False, sort=True)["_rank"].mean()
    best = means.idxmax() if maximize else means.idxmin()
    best = best if isinstance(best, tuple) else (best,)
    return runs[matching(runs, dict(zip(keys, best)))]


def analyse(data: StudyData) -> Analysis:
    """The study's numbers, from its trials table and what its task knows."""
    trials, metric, maximize = data.trials, data.metric, data.maximize
    rules = rules_of(data)
    level, minimum, looks = level_of(data)
    stand_in = rules.stand_in(completed_values(trials, metric))
    scores = config_scores(trials, metric, rules, stand_in)
    best = best_score(scores, maximize)
    annotated = annotate(scores, rules, best)
    order = data.optimizers
    whole = sorted(robustness_by_optimizer(annotated, maximize, rules.within),
                   key=lambda r: order.index(r.optimizer))
    baselines = [o for o in order if o != "lookahead"]
    comparisons: list[Matched | Unmatched] = []
    best_lines: dict[str, Line | None] = {}
    if "lookahead" in order:
        for b in baselines:
            comparisons.append(compare(trials, b, metric, rules, level, minimum,
                                       cost=cost_of(data, b), curves=data.curves,
                                       base_seeds=data.seed_plan[0] if looks else None))
            best_lines[b] = paired_line(_best_runs(trials, "lookahead", metric, maximize),
                                        _best_runs(trials, b, metric, maximize), metric, rules,
                                        level, minimum, name="best")
    return Analysis(rules=rules, study_best=best, stand_in=stand_in, scores=annotated,
                    whole=whole, comparisons=comparisons, best_lines=best_lines,
                    sampler=data.sampler, level=level, minimum=minimum, looks=looks)


def matched_of(analysis: Analysis) -> Matched | None:
    """The first baseline's matched comparison, if it has one (the figures draw this one)."""
    return next((c for c in analysis.comparisons if isinstance(c, Matched)), None)


def analysis_of(data: StudyData) -> Analysis:
    """Every number of the report for ``data``, worked out once per :class:`StudyData` (kept
    on it: the page, the figures and the summary all ask)."""
    cached = data.__dict__.get("_analysis")
    if cached is None:
        cached = data.__dict__["_analysis"] = analyse(data)
    return cached
