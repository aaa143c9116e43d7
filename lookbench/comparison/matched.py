"""The matched comparison: Lookahead and one baseline on the same values of the hyperparameters
they share, as the paper's section 5.5 compares them, worked out as a closed world.

Whole grids of different sizes cannot be compared: Lookahead's grid usually adds k × α, so its
"best" is a maximum over more configurations and its shares count configurations the baseline
never had. The *matched set* is:

- Lookahead at **one setting of its own hyperparameters** (k, α, inner-state policy): the
  paper's default k = 5, α = 0.5 when the grid holds it, else the setting that covers the most
  shared configurations, ties broken by the best median score (the page says so: a choice made
  on the data favours Lookahead a little);
- a baseline that sweeps hyperparameters of its own (an EMA's decay) at one setting of them,
  chosen the same way;
- both **restricted to the values of the shared hyperparameters (inner lr, momentum, weight
  decay, ...) that both ran**.

**A comparison is a closed world**: every number in it (its best score, the value a failed run
stands in at, its per-sweep figures, its colour scale) is a function of its own runs only, so
runs outside it (more k × α points, a learning rate only one optimizer ran, another baseline)
cannot move it (``tests/report/test_closed_world.py``). The verdict's figures are worked out
per sweep (one seed's runs) and summarised over sweeps in :mod:`lookbench.comparison.sweeps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lookbench import stats
from lookbench.comparison.metrics import (
    AVERAGING_OWN,
    LOOKAHEAD_OWN,
    SHARED,
    completed_values,
    config_scores,
    expected_configs_to_good,
    matching,
    span_decades,
)
from lookbench.comparison.rules import Rules, eps_key
from lookbench.comparison.sweeps import (
    Line,
    SweepTable,
    good_runs,
    line,
    lines,
    side_interval,
    statistics,
    sweep_best,
)
from lookbench.hparams import format_config

PAPER_K, PAPER_ALPHA = 5, 0.5
MIN_MATCHED = 2
_NONE = -1.0  # stands for a missing shared value (no weight decay) when matching
SLOW_EMA_WEIGHT = 0.01  # an EMA whose start still weighs more than this at the end is too slow
EMA_DEFAULT_DECAY = 0.999  # lookbench.optim.AveragedOptimizer's default (torch-free copy)


def shared_values(df: pd.DataFrame) -> pd.Series:
    """The shared hyperparameters of each row as one hashable key (missing values match)."""
    cols = [df[c].astype(float).fillna(_NONE).round(12) for c in SHARED]
    return pd.Series(list(zip(*cols)), index=df.index)


def _setting_keys(df: pd.DataFrame) -> pd.Series:
    """Each row's Lookahead setting (k, α, inner-state policy) as one hashable key, missing
    values as ``None``."""
    cols = [df[c].astype(object).where(df[c].notna(), None) for c in LOOKAHEAD_OWN]
    return pd.Series(list(zip(*cols)), index=df.index, dtype=object)


def describe_setting(setting: dict) -> str:
    """``k = 5, α = 0.5, maintain`` (or ``α adaptive``)."""
    alpha = "α adaptive" if setting.get("alpha_adaptive") else f"α = {setting['alpha']:g}"
    state = setting.get("inner_state") or "maintain"
    return f"k = {int(setting['k'])}, {alpha}, {state}"


def ranking_scores(runs: pd.DataFrame, metric: str, maximize: bool) -> pd.Series:
    """Each run's final metric with a failed run at the worst possible value (±inf): what a
    choice between settings ranks by, with no stand-in value that other runs could move."""
    values = runs["final_" + metric].astype(float)
    bad = (runs["state"] != "complete") | ~np.isfinite(values.fillna(np.nan))
    return values.mask(bad, -np.inf if maximize else np.inf)


def _median_of_configs(runs: pd.DataFrame, metric: str, maximize: bool) -> float:
    """The median over configurations of their mean ranking score (higher is better)."""
    if runs.empty:
        return -np.inf
    scored = runs.assign(_rank=ranking_scores(runs, metric, maximize))
    means = scored.groupby(list(SHARED), dropna=False)["_rank"].mean()
    m = float(np.median(means.to_numpy(float)))
    return m if maximize else -m


@dataclass(frozen=True)
class Failures:
    """How a side's runs ended: shares of all its runs in the comparison."""

    runs: int
    diverged: float  # diverged (NaN/inf or blow-up)
    failed: float  # an error of the trial
    untrained: float  # completed no better than chance / the loss at initialisation

    @property
    def total(self) -> float:
        return self.diverged + self.failed + self.untrained


