"""The report's Plotly figures, each built from a study's tables alone.

Conventions shared by every figure: a configuration's score is the mean over its seeds of the
final metric, with diverged seeds at the worst completed value (``lookbench.comparison.metrics``);
surfaces are coloured by the gap to the study's best score, with the scale spanning the region
near the best and everything worse clipped to one end, and the score printed in each cell;
Lookahead is drawn in one colour and each baseline in its own, on every figure, each with its
own marker and dash so that identical lines stay visible; settings that diverged in every seed
are ✕ marks, never a colour, an axis range or a mean. Numbers are written by
:mod:`lookbench.report.units` (an accuracy in % everywhere). Every figure fills its container's
width and follows the window (the page passes Plotly's ``responsive`` config); titles are short
and wrapped (:func:`wrap`), and what a figure shows in detail is its caption (:func:`caption`),
HTML text the page writes above it, which wraps at any width.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lookbench import hparams
from lookbench.comparison.matched import describe_setting
from lookbench.comparison.metrics import (
    SHARED,
    best_so_far,
    config_keys,
    expected_best,
    matching,
)
from lookbench.report.analysis import analysis_of
from lookbench.report.data import StudyData
from lookbench.report.units import units_of

COLORS = {"lookahead": "#d62728", "sgd": "#1f77b4", "adam": "#2ca02c", "adamw": "#9467bd",
          "polyak": "#8c564b", "ema": "#e377c2", "swa": "#7f7f7f",
          "asgd": "#bcbd22"}
DIVERGED_GROUND = "#c8c8c8"
METRIC_LABELS = {"test_acc": "test accuracy", "test_loss": "test loss"}


def label(name: str, inner: str | None = None) -> str:
    """An axis's label: a metric's, or a hyperparameter's from ``lookbench.hparams`` (momentum
    named as the study's ``inner`` optimizer names it)."""
    return METRIC_LABELS.get(name) or hparams.label(name, inner)


# The paper's lr × α and k × α, then the learning rate against each other hyperparameter.
SURFACE_PAIRS = [("lr", "alpha"), ("k", "alpha"),
                 *(("lr", h.name) for h in hparams.HYPERPARAMETERS
                   if h.numeric and h.name not in ("lr", "alpha"))]
MAX_HEATMAP_VALUES = 12  # more distinct values than this on an axis: a scatter, not a grid
MIN_HEATMAP_FILL = 0.5  # fewer filled cells than this share (random/TPE points): a scatter
GAP_CAP_PCT = 10.0  # accuracy-like metrics: colours span 0–10% below the best, worse is clipped
GAP_CAP_DECADES = 1.0  # losses: colours span 1×–10× the best (excess) loss, worse is clipped


# Lines of the n-th optimizer (Lookahead first): solid with filled circles, then dashed and
# dotted with larger open markers, so a baseline drawn on top of an identical Lookahead line
# leaves both visible.
LINE_STYLES = [("solid", "circle", 8), ("dash", "diamond-open", 13), ("dot", "square-open", 12),
               ("dashdot", "triangle-up-open", 13), ("longdash", "pentagon-open", 13),
               ("longdashdot", "star-open", 13)]
TITLE_CHARS = 60  # a figure's title wraps after this many characters (fits 500 px)
SUBPLOT_TITLE_CHARS = 56  # shared out over a row's panels
PANELS_PER_ROW = 2  # whole-grid surfaces with more panels continue on the next row
LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0, "xanchor": "left"}


def color(optimizer: str) -> str:
    return COLORS.get(optimizer, "#17becf")


def line_style(data: StudyData, optimizer: str) -> dict:
    """The optimizer's dash and marker (``LINE_STYLES``, by its place among the study's
    optimizers), for ``go.Scatter(line=..., marker=...)``: ``{"line": ..., "marker": ...}``."""
    order = data.optimizers
    i = order.index(optimizer) if optimizer in order else len(order)
    dash, symbol, size = LINE_STYLES[i % len(LINE_STYLES)]
    c = color(optimizer)
    return {"line": {"color": c, "dash": dash, "width": 2.5 if i == 0 else 2},
            "marker": {"symbol": symbol, "size": size, "color": c,
                       **({"line": {"width": 2, "color": c}} if "open" in symbol else {})}}


def wrap(text: str, width: int = TITLE_CHARS) -> str:
    """``text`` broken into lines of at most ``width`` characters with ``<br>`` (Plotly never
    wraps a title; a long one is cut at the figure's edge)."""
    glued = text.replace(" = ", "\u00a0=\u00a0").replace(" × ", "\u00a0×\u00a0")  # k = 5
    lines = textwrap.wrap(glued, max(width, 12), break_long_words=False,
                          break_on_hyphens=False)
    return "<br>".join(lines).replace("\u00a0", " ") or text


def titled(fig: go.Figure, title: str, caption: str | None = None) -> go.Figure:
    """Give ``fig`` a short wrapped title that pushes the plot down as it grows, and keep its
    ``caption`` (the details, written by the page as HTML above the figure) in its layout's
    ``meta``. The figure sizes itself to its container (no fixed width)."""
    fig.update_layout(title={"text": wrap(title), "automargin": True, "yref": "container",
                             "y": 0.98, "yanchor": "top", "x": 0.02, "xanchor": "left"},
                      autosize=True, width=None,
                      meta={"caption": caption} if caption else None)
    return fig


