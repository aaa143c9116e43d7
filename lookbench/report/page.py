"""One self-contained HTML page per study (plotly.js embedded once, so it opens offline), an
index page when several studies are reported, and a side-by-side comparison of two."""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from lookbench import stats
from lookbench._messages import naming
from lookbench._version import version
from lookbench.comparison.matched import Matched, describe_setting
from lookbench.comparison.metrics import (
    EXPLANATIONS,
    UNSTABLE_FACTOR,
    config_keys,
    unstable,
)
from lookbench.comparison.rules import eps_key
from lookbench.hparams import HYPERPARAMETERS, format_config, label
from lookbench.hparams import NAMES as HPARAM_NAMES
from lookbench.report import figures, verdict
from lookbench.report.analysis import analysis_of
from lookbench.report.data import StudyData
from lookbench.report.paper import paper_results
from lookbench.report.units import Units, units_of

STYLE = """
*, *::before, *::after { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0 auto;
       max-width: 1280px; padding: 1rem clamp(0.6rem, 2.5vw, 2rem) 4rem; color: #222;
       overflow-wrap: break-word; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.4rem; border-bottom: 1px solid #ddd; }
.meta { color: #555; } table { border-collapse: collapse; margin: 0.8rem 0; }
th, td { padding: 0.3rem 0.7rem; border-bottom: 1px solid #e3e3e3; text-align: right; }
th:first-child, td:first-child { text-align: left; }
dl.grid dt { font-weight: 600; } dl.grid dd { margin: 0 0 0.4rem 1.2rem; }
.ci { color: #777; font-size: 0.85em; } .note { color: #555; max-width: 60rem; }
.pair { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1.5rem; }
.pair > div { min-width: 0; }
body.compare { max-width: 2400px; }
@media (max-width: 1500px) { .pair { grid-template-columns: minmax(0, 1fr); } }
.figure { margin: 0.5rem 0 1.5rem; width: 100%; max-width: 100%; min-width: 0; }
.figure .plotly-graph-div { width: 100%; max-width: 100%; }
p.caption { color: #444; font-size: 0.92rem; margin: 0.4rem 0 0.2rem; max-width: 72rem; }
.wide, .plot-scroll { overflow-x: auto; max-width: 100%; } .nb { white-space: nowrap; }
section.verdict { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px;
                  padding: 0.6rem clamp(0.6rem, 2vw, 1.2rem); margin-top: 1rem; }
section.verdict p { font-size: 1.05rem; margin: 0.5rem 0; max-width: 72rem; }
section.verdict p.headline { font-size: 1.2rem; font-weight: 600; }
tr.difference td { border-top: 2px solid #999; font-weight: 600; }
.diff.clear { text-decoration: underline; } table.configs { font-size: 0.85rem; }
table.sortable th { cursor: pointer; user-select: none; } table.sortable th:hover { color: #06c; }
"""
# Plotly's own: follow the window (``responsive``), no logo. Each figure's layout sets no width
# (``figures.titled``): it takes its container's, which the page's CSS keeps inside the viewport.
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


def _esc(text: object) -> str:
    return html.escape(str(text))


def _fig_html(fig: go.Figure, div_id: str) -> str:
    """A figure with its caption (``figures.caption``) above it, as HTML that wraps. The figure
    takes its box's width and follows the window; a heatmap whose numbers need more room
    than the box has (``min_width`` in its layout's meta) scrolls inside the box instead."""
    text = figures.caption(fig)
    meta = fig.layout.meta if isinstance(fig.layout.meta, dict) else {}
    least = meta.get("min_width")
    fig.update_layout(autosize=True, width=None, meta=None)
    height = fig.layout.height or 450
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config=PLOTLY_CONFIG, default_width="100%",
                       default_height=f"{height}px")
    if least:
        body = (f'<div class="plot-scroll"><div style="min-width: {int(least)}px">{body}</div>'
                "</div>")
    cap = f'<p class="caption">{_esc(text)}</p>' if text else ""
    return f'<div class="figure" data-figure="{_esc(div_id)}">{cap}{body}</div>'


def _wide(content: str) -> str:
    """``content`` (a table) scrolling inside the page when it is wider than the window."""
    return f'<div class="wide">{content}</div>'