@dataclass(frozen=True)
class Side:
    """One optimizer's figures in a comparison (each per sweep, as a median with an interval)."""

    name: str
    configurations: int
    lrs: dict[str, stats.Interval]  # ε key -> learning rates within ε in a sweep
    good: dict[str, stats.Interval]  # ε key -> configurations within ε in a sweep
    lr_good: dict[str, list[float]]  # ε key -> learning rates within ε in at least half the sweeps
    best: stats.Interval  # its best setting's score in a sweep
    best_config: dict  # its best configuration by mean score (shared hyperparameters)
    median: float  # median over its settings of their mean score
    failures: Failures
    edge: str | None  # "lowest"/"highest": its best learning rate is at that end of the grid

    def span(self, eps: float) -> float | None:
        return span_decades(self.lr_good[eps_key(eps)])

    def share(self, eps: float) -> stats.Interval:
        """Share of its configurations within ε in a sweep."""
        g, n = self.good[eps_key(eps)], max(self.configurations, 1)
        return stats.Interval(g.estimate / n, None if g.low is None else g.low / n,
                              None if g.high is None else g.high / n, g.n, g.coverage,
                              g.spread / n)

    def expected_to_good(self, eps: float) -> float | None:
        """Expected configurations drawn at random without replacement until the first ε-good
        one, in a typical sweep: (N + 1)/(G + 1)."""
        return expected_configs_to_good(self.configurations, self.good[eps_key(eps)].estimate)


@dataclass(frozen=True)
class Cost:
    """What Lookahead costs against one baseline, from the study's timing pass
    (``<study>/cost.json``)."""

    ratio: stats.Interval | None  # Lookahead's time per step ÷ the baseline's
    extra_bytes: int | None  # Lookahead's optimizer state − the baseline's
    device: str | None
    skipped: str | None = None  # why there is no measurement
    step_s: dict[str, float] = field(default_factory=dict)  # optimizer -> median s per step
    state_bytes: dict[str, int] = field(default_factory=dict)  # optimizer -> state bytes


@dataclass(frozen=True)
class Matched:
    """Lookahead against one baseline on their matched set."""

    baseline: str
    setting: dict
    setting_reason: str
    setting_chosen_on_data: bool  # picked by the best median: a choice that favours Lookahead
    keys: list[tuple]  # the shared configurations
    learning_rates: list[float]  # the shared inner learning rates
    rules: Rules
    stand_in: float  # what a failed run of this comparison scores
    best: float  # the comparison's best configuration score (by mean; colours)
    seeds: list[int]  # the sweeps: seeds every shared configuration of both sides ran
    level: float  # coverage each interval aims for (less than 95% per look when sequential)
    lookahead: Side
    base: Side
    lookahead_scores: pd.DataFrame  # per configuration: mean score, seed range, gap, good share
    base_scores: pd.DataFrame
    lines: dict[str, Line]  # "lrs@ε", "mean", "best": Lookahead − baseline
    cost: Cost | None = None
    baseline_setting: dict = field(default_factory=dict)  # its own swept values (EMA's decay)
    baseline_setting_chosen_on_data: bool = False
    flags: list[str] = field(default_factory=list)  # what a careful reader should know

    @property
    def configurations(self) -> int:
        return len(self.keys)

    @property
    def headline_line(self) -> Line:
        return self.lines[f"lrs@{eps_key(self.rules.primary)}"]

    @property
    def label(self) -> str:
        """The comparison's verdict, from its headline figure (learning rates within the
        primary ε): lookahead_better, baseline_better, equivalent or undecided."""
        return self.headline_line.label

    @property
    def decided(self) -> bool:
        return all(ln.decided for ln in self.lines.values())


