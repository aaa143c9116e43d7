"""A study's tables as the report needs them, read from its Parquet directories only.

Nothing here touches Optuna or the study's journal: a study folder copied to another machine
(``trials/`` and ``curves/``) is enough to report it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lookbench.hparams import HYPERPARAMETERS
from lookbench.results import (
    DEFINITION_FILE,
    ResultsUnreadable,
    StudyResults,
    higher_is_better,
    study_metric,
)
from lookbench.tasks import declared_ranking
from lookbench.units import is_fraction


class ReportError(Exception):
    """A study cannot be reported; one line for the user."""


@dataclass
class StudyData:
    """One study's trials and curves, and what its metric means."""

    name: str
    trials: pd.DataFrame
    curves: pd.DataFrame

    sampler: str = "unknown"  # grid, random or tpe, from the study's definition when present
    # What the task knows without training (loss floor, initial loss, chance level, whether it
    # is deterministic), from study.json
    facts: dict = field(default_factory=dict)
    cost: dict | None = None  # the study's timing pass (cost.json), None where not measured
    seed_plan: tuple[int, int | None] = (1, None)  # seeds planned first, and the cap (max_seeds)
    within: tuple[float, ...] | None = None  # tolerances ε asked for (None: 1% and 5%)
    absolute: bool = False  # ε in the metric's own units

    @functools.cached_property
    def metric(self) -> str:  # asked for by every figure and table: worked out once
        return study_metric(declared_ranking(self.task),
                            self.trials["metric"].astype(str).tolist())

    @functools.cached_property
    def maximize(self) -> bool:
        """The direction the rows recorded (the task declared it), else the task's where this
        version knows it, else the metric's name."""
        recorded = (self.trials["higher_is_better"].tolist()
                    if "higher_is_better" in self.trials else [])
        return higher_is_better(declared_ranking(self.task), self.metric,
                                [None if pd.isna(v) else bool(v) for v in recorded])

    @functools.cached_property
    def score_is_fraction(self) -> bool:
        """Higher is better and every value lies in [0, 1] (an accuracy): the report writes
        scores as percentages and differences in points. Worked out once: every cell asks."""
        return is_fraction(self.trials["final_" + self.metric].dropna(), self.maximize)

    @functools.cached_property
    def _task(self):  # the task object, for what it knows without training; None if unknown
        from lookbench import tasks

        try:
            return tasks.get(self.task, **self.task_options)
        except Exception:  # unknown task or options this version refuses: report without it
            return None

    def _fact(self, name: str) -> float | bool | None:
        """What the task knows, as the study's ``study.json`` recorded it. A study without it
        (an older one, hand-made tables) ranked by a loss asks the task, which imports torch
        (seconds): a loss cannot be judged without its floor and start. One ranked by an
        accuracy goes without (its failed runs then stand in at the worst completed run), so
        reporting it stays free of torch."""
        if name in self.facts:
            return self.facts[name]
        if self.maximize:
            return None
        fn = getattr(self._task, name, None)
        return fn() if fn is not None else None

    @property
    def loss_floor(self) -> float | None:
        """The lowest value the task's loss can reach, where the task knows it."""
        return self._fact("loss_floor")

    @property
    def initial_loss(self) -> float | None:
        """The task's loss at initialisation, where the task knows it without training."""
        return self._fact("initial_loss")

    @property
    def chance_level(self) -> float | None:
        """The ranking metric of a model that learned nothing, where the task knows it."""
        return self._fact("chance_level")

    @property
    def deterministic(self) -> bool:
        """Whether every seed gives the same result (an analytic task)."""
        return bool(self._fact("deterministic"))

    @property
    def task(self) -> str:
        return str(self.trials["task"].iloc[0])

    @functools.cached_property
    def inner(self) -> str | None:
        """What Lookahead wraps in this study (``None`` without Lookahead runs)."""
        la = self.trials.loc[self.trials["optimizer"] == "lookahead", "inner"]
        return str(la.iloc[0]) if len(la) else None

    @functools.cached_property
    def optimizers(self) -> list[str]:
        """Lookahead first, then the optimizer it wraps, then the other baselines."""
        la = self.trials.loc[self.trials["optimizer"] == "lookahead", "inner"]
        inner = str(la.iloc[0]) if len(la) else None
        return sorted(self.trials["optimizer"].unique(),
                      key=lambda o: (o != "lookahead", o != inner, o))

    @property
    def task_options(self) -> dict:
        return json.loads(self.trials["task_options"].iloc[0])

    def swept(self, optimizer: str) -> list[str]:
        """The hyperparameters with more than one value for ``optimizer``."""
        return list(self._swept.get(optimizer, []))

    @functools.cached_property
    def _swept(self) -> dict[str, list[str]]:  # (every figure asks, for every pair of axes)
        out: dict[str, list[str]] = {}
        for optimizer, rows in self.trials.groupby("optimizer", sort=False):
            out[optimizer] = [field for field in (h.name for h in HYPERPARAMETERS if h.numeric)
                              if field in rows and rows[field].notna().any()
                              and rows[field].nunique(dropna=True) > 1]
        return out