def _document(title: str, body: str, with_plotly: bool = True, kind: str = "") -> str:
    script = f"<script>{get_plotlyjs()}</script>" if with_plotly else ""
    cls = f' class="{kind}"' if kind else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_esc(title)}</title><style>{STYLE}</style>{script}</head>"
            f"<body{cls}>{body}<script>{SORT_SCRIPT}</script></body></html>\n")


def _values(series) -> str:
    vals = sorted(v for v in series.dropna().unique())
    if len(vals) > 8:
        return f"{len(vals)} values in [{vals[0]:g}, {vals[-1]:g}]"
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vals)


def header(data: StudyData) -> str:
    """What was run: task, budget, grid, seeds, devices, versions."""
    t = data.trials
    first = t.iloc[0]
    grids = []
    for opt in data.optimizers:
        rows = t[t.optimizer == opt]
        parts = []
        for h in HYPERPARAMETERS:
            values = [_values(rows[h.name])] if h.name in rows and rows[h.name].notna().any() \
                else []
            values += [w for w, c in zip(h.words, h.columns()[1:]) if c in rows and rows[c].any()]
            if values:
                parts.append(f"{h.name}: {', '.join(values)}")
        configs = len(rows.groupby(config_keys(rows), dropna=False))
        name = opt if opt != "lookahead" else f"lookahead (around {rows['inner'].iloc[0]})"
        grids.append(f"<dt>{_esc(name)}: {configs} configurations</dt>"
                     f"<dd>{_esc('; '.join(parts))}</dd>")
    seeds = sorted(t["seed"].unique())
    states = t["state"].value_counts().to_dict()
    gpu_hours = t["wall_s"].sum() / 3600
    versions = ", ".join(sorted(set(
        "lookbench " + t["lookbench_version"].astype(str) + ", torch "
        + t["torch_version"].astype(str) + ", Python " + t["python_version"].astype(str))))
    options = data.task_options
    return (
        f"<h1>{_esc(data.name)}</h1>"
        f"<p class=\"meta\">task <b>{_esc(data.task)}</b>"
        f"{' (' + _esc(json.dumps(options)) + ')' if options else ''}; "
        f"{int(first['epochs'])} epochs, batch {int(first['batch_size'])}, "
        f"{_esc(first['schedule'])} schedule; seeds {_esc(', '.join(map(str, seeds)))}; "
        f"ranked by final {_esc(figures.label(data.metric))} on the "
        f"evaluation weights.<br>{len(t)} runs: "
        f"{_esc(', '.join(f'{n} {s}' for s, n in sorted(states.items())))}; "
        f"{gpu_hours:.2f} device-hours on {_esc(', '.join(sorted(t['device'].unique())))} "
        f"({_esc(', '.join(sorted(t['host'].unique())))}); {_esc(versions)}.</p>"
        f"<dl class=\"grid\">{''.join(grids)}</dl>"
    )


def _pct(v: float) -> str:
    return f"{v:.0%}"


def _ci(text: str) -> str:
    return f'<span class="ci">{text}</span>'


def _interval_cell(iv, fmt, bound=None) -> str:
    """``3 [2–4]`` with the interval greyed; the estimate alone without one (``bound`` writes
    the interval's ends, ``fmt`` by default: ``+0.28 pp [-0.10–0.50]``)."""
    if iv is None:
        return "–"
    bound = bound or fmt
    text = _nb(fmt(iv.estimate))
    if iv.bracketed:
        text += " " + _ci(f"[{_nb(bound(iv.low))}–{_nb(bound(iv.high))}]")
    return text


def _nb(text: str) -> str:
    """A number with its unit, never broken across lines (``+0.28 pp``)."""
    return f'<span class="nb">{text}</span>'



def _line_cell(line, fmt, bound=None) -> str:
    """A difference with its interval, marked by its label (decided lines are underlined)."""
    if line is None:
        return "–"
    text = _interval_cell(line.interval, fmt, bound) if line.interval is not None else _nb(
        fmt(line.estimate)) + " " + _ci("exact")
    words = {"lookahead_better": "Lookahead ahead", "baseline_better": "baseline ahead",
             "equivalent": "equivalent", "undecided": "undecided"}[line.label]
    cls = " clear" if line.decided else ""
    return f'<span class="diff{cls}">{text}</span><br><small>{_esc(words)}</small>'