@dataclass(frozen=True)
class Unmatched:
    """Why a baseline has no matched set, and what can still be compared."""

    baseline: str
    reason: str
    shared: Line | None = None  # at the single shared configuration, Lookahead − baseline
    shared_key: tuple | None = None
    cost: Cost | None = None

    @property
    def label(self) -> str:
        return "undecided"


def _choose_setting(la: pd.DataFrame, base_keys: set, metric: str,
                    maximize: bool) -> tuple[dict, str, bool, set] | None:
    """The Lookahead setting to match on, why, whether the data chose it, and its shared
    keys; ``None`` if no setting shares at least ``MIN_MATCHED`` configurations."""
    candidates = []
    for setting, group in la.groupby(_setting_keys(la), sort=True):
        keys = set(group["shared"]) & base_keys
        if len(keys) < MIN_MATCHED:
            continue
        candidates.append((dict(zip(LOOKAHEAD_OWN, setting)), keys,
                           group[group["shared"].isin(keys)]))
    if not candidates:
        return None

    def rank(c: tuple) -> tuple[int, float]:
        return len(c[1]), _median_of_configs(c[2], metric, maximize)

    paper = [c for c in candidates if c[0]["k"] == PAPER_K and not c[0]["alpha_adaptive"]
             and c[0]["alpha"] is not None and abs(c[0]["alpha"] - PAPER_ALPHA) < 1e-12]
    if paper:
        chosen = max(paper, key=rank)
        reason = "the paper's default"
        on_data = len(paper) > 1
        if on_data:
            reason += f" ({chosen[0]['inner_state']}, the inner-state policy with the best median)"
    else:
        chosen = max(candidates, key=rank)
        on_data = len(candidates) > 1
        reason = ("the grid has no k = 5, α = 0.5 over the shared settings, so the setting that "
                  "covers the most of them" + (", with the best median score" if on_data else ""))
    return chosen[0], reason, on_data, chosen[1]


def _baseline_setting(base: pd.DataFrame, la_keys: set, metric: str,
                      maximize: bool) -> tuple[pd.DataFrame, dict, bool]:
    """A baseline that sweeps hyperparameters of its own (an EMA's decay, an average's start)
    is compared at one setting of them, as Lookahead is: the one covering the most of
    Lookahead's shared configurations, ties broken by the best median score. Returns its runs
    at that setting, the setting (empty when it sweeps none) and whether the data chose it."""
    own = [c for c in AVERAGING_OWN if c in base and base[c].nunique(dropna=True) > 1]
    if not own or base.empty:
        return base, {}, False

    def rank(item: tuple) -> tuple[int, float]:
        group = item[1]
        return (len(set(group["shared"]) & la_keys),
                _median_of_configs(group, metric, maximize))

    groups = list(base.groupby(own, dropna=False, sort=True))
    values, group = max(groups, key=rank)
    values = values if isinstance(values, tuple) else (values,)
    return group, {c: (None if pd.isna(v) else v) for c, v in zip(own, values)}, len(groups) > 1