def caption(fig: go.Figure) -> str:
    """The figure's caption (see :func:`titled`), or ``""``."""
    meta = fig.layout.meta
    return str(meta.get("caption", "")) if isinstance(meta, dict) else ""


def _fmt(v: float) -> str:
    return f"{v:g}"


def _best_over_rest(scores: pd.DataFrame, axes: list[str], maximize: bool) -> pd.DataFrame:
    """For each value of ``axes``: the configuration with the best score over the others."""
    idx = (scores.groupby(axes, dropna=False)["score"].idxmax() if maximize
           else scores.groupby(axes, dropna=False)["score"].idxmin())
    return scores.loc[idx.dropna().astype(int)]


def _others(row: pd.Series, axes: tuple[str, ...]) -> str:
    """The configuration's hyperparameters other than ``axes``, in words (hover text)."""
    return hparams.format_config({c: row.get(c) for h in hparams.HYPERPARAMETERS
                                  if h.name not in axes for c in h.columns()})


def _hover(row: pd.Series | dict, data: StudyData, axes: tuple[str, ...]) -> str:
    units = units_of(data)
    n = int(row["seeds"])
    text = f"{label(data.metric)}: {units.score(row['score'])}"
    if n > 1:
        text += (f" (mean of {n} seeds, which span {units.score(row['seed_min'])}–"
                 f"{units.score(row['seed_max'])})")
    else:
        text += " (one seed)"
    if "gap" in row and np.isfinite(row["gap"]):
        rules = analysis_of(data).rules
        g = units.gap(row["gap"])
        if rules.absolute:
            gap = f"{g} from the best"
        elif data.maximize:
            gap = f"{g} below the best"
        elif rules.initial is not None:
            gap = f"gives up {g} of the best's improvement"
        else:
            gap = (f"excess loss {g} above the best's" if rules.floor is not None
                   else f"{g} above the best")
        text += f"<br>{gap}"
    shares = [(c, row[c]) for c in row.keys() if str(c).startswith("good_share_")]
    for c, share in shares:
        if pd.notna(share):
            text += f"<br>within {float(c.rsplit('_', 1)[1]) * 100:g}% in {share:.0%} of sweeps"
    div = int(row["diverged"])
    if div:
        text += f"<br>diverged or failed in {div} of {n} seeds"
    untrained = int(row.get("untrained", 0) or 0)
    if untrained:
        text += f"<br>did not train in {untrained} of {n} seeds"
    rest = _others(row, axes)
    return text + (f"<br>best at {rest}" if rest else "")


def _cell_text(row: pd.Series, data: StudyData) -> str:
    """The number printed in a heatmap cell: the score as the whole page writes it, and how
    many seeds diverged."""
    if row["diverged"] >= row["seeds"]:
        return "✕"
    return units_of(data).score(row["score"]) + (
        f" ({int(row['diverged'])}✕)" if row["diverged"] else "")


def _linear(rules) -> bool:
    """Whether gaps are coloured on a linear scale: a share below the best (accuracy), a share
    of the improvement given up (a loss whose start is known), or absolute units; else a loss
    ratio on a log scale."""
    return rules.absolute or rules.maximize or rules.initial is not None


def gap_colour(gap: np.ndarray | pd.Series, rules) -> np.ndarray:
    """Where a gap falls on the colour scale: in % (0 to 10, linear) for a share of the best or
    of the improvement, in multiples of ε for absolute tolerances, and the ratio to the best
    (excess) loss on a log scale (0 to 1 decade) otherwise. Everything worse is clipped to the
    far end, so one bad setting never washes out the good region."""
    g = np.asarray(gap, dtype=float)
    if rules.absolute:
        return np.clip(g / rules.primary, 0, GAP_CAP_PCT)
    if _linear(rules):
        return np.clip(g * 100, 0, GAP_CAP_PCT)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.log10(1 + np.maximum(g, 0)), 0, GAP_CAP_DECADES)


def _coloraxis(rules) -> dict:
    """The colour scale of the gap to the best (whose best: the figure's caption says)."""
    if rules.absolute:
        ticks = ([0, 1, 5, GAP_CAP_PCT], ["best", "ε", "5 ε", f"≥ {GAP_CAP_PCT:g} ε"])
        cmax, title = GAP_CAP_PCT, "gap to the best"
    elif rules.maximize:
        ticks = ([0, 1, 5, GAP_CAP_PCT], ["best", "1%", "5%", f"≥ {GAP_CAP_PCT:g}%"])
        cmax, title = GAP_CAP_PCT, "% below the best"
    elif rules.initial is not None:
        ticks = ([0, 1, 5, GAP_CAP_PCT], ["best", "1%", "5%", f"≥ {GAP_CAP_PCT:g}%"])
        cmax, title = GAP_CAP_PCT, "% of the improvement given up"
    else:
        vals = [0, math.log10(1.5), math.log10(2), math.log10(5), GAP_CAP_DECADES]
        ticks = (vals, ["best", "1.5×", "2×", "5×", f"≥ {10 ** GAP_CAP_DECADES:g}×"])
        cmax = GAP_CAP_DECADES
        title = "excess loss ÷ best excess" if rules.floor is not None else "loss ÷ best"
    return {"colorscale": "Viridis", "reversescale": True, "cmin": 0, "cmax": cmax,
            "colorbar": {"title": {"text": wrap(title, 12) + "<br> ", "font": {"size": 12}},
                         "tickvals": ticks[0], "ticktext": ticks[1], "thickness": 14,
                         "tickfont": {"size": 10}}}


