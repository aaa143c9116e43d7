"""More seeds where the answer is undecided: ``lookbench run … --seeds auto`` (``max_seeds`` in a
study file).

A study plans its ``seeds`` first. Once every trial of a stage is recorded, the verdict is
worked out from the outcomes so far (the very analysis the report makes); if a line of any
matched comparison is still undecided and the cap is not reached, the next stage adds seeds to
the matched settings only (Lookahead at its matched setting and the baseline, on the settings
both ran), half as many again each time (:func:`lookbench.stats.schedule`). Every look holds its
intervals at a level shared out over the looks that can decide (:func:`lookbench.stats.looks`),
so the 95% holds across them all.

The plan is a pure function of the study's definition and its recorded outcomes, read from the
Optuna storage (every machine sharing the study sees the same ones, whichever folder holds the
Parquet rows): re-running the command, on this machine or another, plans exactly the same
trials, and a study that has decided plans nothing more.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from lookbench import stats
from lookbench.comparison.matched import Matched, compare
from lookbench.comparison.rules import Rules
from lookbench.study.config import TrialConfig, hyperparameter_columns
from lookbench.study.spec import StudySpec, lookbench_id, plan


def sequential(spec: StudySpec) -> bool:
    """Whether the study adds seeds until its verdict is decided."""
    return spec.sampler == "grid" and spec.max_seeds is not None and spec.max_seeds > spec.seeds


def boundaries(spec: StudySpec) -> list[int]:
    """The seed counts the study looks at: ``[seeds]`` for a fixed study."""
    if not sequential(spec):
        return [spec.seeds]
    return stats.schedule(spec.seeds, spec.max_seeds or spec.seeds)


def stage(seed: int, bounds: list[int]) -> int:
    """Which stage of the plan a seed belongs to (0: the seeds planned first)."""
    return bisect.bisect_right(bounds, seed)


def outcomes_frame(outcomes: Iterable[tuple[TrialConfig, str, float | None]],
                   metric: str) -> pd.DataFrame:
    """The recorded outcomes as the rows of a trials table that the report's comparison reads:
    the configuration's columns, its seed, its state and its final ranking metric."""
    rows = []
    for config, state, value in outcomes:
        rows.append({"trial": lookbench_id(config), "task": config.task,
                     "optimizer": config.optimizer, "inner": config.inner,
                     **hyperparameter_columns(config), "seed": config.seed, "state": state,
                     f"final_{metric}": (float(value) if value is not None
                                         and math.isfinite(value) else np.nan)})
    return pd.DataFrame(rows)


def _rules(facts: dict[str, Any], higher_is_better: bool) -> Rules:
    return Rules(maximize=higher_is_better,
                 chance=facts.get("chance_level") if higher_is_better else None,
                 initial=None if higher_is_better else facts.get("initial_loss"),
                 floor=None if higher_is_better else facts.get("loss_floor"),
                 exact=bool(facts.get("deterministic")))


def decide(spec: StudySpec, frame: pd.DataFrame, seeds: int, metric: str,
           higher_is_better: bool, facts: dict[str, Any]) -> list[Matched]:
    """The matched comparisons as the report would state them from the outcomes of the first
    ``seeds`` seeds, at the level of the study's looks."""
    _, level, minimum = stats.looks(spec.seeds, spec.max_seeds or spec.seeds)
    rules = _rules(facts, higher_is_better)
    runs = frame[frame["seed"] < seeds]
    out = []
    for baseline in spec.optimizers[1:]:
        c = compare(runs, baseline, metric, rules, level, minimum, base_seeds=spec.seeds)
        if isinstance(c, Matched):
            out.append(c)
    return out


def _matched_configs(base: list[TrialConfig], comparisons: list[Matched]) -> list[TrialConfig]:
    """The configurations (seed 0) of every matched set: Lookahead at its setting and each
    baseline at its own, on the shared settings."""
    from lookbench.comparison.matched import shared_values

    frame = pd.DataFrame([{**hyperparameter_columns(c), "optimizer": c.optimizer, "i": i}
                          for i, c in enumerate(base) if c.seed == 0])
    if frame.empty:
        return []
    frame["shared"] = shared_values(frame)
    chosen: dict[int, TrialConfig] = {}
    for m in comparisons:
        keys = set(m.keys)
        for optimizer, setting in (("lookahead", m.setting), (m.baseline, m.baseline_setting)):
            rows = frame[(frame["optimizer"] == optimizer) & frame["shared"].isin(keys)]
            for column, value in setting.items():
                rows = rows[rows[column].isna()] if value is None else rows[rows[column] == value]
            for i in rows["i"]:
                chosen[int(i)] = base[int(i)]
    return [chosen[i] for i in sorted(chosen)]


def full_plan(spec: StudySpec, outcomes: pd.DataFrame, metric: str, higher_is_better: bool,
              facts: dict[str, Any]) -> tuple[dict[str, TrialConfig], str | None]:
    """Every trial the study plans so far (its seeds, then each stage its undecided verdict
    asked for), and, once it stops, why (``None`` while a stage is still running)."""
    base = plan(spec)
    planned = {lookbench_id(c): c for c in base}
    if not sequential(spec):
        return planned, None
    bounds = boundaries(spec)
    done = set(outcomes["trial"]) if len(outcomes) else set()
    for i, n in enumerate(bounds):
        stage_ids = [tid for tid, c in planned.items() if stage(c.seed, bounds) == i]
        if not set(stage_ids) <= done:
            return planned, None  # this stage still runs
        comparisons = decide(spec, outcomes, n, metric, higher_is_better, facts)
        if not comparisons:
            return planned, "no matched comparison to add seeds to"
        if all(m.decided for m in comparisons):
            return planned, f"every verdict line was decided with {n} seeds"
        if i == len(bounds) - 1:
            return planned, f"the cap of {n} seeds was reached before every line was decided"
        configs = _matched_configs(base, comparisons)
        for seed in range(n, bounds[i + 1]):
            for c in configs:
                extra = c.model_copy(update={"seed": seed})
                planned[lookbench_id(extra)] = extra
    return planned, None


def current_plan(spec: StudySpec, queue: Any, study_dir: Any,
                 recorded: set[str]) -> tuple[dict[str, TrialConfig], str | None]:
    """The study's plan as it stands (:func:`full_plan` from the outcomes in ``queue``'s
    storage), with what the task knows read from the study's ``study.json`` (written by
    ``lookbench run`` before any worker starts), or asked of the task where it is missing."""
    if not sequential(spec):
        return {lookbench_id(c): c for c in plan(spec)}, None
    from lookbench.study.definition import TASK_FACTS, ranking, read_file, task_facts

    rank = ranking(spec)
    stored = read_file(study_dir)
    if all(k in stored for k in (*TASK_FACTS, "deterministic")):
        facts = {k: stored[k] for k in (*TASK_FACTS, "deterministic")}
    else:
        from lookbench import tasks

        facts = task_facts(tasks.get(spec.task, **spec.task_options))
    frame = outcomes_frame(queue.outcomes(recorded), rank.metric)
    return full_plan(spec, frame, rank.metric, rank.higher_is_better, facts)