def _table(la_runs: pd.DataFrame, base_runs: pd.DataFrame, keys: list[tuple], metric: str,
           rules: Rules, stand_in: float) -> tuple[SweepTable, dict[str, np.ndarray]]:
    """The comparison's runs as (configuration × seed) arrays, over the seeds every shared
    configuration of both sides ran (complete sweeps); also each side's raw final values."""
    def pivot(runs: pd.DataFrame, column: pd.Series) -> pd.DataFrame:
        return (runs.assign(_v=column).pivot_table(index="shared", columns="seed", values="_v",
                                                   aggfunc="first", dropna=False)
                .reindex(keys))

    tables, raw = {}, {}
    for side, runs in (("lookahead", la_runs), ("baseline", base_runs)):
        final = runs["final_" + metric].astype(float)
        complete = (runs["state"] == "complete") & np.isfinite(final.fillna(np.nan))
        tables[side] = (pivot(runs, final.where(complete)), pivot(runs, complete.astype(float)))
    seeds = [s for s in tables["lookahead"][1].columns
             if s in tables["baseline"][1].columns
             and tables["lookahead"][1][s].notna().all() and tables["baseline"][1][s].notna().all()]
    values, trained = {}, {}
    for side, (final, complete) in tables.items():
        f = final[seeds].to_numpy(float)
        done = complete[seeds].to_numpy(float) > 0
        values[side] = np.where(done, rules.cap(f), stand_in)
        trained[side] = done & rules.trained(np.where(done, f, np.nan))
        raw[side] = f
    lrs = np.array([k[0] for k in keys], dtype=float)
    return SweepTable(lrs, np.array(seeds), values, trained), raw


def _descriptive(runs: pd.DataFrame, metric: str, rules: Rules, stand_in: float,
                 table: SweepTable, side: str, keys: list[tuple]) -> pd.DataFrame:
    """Per configuration: mean score and seed range (with the comparison's stand-in), and in
    how many sweeps it was within each ε (its gap to the comparison's best is added once both
    sides are known)."""
    scores = config_scores(runs.drop(columns=["shared"]), metric, rules, stand_in)
    scores["shared"] = shared_values(scores)
    scores = scores.set_index("shared").reindex(keys).reset_index()
    sweep = sweep_best(table, rules)
    for eps in rules.within:
        good = good_runs(table, rules, side, eps, sweep)
        scores[f"good_share_{eps_key(eps)}"] = (good.mean(1) if good.shape[1]
                                                else np.full(len(keys), np.nan))
    return scores


def _side(name: str, side: str, table: SweepTable, per_sweep: dict[str, np.ndarray],
          scores: pd.DataFrame, runs: pd.DataFrame, metric: str, rules: Rules, level: float,
          minimum: float, maximize: bool) -> Side:
    lrs_of = {}
    for eps in rules.within:
        good = good_runs(table, rules, side, eps)
        half = good.mean(1) >= 0.5 if good.shape[1] else np.zeros(len(table.lrs), bool)
        lrs_of[eps_key(eps)] = sorted({float(v) for v in table.lrs[half]})
    s = scores["score"].to_numpy(float)
    best_i = int(np.argmax(s) if maximize else np.argmin(s))
    best_lr = float(table.lrs[best_i])
    every = sorted(set(map(float, table.lrs)))
    edge = None
    if len(every) > 2:
        edge = "lowest" if best_lr == every[0] else "highest" if best_lr == every[-1] else None
    final = runs["final_" + metric].astype(float)
    complete = (runs["state"] == "complete") & np.isfinite(final.fillna(np.nan))
    n = len(runs)
    untrained = complete & ~rules.trained(final.to_numpy())
    return Side(
        name=name, configurations=len(scores),
        lrs={eps_key(e): side_interval(per_sweep[f"{side}.lrs@{eps_key(e)}"], rules, level,
                                       minimum) for e in rules.within},
        good={eps_key(e): side_interval(per_sweep[f"{side}.good@{eps_key(e)}"], rules, level,
                                        minimum) for e in rules.within},
        lr_good=lrs_of,
        best=side_interval(per_sweep[f"{side}.best"], rules, level, minimum),
        best_config={c: v for c, v in zip(SHARED, scores.iloc[best_i]["shared"])
                     if v != _NONE},
        median=float(np.median(s)),
        failures=Failures(n, float((runs["state"] == "diverged").sum()) / max(n, 1),
                          float(((runs["state"] != "complete") & (runs["state"] != "diverged"))
                                .sum()) / max(n, 1),
                          float(untrained.sum()) / max(n, 1)),
        edge=edge,
    )


