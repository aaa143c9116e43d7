"""The report's Plotly figures, each built from a study's tables alone.

Conventions shared by every figure: a configuration's score is the mean over its seeds of the
final metric, with diverged seeds at the worst completed value (``lookbench.comparison.metrics``);
surfaces are coloured by the gap to the study's best score, with the scale spanning the region
near the best and everything worse clipped to one end, and the score printed in each cell;
Lookahead is drawn in one colour and each baseline in its own, on every figure; settings that
diverged in every seed are ✕ marks, never a colour, an axis range or a mean.
"""

from __future__ import annotations

import math

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
from lookbench.report.data import StudyData

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


def color(optimizer: str) -> str:
    return COLORS.get(optimizer, "#17becf")


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
    n = int(row["seeds"])
    text = f"{label(data.metric)}: {row['score']:.4g}"
    if n > 1:
        text += f" (mean of {n} seeds, which span {row['seed_min']:.4g}–{row['seed_max']:.4g})"
    else:
        text += " (one seed)"
    if "gap" in row and np.isfinite(row["gap"]):
        rules = data.analysis.rules
        if rules.absolute:
            gap = f"{row['gap']:.3g} from the best"
        elif data.maximize:
            gap = f"{row['gap']:.1%} below the best"
        elif rules.initial is not None:
            gap = f"gives up {row['gap']:.1%} of the best's improvement"
        else:
            excess = " excess" if rules.floor is not None else ""
            gap = f"{1 + row['gap']:.3g}× the best{excess}"
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
    """The number printed in a heatmap cell: the score, and how many seeds diverged."""
    if row["diverged"] >= row["seeds"]:
        return "✕"
    score = f"{row['score'] * 100:.1f}" if data.score_is_fraction \
        else f"{row['score']:.3g}"
    return score + (f" ({int(row['diverged'])}✕)" if row["diverged"] else "")


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


def _coloraxis(rules, whose: str) -> dict:
    if rules.absolute:
        ticks = ([0, 1, 5, GAP_CAP_PCT], ["best", "ε", "5 ε", f"≥ {GAP_CAP_PCT:g} ε"])
        cmax, title = GAP_CAP_PCT, f"gap to {whose} best"
    elif rules.maximize:
        ticks = ([0, 1, 5, GAP_CAP_PCT], ["best", "1% below", "5% below",
                                          f"≥ {GAP_CAP_PCT:g}% below"])
        cmax, title = GAP_CAP_PCT, f"gap to {whose} best"
    elif rules.initial is not None:
        ticks = ([0, 1, 5, GAP_CAP_PCT], ["best", "1% given up", "5% given up",
                                          f"≥ {GAP_CAP_PCT:g}%"])
        cmax, title = GAP_CAP_PCT, f"improvement given up vs {whose} best"
    else:
        vals = [0, math.log10(1.5), math.log10(2), math.log10(5), GAP_CAP_DECADES]
        ticks = (vals, ["best", "1.5×", "2×", "5×", f"≥ {10 ** GAP_CAP_DECADES:g}×"])
        cmax = GAP_CAP_DECADES
        title = ("excess loss ÷ best excess" if rules.floor is not None
                 else f"loss ÷ {whose} best")
    return {"colorscale": "Viridis", "reversescale": True, "cmin": 0, "cmax": cmax,
            "colorbar": {"title": title, "tickvals": ticks[0], "ticktext": ticks[1]}}


def _heatmap(fig: go.Figure, cells: pd.DataFrame, x: str, y: str, data: StudyData,
             col: int, y_labels: dict | None = None) -> None:
    """One heatmap panel of ``cells`` (annotated configuration scores, one per (x, y)),
    coloured by the gap to the study's best, the score printed in each cell; cells that
    diverged in every seed are a ✕ on the grey ground and take no colour."""
    xs = sorted(cells[x].unique())
    ys = sorted(cells[y].unique(), key=str) if y_labels else sorted(cells[y].unique())
    xl = [_fmt(v) for v in xs]
    yl = [y_labels[v] if y_labels else _fmt(v) for v in ys]
    z = np.full((len(ys), len(xs)), np.nan)
    text = [[""] * len(xs) for _ in ys]
    hover = [[""] * len(xs) for _ in ys]
    for _, r in cells.iterrows():
        i, j = ys.index(r[y]), xs.index(r[x])
        if r["diverged"] < r["seeds"]:
            z[i, j] = gap_colour(r["gap"], data.analysis.rules)
        text[i][j] = _cell_text(r, data)
        hover[i][j] = _hover(r, data, (x, y))
    fig.add_trace(go.Heatmap(
        x=xl, y=yl, z=z, text=text, customdata=hover, texttemplate="%{text}",
        textfont={"size": 11}, coloraxis="coloraxis", xgap=2, ygap=2, name="surface",
        hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>%{{customdata}}<extra></extra>"),
        row=1, col=col)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=xl,
                     title_text=label(x, data.inner), row=1, col=col)
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=yl,
                     title_text=(label(y, data.inner) if not y_labels else None) if col == 1
                     else None, row=1, col=col)


