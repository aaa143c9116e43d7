"""The matched comparison: Lookahead and its baseline on the same values of the
hyperparameters they share, as the paper's section 5.5 compares them.

Whole grids of different sizes cannot be compared: Lookahead's grid usually adds k × α, so its
"best" is a maximum over more configurations and its shares count configurations the baseline
never had. The *matched set* is defined once here and used by the verdict, the JSON summary and
the figures:

- Lookahead at **one setting of its own hyperparameters** (k, α, inner-state policy): the
  paper's default k = 5, α = 0.5 when the grid holds it, else the setting that covers the most
  shared configurations, ties broken by the best median score (the page says which);
- the baseline's configurations and Lookahead's at that setting, **restricted to the values of
  the shared hyperparameters (inner lr, momentum, weight decay) that both grids hold**: the
  configurations present for both.

A matched set needs at least two shared configurations; with fewer (the paper's CIFAR grids fix
Lookahead's lr), there is nothing to rank robustness on and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lookbench.hparams import format_config
from lookbench.report.metrics import (
    AVERAGING_OWN,
    EPSILONS,
    LOOKAHEAD_OWN,
    SHARED,
    Difference,
    Robustness,
    eps_key,
    expected_configs_to_good,
    good_learning_rates,
    matching,
    paired_difference,
    robustness_of,
    seed_paired_difference,
    span_decades,
    t_interval,
)

PAPER_K, PAPER_ALPHA = 5, 0.5
MIN_MATCHED = 2
_NONE = -1.0  # stands for a missing shared value (no weight decay) when matching


def _shared_key(df: pd.DataFrame) -> pd.Series:
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


@dataclass(frozen=True)
class OptimizerSide:
    """One optimizer's figures on the matched set."""

    robustness: Robustness
    lr_good: dict[str, list[float]]  # ε key -> learning rates with an ε-good configuration
    lr_good_range: dict[str, tuple[int, int]] | None  # ε key -> plausible count of such lrs
    expected_to_good: dict[str, float | None]
    wall_per_epoch: float | None  # median seconds per epoch over its matched runs

    def span(self, eps: float) -> float | None:
        return span_decades(self.lr_good[eps_key(eps)])


