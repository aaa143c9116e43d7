"""The answer in words and as data: the verdict sentences at the top of every page and the
``<study>.json`` summary beside it, both built from :class:`~lookbench.report.analysis.Analysis`
so they can never disagree with the tables and figures."""

from __future__ import annotations

import math
from typing import Any

from lookbench.hparams import label
from lookbench.report.analysis import Analysis
from lookbench.report.data import StudyData
from lookbench.report.matched import Matched, Unmatched, describe_setting
from lookbench.report.metrics import EPSILONS, EXPLANATIONS, SHARED, Difference, eps_key

PRIMARY = 0.01  # the ε the headline counts learning rates at


def fmt_score(v: float | None, data: StudyData) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.2%}" if data.score_is_fraction else f"{v:.4g}"


def fmt_diff(v: float, data: StudyData) -> str:
    return f"{v * 100:+.2f} points" if data.score_is_fraction else f"{v:+.3g}"


def fmt_interval(d: Difference, data: StudyData, ratio: bool = False) -> str:
    """``+1.20 points [+0.40, +2.00]``; ``(one seed: no interval)`` when there is none."""
    if ratio:
        text = f"{d.estimate:.2f}×"
        return text + (f" [{d.low:.2f}–{d.high:.2f}]" if d.low is not None
                       else " (one run: no interval)")
    text = fmt_diff(d.estimate, data)
    if d.low is None:
        return text + " (one seed: no interval)"
    lo, hi = (fmt_diff(d.low, data), fmt_diff(d.high, data)) if not data.score_is_fraction else (
        f"{d.low * 100:+.2f}", f"{d.high * 100:+.2f}")
    return f"{text} [{lo}, {hi}]"


def _direction(d: Difference, maximize: bool) -> str:
    """'better', 'worse' or 'no clear difference' for Lookahead, by the interval."""
    if not d.clear:
        return "unclear"
    better = d.estimate > 0 if maximize else d.estimate < 0
    return "better" if better else "worse"


def signed(n: int) -> str:
    """``+2``, ``-1``, and ``0`` (not ``+0``)."""
    return f"{n:+d}" if n else "0"


def _lr_phrase(side, eps: float, total: int) -> str:
    """``3 of 7 learning rates (1.0 decades)``."""
    n = len(side.lr_good[eps_key(eps)])
    span = side.span(eps)
    return f"{n} of {total} learning rates" + (f" ({span:.1f} decades)"
                                              if span is not None and n > 1 else "")


def matched_sentences(m: Matched, data: StudyData, seeds: int) -> list[str]:
    axes = [label(c) for i, c in enumerate(SHARED) if c == "lr" or len({k[i] for k in m.keys}) > 1]
    total = len(m.learning_rates)
    b = m.baseline
    out = [
        f"On the {m.configurations} settings of {' × '.join(axes)} that both ran, Lookahead "
        f"({describe_setting(m.setting)}) trains to within 1% of the study's best score at "
        f"{_lr_phrase(m.lookahead, PRIMARY, total)}, {b} at "
        f"{_lr_phrase(m.base, PRIMARY, total)}."
    ]
    diff, rng = m.lr_count_difference[eps_key(PRIMARY)]
    d_text = signed(diff)
    if rng is None:
        out.append(f"With one seed there is no interval, so the difference of {d_text} "
                   "learning rates is not a verdict.")
    else:
        span = f"plausible range {signed(rng[0])} to {signed(rng[1])}"
        if rng[0] > 0:
            out.append(f"Lookahead tolerates more of the learning-rate range: {d_text} learning "
                       f"rates ({span} over the seeds' intervals).")
        elif rng[1] < 0:
            out.append(f"{b} tolerates more of the learning-rate range: {d_text} learning rates "
                       f"for Lookahead ({span}).")
        else:
            out.append(f"No clear difference in how many learning rates train to within 1%: "
                       f"{d_text} for Lookahead, {span}.")
    if m.score_difference is not None:
        d, best = m.score_difference, m.best_difference
        direction = _direction(d, data.maximize)
        if direction == "unclear":
            text = (f"At the same settings there is no clear difference in score on average: "
                    f"{fmt_interval(d, data)}")
        else:
            text = (f"At the same settings Lookahead scores {direction} than {b} on average: "
                    f"{fmt_interval(d, data)}")
        text += (f" (Lookahead − {b}, paired over {d.n} seeds)" if d.n > 1
                 else f" (Lookahead − {b})")
        if best is not None:
            text += f"; at each one's best setting: {fmt_interval(best, data)}"
        out.append(text + ".")
    if m.cost_ratio is not None:
        out.append(f"Lookahead costs {fmt_interval(m.cost_ratio, data, ratio=True)} {b}'s wall "
                   "time per epoch (same settings, seed and device).")
    elif _in_populations(data):
        out.append("Wall time is not compared: the trials trained in populations, whose "
                   "members share their time (run with --population 1 to measure what "
                   "Lookahead costs).")
    return out


def _in_populations(data: StudyData) -> bool:
    """Whether any of the study's trials trained in a population (its wall time shared)."""
    if "population" not in data.trials:
        return False
    return bool((data.trials["population"].fillna(1) > 1).any())