def _finish_surface(fig: go.Figure, data: StudyData, title: str, height: int = 420,
                    whose: str = "the whole study's") -> None:
    fig.update_layout(title=title, height=height, plot_bgcolor=DIVERGED_GROUND,
                      margin={"t": 90}, coloraxis=_coloraxis(data.analysis.rules, whose))


def matched_figure(data: StudyData) -> go.Figure | None:
    """The matched comparison as heatmaps: Lookahead at its matched setting and the baseline on
    the same shared settings, one colour scale (gap to the study's best)."""
    from lookbench.report.analysis import matched_of

    m = matched_of(data.analysis)
    if m is None:
        return None
    both = pd.concat([m.lookahead_scores, m.base_scores])
    varying = [c for c in SHARED if c != "lr" and both[c].nunique(dropna=True) > 1]
    la_name = f"lookahead ({describe_setting(m.setting)})"
    if not varying:  # one axis: the two optimizers as two rows of one map
        cells = both.assign(row=np.where(both["optimizer"] == "lookahead", 1, 0))
        fig = make_subplots(rows=1, cols=1)
        _heatmap(fig, cells, "lr", "row", data, 1, y_labels={1: la_name, 0: m.baseline})
        fig.update_yaxes(automargin=True)
        height = 300
    else:
        y = varying[0]
        fig = make_subplots(rows=1, cols=2, subplot_titles=[la_name, m.baseline],
                            horizontal_spacing=0.08)
        for col, cells in enumerate((m.lookahead_scores, m.base_scores), start=1):
            best = _best_over_rest(cells, ["lr", y], data.maximize)
            _heatmap(fig, best, "lr", y, data, col)
        height = 420
    _finish_surface(fig, data, f"Matched comparison: final {label(data.metric)}"
                               f" on the {m.configurations} settings both ran (colour: gap to "
                               f"this comparison's best; ✕ = diverged in every seed)", height,
                    whose="this comparison's")
    return fig


def k_alpha_figure(data: StudyData) -> go.Figure | None:
    """Lookahead's own hyperparameters, k × α, at the one inner setting (lr, momentum, weight
    decay) where the grid sweeps the most of them (the paper's Figure 9 design)."""
    s = data.analysis.scores
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
            ref += f"; {b} at the same setting: {_cell_text(r, data)}"
    _finish_surface(fig, data, f"Lookahead's k × α at {where} (Figure 9's design; colour: gap "
                               f"to the whole study's best){ref}")
    return fig


def surface_figures(data: StudyData) -> list[tuple[str, go.Figure]]:
    """Sensitivity surfaces over each optimizer's *whole* grid, for every pair of
    hyperparameters some optimizer sweeps together: the best over the other hyperparameters in
    each cell, optimizers side by side on one colour scale (gap to the study's best). The
    baseline is drawn as itself, only for pairs it has. [(title, figure)]"""
    scores = data.analysis.scores
    out = []
    for x, y in SURFACE_PAIRS:
        panels: list[tuple[str, pd.DataFrame]] = []
        for opt in data.optimizers:
            if not (x in data.swept(opt) and y in data.swept(opt)):
                if not (x in data.swept(opt) or y in data.swept(opt)):
                    continue
            s = scores[scores.optimizer == opt]
            s = s[s[x].notna() & s[y].notna()]
            if len(s):
                panels.append((f"{opt} ({len(s)} configurations)", s))
        if not any(x in data.swept(o) and y in data.swept(o) for o in data.optimizers):
            continue
        fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p for p, _ in panels],
                            horizontal_spacing=0.08)
        for col, (_, s) in enumerate(panels, start=1):
            best = _best_over_rest(s, [x, y], data.maximize)
            _add_surface(fig, best, x, y, data, col)
        title = f"{label(y, data.inner)} × {label(x, data.inner)}"
        _finish_surface(fig, data, f"{title}: whole grids, best over the other hyperparameters "
                                   f"(colour: gap to the whole study's best; ✕ = diverged in "
                                   f"every seed)")
        out.append((title, fig))
    return out