@dataclass(frozen=True)
class Matched:
    """Lookahead against one baseline on their matched set."""

    baseline: str
    setting: dict
    setting_reason: str
    keys: list[tuple]  # the shared configurations, as (lr, momentum, weight_decay)
    learning_rates: list[float]  # the shared inner learning rates
    lookahead: OptimizerSide
    base: OptimizerSide
    lookahead_scores: pd.DataFrame  # annotated config scores at the setting, matched rows only
    base_scores: pd.DataFrame
    score_difference: Difference | None  # mean over the matched set, paired over seeds
    best_difference: Difference | None  # each one's best matched configuration, paired
    lr_count_difference: dict[str, tuple[int, tuple[int, int] | None]] = field(
        default_factory=dict)  # ε key -> (difference, plausible range or None)
    cost_ratio: Difference | None = None  # wall time per epoch, Lookahead / baseline
    baseline_setting: dict = field(default_factory=dict)  # its own swept values (EMA's decay)

    @property
    def configurations(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class Unmatched:
    """Why a baseline has no matched set, and the one shared configuration if any."""

    baseline: str
    reason: str
    shared_difference: Difference | None = None  # at a single shared configuration
    shared_key: tuple | None = None


def _choose_setting(la: pd.DataFrame, base_keys: set,
                    maximize: bool) -> tuple[dict, str, set] | None:
    """The Lookahead setting to match on, why, and its shared keys; ``None`` if no setting
    shares at least ``MIN_MATCHED`` configurations with the baseline."""
    candidates = []
    for setting, group in la.groupby(_setting_keys(la), sort=True):
        keys = set(group["shared"]) & base_keys
        if len(keys) < MIN_MATCHED:
            continue
        matched = group[group["shared"].isin(keys)]
        candidates.append((dict(zip(LOOKAHEAD_OWN, setting)), keys, matched))
    if not candidates:
        return None

    def median(c: tuple) -> float:
        m = float(np.median(c[2]["score"]))
        return m if maximize else -m

    paper = [c for c in candidates if c[0]["k"] == PAPER_K and not c[0]["alpha_adaptive"]
             and c[0]["alpha"] is not None and abs(c[0]["alpha"] - PAPER_ALPHA) < 1e-12]
    if paper:
        chosen = max(paper, key=lambda c: (len(c[1]), median(c)))
        reason = "the paper's default k = 5, α = 0.5"
        if len(paper) > 1:
            reason += f" ({chosen[0]['inner_state']}, the inner-state policy with the best median)"
    else:
        chosen = max(candidates, key=lambda c: (len(c[1]), median(c)))
        reason = ("the grid has no k = 5, α = 0.5 over the shared settings, so the setting that "
                  "covers the most of them, with the best median score")
    return chosen[0], reason, chosen[1]


def _baseline_setting(base: pd.DataFrame, la_keys: set, maximize: bool
                      ) -> tuple[pd.DataFrame, dict]:
    """A baseline that sweeps hyperparameters of its own (an EMA's decay, an average's start)
    is compared at one setting of them, as Lookahead is: the one covering the most of
    Lookahead's shared configurations, ties broken by the best median score. Returns its
    configurations at that setting and the setting (empty when it sweeps none)."""
    own = [c for c in AVERAGING_OWN if c in base and base[c].nunique(dropna=True) > 1]
    if not own or base.empty:
        return base, {}

    def rank(item: tuple) -> tuple[int, float]:
        group = item[1]
        median = float(np.median(group["score"]))
        return len(set(group["shared"]) & la_keys), median if maximize else -median

    values, group = max(base.groupby(own, dropna=False, sort=True), key=rank)
    values = values if isinstance(values, tuple) else (values,)
    return group, {c: (None if pd.isna(v) else v) for c, v in zip(own, values)}


def _per_seed(runs: pd.DataFrame, keys: list[tuple]) -> pd.DataFrame:
    """Run values as a (shared key × seed) table."""
    table = runs.pivot_table(index="shared", columns="seed", values="value", aggfunc="mean")
    return table.reindex(keys)


def trained_alone(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs whose wall time is their own: not trained in a population (whose members
    share its time), or recorded before populations existed (no column, or null)."""
    if "population" not in runs:
        return runs
    size = pd.to_numeric(runs["population"], errors="coerce")
    return runs[size.isna() | (size <= 1)]


def _cost(la_runs: pd.DataFrame, base_runs: pd.DataFrame) -> Difference | None:
    """Lookahead's wall time per epoch ÷ the baseline's at the same shared configuration,
    seed and device: the geometric mean ratio with a t-interval over those pairs (of runs
    trained alone: a population's members share its time)."""
    def per_epoch(runs: pd.DataFrame) -> pd.DataFrame:
        runs = trained_alone(runs)
        ok = runs[(runs["state"] == "complete") & (runs["epochs_done"] > 0)]
        return ok.assign(per_epoch=ok["wall_s"] / ok["epochs_done"])[
            ["shared", "seed", "device", "per_epoch"]]

    pairs = per_epoch(la_runs).merge(per_epoch(base_runs), on=["shared", "seed", "device"],
                                     suffixes=("_la", "_b"))
    pairs = pairs[(pairs["per_epoch_la"] > 0) & (pairs["per_epoch_b"] > 0)]
    if pairs.empty:
        return None
    logs = np.log(pairs["per_epoch_la"].to_numpy(float) / pairs["per_epoch_b"].to_numpy(float))
    ci = t_interval(logs)
    est = float(np.exp(logs.mean()))
    if ci is None:
        return Difference(est, None, None, n=len(logs), no_difference=1.0)
    return Difference(est, float(np.exp(ci[0])), float(np.exp(ci[1])), n=len(logs),
                      no_difference=1.0)


def _side(name: str, annotated: pd.DataFrame, runs: pd.DataFrame, maximize: bool) -> OptimizerSide:
    rob = robustness_of(name, annotated, runs, maximize)
    lr_good = {eps_key(e): good_learning_rates(annotated, f"good_{eps_key(e)}") for e in EPSILONS}
    lr_range = None
    if rob.good_range is not None:
        lr_range = {eps_key(e): (len(good_learning_rates(annotated, f"sure_{eps_key(e)}")),
                                 len(good_learning_rates(annotated, f"maybe_{eps_key(e)}")))
                    for e in EPSILONS}
    alone = trained_alone(runs)
    done = alone[(alone["state"] == "complete") & (alone["epochs_done"] > 0)]
    wall = float((done["wall_s"] / done["epochs_done"]).median()) if len(done) else None
    return OptimizerSide(
        robustness=rob, lr_good=lr_good, lr_good_range=lr_range,
        expected_to_good={eps_key(e): expected_configs_to_good(len(annotated),
                                                               rob.good[eps_key(e)])
                          for e in EPSILONS},
        wall_per_epoch=wall,
    )


def compare(annotated: pd.DataFrame, runs: pd.DataFrame, baseline: str,
            maximize: bool) -> Matched | Unmatched:
    """Lookahead against ``baseline``. ``annotated``: config scores of the study with
    ``metrics.annotate``'s columns; ``runs``: the trials table with each run's ``value``."""
    la = annotated[annotated["optimizer"] == "lookahead"].copy()
    base = annotated[annotated["optimizer"] == baseline].copy()
    la["shared"], base["shared"] = _shared_key(la), _shared_key(base)
    base, base_setting = _baseline_setting(base, set(la["shared"]), maximize)
    base_keys = set(base["shared"])
    chosen = _choose_setting(la, base_keys, maximize) if len(la) else None
    if chosen is None:
        return _unmatched(la, runs, baseline, base_keys, maximize)
    setting, reason, keyset = chosen
    target = tuple(setting[c] for c in LOOKAHEAD_OWN)
    at_setting = la[_setting_keys(la).map(lambda t: t == target)]
    la_m = at_setting[at_setting["shared"].isin(keyset)].sort_values(SHARED)
    base_m = base[base["shared"].isin(keyset)].sort_values(SHARED)
    keys = list(base_m["shared"])

    runs = runs.assign(shared=_shared_key(runs))
    setting_mask = matching(runs, setting)
    la_runs = runs[(runs["optimizer"] == "lookahead") & setting_mask & runs["shared"].isin(keyset)]
    base_runs = runs[(runs["optimizer"] == baseline) & runs["shared"].isin(keyset)
                     & matching(runs, base_setting)]

    la_side = _side("lookahead", la_m, la_runs, maximize)
    base_side = _side(baseline, base_m, base_runs, maximize)

    score_diff = best_diff = None
    la_table, base_table = _per_seed(la_runs, keys), _per_seed(base_runs, keys)
    seeds = [s for s in la_table.columns if s in base_table.columns
             and la_table[s].notna().all() and base_table[s].notna().all()]
    if seeds:
        score_diff = paired_difference((la_table[seeds] - base_table[seeds]).mean(axis=0))
        la_best = la_m.iloc[int(np.argmax(la_m["score"]) if maximize
                                else np.argmin(la_m["score"]))]["shared"]
        b_best = base_m.iloc[int(np.argmax(base_m["score"]) if maximize
                                 else np.argmin(base_m["score"]))]["shared"]
        best_diff = paired_difference(la_table.loc[[la_best], seeds].to_numpy()[0]
                                      - base_table.loc[[b_best], seeds].to_numpy()[0])
    counts = {}
    for e in EPSILONS:
        key = eps_key(e)
        diff = len(la_side.lr_good[key]) - len(base_side.lr_good[key])
        rng = None
        if la_side.lr_good_range is not None and base_side.lr_good_range is not None:
            (la_lo, la_hi), (b_lo, b_hi) = la_side.lr_good_range[key], base_side.lr_good_range[key]
            rng = (la_lo - b_hi, la_hi - b_lo)
        counts[key] = (diff, rng)
    return Matched(
        baseline=baseline, setting=setting, setting_reason=reason, keys=keys,
        learning_rates=sorted({k[0] for k in keys}), lookahead=la_side, base=base_side,
        lookahead_scores=la_m, base_scores=base_m, score_difference=score_diff,
        best_difference=best_diff, lr_count_difference=counts,
        cost_ratio=_cost(la_runs, base_runs), baseline_setting=base_setting,
    )


def _unmatched(la: pd.DataFrame, runs: pd.DataFrame, baseline: str, base_keys: set,
               maximize: bool) -> Unmatched:
    shared = sorted(set(la["shared"]) & base_keys) if len(la) else []
    if not shared:
        return Unmatched(baseline, f"Lookahead and {baseline} share no configuration of the inner "
                                   "optimizer's hyperparameters, so their robustness "
                                   "cannot be compared on equal terms; each is shown over its own "
                                   "grid.")
    key = shared[0]
    runs = runs.assign(shared=_shared_key(runs))
    at = runs[runs["shared"] == key]
    la_runs = at[at["optimizer"] == "lookahead"]
    # Lookahead's best setting at the shared point, against the baseline there, per seed.
    la_cfg = la[la["shared"] == key]
    best = la_cfg.iloc[int(np.argmax(la_cfg["score"]) if maximize else np.argmin(la_cfg["score"]))]
    diff = seed_paired_difference(la_runs[matching(la_runs, best[LOOKAHEAD_OWN])],
                                  at[at["optimizer"] == baseline])
    where = format_config({c: v for c, v in zip(SHARED, key) if v != _NONE})
    return Unmatched(baseline, f"Lookahead and {baseline} share only one configuration ({where}), "
                               "so their robustness cannot be ranked from this study's grids: "
                               "each is shown over its own grid, and the two are compared at "
                               "that configuration only.",
                     shared_difference=diff, shared_key=key)
