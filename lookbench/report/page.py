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

from lookbench import __version__
from lookbench.hparams import HYPERPARAMETERS, format_config, label
from lookbench.report import figures, verdict
from lookbench.report.data import StudyData
from lookbench.report.matched import Matched, describe_setting
from lookbench.report.metrics import EPSILONS, EXPLANATIONS, config_keys, eps_key
from lookbench.report.paper import paper_results

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0 auto;
       max-width: 1280px; padding: 1rem 2rem 4rem; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.4rem; border-bottom: 1px solid #ddd; }
.meta { color: #555; } table { border-collapse: collapse; margin: 0.8rem 0; }
th, td { padding: 0.3rem 0.7rem; border-bottom: 1px solid #e3e3e3; text-align: right; }
th:first-child, td:first-child { text-align: left; }
dl.grid dt { font-weight: 600; } dl.grid dd { margin: 0 0 0.4rem 1.2rem; }
.ci { color: #777; font-size: 0.85em; } .note { color: #555; max-width: 60rem; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.figure { margin: 0.5rem 0 1.5rem; }
section.verdict { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px;
                  padding: 0.6rem 1.2rem; margin-top: 1rem; }
section.verdict p { font-size: 1.05rem; margin: 0.5rem 0; max-width: 72rem; }
tr.difference td { border-top: 2px solid #999; font-weight: 600; }
.diff.clear { text-decoration: underline; } table.configs { font-size: 0.85rem; }
table.sortable th { cursor: pointer; user-select: none; } table.sortable th:hover { color: #06c; }
"""


def _esc(text: object) -> str:
    return html.escape(str(text))


def _fig_html(fig: go.Figure, div_id: str) -> str:
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})
    return f'<div class="figure" data-figure="{_esc(div_id)}">{body}</div>'


def _document(title: str, body: str, with_plotly: bool = True) -> str:
    script = f"<script>{get_plotlyjs()}</script>" if with_plotly else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{STYLE}</style>{script}</head>"
            f"<body>{body}<script>{SORT_SCRIPT}</script></body></html>\n")


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


def _range(lo: int, hi: int, total: int | None = None, share: bool = False) -> str:
    if share and total:
        return f'<span class="ci">[{lo / total:.0%}–{hi / total:.0%}]</span>'
    return f'<span class="ci">[{lo}–{hi}]</span>'


def _diff_cell(d, data: StudyData, ratio: bool = False) -> str:
    if d is None:
        return "–"
    cls = " clear" if d.clear else ""
    return f'<span class="diff{cls}">{_esc(verdict.fmt_interval(d, data, ratio=ratio))}</span>'


def matched_table(m: Matched, data: StudyData) -> str:
    """The verdict's small table: each optimizer on the matched set, and the difference."""
    total = len(m.learning_rates)
    rows = []
    base_name = m.baseline + (f" ({format_config(m.baseline_setting)})"
                              if m.baseline_setting else "")
    for name, side in ((f"lookahead ({describe_setting(m.setting)})", m.lookahead),
                       (base_name, m.base)):
        r = side.robustness
        cells = [name]
        for eps in EPSILONS:
            key = eps_key(eps)
            n = len(side.lr_good[key])
            text = f"{n} of {total}"
            if side.lr_good_range:
                text += " " + _range(*side.lr_good_range[key])
            span = side.span(eps)
            text += f"<br><small>{span:.1f} decades</small>" if span is not None and n > 1 else ""
            cells.append(text)
        exp = side.expected_to_good[eps_key(0.01)]
        cells.append(f"{exp:.1f}" if exp is not None else "never")
        share5 = f"{r.share(0.05):.0%}"
        if r.good_range:
            share5 += " " + _range(*r.good_range[eps_key(0.05)], r.configurations, share=True)
        cells.append(share5)
        best = verdict.fmt_score(r.best, data)
        if r.best_interval:
            lo, hi = r.best_interval
            best += (f' <span class="ci">[{verdict.fmt_score(lo, data)}–'
                     f'{verdict.fmt_score(hi, data)}]</span>')
        cells += [best, verdict.fmt_score(r.median, data), _pct(r.divergence_rate),
                  f"{side.wall_per_epoch:.3g} s" if side.wall_per_epoch else "–"]
        rows.append("<tr>" + "".join(f"<td>{c if i else _esc(c)}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    d1, r1 = m.lr_count_difference[eps_key(0.01)]
    d5, r5 = m.lr_count_difference[eps_key(0.05)]
    diff = ["Lookahead − " + m.baseline,
            verdict.signed(d1) + (f' <span class="ci">[{verdict.signed(r1[0])}, '
                                  f'{verdict.signed(r1[1])}]</span>' if r1 else ""),
            verdict.signed(d5) + (f' <span class="ci">[{verdict.signed(r5[0])}, '
                                  f'{verdict.signed(r5[1])}]</span>' if r5 else ""),
            "", "", _diff_cell(m.best_difference, data),
            _diff_cell(m.score_difference, data) + "<br><small>mean at the same settings</small>",
            "", _diff_cell(m.cost_ratio, data, ratio=True)]
    rows.append('<tr class="difference">' + "".join(
        f"<td>{c if i else _esc(c)}</td>" for i, c in enumerate(diff)) + "</tr>")
    head = ["", f"learning rates within 1% (of {total})", "learning rates within 5%",
            "expected configurations to 1%-good", "share within 5%", "best", "median",
            "divergence rate", "wall time per epoch"]
    return (f'<table class="verdict-table"><tr>{"".join(f"<th>{_esc(h)}</th>" for h in head)}'
            f'</tr>{"".join(rows)}</table>')


def verdict_section(data: StudyData) -> str:
    """Two to four plain sentences and the small table of the matched comparison."""
    a = data.analysis
    text = "".join(f"<p>{_esc(t)}</p>" for t in verdict.sentences(a, data))
    tables = "".join(matched_table(c, data) for c in a.comparisons if isinstance(c, Matched))
    seeds = int(data.trials["seed"].nunique())
    how = ("Brackets: 95% intervals; underlined: a clear difference (the interval excludes 0, "
           "or 1× for a ratio). Scores: Student-t over seeds; differences: paired over "
           "seeds (seed s gives both optimizers the same initialisation and data order); counts "
           "of good learning rates: the plausible range from each configuration's interval; wall "
           "time: geometric-mean ratio over runs paired by setting, seed and device."
           if seeds > 1 else
           "One seed per configuration: no intervals, so no difference here can be called clear.")
    return (f'<section class="verdict">{text}{tables}<p class="note">{_esc(how)} '
            f'Definitions are under "How to read this page".</p></section>')


def definitions_section(data: StudyData) -> str:
    """The words the verdict uses, defined once (the same text as the code's docstrings)."""
    sc = data.analysis.scoring
    if data.maximize:
        gap = "(best − score) / |best|"
    elif sc.floor is not None:
        gap = (f"(score − floor) / (best − floor) − 1, with the task's loss floor "
               f"{sc.floor:.6g} (a loss cannot go below it, so only the excess over it counts)")
    else:
        gap = "(score − best) / |best|"
    items = [
        ("score", "a configuration's final metric on the evaluation weights (slow weights for "
                  "Lookahead), averaged over seeds; a diverged or failed run counts as "
                  + ("0 (or the worst completed run, if that is lower)" if data.maximize else
                     "the worst completed run's loss, or the loss at initialisation where the "
                     "task knows it, whichever is worse")
                  + f" ({verdict.fmt_score(data.analysis.worst, data)} here), so it never sets "
                    "a colour scale or an axis"),
        ("reference best", "the best score of any configuration, of any optimizer, that "
                           f"diverged in no seed: {verdict.fmt_score(sc.best, data)}"),
        ("gap", gap),
        ("ε-good", "no seed diverged or failed, and the gap is at most ε (1% or 5%)"),
        ("share within ε", "ε-good configurations ÷ configurations"),
        ("learning rates within ε", "the shared inner learning rates at which the optimizer "
                                     "has an ε-good configuration, and their span in decades"),
        ("expected configurations to ε-good", "drawing configurations of the matched set at "
                                              "random without replacement, how many one "
                                              "expects to draw until the first ε-good one: "
                                              "(N + 1)/(G + 1) for G good of N"),
        ("matched set", "the baseline's configurations and Lookahead's at one setting of k, α "
                        "and inner-state policy (the paper's k = 5, α = 0.5 when the grid has "
                        "it), on the values of inner learning rate, momentum and weight decay "
                        "that both ran (the paper's section 5.5 design)"),
    ]
    body = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items)
    return f'<dl class="grid">{body}</dl>'


def robustness_table(data: StudyData) -> str:
    """Each optimizer over its own whole grid, with the grid sizes beside every figure."""
    rows = data.analysis.whole
    names = {"best": "best", "median": "median over the grid", "within_1": "within 1% of best",
             "within_5": "within 5% of best", "divergence_rate": "divergence rate"}
    head = "".join(f"<th>{_esc(r.optimizer)} (whole grid: {r.configurations} "
                   f"configurations)</th>" for r in rows)
    body = []
    for field, name in names.items():
        cells = []
        for r in rows:
            if field == "best":
                text = verdict.fmt_score(r.best, data)
                if r.best_interval:
                    lo, hi = r.best_interval
                    text += (f' <span class="ci">[{verdict.fmt_score(lo, data)}–'
                             f'{verdict.fmt_score(hi, data)}]</span>')
            elif field == "median":
                text = verdict.fmt_score(r.median, data)
            elif field == "divergence_rate":
                text = _pct(r.divergence_rate)
            else:
                eps = 0.01 if field == "within_1" else 0.05
                key = eps_key(eps)
                text = f"{r.share(eps):.0%} ({r.good[key]} of {r.configurations})"
                if r.good_range:
                    text += " " + _range(*r.good_range[key], r.configurations, share=True)
            cells.append(f"<td>{text}</td>")
        body.append(f"<tr><td title=\"{_esc(EXPLANATIONS[field])}\">{_esc(name)}</td>"
                    f"{''.join(cells)}</tr>")
    note = ("Over grids of different sizes these shares are not comparable (a grid that adds "
            "k × α adds configurations the baseline never had, and its best is a maximum over "
            "more of them): the verdict above uses the matched set only.")
    if data.analysis.sampler == "tpe":
        note = ("TPE chose where to sample: these shares and medians describe where it searched, "
                "not how wide the good region is.")
    return (f"<table class=\"robustness\"><tr><th></th>{head}</tr>{''.join(body)}</table>"
            f"<p class=\"note\">{_esc(note)}</p>")


SCORE_COLUMNS = ["score", "ci_low", "ci_high", "gap", "seeds", "diverged", "good_0.01",
                 "good_0.05"]


def config_frame(data: StudyData) -> pd.DataFrame:
    """Every configuration's score, interval, gap and ε-good flags (the CSV and the table):
    the hyperparameters any configuration of the study sets, each in one column (a number's
    words, α's ``adaptive``, in the number's column)."""
    s = data.analysis.scores.copy()
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
    return s[["optimizer", *shown, *SCORE_COLUMNS]].sort_values(
        "score", ascending=not data.maximize, kind="stable").reset_index(drop=True)


def _cell(v: object) -> tuple[str, str]:
    """(display text, sort key) of one value."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "", ""
    if isinstance(v, (bool, np.bool_)):
        return ("✓" if v else ""), str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}", repr(float(v))
    return str(v), str(v)


def config_table(data: StudyData) -> str:
    """A sortable table of every configuration (click a heading to sort)."""
    frame = config_frame(data)
    heads = {"ci_low": "95% low", "ci_high": "95% high", "good_0.01": "1%-good",
             "good_0.05": "5%-good"}
    head = "".join(f'<th data-col="{i}">{_esc(heads.get(c) or label(c))}</th>'
                   for i, c in enumerate(frame.columns))
    body = []
    for row in frame.itertuples(index=False):
        cells = [_cell(v) for v in row]
        body.append("<tr>" + "".join(f'<td data-sort="{_esc(k)}">{_esc(t)}</td>'
                                     for t, k in cells) + "</tr>")
    return (f'<table class="configs sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


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
            f"<table><tr><th>optimizer</th><th>paper</th><th>source</th></tr>{rows}</table>")


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
    search = ("Best found after n TPE proposals" if data.analysis.sampler == "tpe"
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
    return (f"<p class=\"meta\">Made by lookbench {_esc(__version__)} on {when} from the "
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
    return _document(f"lookbench: {a.name} vs {b.name}", "".join(body))


def index_page(entries: list[tuple[StudyData, str]]) -> str:
    """Links to every study page with its best result per optimizer."""
    rows = []
    for data, href in entries:
        best = ", ".join(f"{r.optimizer} {verdict.fmt_score(r.best, data)}"
                         for r in data.analysis.whole)
        text = verdict.sentences(data.analysis, data)[0]
        rows.append(f"<tr><td><a href=\"{_esc(href)}\">{_esc(data.name)}</a></td>"
                    f"<td>{_esc(data.task)}</td><td>{len(data.trials)}</td>"
                    f"<td>{_esc(best)}</td><td class=\"note\">{_esc(text)}</td></tr>")
    body = ("<h1>lookbench studies</h1><table><tr><th>study</th><th>task</th><th>runs</th>"
            f"<th>best per optimizer</th><th>verdict</th></tr>{''.join(rows)}</table>"
            + _footer())
    return _document("lookbench studies", body, with_plotly=False)


def write(path: Path, text: str) -> Path:
    """Write a page atomically (a half-written page is never left behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