def _add_surface(fig: go.Figure, best: pd.DataFrame, x: str, y: str, data: StudyData,
                 col: int) -> None:
    xs, ys = sorted(best[x].unique()), sorted(best[y].unique())
    # A grid study fills every cell; random or TPE points leave most of a heatmap empty and
    # are shown where they lie instead, on the hyperparameter's own (log) scale.
    if (len(xs) <= MAX_HEATMAP_VALUES and len(ys) <= MAX_HEATMAP_VALUES
            and len(best) >= MIN_HEATMAP_FILL * len(xs) * len(ys)):
        _heatmap(fig, best, x, y, data, col)
        return
    all_diverged = best["diverged"] >= best["seeds"]
    ok = best[~all_diverged]
    fig.add_trace(go.Scatter(
        x=ok[x], y=ok[y], mode="markers", name="configurations",
        marker={"color": gap_colour(ok["gap"], data.analysis.rules), "coloraxis": "coloraxis",
                "size": 10},
        text=[_hover(r, data, (x, y)) for r in ok.to_dict("records")],
        hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>%{{text}}<extra></extra>",
        showlegend=False), row=1, col=col)
    bad = best[all_diverged]
    if len(bad):
        fig.add_trace(go.Scatter(
            x=bad[x], y=bad[y], mode="markers", name="diverged", showlegend=False,
            marker={"symbol": "x-thin", "size": 14, "line": {"width": 2, "color": "#7a0000"}},
            hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>diverged in every seed<extra></extra>"),
            row=1, col=col)
    fig.update_xaxes(type="log" if hparams.is_log(x) else "linear",
                     title_text=label(x, data.inner), row=1, col=col)
    fig.update_yaxes(title_text=label(y, data.inner) if col == 1 else None, row=1, col=col)


def lr_sensitivity_figure(data: StudyData) -> go.Figure:
    """Final metric against the inner learning rate, best over the other hyperparameters,
    with the 95% t-interval over seeds as a band (log x axis; log y for losses). On the matched
    set where there is one (Lookahead at its matched setting, the baseline on the same
    settings), so neither line is a maximum over more configurations than the other; else over
    each one's whole grid. Settings that diverged in every seed are ✕ marks at the bottom of
    the plot and set no axis range."""
    from lookbench.report.analysis import matched_of

    scores = data.analysis.scores
    m = matched_of(data.analysis)
    if m is not None:
        sets = [("lookahead", m.lookahead_scores), (m.baseline, m.base_scores)]
        where = f"on the {m.configurations} matched settings, Lookahead at " \
                f"{describe_setting(m.setting)}"
    else:
        sets = [(opt, scores[scores.optimizer == opt]) for opt in data.optimizers]
        where = "over each optimizer's whole grid"
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
            line={"color": c}, marker={"size": 9},
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
                     type="log" if log_y else "linear")
    fig.update_layout(title=f"Sensitivity to the inner learning rate {where} (best over the "
                            "other hyperparameters; band: the range the seeds span; "
                            "✕ = diverged)",
                      height=420)
    return fig