def matched_table(m: Matched, data: StudyData) -> str:
    """The verdict's small table: each optimizer's per-sweep figures on the matched set (the
    median over sweeps, its interval greyed), and the differences."""
    total = len(m.learning_rates)
    within = m.rules.within
    count = verdict.fmt_count
    score = lambda v: verdict.fmt_score(v, data)  # noqa: E731
    last = within[-1]
    rows = []
    base_name = m.baseline + (f" ({format_config(m.baseline_setting)})"
                              if m.baseline_setting else "")
    cost = m.cost
    for name, opt, side in ((f"lookahead ({describe_setting(m.setting)})", "lookahead",
                             m.lookahead), (base_name, m.baseline, m.base)):
        cells = [name]
        for eps in within:
            text = _interval_cell(side.lrs[eps_key(eps)], count) + f" of {total}"
            span = side.span(eps)
            good = side.lr_good[eps_key(eps)]
            text += (f"<br><small>{good[0]:g}–{good[-1]:g}, {span:.1f} decades</small>"
                     if span is not None and len(good) > 1 else "")
            cells.append(text)
        exp = side.expected_to_good(m.rules.primary)
        cells.append(f"{exp:.1f}" if exp is not None else "never")
        cells.append(_interval_cell(side.share(last), lambda v: f"{v:.0%}"))
        cells.append(_interval_cell(side.best, score))
        cells.append(score(side.median))
        f = side.failures
        cells.append(f"{_pct(f.total)}<br><small>diverged {_pct(f.diverged)}, "
                     f"untrained {_pct(f.untrained)}</small>")
        step = cost.step_s.get(opt) if cost is not None else None
        cells.append(f"{step * 1e3:.3g} ms" if step else "–")
        rows.append("<tr>" + "".join(f"<td>{c if i else _esc(c)}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    signed = lambda v: verdict.fmt_count(v, signed=True)  # noqa: E731
    diff = [f"Lookahead − {m.baseline}"]
    diff += [_line_cell(m.lines[f"lrs@{eps_key(e)}"], signed) for e in within]
    units = units_of(data)
    bound = lambda v: units.diff(v, unit=False)  # noqa: E731
    diff += ["", "", _line_cell(m.lines["best"], units.diff, bound),
             _line_cell(m.lines["mean"], units.diff, bound)
             + "<br><small>mean at the same settings</small>", ""]
    if cost is not None and cost.ratio is not None:
        r = cost.ratio
        text = f"{r.estimate:.2f}×" + (" " + _ci(f"[{r.low:.2f}–{r.high:.2f}]")
                                       if r.low is not None else "")
        if cost.extra_bytes is not None:
            more = (f"{verdict.fmt_bytes(cost.extra_bytes)} more state" if cost.extra_bytes
                    else "no more state")
            text += f"<br><small>{_esc(more)}</small>"
        diff.append(text)
    else:
        diff.append("–")
    rows.append('<tr class="difference">' + "".join(
        f"<td>{c if i else _esc(c)}</td>" for i, c in enumerate(diff)) + "</tr>")
    eps_words = [verdict.eps_words(e, analysis_of(data)) for e in within]
    head = ["", *(f"learning rates within {w} (of {total})" for w in eps_words),
            f"expected configurations to {eps_words[0]}-good", f"share within {eps_words[-1]}",
            "best in a sweep", "median score", "did not train", "time per step (timed)"]
    return (f'<table class="verdict-table"><tr>{"".join(f"<th>{_esc(h)}</th>" for h in head)}'
            f'</tr>{"".join(rows)}</table>')


def _percent(v: float) -> str:
    """``95%``, ``98.75%``: as many decimals as it has."""
    return f"{v * 100:.2f}".rstrip("0").rstrip(".") + "%"


def verdict_section(data: StudyData) -> str:
    """The headline, a few plain sentences and the small table of each matched comparison."""
    a = analysis_of(data)
    head = f'<p class="headline">{_esc(verdict.headline(a, data))}</p>'
    groups = verdict.grouped_sentences(a, data)
    body = []
    for c, group in groups:
        if c is not None and len(groups) > 1:  # several baselines: one block each
            body.append(f"<h3>Lookahead − {_esc(c.baseline)}</h3>")
        body += [f"<p>{_esc(t)}</p>" for t in group]
        if isinstance(c, Matched):
            body.append(_wide(matched_table(c, data)))
    text = "".join(body)
    if a.rules.exact:
        how = ("The task is deterministic (every seed computes the same run): the figures are "
               "exact, and no interval is shown.")
    else:
        level, least = _percent(a.level), _percent(a.minimum)
        how = (f"Every figure is worked out within a sweep (one seed's run of every setting, "
               f"judged against that sweep's own best) and shown as its median over sweeps; "
               f"brackets are distribution-free intervals of that median (the sign test "
               f"inverted: they aim for {level} and hold at least "
               f"{least} whatever the runs' distribution; at least "
               f"{stats.fewest(a.level, a.minimum)} sweeps are needed for any). "
               "Underlined: decided (a direction, or equivalent within the stated margin).")
        if a.looks:
            how += (f" This study adds seeds until its verdict is decided; it may stop at "
                    f"{', '.join(map(str, a.looks))} seeds, so each look's intervals aim for "
                    f"{level} and all of them hold together at 95%.")
    return (f'<section class="verdict">{head}{text}<p class="note">{_esc(how)} '
            f'Definitions are under "How to read this page".</p></section>')


def definitions_section(data: StudyData) -> str:
    """The words the verdict uses, defined once (the same text as the code's docstrings)."""
    a = analysis_of(data)
    rules = a.rules
    stand = ("the task's chance level (a blow-up is no better, and no worse, than learning "
             "nothing)" if data.maximize and rules.chance is not None else
             "the comparison's worst completed run" if data.maximize else
             "the worse of the loss at initialisation and the comparison's worst completed "
             "loss" if rules.initial is not None else "the comparison's worst completed loss")
    untrained = ("ended no better than chance (within 1% of the way from a constant guess to a "
                 "perfect score)" if data.maximize and rules.chance is not None else
                 "ended no lower than the loss at initialisation"
                 if not data.maximize and rules.initial is not None else
                 "(this task knows neither a chance level nor its starting loss, so every "
                 "completed run counts as trained)")
    items = [
        ("comparison", "Lookahead at one setting of k, α and inner-state policy (the paper's "
                       "k = 5, α = 0.5 when the grid has it) and one baseline, on the values of "
                       "the inner optimizer's hyperparameters both ran (the paper's section 5.5 "
                       "design). It is a closed world: every number in it comes from its own "
                       "runs, so runs outside it cannot move it."),
        ("sweep", "one seed's runs of every setting of a comparison: an experiment a user could "
                  "run once. The seed gives both optimizers the same initialisation and data "
                  "order."),
        ("score", "a run's final metric on the evaluation weights (slow weights for Lookahead, "
                  f"averages for averaging baselines); a diverged or failed run counts as {stand}"),
        ("did not train", f"a completed run that {untrained}; counted beside the diverged ones, "
                          "and scored as not training (at chance, or at the loss at "
                          "initialisation, where the task knows them): how far a run went past "
                          "its start says nothing of its optimizer"),
        ("ε-good", rules.describe() + ", the best being the sweep's best run of the comparison; "
                   "a run that did not train is never good"),
        ("learning rates within ε", "the shared inner learning rates at which the optimizer has "
                                     "an ε-good setting in the sweep (the range shown: those "
                                     "good in at least half the sweeps)"),
        ("expected configurations to ε-good", "drawing settings of the comparison at random "
                                              "without replacement, how many one expects to "
                                              "draw until the first ε-good one in a typical "
                                              "sweep: (N + 1)/(G + 1) for G good of N"),
        ("margin", "a difference is called equivalent when its interval holds 0 and stays "
                   "within ± one learning rate (counts) or ± the first ε's tolerance around "
                   "the comparison's best (scores)"),
        ("time per step", "from the study's timing pass: training steps of Lookahead and of "
                          "each baseline on the task's own model and device, interleaved, "
                          "after a warm-up; the ratio is the median over rounds with its "
                          "interval"),
        ("whole study's best", "the best configuration of any optimizer none of whose seeds "
                               f"failed: {verdict.fmt_score(a.study_best, data)}; the whole-grid "
                               "figures use it, no comparison does"),
    ]
    body = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items)
    return f'<dl class="grid">{body}</dl>'


def robustness_table(data: StudyData) -> str:
    """Each optimizer over its own whole grid, with the grid sizes beside every figure."""
    a = analysis_of(data)
    rows = a.whole
    within = a.rules.within
    names = {"best": "best (seed range)", "median": "median over the grid",
             **{f"within_{i}": f"within {verdict.eps_words(e, a)} of the whole study's best"
                for i, e in enumerate(within)},
             "divergence_rate": "divergence rate", "untrained_rate": "did not train"}
    head = "".join(f"<th>{_esc(r.optimizer)} (whole grid: {r.configurations} "
                   f"configurations)</th>" for r in rows)
    body = []
    for field, name in names.items():
        cells = []
        for r in rows:
            if field == "best":
                text = verdict.fmt_score(r.best, data)
                if r.best_range:
                    lo, hi = r.best_range
                    text += " " + _ci(f"({verdict.fmt_score(lo, data)}–"
                                      f"{verdict.fmt_score(hi, data)})")
            elif field == "median":
                text = verdict.fmt_score(r.median, data)
            elif field == "divergence_rate":
                text = _pct(r.divergence_rate)
            elif field == "untrained_rate":
                text = _pct(r.untrained_rate)
            else:
                eps = within[int(field.split("_")[1])]
                key = eps_key(eps)
                text = f"{r.share(eps):.0%} ({r.good[key]} of {r.configurations})"
            cells.append(f"<td>{text}</td>")
        explain = EXPLANATIONS.get(field) or EXPLANATIONS["within_5"]
        body.append(f"<tr><td title=\"{_esc(explain)}\">{_esc(name)}</td>"
                    f"{''.join(cells)}</tr>")
    note = ("Over grids of different sizes these shares are not comparable (a grid that adds "
            "k × α adds configurations the baseline never had, and its best is a maximum over "
            "more of them), and they are measured against the whole study's best: the verdict "
            "above uses each comparison's own runs only.")
    if a.sampler == "tpe":
        note = ("TPE chose where to sample: these shares and medians describe where it searched, "
                "not how wide the good region is.")
    return (_wide(f"<table class=\"robustness\"><tr><th></th>{head}</tr>{''.join(body)}"
                  "</table>") + f"<p class=\"note\">{_esc(note)}</p>")


def score_columns(data: StudyData) -> list[str]:
    return ["score", "seed_min", "seed_max", "gap", "seeds", "diverged", "untrained",
            "unstable", *(f"good_{eps_key(e)}" for e in analysis_of(data).rules.within)]


def config_frame(data: StudyData) -> pd.DataFrame:
    """Every configuration's score, seed range, gap and ε-good flags against the whole study's
    best (the CSV and the table): the hyperparameters any configuration of the study sets,
    each in one column (a number's words, α's ``adaptive``, in the number's column), and
    last the trials table's ``config`` id, to join the two."""
    s = analysis_of(data).scores.copy()
    s["unstable"] = unstable(s)
    from lookbench.results.schema import config_id

    keys, trials = [k for k in config_keys(s) if k in data.trials], data.trials
    first = ~trials.duplicated(keys)
    ids = trials.loc[first, keys].copy()  # (merged: a missing value matches a missing one)
    ids["config"] = (trials.loc[first, "config"].to_numpy() if "config" in trials
                     else [config_id(r) for _, r in trials.loc[first].iterrows()])
    s = s.merge(ids, on=keys, how="left")
    shown = []
    for h in HYPERPARAMETERS:
        if h.name not in s:
            continue
        column = s[h.name].astype("Int64") if h.kind == "int" else s[h.name].astype(object)
        for word, flag in zip(h.words if h.numeric else (), h.columns()[1:]):
            if flag in s:
                column = column.astype(object).where(~s[flag].fillna(False).astype(bool), word)
        s[h.name] = column
        if s[h.name].notna().any():
            shown.append(h.name)
    return s[["optimizer", *shown, *score_columns(data), "config"]].sort_values(
        "score", ascending=not data.maximize, kind="stable").reset_index(drop=True)


SCORE_COLUMNS = ("score", "seed_min", "seed_max")  # written as the metric (units.score)


def _cell(v: object, column: str = "", units: Units | None = None) -> tuple[str, str]:
    """(display text, sort key) of one value: a score as the whole page writes it, a gap in
    the units of ε, a hyperparameter as itself (the sort key is the raw value)."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "", ""
    if isinstance(v, (bool, np.bool_)):
        return ("✓" if v else ""), str(int(v))
    if isinstance(v, (float, np.floating)):
        if units is not None and column in SCORE_COLUMNS:
            return units.score(v), repr(float(v))
        if units is not None and column == "gap":
            return units.gap(v), repr(float(v))
        return f"{v:.4g}", repr(float(v))
    return str(v), str(v)


def unstable_note(frame: pd.DataFrame, units: Units | None = None) -> str:
    """A line above the table naming the configurations whose seeds disagree far beyond the
    study's usual spread (``comparison.metrics.unstable``), or nothing."""
    flagged = frame[frame["unstable"]]
    if flagged.empty:
        return ""
    units = units or Units(fraction=False)
    names = []
    for row in flagged.head(8).itertuples(index=False):
        settings = [f"{c}={getattr(row, c)}" for c in frame.columns
                    if c in HPARAM_NAMES and pd.notna(getattr(row, c))]
        names.append(f"{row.optimizer} {' '.join(settings)} "
                     f"({units.score(row.seed_min)}–{units.score(row.seed_max)})")
    more = f" and {len(flagged) - 8} more" if len(flagged) > 8 else ""
    return ('<p class="note unstable">Unstable: ' + _esc("; ".join(names) + more)
            + f". Their seeds disagree more than {UNSTABLE_FACTOR:g}× the study's median "
            "seed range, so one seed says little there: read their spread, not one value. "
            "Near the edge of divergence such settings are also chaotic: rounding differences "
            "(another --population, another machine) can grow into another outcome.</p>")


def gap_heading(data: StudyData) -> str:
    """The configuration table's gap column, in the units of ε (``units.Units.gap``)."""
    rules = analysis_of(data).rules
    if rules.absolute:
        return "gap to the best"
    if data.maximize:
        return "gap to the best (% below it)"
    if rules.initial is not None:
        return "gap to the best (% of its improvement given up)"
    return "gap to the best (% above it)"


def config_table(data: StudyData) -> str:
    """A sortable table of every configuration (click a heading to sort), below a line that
    names the unstable ones. Scores are written as everywhere on the page (an accuracy in %);
    the CSV beside the page keeps the raw values."""
    frame = config_frame(data)
    units = units_of(data)
    heads = {"seed_min": "lowest seed", "seed_max": "highest seed", "gap": gap_heading(data),
             "untrained": "did not train",
             **{f"good_{eps_key(e)}": f"{verdict.eps_words(e, analysis_of(data))}-good"
                for e in analysis_of(data).rules.within}}
    head = "".join(f'<th data-col="{i}">{_esc(heads.get(c) or label(c))}</th>'
                   for i, c in enumerate(frame.columns))
    body = []
    columns = list(frame.columns)
    for row in frame.itertuples(index=False):
        cells = [_cell(v, c, units) for v, c in zip(row, columns)]
        body.append("<tr>" + "".join(f'<td data-sort="{_esc(k)}">{_esc(t)}</td>'
                                     for t, k in cells) + "</tr>")
    return (unstable_note(frame, units)
            + _wide(f'<table class="configs sortable"><thead><tr>{head}</tr></thead>'
                    f'<tbody>{"".join(body)}</tbody></table>'))


SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], col = +th.dataset.col;
    var asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
      var nx = parseFloat(x), ny = parseFloat(y), c;
      if (!isNaN(nx) && !isNaN(ny)) c = nx - ny;
      else if (x === '') c = 1; else if (y === '') c = -1; else c = x < y ? -1 : x > y ? 1 : 0;
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def paper_section(data: StudyData) -> str | None:
    results = paper_results(data)
    if not results:
        return None
    rows = "".join(f"<tr><td>{_esc(r.optimizer)}</td><td>{_esc(r.value)}</td>"
                   f"<td>{_esc(r.source)}</td></tr>" for r in results)
    return ("<p class=\"note\">This study runs the paper's setting; the paper's own numbers, "
            "for comparison with the scores above (Zhang et al., 2019):</p>"
            + _wide(f"<table><tr><th>optimizer</th><th>paper</th><th>source</th></tr>{rows}"
                    "</table>"))