def load_study(study_dir: Path, within: tuple[float, ...] | None = None,
               absolute: bool = False) -> StudyData:
    """The study's tables; ``ReportError`` if the folder is missing or holds no trials.
    ``within``/``absolute``: the tolerances ε its comparisons judge by (default 1% and 5% of
    the best)."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise ReportError(f"no study at {study_dir}")
    results = StudyResults(study_dir)
    try:
        trials = results.trials().to_pandas()
        curves = results.curves().to_pandas()
    except ResultsUnreadable as e:  # a damaged part file: one line, not a traceback
        raise ReportError(str(e)) from None
    if trials.empty:
        raise ReportError(f"study {study_dir} has no finished trials yet (run it first)")
    lost = _without_curves(trials, curves)
    if lost:
        raise ReportError(f"{lost} of the {len(trials)} trials of study {study_dir} have no "
                          f"curves (a file of {results.curves_dir} deleted or lost); the "
                          f"next `lookbench run` of the study runs them again (or restore "
                          f"the file from a backup)")
    definition = _definition(study_dir)
    sampler = str(definition.get("sampler", "unknown"))
    facts: dict = {k: (float(v) if isinstance(v, (int, float)) else None)
                   for k, v in definition.items()
                   if k in ("loss_floor", "initial_loss", "chance_level")}
    if isinstance(definition.get("deterministic"), bool):
        facts["deterministic"] = definition["deterministic"]
    seeds = definition.get("seeds")
    cap = definition.get("max_seeds")
    plan = (int(seeds) if isinstance(seeds, int) else int(trials["seed"].nunique()),
            int(cap) if isinstance(cap, int) else None)
    return StudyData(name=study_dir.name, trials=trials, curves=curves, sampler=sampler,
                     facts=facts, cost=_cost(study_dir), seed_plan=plan, within=within,
                     absolute=absolute)


def _without_curves(trials: pd.DataFrame, curves: pd.DataFrame) -> int:
    """How many trials that trained an epoch at least have no rows in the curves table (as
    ``StudyResults.without_curves`` counts them; a trial that ended before its first epoch
    has none). The report would draw their curves as missing and its figures fail; the next
    ``lookbench run`` runs them again."""
    if "epochs_done" not in trials:
        return 0
    trained = trials.loc[trials["epochs_done"].fillna(0) > 0, "trial"]
    return int((~trained.isin(curves["trial"])).sum()) if len(trained) else 0


COST_FILE = "cost.json"  # what the study's timing pass measured (lookbench.execution.cost)


def _cost(study_dir: Path) -> dict | None:
    """The study's ``cost.json``; ``None`` where it was never measured or cannot be read."""
    try:
        content = json.loads((study_dir / COST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _definition(study_dir: Path) -> dict:
    """``study.json`` as ``lookbench.study.definition.read_file`` reads it (empty for a folder
    without one), without importing the study machinery (pydantic models, the sampler's
    distributions) that the report does not need."""
    try:
        content = json.loads((study_dir / DEFINITION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}
