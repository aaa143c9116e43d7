"""One self-contained HTML page per study (plotly.js embedded once, so it opens offline), an
index page when several studies are reported, and a side-by-side comparison of two."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from lookbench import __version__
from lookbench.report import figures
from lookbench.report.data import StudyData
from lookbench.report.metrics import EXPLANATIONS, bootstrap_intervals, robustness

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
            f"<body>{body}</body></html>\n")


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
        for field in ("lr", "momentum", "weight_decay", "k", "alpha", "inner_state"):
            if rows[field].notna().any():
                parts.append(f"{field}: {_values(rows[field])}")
        if rows["alpha_adaptive"].any():
            parts.append("alpha: adaptive")
        configs = len(rows.groupby(["lr", "momentum", "weight_decay", "k", "alpha",
                                    "inner_state"], dropna=False))
        label = opt if opt != "lookahead" else f"lookahead (around {rows['inner'].iloc[0]})"
        grids.append(f"<dt>{_esc(label)}: {configs} configurations</dt>"
                     f"<dd>{_esc('; '.join(parts))}</dd>")
    seeds = sorted(t["seed"].unique())
    states = t["state"].value_counts().to_dict()
    gpu_hours = t["wall_s"].sum() / 3600
    versions = ", ".join(sorted({f"lookbench {r.lookbench_version}, torch {r.torch_version}, "
                                 f"Python {r.python_version}" for r in t.itertuples()}))
    options = data.task_options
    return (
        f"<h1>{_esc(data.name)}</h1>"
        f"<p class=\"meta\">task <b>{_esc(data.task)}</b>"
        f"{' (' + _esc(json.dumps(options)) + ')' if options else ''}; "
        f"{int(first['epochs'])} epochs, batch {int(first['batch_size'])}, "
        f"{_esc(first['schedule'])} schedule; seeds {_esc(', '.join(map(str, seeds)))}; "
        f"ranked by final {_esc(figures.LABELS.get(data.metric, data.metric))} on the "
        f"evaluation weights.<br>{len(t)} runs: "
        f"{_esc(', '.join(f'{n} {s}' for s, n in sorted(states.items())))}; "
        f"{gpu_hours:.2f} device-hours on {_esc(', '.join(sorted(t['device'].unique())))} "
        f"({_esc(', '.join(sorted(t['host'].unique())))}); {_esc(versions)}.</p>"
        f"<dl class=\"grid\">{''.join(grids)}</dl>"
    )


def robustness_table(data: StudyData) -> str:
    """The robustness metrics, with bootstrap intervals over seeds where there are seeds."""
    rows = robustness(data.trials, data.metric, data.maximize)
    ci = bootstrap_intervals(data.trials, data.metric, data.maximize)
    pct = {"within_1", "within_5", "divergence_rate"}
    names = {"best": "best", "median": "median over the grid", "within_1": "within 1% of best",
             "within_5": "within 5% of best", "divergence_rate": "divergence rate"}
    head = "".join(f"<th>{_esc(r.optimizer)} ({r.configurations} configs)</th>" for r in rows)
    body = []
    for field, name in names.items():
        cells = []
        for r in rows:
            v = getattr(r, field)
            text = f"{v:.1%}" if field in pct else f"{v:.4g}"
            if ci is not None and r.optimizer in ci[field]:
                lo, hi = ci[field][r.optimizer]
                span = f"{lo:.1%}–{hi:.1%}" if field in pct else f"{lo:.4g}–{hi:.4g}"
                text += f' <span class="ci">[{span}]</span>'
            cells.append(f"<td>{text}</td>")
        body.append(f"<tr><td title=\"{_esc(EXPLANATIONS[field])}\">{_esc(name)}</td>"
                    f"{''.join(cells)}</tr>")
    notes = "".join(f"<li><b>{_esc(names[f])}</b>: {_esc(text)}.</li>"
                    for f, text in EXPLANATIONS.items())
    interval = ("Brackets: 95% bootstrap interval, resampling each configuration's seeds."
                if ci is not None else "One seed per configuration: no intervals.")
    return (f"<table class=\"robustness\"><tr><th></th>{head}</tr>{''.join(body)}</table>"
            f"<ul class=\"note\">{notes}</ul><p class=\"note\">{interval} A configuration's "
            f"score is the mean over its seeds of the final metric; a diverged seed counts "
            f"as the worst outcome (accuracy 0, or the worst loss of the study).</p>")


def study_sections(data: StudyData, prefix: str = "") -> list[tuple[str, str]]:
    """The page's sections as (heading, html)."""
    sections = [("Robustness", robustness_table(data))]
    surfaces = figures.surface_figures(data)
    if surfaces:
        sections.append(("Sensitivity surfaces", "".join(
            _fig_html(fig, f"{prefix}surface-{i}") for i, (_, fig) in enumerate(surfaces))))
    sections.append(("Sensitivity to the inner learning rate",
                     _fig_html(figures.lr_sensitivity_figure(data), f"{prefix}lr-sensitivity")))
    sections.append(("Learning curves", _fig_html(
        figures.curves_figure(data, figures.nqm_analytic_curves(data)), f"{prefix}curves")))
    sections.append(("Expected best after n random configurations",
                     _fig_html(figures.expected_best_figure(data), f"{prefix}expected-best")))
    nqm = figures.nqm_figure(data)
    if nqm is not None:
        sections.append(("The noisy quadratic against the paper's analysis",
                         _fig_html(nqm, f"{prefix}nqm")))
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
        best = ", ".join(f"{r.optimizer} {r.best:.4g} ({r.within_5:.0%} within 5%)"
                         for r in robustness(data.trials, data.metric, data.maximize))
        rows.append(f"<tr><td><a href=\"{_esc(href)}\">{_esc(data.name)}</a></td>"
                    f"<td>{_esc(data.task)}</td><td>{len(data.trials)}</td>"
                    f"<td>{_esc(best)}</td></tr>")
    body = ("<h1>lookbench studies</h1><table><tr><th>study</th><th>task</th><th>runs</th>"
            f"<th>best final metric per optimizer</th></tr>{''.join(rows)}</table>" + _footer())
    return _document("lookbench studies", body, with_plotly=False)


def write(path: Path, text: str) -> Path:
    """Write a page atomically (a half-written page is never left behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