def study_sections(data: StudyData, prefix: str = "") -> list[tuple[str, str]]:
    """The page's sections as (heading, html)."""
    sections = [("Verdict", verdict_section(data))]
    matched = figures.matched_figure(data)
    if matched is not None:
        sections.append(("Matched comparison", _fig_html(matched, f"{prefix}matched")))
    k_alpha = figures.k_alpha_figure(data)
    if k_alpha is not None:
        sections.append(("Lookahead's own k and α", _fig_html(k_alpha, f"{prefix}k-alpha")))
    sections.append(("Sensitivity to the inner learning rate",
                     _fig_html(figures.lr_sensitivity_figure(data), f"{prefix}lr-sensitivity")))
    search = ("Best found after n TPE proposals" if analysis_of(data).sampler == "tpe"
              else "Expected best after n random configurations")
    sections.append((search, _fig_html(figures.expected_best_figure(data),
                                       f"{prefix}expected-best")))
    sections.append(("Whole grids", robustness_table(data)))
    surfaces = figures.surface_figures(data)
    if surfaces:
        sections.append(("Sensitivity surfaces over the whole grids", "".join(
            _fig_html(fig, f"{prefix}surface-{i}") for i, (_, fig) in enumerate(surfaces))))
    sections.append(("Learning curves", _fig_html(
        figures.curves_figure(data, figures.nqm_analytic_curves(data)), f"{prefix}curves")))
    fast = figures.fast_slow_figure(data)
    if fast is not None:
        sections.append(("Fast and slow weights (the paper's Figure 10)", (
            "<p>Dashed: the fast weights, Lookahead's at the end of its last inner loop of each "
            "epoch, just before the slow step pulls them back (an averaging baseline's: its "
            "iterate). Solid: the weights each optimizer is evaluated on. The paper found the "
            "inner loop degrades accuracy and the slow step restores it.</p>"
            + _fig_html(fast, f"{prefix}fast-slow"))))
    nqm = figures.nqm_figure(data)
    if nqm is not None:
        sections.append(("The noisy quadratic against the paper's analysis",
                         _fig_html(nqm, f"{prefix}nqm")))
    paper = paper_section(data)
    if paper is not None:
        sections.append(("The paper's numbers", paper))
    sections.append(("Every configuration", config_table(data)))
    sections.append(("How to read this page", definitions_section(data)))
    return sections