def _heatmap(fig: go.Figure, cells: pd.DataFrame, x: str, y: str, data: StudyData,
             col: int, y_labels: dict | None = None, row: int = 1, across: int = 1) -> None:
    """One heatmap panel of ``cells`` (annotated configuration scores, one per (x, y)),
    coloured by the gap to the study's best, the score printed in each cell. Cells that
    diverged in every seed are a ✕ on grey (a trace of their own) and take no colour; a cell
    that was never run stays blank, so it cannot be read as diverged. Only the values the
    cells hold make rows and columns: a panel has no empty row or column."""
    xs = sorted(cells[x].unique())
    ys = sorted(cells[y].unique(), key=str) if y_labels else sorted(cells[y].unique())
    xl = [_fmt(v) for v in xs]
    yl = [y_labels[v] if y_labels else _fmt(v) for v in ys]
    z = np.full((len(ys), len(xs)), np.nan)
    dead = np.full((len(ys), len(xs)), np.nan)
    text = [[""] * len(xs) for _ in ys]
    dead_text = [[""] * len(xs) for _ in ys]
    hover = [[""] * len(xs) for _ in ys]
    for _, r in cells.iterrows():
        i, j = ys.index(r[y]), xs.index(r[x])
        if r["diverged"] < r["seeds"]:
            z[i, j] = gap_colour(r["gap"], analysis_of(data).rules)
            text[i][j] = _cell_text(r, data)
        else:
            dead[i, j] = 1.0
            dead_text[i][j] = _cell_text(r, data)
        hover[i][j] = _hover(r, data, (x, y))
    columns = len(xs) * across  # of the figure's row of panels: the text must fit at 900 px
    size = 11 if columns <= 9 else 10 if columns <= 16 else 9
    where = f"{x}=%{{x}}<br>{y}=%{{y}}<br>%{{customdata}}<extra></extra>"
    fig.add_trace(go.Heatmap(
        x=xl, y=yl, z=z, text=text, customdata=hover, texttemplate="%{text}",
        textfont={"size": size}, coloraxis="coloraxis", xgap=2, ygap=2, name="surface",
        hoverongaps=False, hovertemplate=where), row=row, col=col)
    if not np.isnan(dead).all():
        fig.add_trace(go.Heatmap(
            x=xl, y=yl, z=dead, text=dead_text, customdata=hover, texttemplate="%{text}",
            textfont={"size": size + 3, "color": "#7a0000"}, showscale=False, xgap=2, ygap=2,
            colorscale=[[0, DIVERGED_GROUND], [1, DIVERGED_GROUND]], name="diverged",
            hoverongaps=False, hovertemplate=where), row=row, col=col)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=xl,
                     title_text=label(x, data.inner), row=row, col=col)
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=yl,
                     title_text=(label(y, data.inner) if not y_labels else None) if col == 1
                     else None, automargin=True, row=row, col=col)


def _finish_surface(fig: go.Figure, data: StudyData, title: str, caption_text: str,
                    height: int = 420, columns: int = 1) -> None:
    """Title, caption, colour scale; and the narrowest width at which ``columns`` cells side
    by side still hold their numbers (``min_width`` in the layout's ``meta``: narrower, the
    page lets the figure scroll inside its own box rather than print numbers over cells)."""
    titled(fig, title, caption_text)
    per_cell = 42 if columns <= 9 else 38 if columns <= 16 else 34  # the font _heatmap picks
    fig.update_layout(height=height, plot_bgcolor="white", margin={"t": 70, "r": 10},
                      coloraxis=_coloraxis(analysis_of(data).rules),
                      meta={**(fig.layout.meta or {}), "min_width": 250 + per_cell * columns})