def _ema_flag(runs: pd.DataFrame, curves: pd.DataFrame | None, baseline: str,
              setting: dict) -> str | None:
    """An EMA whose starting weights still weigh more than 1% at the end of training averages
    mostly the early, untrained iterates: the baseline is then too slow for the budget."""
    if runs.empty or "decay" not in runs:
        return None
    decays = runs["decay"].dropna()
    decay = float(setting.get("decay") or (decays.iloc[0] if len(decays) else EMA_DEFAULT_DECAY))
    if (runs["optimizer"] != "ema").all():
        return None
    steps = None
    if curves is not None and "steps" in curves and len(curves):
        mine = curves[curves["trial"].isin(runs["trial"])]
        if len(mine):
            steps = float(mine["steps"].max())
    if not steps:
        return None
    start = runs["start"].dropna()
    steps -= float(start.iloc[0]) if len(start) else 0.0
    weight = decay ** max(steps, 0.0)
    if weight <= SLOW_EMA_WEIGHT:
        return None
    return (f"{baseline}'s decay {decay:g} is slow for the budget: after {steps:.0f} averaged "
            f"steps its first iterate still weighs {weight:.0%} of the average (the window "
            f"is about {1 / (1 - decay):.0f} steps); a faster decay may serve it better")


def compare(runs: pd.DataFrame, baseline: str, metric: str, rules: Rules,
            level: float = stats.LEVEL, minimum: float = stats.MINIMUM,
            cost: Cost | None = None, curves: pd.DataFrame | None = None,
            base_seeds: int | None = None) -> Matched | Unmatched:
    """Lookahead against ``baseline`` from the study's trials table (``runs``).
    ``base_seeds``: the seeds every configuration ran (a study that adds seeds adds them to
    the matched settings only); the settings are chosen on those, so that added seeds never
    change which settings they were added for."""
    maximize = rules.maximize
    runs = runs.assign(shared=shared_values(runs))
    la_all = runs[runs["optimizer"] == "lookahead"]
    base_all = runs[runs["optimizer"] == baseline]
    first = (lambda r: r[r["seed"] < base_seeds]) if base_seeds else (lambda r: r)
    base_first, base_setting, base_on_data = _baseline_setting(
        first(base_all), set(la_all["shared"]), metric, maximize)
    if base_setting:
        base_all = base_all[matching(base_all, base_setting)]
    base_keys = set(base_all["shared"])
    chosen = (_choose_setting(first(la_all), set(base_first["shared"]), metric, maximize)
              if len(la_all) else None)
    if chosen is None:
        return _unmatched(la_all, base_all, baseline, base_keys, metric, rules, level, minimum,
                          cost)
    setting, reason, on_data, keyset = chosen
    la_runs = la_all[matching(la_all, setting) & la_all["shared"].isin(keyset)]
    base_runs = base_all[base_all["shared"].isin(keyset)]
    keys = sorted(keyset)

    # The closed world: the stand-in comes from this comparison's completed runs only.
    stand_in = rules.stand_in(np.concatenate([completed_values(la_runs, metric),
                                              completed_values(base_runs, metric)]))
    table, _ = _table(la_runs, base_runs, keys, metric, rules, stand_in)
    per_sweep = statistics(table, rules)
    la_scores = _descriptive(la_runs, metric, rules, stand_in, table, "lookahead", keys)
    base_scores = _descriptive(base_runs, metric, rules, stand_in, table, "baseline", keys)
    means = np.concatenate([la_scores["score"], base_scores["score"]])
    clean = np.concatenate([la_scores["diverged"] == 0, base_scores["diverged"] == 0])
    pool = means[clean] if clean.any() else means
    best = float(pool.max() if maximize else pool.min())
    for frame in (la_scores, base_scores):
        frame["gap"] = rules.gap(frame["score"].to_numpy(float), best)

    la_side = _side("lookahead", "lookahead", table, per_sweep, la_scores, la_runs, metric,
                    rules, level, minimum, maximize)
    base_side = _side(baseline, "baseline", table, per_sweep, base_scores, base_runs, metric,
                      rules, level, minimum, maximize)
    flags = []
    for side in (la_side, base_side):
        if side.edge:
            flags.append(f"{side.name}'s best learning rate ({format_config(side.best_config)}) "
                         f"is the {side.edge} of the grid: extend the grid "
                         f"{'below' if side.edge == 'lowest' else 'above'} it to see where it "
                         "stops training well")
    if on_data:
        flags.append(f"Lookahead's setting ({describe_setting(setting)}) was picked by its best "
                     "median on these same runs, which favours Lookahead a little")
    if base_on_data:
        flags.append(f"{baseline}'s own setting ({format_config(base_setting)}) was picked by "
                     "its best median on these same runs, which favours it a little")
    slow = _ema_flag(base_runs, curves, baseline, base_setting)
    if slow:
        flags.append(slow)
    return Matched(
        baseline=baseline, setting=setting, setting_reason=reason, setting_chosen_on_data=on_data,
        keys=keys, learning_rates=sorted({float(k[0]) for k in keys}), rules=rules,
        stand_in=stand_in, best=best, seeds=[int(s) for s in table.seeds], level=level,
        lookahead=la_side, base=base_side, lookahead_scores=la_scores, base_scores=base_scores,
        lines=lines(per_sweep, rules, level, minimum), cost=cost, baseline_setting=base_setting,
        baseline_setting_chosen_on_data=base_on_data, flags=flags,
    )


