"""Everything the report says about one study, worked out once: the scoring rules, each
configuration's score and ε-good flags, the whole-grid figures, and the matched comparison of
Lookahead with each baseline. Pages, figures and the JSON summary all read from here, so a
number means the same thing wherever it appears."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lookbench.report.data import StudyData
from lookbench.report.matched import Matched, Unmatched, compare
from lookbench.report.metrics import (
    Difference,
    Robustness,
    Scoring,
    annotate,
    config_keys,
    config_scores,
    matching,
    reference_best,
    robustness_by_optimizer,
    run_values,
    seed_paired_difference,
    worst_value,
)


@dataclass(frozen=True)
class Analysis:
    """One study's numbers (see :mod:`lookbench.report.metrics` for the definitions)."""

    scoring: Scoring
    worst: float  # what a diverged or failed run counts as
    scores: pd.DataFrame  # one row per configuration, annotated
    runs: pd.DataFrame  # the trials table with each run's ``value``
    whole: list[Robustness]  # per optimizer over its own whole grid
    comparisons: list[Matched | Unmatched]  # Lookahead against each baseline
    best_differences: dict[str, Difference | None]  # baseline -> best vs best, paired over seeds
    sampler: str  # grid, random, tpe, or unknown

    @property
    def baselines(self) -> list[str]:
        return [c.baseline for c in self.comparisons]

    def whole_of(self, optimizer: str) -> Robustness | None:
        return next((r for r in self.whole if r.optimizer == optimizer), None)


def _best_vs_best(scores: pd.DataFrame, runs: pd.DataFrame, baseline: str,
                  maximize: bool) -> Difference | None:
    """Each optimizer's best configuration (over its whole grid), Lookahead − baseline, paired
    over the seeds both ran: what each gives when tuned on this study's grids."""
    best_runs = []
    for opt in ("lookahead", baseline):
        s = scores[scores["optimizer"] == opt]
        if s.empty:
            return None
        row = s.loc[s["score"].idxmax() if maximize else s["score"].idxmin()]
        best_runs.append(runs[matching(runs, row[config_keys(runs)])])
    return seed_paired_difference(*best_runs)


def analyse(data: StudyData) -> Analysis:
    """The study's numbers, from its trials table and what its task knows (loss floor and
    initial loss, where it knows them)."""
    trials, metric, maximize = data.trials, data.metric, data.maximize
    floor, initial = (None, None) if maximize else (data.loss_floor, data.initial_loss)
    worst = worst_value(trials, metric, maximize, initial)
    scores = config_scores(trials, metric, maximize, worst)
    scoring = Scoring(maximize, reference_best(scores, maximize), floor)
    annotated = annotate(scores, scoring)
    runs = trials.assign(value=run_values(trials, metric, maximize, worst))
    order = data.optimizers
    whole = sorted(robustness_by_optimizer(annotated, trials, maximize),
                   key=lambda r: order.index(r.optimizer))
    baselines = [o for o in data.optimizers if o != "lookahead"]
    has_lookahead = "lookahead" in data.optimizers
    comparisons = ([compare(annotated, runs, b, maximize) for b in baselines]
                   if has_lookahead else [])
    best = {b: _best_vs_best(annotated, runs, b, maximize) for b in baselines} \
        if has_lookahead else {}
    return Analysis(scoring=scoring, worst=worst, scores=annotated, runs=runs, whole=whole,
                    comparisons=comparisons, best_differences=best, sampler=data.sampler)


def matched_of(analysis: Analysis) -> Matched | None:
    """The first baseline's matched comparison, if it has one (the figures draw this one)."""
    return next((c for c in analysis.comparisons if isinstance(c, Matched)), None)