def _subplot_titles(names: list[str], cols: int) -> list[str]:
    return [wrap(n, SUBPLOT_TITLE_CHARS // max(cols, 1)) for n in names]


def matched_figure(data: StudyData) -> go.Figure | None:
    """The matched comparison as heatmaps: Lookahead at its matched setting and the baseline on
    the same shared settings, one colour scale (gap to the study's best)."""
    from lookbench.report.analysis import matched_of

    m = matched_of(analysis_of(data))
    if m is None:
        return None
    both = pd.concat([m.lookahead_scores, m.base_scores])
    varying = [c for c in SHARED if c != "lr" and both[c].nunique(dropna=True) > 1]
    la_name = f"lookahead ({describe_setting(m.setting)})"
    if not varying:  # one axis: the two optimizers as two rows of one map
        cells = both.assign(row=np.where(both["optimizer"] == "lookahead", 1, 0))
        fig = make_subplots(rows=1, cols=1)
        _heatmap(fig, cells, "lr", "row", data, 1,
                 y_labels={1: wrap(la_name, 20), 0: m.baseline})
        height, top, columns = 360, 70, cells["lr"].nunique()
    else:
        y = varying[0]
        titles = _subplot_titles([la_name, m.baseline], 2)
        fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.1)
        for col, cells in enumerate((m.lookahead_scores, m.base_scores), start=1):
            best = _best_over_rest(cells, ["lr", y], data.maximize)
            _heatmap(fig, best, "lr", y, data, col, across=2)
        height, top = 440, 70 + 18 * max(t.count("<br>") + 1 for t in titles)
        columns = 2 * both["lr"].nunique()
    _finish_surface(fig, data, f"Matched comparison: final {label(data.metric)}",
                    f"Lookahead and {m.baseline} on the {m.configurations} settings both ran, "
                    f"final {label(data.metric)} in each cell. Colour: gap to this comparison's "
                    "best; ✕ on grey: diverged in every seed; a blank cell was not run.",
                    height, columns=columns)
    fig.update_layout(margin={"t": top})
    return fig


def k_alpha_figure(data: StudyData) -> go.Figure | None:
    """Lookahead's own hyperparameters, k × α, at the one inner setting (lr, momentum, weight
    decay) where the grid sweeps the most of them (the paper's Figure 9 design)."""
    s = analysis_of(data).scores
    la = s[(s["optimizer"] == "lookahead") & s["alpha"].notna()]
    if la.empty:
        return None
    by_inner = la.groupby(list(SHARED), dropna=False)["score"]
    inner = pd.DataFrame({"n": by_inner.size(),
                          "best": by_inner.max() if data.maximize else -by_inner.min()})
    if inner["n"].max() < 2 or la["k"].nunique() * la["alpha"].nunique() < 2:
        return None
    # The inner setting with the most (k, α) points; among those, the one with the best score.
    key = inner.sort_values(["n", "best"], ascending=False, kind="stable").index[0]
    setting = dict(zip(SHARED, key if isinstance(key, tuple) else (key,)))

    def at(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[matching(frame, setting)]

    cells = _best_over_rest(at(la), ["k", "alpha"], data.maximize)
    where = hparams.format_config(setting)
    fig = make_subplots(rows=1, cols=1)
    _heatmap(fig, cells, "alpha", "k", data, 1)
    base = [o for o in data.optimizers if o != "lookahead"]
    ref = ""
    for b in base:
        rows = at(s[s["optimizer"] == b])
        if len(rows):
            r = rows.iloc[0]
            ref += f" {b} at the same setting: {_cell_text(r, data)}."
    _finish_surface(fig, data, f"Lookahead's k × α at {where}",
                    f"Lookahead's own k × α at {where} (the paper's Figure 9 design), final "
                    f"{label(data.metric)} in each cell. Colour: gap to the whole study's best; "
                    f"✕ on grey: diverged in every seed.{ref}", columns=cells["alpha"].nunique())
    return fig


def surface_figures(data: StudyData) -> list[tuple[str, go.Figure]]:
    """Sensitivity surfaces over each optimizer's *whole* grid, for every pair of
    hyperparameters some optimizer sweeps together: the best over the other hyperparameters in
    each cell, optimizers side by side on one colour scale (gap to the study's best). The
    baseline is drawn as itself, only for pairs it has. A panel is drawn only where it holds a
    surface (``surface_cells``): the grid tables of a union that never sweep the pair together
    (an lr row at k = 5 and a k column at lr 0.1) make no panel, and a pair no optimizer
    holds a surface of makes no figure. [(title, figure)]"""
    scores = analysis_of(data).scores
    out = []
    for x, y in SURFACE_PAIRS:
        if not any(x in data.swept(o) and y in data.swept(o) for o in data.optimizers):
            continue
        panels: list[tuple[str, pd.DataFrame]] = []
        for opt in data.optimizers:
            if not (x in data.swept(opt) or y in data.swept(opt)):
                continue
            s = scores[scores.optimizer == opt]
            s = s[s[x].notna() & s[y].notna()]
            if s.empty:
                continue
            cells = surface_cells(_best_over_rest(s, [x, y], data.maximize), x, y,
                                  analysis_of(data).sampler)
            if cells is None:
                continue
            held = s[s[x].isin(cells[x].unique()) & s[y].isin(cells[y].unique())]
            panels.append((f"{opt} ({len(held)} configurations)", cells))
        if not panels:
            continue
        cols = min(len(panels), PANELS_PER_ROW)
        rows = math.ceil(len(panels) / cols)
        titles = _subplot_titles([p for p, _ in panels], cols)
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles,
                            horizontal_spacing=0.1, vertical_spacing=0.22 / rows)
        drawn = []  # each panel's columns of cells (0: a scatter)
        for i, (_, cells) in enumerate(panels):
            drawn.append(_add_surface(fig, cells, x, y, data, i % cols + 1, row=i // cols + 1,
                                      across=cols))
        title = f"{label(y, data.inner)} × {label(x, data.inner)}"
        _finish_surface(fig, data, f"{title}: whole grids",
                        f"{title} over each optimizer's whole grid: in each cell the best "
                        f"configuration over the other hyperparameters, final "
                        f"{label(data.metric)} printed. Colour: gap to the whole study's best; "
                        "✕ on grey: diverged in every seed; a blank cell was not run.",
                        height=60 + 380 * rows,
                        columns=max(sum(drawn[r:r + cols]) for r in range(0, len(drawn), cols)))
        fig.update_layout(margin={"t": 70 + 18 * max(t.count("<br>") + 1 for t in titles)})
        out.append((title, fig))
    return out


def surface_cells(best: pd.DataFrame, x: str, y: str, sampler: str) -> pd.DataFrame | None:
    """The cells of ``best`` (one configuration per (x, y)) that form a surface, or ``None``
    where they form none and the panel is not drawn.

    A grid fills its panel and is drawn whole. The grid tables of a union fill it sparsely
    when no table sweeps x and y together (Lookahead's lr row at k = 5 plus its k column at
    lr 0.1: a cross, mostly empty): there, only the rows and columns that cross at least one
    other value of the other axis are kept, repeatedly, and nothing is left of a cross (its
    two lines are the lr-sensitivity and k × α figures). Random or TPE points, which repeat
    no value, are kept where they lie (a scatter)."""
    xs, ys = best[x].nunique(), best[y].nunique()
    if xs * ys == 0:
        return None
    if len(best) >= MIN_HEATMAP_FILL * xs * ys:
        return best
    repeats = best[x].duplicated().any() and best[y].duplicated().any()
    if sampler in ("random", "tpe") or (sampler != "grid" and not repeats):
        return best
    cells = best
    while True:  # drop the rows and columns that cross nothing
        keep = (cells.groupby(x)[y].transform("nunique") >= 2) & \
               (cells.groupby(y)[x].transform("nunique") >= 2)
        if keep.all() or not keep.any():
            break
        cells = cells[keep]
    if not keep.all() or cells[x].nunique() < 2 or cells[y].nunique() < 2:
        return None
    return cells


def _add_surface(fig: go.Figure, best: pd.DataFrame, x: str, y: str, data: StudyData,
                 col: int, row: int = 1, across: int = 1) -> int:
    """One panel: a heatmap (returns its number of columns) or a scatter (returns 0)."""
    xs, ys = sorted(best[x].unique()), sorted(best[y].unique())
    # A grid (or what is kept of one) is a heatmap; random or TPE points, which would leave
    # most of one empty, are shown where they lie, on the hyperparameter's own (log) scale.
    if (len(xs) <= MAX_HEATMAP_VALUES and len(ys) <= MAX_HEATMAP_VALUES
            and (len(best) >= MIN_HEATMAP_FILL * len(xs) * len(ys)
                 or (best[x].duplicated().any() and best[y].duplicated().any()))):
        _heatmap(fig, best, x, y, data, col, row=row, across=across)
        return len(xs)
    all_diverged = best["diverged"] >= best["seeds"]
    ok = best[~all_diverged]
    fig.add_trace(go.Scatter(
        x=ok[x], y=ok[y], mode="markers", name="configurations",
        marker={"color": gap_colour(ok["gap"], analysis_of(data).rules), "coloraxis": "coloraxis",
                "size": 10, "line": {"width": 0.5, "color": "#444"}},
        text=[_hover(r, data, (x, y)) for r in ok.to_dict("records")],
        hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>%{{text}}<extra></extra>",
        showlegend=False), row=row, col=col)
    bad = best[all_diverged]
    if len(bad):
        fig.add_trace(go.Scatter(
            x=bad[x], y=bad[y], mode="markers", name="diverged", showlegend=False,
            marker={"symbol": "x-thin", "size": 14, "line": {"width": 2, "color": "#7a0000"}},
            hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>diverged in every seed<extra></extra>"),
            row=row, col=col)
    fig.update_xaxes(type="log" if hparams.is_log(x) else "linear", showgrid=True,
                     gridcolor="#e5e5e5", title_text=label(x, data.inner), row=row, col=col)
    fig.update_yaxes(title_text=label(y, data.inner) if col == 1 else None, showgrid=True,
                     gridcolor="#e5e5e5", row=row, col=col)
    return 0


def lr_sensitivity_figure(data: StudyData) -> go.Figure:
    """Final metric against the inner learning rate, best over the other hyperparameters,
    with the range its seeds span as a band (log x axis; log y for losses), each optimizer in
    its own colour, dash and marker (``line_style``: identical lines stay visible). On the matched
    set where there is one (Lookahead at its matched setting, the baseline on the same
    settings), so neither line is a maximum over more configurations than the other; else over
    each one's whole grid. Settings that diverged in every seed are ✕ marks at the bottom of
    the plot and set no axis range."""
    from lookbench.report.analysis import matched_of

    scores = analysis_of(data).scores
    m = matched_of(analysis_of(data))
    if m is not None:
        sets = [("lookahead", m.lookahead_scores), (m.baseline, m.base_scores)]
        where = (f"on the {m.configurations} matched settings, Lookahead at "
                 f"{describe_setting(m.setting)}")
    else:
        sets = [(opt, scores[scores.optimizer == opt]) for opt in data.optimizers]
        where = "over each optimizer's whole grid"
    units = units_of(data)
    fig = go.Figure()
    finite_scores = []
    crosses: list[tuple[str, list[float]]] = []
    for opt, own in sets:
        best = _best_over_rest(own, ["lr"], data.maximize)
        best = best.sort_values("lr")
        dead = best["diverged"] >= best["seeds"]
        crosses.append((opt, list(best.loc[dead, "lr"])))
        best = best[~dead]
        finite_scores += list(best["score"])
        c = color(opt)
        lo, hi = best["seed_min"], best["seed_max"]
        fig.add_trace(go.Scatter(
            x=list(best["lr"]) + list(best["lr"])[::-1], y=list(hi) + list(lo)[::-1],
            fill="toself", fillcolor=c, opacity=0.18, line={"width": 0}, hoverinfo="skip",
            name=f"{opt}: the range its seeds span", showlegend=False, legendgroup=opt))
        fig.add_trace(go.Scatter(
            x=best["lr"], y=best["score"], mode="lines+markers", name=opt, legendgroup=opt,
            **line_style(data, opt),
            text=[_hover(r, data, ("lr",)) for _, r in best.iterrows()],
            hovertemplate="lr=%{x:g}<br>%{text}<extra>" + opt + "</extra>"))
    log_y = not data.maximize and all(v > 0 for v in finite_scores)
    if finite_scores:
        bottom = min(finite_scores) if data.maximize else max(finite_scores)
        for opt, lrs in crosses:
            if lrs:
                fig.add_trace(go.Scatter(
                    x=lrs, y=[bottom] * len(lrs), mode="markers", name=f"{opt}: diverged",
                    legendgroup=opt, marker={"symbol": "x", "size": 11, "color": color(opt)},
                    hovertemplate="lr=%{x:g}<br>diverged in every seed<extra>" + opt +
                                  "</extra>"))
    fig.update_xaxes(type="log", title_text=label("lr"))
    fig.update_yaxes(title_text=f"final {label(data.metric)}",
                     type="log" if log_y else "linear", **units.axis())
    titled(fig, f"Final {label(data.metric)} against the inner learning rate",
           f"Final {label(data.metric)} against the inner learning rate {where}, the best over "
           "the other hyperparameters at each rate. Band: the range the seeds span; ✕: "
           "diverged in every seed. Each optimizer has its own marker and dash, so a line "
           "that lies on another stays visible.")
    fig.update_layout(height=440, legend=LEGEND_BELOW, margin={"t": 60, "r": 10})
    return fig


def _best_config_trials(data: StudyData) -> dict[str, pd.DataFrame]:
    scores = analysis_of(data).scores
    keys = config_keys(scores)
    out = {}
    for opt in data.optimizers:
        s = scores[scores.optimizer == opt]
        row = s.loc[s["score"].idxmax() if data.maximize else s["score"].idxmin()]
        out[opt] = data.trials[matching(data.trials, row[keys])]
    return out


def curves_figure(data: StudyData, analytic: dict[str, np.ndarray] | None = None) -> go.Figure:
    """Learning curves of each optimizer's best configuration, mean ± sd over seeds."""
    metrics = list(dict.fromkeys([data.metric, "test_loss"]))
    metrics = [m for m in metrics if m in data.curves and data.curves[m].notna().any()]
    fig = make_subplots(rows=1, cols=len(metrics),
                        subplot_titles=[label(m) for m in metrics], horizontal_spacing=0.12)
    units = units_of(data)
    for opt, runs in _best_config_trials(data).items():
        curves = data.curves[data.curves["trial"].isin(runs["trial"])]
        c = color(opt)
        style = line_style(data, opt)["line"]
        for col, m in enumerate(metrics, start=1):
            g = curves.groupby("epoch")[m]
            mean, sd = g.mean(), g.std().fillna(0.0)
            epochs = list(mean.index)
            fmt = units.d3 if m == data.metric else ".4g"
            fig.add_trace(go.Scatter(
                x=epochs + epochs[::-1], y=list(mean + sd) + list(mean - sd)[::-1],
                fill="toself", fillcolor=c, opacity=0.18, line={"width": 0},
                hoverinfo="skip", showlegend=False, legendgroup=opt), row=1, col=col)
            fig.add_trace(go.Scatter(
                x=epochs, y=mean, mode="lines", name=f"{opt} (best)", legendgroup=opt,
                showlegend=col == 1, line=style,
                hovertemplate="epoch %{x}<br>%{y:" + fmt + "}<extra>" + opt + "</extra>"),
                row=1, col=col)
            if analytic and opt in analytic and m == "test_loss":
                fig.add_trace(go.Scatter(
                    x=np.arange(1, len(analytic[opt]) + 1), y=analytic[opt], mode="lines",
                    line={"color": c, "dash": "dot"}, name=f"{opt}: expected (Eq. 5)",
                    legendgroup=opt), row=1, col=col)
        fig.update_xaxes(title_text="epoch")
    for col, m in enumerate(metrics, start=1):
        if m == data.metric:
            fig.update_yaxes(**units.axis(), row=1, col=col)
        if m == "test_loss" and (data.curves[m].dropna() > 0).all():
            fig.update_yaxes(type="log", row=1, col=col)
    titled(fig, "Learning curves of each optimizer's best configuration",
           "Each optimizer's best configuration over its own grid: mean ± sd over its seeds, "
           "on the evaluation weights.")
    fig.update_layout(height=440, legend=LEGEND_BELOW, margin={"t": 80, "r": 10})
    return fig


def fast_slow_figure(data: StudyData) -> go.Figure | None:
    """The paper's Figure 10 per epoch: the ranking metric of each wrapper's best
    configuration on its evaluated weights (solid: Lookahead's slow weights, an average) and on
    its fast weights (dashed: the end of Lookahead's last inner loop, before the slow step; an
    averaging baseline's iterate), mean over seeds. ``None`` unless the study traced them
    (``--trace-fast``)."""
    fast = f"fast_{data.metric}"
    if fast not in data.curves or not data.curves[fast].notna().any():
        return None
    fig = go.Figure()
    for opt, runs in _best_config_trials(data).items():
        curves = data.curves[data.curves["trial"].isin(runs["trial"])]
        if curves.empty or not curves[fast].notna().any():
            continue
        c = color(opt)
        symbol = line_style(data, opt)["marker"]["symbol"]
        for column, dash, words in ((data.metric, "solid", "evaluated"),
                                    (fast, "dash", "fast weights")):
            mean = curves.groupby("epoch")[column].mean()
            fig.add_trace(go.Scatter(
                x=list(mean.index), y=mean, mode="lines+markers",
                line={"color": c, "dash": dash}, marker={"symbol": symbol, "size": 6},
                name=f"{opt}: {words}",
                hovertemplate="epoch %{x}<br>%{y:" + units_of(data).d3 + "}<extra>"
                              + f"{opt}: {words}</extra>"))
    if not fig.data:
        return None
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text=label(data.metric), **units_of(data).axis())
    titled(fig, "Fast and evaluated weights of each wrapper's best configuration",
           "Mean over seeds.")
    fig.update_layout(height=440, legend=LEGEND_BELOW, margin={"t": 60, "r": 10})
    return fig


def expected_best_figure(data: StudyData) -> go.Figure:
    """What a search finds after n configurations. Grid and random studies: the expected best
    of n configurations drawn at random (Dodge et al., 2019), on the matched set where there is
    one (both optimizers drawing from the same shared settings), else on each one's own grid.
    TPE studies: the best found after the first n proposals, in the order TPE made them."""
    from lookbench.report.analysis import matched_of

    analysis = analysis_of(data)
    fig = go.Figure()
    metric = label(data.metric)
    units = units_of(data)
    if analysis.sampler == "tpe":
        for opt in data.optimizers:
            curve = best_so_far(analysis.scores[analysis.scores.optimizer == opt], data.maximize)
            style = line_style(data, opt)
            fig.add_trace(go.Scatter(x=np.arange(1, len(curve) + 1), y=curve, mode="lines+markers",
                                     name=opt, line={**style["line"], "shape": "hv"},
                                     marker=style["marker"],
                                     hovertemplate="after %{x} proposals<br>%{y:" + units.d3 +
                                                   "}<extra>" + opt + "</extra>"))
        fig.update_xaxes(title_text="configurations proposed by TPE (n)")
        fig.update_yaxes(title_text=f"best {metric} found", **units.axis())
        titled(fig, "Best result found after n TPE proposals",
               f"The best final {metric} each optimizer's TPE search had found after its "
               "first n proposals, in the order TPE made them.")
        fig.update_layout(height=440, legend=LEGEND_BELOW, margin={"t": 60, "r": 10})
        return fig
    m = matched_of(analysis)
    if m is not None:
        sets = [(f"lookahead ({describe_setting(m.setting)})", "lookahead", m.lookahead_scores),
                (m.baseline, m.baseline, m.base_scores)]
        where = f"the {m.configurations} matched settings"
    else:
        sets = [(f"{opt} (own grid, {int((analysis.scores.optimizer == opt).sum())} "
                 f"configurations)", opt, analysis.scores[analysis.scores.optimizer == opt])
                for opt in data.optimizers]
        where = "each optimizer's own grid"
    n_max = max(len(s) for _, _, s in sets)
    for name, opt, s in sets:
        curve = expected_best(s["score"].to_numpy(float), n_max, data.maximize)
        fig.add_trace(go.Scatter(x=np.arange(1, n_max + 1), y=curve, mode="lines+markers",
                                 name=name, **line_style(data, opt),
                                 hovertemplate="n=%{x}<br>%{y:" + units.d3 + "}<extra>" + opt +
                                               "</extra>"))
    fig.update_xaxes(title_text="configurations tried at random (n)", type="log")
    fig.update_yaxes(title_text=f"expected best {metric}",
                     type="log" if not data.maximize and (analysis.scores["score"] > 0).all()
                     else "linear", **units.axis())
    titled(fig, "Expected best result after n random configurations",
           f"The expected best final {metric} of n configurations drawn at random from {where} "
           "(Dodge et al., 2019).")
    fig.update_layout(height=440, legend=LEGEND_BELOW, margin={"t": 60, "r": 10})
    return fig


def nqm_figure(data: StudyData) -> go.Figure | None:
    """The noisy quadratic: measured final loss beside Eq. 5's expected loss after the same
    number of steps and Proposition 2's steady state, against the learning rate."""
    if data.task != "nqm":
        return None
    from lookbench.theory import (
        NqmOptions,
        default_spectrum,
        expected_loss,
        steady_state_loss,
    )

    opts = NqmOptions(**data.task_options)
    a, sigma2 = default_spectrum(opts.dim)
    epochs = int(data.trials["epochs"].iloc[0])
    steps = epochs * opts.steps_per_epoch
    scores = analysis_of(data).scores
    fig = go.Figure()
    lookahead = scores[scores.optimizer == "lookahead"]
    k = int(lookahead["k"].mode().iloc[0]) if len(lookahead) else None
    lines: list[tuple[str, pd.DataFrame, int | None, float | None, str]] = []
    marks: dict[str, dict] = {}  # a baseline's open marker: Lookahead's dots never hide it
    for opt in data.optimizers:
        if opt != "lookahead":
            lines.append((opt, scores[scores.optimizer == opt], None, None, color(opt)))
            marks[opt] = line_style(data, opt)["marker"]
    if k is not None:
        alphas = sorted(lookahead.loc[lookahead.k == k, "alpha"].dropna().unique())
        if len(alphas) > 6:
            alphas = [alphas[int(i)] for i in np.linspace(0, len(alphas) - 1, 6)]
        for i, alpha in enumerate(alphas):
            rows = lookahead[(lookahead.k == k) & (lookahead.alpha == alpha)]
            shade = 0.35 + 0.65 * (i + 1) / len(alphas)
            lines.append((f"lookahead k={k} α={alpha:g}", rows, k, float(alpha),
                          f"rgba(214,39,40,{shade:.2f})"))
    for name, rows, kk, alpha, c in lines:
        rows = rows.sort_values("lr")
        ok = rows[rows["diverged"] < rows["seeds"]]
        fig.add_trace(go.Scatter(x=ok["lr"], y=ok["score"], mode="markers", name=name,
                                 legendgroup=name,
                                 marker=marks.get(name, {"color": c, "size": 9}),
                                 hovertemplate="lr=%{x:g}<br>measured %{y:"
                                               + units_of(data).d3 + "}<extra>" + name
                                               + "</extra>"))
        grid = np.geomspace(rows["lr"].min(), rows["lr"].max(), 60)
        exp = [expected_loss(a, sigma2, lr, steps, opts.x0, kk, alpha) for lr in grid]
        fig.add_trace(go.Scatter(x=grid, y=exp, mode="lines", legendgroup=name,
                                 name=f"{name}: expected after {steps} steps (Eq. 5)",
                                 line={"color": c}, showlegend=False))
        stable = grid[grid < 2 / a.max()]
        if len(stable):
            ss = [steady_state_loss(a, sigma2, lr, kk, alpha) for lr in stable]
            fig.add_trace(go.Scatter(x=stable, y=ss, mode="lines", legendgroup=name,
                                     name=f"{name}: steady state (Prop. 2)",
                                     line={"color": c, "dash": "dash"}, showlegend=False))
    finite = scores.loc[np.isfinite(scores["score"]) & (scores["score"] > 0), "score"]
    if len(finite):  # a log axis: only positive losses can set its range
        top = float(np.quantile(finite, 0.9)) * 1.5
        fig.update_yaxes(range=[math.log10(max(finite.min() * 0.9, 1e-12)), math.log10(top)])
    fig.update_xaxes(type="log", title_text=label("lr"))
    fig.update_yaxes(type="log", title_text="expected loss (Eq. 5)")
    titled(fig, "Noisy quadratic: measured and expected final loss",
           f"Markers: the measured final loss; solid: Eq. 5's expected loss after the same "
           f"{steps} steps; dashed: Proposition 2's steady state.")
    fig.update_layout(height=500, legend=LEGEND_BELOW, margin={"t": 60, "r": 10})
    return fig


def nqm_analytic_curves(data: StudyData) -> dict[str, np.ndarray] | None:
    """Eq. 5's expected loss per epoch for each optimizer's best configuration (NQM only)."""
    if data.task != "nqm":
        return None
    from lookbench.theory import NqmOptions, default_spectrum, expected_loss_curve

    opts = NqmOptions(**data.task_options)
    a, sigma2 = default_spectrum(opts.dim)
    out = {}
    for opt, runs in _best_config_trials(data).items():
        r = runs.iloc[0]
        steps = int(r["epochs"]) * opts.steps_per_epoch
        la = opt == "lookahead"
        if r["inner"] != "sgd" or (r["momentum"] or 0) != 0 or (la and r["alpha_adaptive"]):
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            curve = expected_loss_curve(a, sigma2, float(r["lr"]), steps, opts.x0,
                                        int(r["k"]) if la else None,
                                        float(r["alpha"]) if la else None,
                                        every=opts.steps_per_epoch)
        out[opt] = curve[1:]
    return out