def _best_config_trials(data: StudyData) -> dict[str, pd.DataFrame]:
    scores = data.analysis.scores
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
                        subplot_titles=[label(m) for m in metrics])
    for opt, runs in _best_config_trials(data).items():
        curves = data.curves[data.curves["trial"].isin(runs["trial"])]
        c = color(opt)
        for col, m in enumerate(metrics, start=1):
            g = curves.groupby("epoch")[m]
            mean, sd = g.mean(), g.std().fillna(0.0)
            epochs = list(mean.index)
            fig.add_trace(go.Scatter(
                x=epochs + epochs[::-1], y=list(mean + sd) + list(mean - sd)[::-1],
                fill="toself", fillcolor=c, opacity=0.18, line={"width": 0},
                hoverinfo="skip", showlegend=False, legendgroup=opt), row=1, col=col)
            fig.add_trace(go.Scatter(
                x=epochs, y=mean, mode="lines", name=f"{opt} (best)", legendgroup=opt,
                showlegend=col == 1, line={"color": c},
                hovertemplate="epoch %{x}<br>%{y:.4g}<extra>" + opt + "</extra>"),
                row=1, col=col)
            if analytic and opt in analytic and m == "test_loss":
                fig.add_trace(go.Scatter(
                    x=np.arange(1, len(analytic[opt]) + 1), y=analytic[opt], mode="lines",
                    line={"color": c, "dash": "dot"}, name=f"{opt}: expected (Eq. 5)",
                    legendgroup=opt), row=1, col=col)
        fig.update_xaxes(title_text="epoch")
        if m == "test_loss" and (data.curves[m].dropna() > 0).all():
            fig.update_yaxes(type="log", row=1, col=col)
    fig.update_layout(title="Learning curves of each optimizer's best configuration "
                            "(mean ± sd over seeds, evaluation weights)", height=420)
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
        for column, dash, words in ((data.metric, "solid", "evaluated"),
                                    (fast, "dash", "fast weights")):
            mean = curves.groupby("epoch")[column].mean()
            fig.add_trace(go.Scatter(
                x=list(mean.index), y=mean, mode="lines", line={"color": c, "dash": dash},
                name=f"{opt}: {words}",
                hovertemplate="epoch %{x}<br>%{y:.4g}<extra>" + f"{opt}: {words}</extra>"))
    if not fig.data:
        return None
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text=label(data.metric))
    fig.update_layout(title="Fast and evaluated weights of each wrapper's best configuration "
                            "(mean over seeds)", height=420)
    return fig


def expected_best_figure(data: StudyData) -> go.Figure:
    """What a search finds after n configurations. Grid and random studies: the expected best
    of n configurations drawn at random (Dodge et al., 2019), on the matched set where there is
    one (both optimizers drawing from the same shared settings), else on each one's own grid.
    TPE studies: the best found after the first n proposals, in the order TPE made them."""
    from lookbench.report.analysis import matched_of

    analysis = data.analysis
    fig = go.Figure()
    metric = label(data.metric)
    if analysis.sampler == "tpe":
        for opt in data.optimizers:
            curve = best_so_far(analysis.scores[analysis.scores.optimizer == opt], data.maximize)
            fig.add_trace(go.Scatter(x=np.arange(1, len(curve) + 1), y=curve, mode="lines+markers",
                                     name=opt, line={"color": color(opt), "shape": "hv"},
                                     hovertemplate="after %{x} proposals<br>%{y:.4g}<extra>" +
                                                   opt + "</extra>"))
        fig.update_xaxes(title_text="configurations proposed by TPE (n)")
        fig.update_yaxes(title_text=f"best {metric} found")
        fig.update_layout(title="Best result found after n TPE proposals", height=420)
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
                                 name=name, line={"color": color(opt)},
                                 hovertemplate="n=%{x}<br>%{y:.4g}<extra>" + opt +
                                               "</extra>"))
    fig.update_xaxes(title_text="configurations tried at random (n)", type="log")
    fig.update_yaxes(title_text=f"expected best {metric}",
                     type="log" if not data.maximize and (analysis.scores["score"] > 0).all()
                     else "linear")
    fig.update_layout(title=f"Expected best result after n random configurations from {where} "
                            "(Dodge et al., 2019)", height=420)
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
    scores = data.analysis.scores
    fig = go.Figure()
    lookahead = scores[scores.optimizer == "lookahead"]
    k = int(lookahead["k"].mode().iloc[0]) if len(lookahead) else None
    lines: list[tuple[str, pd.DataFrame, int | None, float | None, str]] = []
    for opt in data.optimizers:
        if opt != "lookahead":
            lines.append((opt, scores[scores.optimizer == opt], None, None, color(opt)))
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
                                 legendgroup=name, marker={"color": c, "size": 9},
                                 hovertemplate="lr=%{x:g}<br>measured %{y:.5g}<extra>"
                                               + name + "</extra>"))
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
    fig.update_layout(title="Noisy quadratic: measured final loss (markers), expected loss "
                            "after the same steps (solid) and steady state (dashed)",
                      height=480)
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