def unmatched_sentences(u: Unmatched, analysis: Analysis, data: StudyData) -> list[str]:
    out = [u.reason]
    if u.shared_difference is not None:
        out.append(f"At that configuration Lookahead − {u.baseline}: "
                   f"{fmt_interval(u.shared_difference, data)}.")
    best = analysis.best_differences.get(u.baseline)
    if best is not None:
        out.append(f"Each tuned on its own grid, Lookahead's best − {u.baseline}'s best: "
                   f"{fmt_interval(best, data)} (paired over seeds; a maximum over more "
                   "configurations tends to be higher, so this is not a robustness measure).")
    return out


def sampler_sentences(analysis: Analysis, data: StudyData) -> list[str]:
    """Random and TPE studies: no shared grid; say what their numbers can mean."""
    out = []
    for b in analysis.baselines:
        best = analysis.best_differences.get(b)
        if analysis.sampler == "tpe":
            out.append(f"TPE chose where to sample, concentrating where it found good results, so "
                       f"shares and medians describe where it searched, not how wide the good "
                       f"region is; Lookahead and {b} are compared by the best each found.")
        else:
            out.append("Each optimizer's configurations were drawn at random from its own "
                       "ranges (Lookahead's include k and α), so there is no shared grid; the "
                       "shares within 1%/5% are the chance that a random draw from each one's "
                       "ranges is that good, and the expected-best curves compare them as a "
                       "random search would use them.")
        if best is not None:
            out.append(f"Best found, Lookahead − {b}: {fmt_interval(best, data)} (paired over "
                       "seeds).")
    return out


def sentences(analysis: Analysis, data: StudyData) -> list[str]:
    """The verdict, two to four plain sentences per baseline."""
    if not analysis.comparisons:
        return ["This study holds no Lookahead and baseline pair to compare."]
    if analysis.sampler in ("random", "tpe") and not any(
            isinstance(c, Matched) for c in analysis.comparisons):
        return sampler_sentences(analysis, data)
    seeds = int(data.trials["seed"].nunique())
    out: list[str] = []
    for c in analysis.comparisons:
        out += (matched_sentences(c, data, seeds) if isinstance(c, Matched)
                else unmatched_sentences(c, analysis, data))
    return out


def _difference_json(d: Difference | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"estimate": d.estimate, "low": d.low, "high": d.high, "n": d.n,
            "clear": d.clear}


def _side_json(side, configs: int) -> dict[str, Any]:
    r = side.robustness
    keys = [eps_key(e) for e in EPSILONS]
    return {
        "configs": configs,
        "best": r.best, "best_interval": list(r.best_interval) if r.best_interval else None,
        "median": r.median, "divergence_rate": r.divergence_rate,
        "share_within": {k: r.good[k] / configs for k in keys},
        "share_within_range": ({k: [lo / configs, hi / configs]
                                for k, (lo, hi) in r.good_range.items()}
                               if r.good_range else None),
        "expected_configs_to_good": {k: side.expected_to_good[k] for k in keys},
        "lr_good": {k: side.lr_good[k] for k in keys},
        "lr_span_decades": {k: side.span(float(k)) for k in keys},
        "wall_s_per_epoch": side.wall_per_epoch,
    }


def _comparison_json(c: Matched | Unmatched) -> dict[str, Any]:
    if isinstance(c, Unmatched):
        return {"baseline": c.baseline, "matched": False, "reason": c.reason,
                "shared_difference": _difference_json(c.shared_difference)}
    setting = {k: (v.item() if hasattr(v, "item") else v) for k, v in c.setting.items()}
    return {
        "baseline": c.baseline, "matched": True,
        "lookahead_setting": {**setting, "reason": c.setting_reason},
        "baseline_setting": {k: (v.item() if hasattr(v, "item") else v)
                             for k, v in c.baseline_setting.items()},
        "configurations": c.configurations, "learning_rates": c.learning_rates,
        "optimizers": {"lookahead": _side_json(c.lookahead, c.configurations),
                       c.baseline: _side_json(c.base, c.configurations)},
        "differences": {
            "mean_score": _difference_json(c.score_difference),
            "best_score": _difference_json(c.best_difference),
            "learning_rates_within": {k: {"estimate": d, "range": list(r) if r else None}
                                      for k, (d, r) in c.lr_count_difference.items()},
            "wall_time_ratio": _difference_json(c.cost_ratio),
        },
    }


def summary(analysis: Analysis, data: StudyData) -> dict[str, Any]:
    """The JSON summary written beside the page (``<study>.json``)."""
    text = " ".join(sentences(analysis, data))
    comparisons = [_comparison_json(c) for c in analysis.comparisons]
    matched = next((c for c in comparisons if c.get("matched")), None)
    return {
        "study": data.name, "task": data.task, "metric": data.metric,
        "higher_is_better": data.maximize, "sampler": analysis.sampler,
        "seeds": int(data.trials["seed"].nunique()),
        "reference_best": analysis.scoring.best, "loss_floor": analysis.scoring.floor,
        "optimizers": {
            r.optimizer: {
                "configs": r.configurations, "best": r.best,
                "best_interval": list(r.best_interval) if r.best_interval else None,
                "median": r.median, "divergence_rate": r.divergence_rate,
                "share_within": {eps_key(e): r.share(e) for e in EPSILONS},
            } for r in analysis.whole},
        "matched": matched,
        "comparisons": comparisons,
        "best_differences": {b: _difference_json(d)
                             for b, d in analysis.best_differences.items()},
        "definitions": EXPLANATIONS,
        "verdict": text,
    }