def paired_line(a_runs: pd.DataFrame, b_runs: pd.DataFrame, metric: str, rules: Rules,
                level: float = stats.LEVEL, minimum: float = stats.MINIMUM,
                name: str = "shared") -> Line | None:
    """One configuration of each (or each one's chosen best) compared seed by seed: the
    median over the seeds both ran of ``a − b``, with its interval (the stand-in from these
    runs only). ``None`` when they share no seed."""
    stand_in = rules.stand_in(np.concatenate([completed_values(a_runs, metric),
                                              completed_values(b_runs, metric)]))

    def per_seed(runs: pd.DataFrame) -> pd.Series:
        final = pd.Series(rules.cap(runs["final_" + metric].astype(float).to_numpy()),
                          index=runs.index)
        ok = (runs["state"] == "complete") & np.isfinite(final.fillna(np.nan))
        return final.where(ok, stand_in).groupby(runs["seed"]).mean()

    a, b = per_seed(a_runs), per_seed(b_runs)
    both = a.index.intersection(b.index)
    if not len(both):
        return None
    diff = (a[both] - b[both]).to_numpy(float)
    pool = np.concatenate([a.to_numpy(float), b.to_numpy(float)])
    best = float(pool.max() if rules.maximize else pool.min())
    return line(name, diff, rules.margin(best), 1 if rules.maximize else -1, rules, level,
                minimum, scale=abs(best))


def _unmatched(la: pd.DataFrame, base: pd.DataFrame, baseline: str, base_keys: set,
               metric: str, rules: Rules, level: float, minimum: float,
               cost: Cost | None) -> Unmatched:
    shared = sorted(set(la["shared"]) & base_keys) if len(la) else []
    if not shared:
        return Unmatched(baseline, f"Lookahead and {baseline} share no configuration of the inner "
                                   "optimizer's hyperparameters, so their robustness "
                                   "cannot be compared on equal terms; each is shown over its own "
                                   "grid.", cost=cost)
    key = shared[0]
    at = la[la["shared"] == key]
    # Lookahead's best setting at the shared point (by its median ranking score).
    best_setting = max(at.groupby(_setting_keys(at), sort=True),
                       key=lambda item: _median_of_configs(item[1], metric, rules.maximize))[0]
    la_at = at[matching(at, dict(zip(LOOKAHEAD_OWN, best_setting)))]
    diff = paired_line(la_at, base[base["shared"] == key], metric, rules, level, minimum)
    where = format_config({c: v for c, v in zip(SHARED, key) if v != _NONE})
    return Unmatched(baseline, f"Lookahead and {baseline} share only one configuration ({where}), "
                               "so their robustness cannot be ranked from this study's grids: "
                               "each is shown over its own grid, and the two are compared at "
                               "that configuration only.",
                     shared=diff, shared_key=key, cost=cost)