def study_page(data: StudyData) -> str:
    """The whole page for one study."""
    body = [header(data)]
    for heading, content in study_sections(data):
        body.append(f"<h2>{_esc(heading)}</h2>{content}")
    body.append(_footer())
    return _document(f"lookbench: {data.name}", "".join(body))


def _footer() -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<p class=\"meta\">Made by lookbench {_esc(version())} on {when} from the "
            f"study's Parquet tables.</p>")


def compare_page(a: StudyData, b: StudyData) -> str:
    """Two studies' sections side by side."""
    sa, sb = dict(study_sections(a, "a-")), dict(study_sections(b, "b-"))
    body = [f"<h1>{_esc(a.name)} | {_esc(b.name)}</h1>",
            f"<div class=\"pair\"><div>{header(a)}</div><div>{header(b)}</div></div>"]
    for heading in list(dict.fromkeys([*sa, *sb])):
        left, right = sa.get(heading, "<p class=\"note\">—</p>"), sb.get(heading,
                                                                        "<p class=\"note\">—</p>")
        body.append(f"<h2>{_esc(heading)}</h2><div class=\"pair\"><div>{left}</div>"
                    f"<div>{right}</div></div>")
    body.append(_footer())
    return _document(f"lookbench: {a.name} vs {b.name}", "".join(body), kind="compare")


def index_page(entries: list[tuple[StudyData, str]]) -> str:
    """Links to every study page with its best result per optimizer."""
    rows = []
    for data, href in entries:
        best = ", ".join(f"{r.optimizer} {verdict.fmt_score(r.best, data)}"
                         for r in analysis_of(data).whole)
        text = verdict.headline(analysis_of(data), data)
        rows.append(f"<tr><td><a href=\"{_esc(href)}\">{_esc(data.name)}</a></td>"
                    f"<td>{_esc(data.task)}</td><td>{len(data.trials)}</td>"
                    f"<td>{_esc(best)}</td><td class=\"note\">{_esc(text)}</td></tr>")
    body = ("<h1>lookbench studies</h1><table><tr><th>study</th><th>task</th><th>runs</th>"
            f"<th>best per optimizer</th><th>headline</th></tr>{''.join(rows)}</table>"
            + _footer())
    return _document("lookbench studies", body, with_plotly=False)


def write(path: Path, text: str) -> Path:
    """Write a page atomically (a half-written page is never left behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with naming(path):  # (a full disk names the page)
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # (a page that could not be written leaves nothing)
    return path
