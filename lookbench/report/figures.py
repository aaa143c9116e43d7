"""The report's Plotly figures, each built from a study's tables alone.

Conventions shared by every figure: a configuration's score is the mean over its seeds of the
final metric, with diverged seeds at the worst value (``metrics.config_scores``); Lookahead is
drawn in one colour and each baseline in its own, on every figure; diverged settings are drawn
as ✕ marks on a grey ground, never dropped and never left white.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lookbench.report.data import StudyData
from lookbench.report.metrics import config_scores, expected_best

COLORS = {"lookahead": "#d62728", "sgd": "#1f77b4", "adam": "#2ca02c", "adamw": "#9467bd",
          "polyak": "#8c564b", "ema": "#e377c2", "swa": "#7f7f7f"}
DIVERGED_GROUND = "#c8c8c8"
LABELS = {"lr": "inner learning rate", "momentum": "momentum (Adam: β1)",
          "weight_decay": "weight decay", "k": "k (steps per sync)", "alpha": "α (slow step)",
          "test_acc": "test accuracy", "test_loss": "test loss"}
SURFACE_PAIRS = [("lr", "alpha"), ("k", "alpha"), ("lr", "momentum"), ("lr", "weight_decay"),
                 ("lr", "k")]
MAX_HEATMAP_VALUES = 12  # more distinct values than this on an axis: a scatter, not a grid
MIN_HEATMAP_FILL = 0.5  # fewer filled cells than this share (random/TPE points): a scatter


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
    parts = []
    for field in ("lr", "momentum", "weight_decay", "k", "alpha"):
        if field not in axes and pd.notna(row.get(field)):
            parts.append(f"{field}={_fmt(row[field])}")
    if row.get("alpha_adaptive"):
        parts.append("α adaptive")
    return ", ".join(parts)


def _hover(row: pd.Series, metric: str, axes: tuple[str, ...]) -> str:
    div = int(row["diverged"])
    text = (f"{LABELS.get(metric, metric)}: {row['score']:.4g} ± {row['std']:.2g} "
            f"(n={int(row['seeds'])} seeds)")
    if div:
        text += f"<br>diverged in {div} of {int(row['seeds'])} seeds"
    rest = _others(row, axes)
    return text + (f"<br>best at {rest}" if rest else "")


def surface_figures(data: StudyData) -> list[tuple[str, go.Figure]]:
    """Sensitivity surfaces for every pair of hyperparameters some optimizer sweeps together,
    optimizers side by side on one shared colour scale: [(title, figure)].

    In the inner lr × α surface the baseline appears as the row α = 1, which is exactly what
    Lookahead with α = 1 computes (the slow weights jump to the fast ones).
    """
    scores = config_scores(data.trials, data.metric, data.maximize)
    zmin, zmax = scores["score"].min(), scores["score"].max()
    out = []
    for x, y in SURFACE_PAIRS:
        if not any(x in data.swept(o) and y in data.swept(o) for o in data.optimizers):
            continue
        panels: list[tuple[str, pd.DataFrame]] = []
        for opt in data.optimizers:
            s = scores[scores.optimizer == opt]
            if y == "alpha" and opt != "lookahead" and x == "lr":
                s = s.assign(alpha=1.0)  # the baseline is Lookahead with α = 1
            s = s[s[x].notna() & s[y].notna()]
            if len(s) and (x in data.swept(opt) or y in data.swept(opt)):
                panels.append((opt if "alpha" not in (x, y) or opt == "lookahead"
                               else f"{opt} (= lookahead with α = 1)", s))
        fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p for p, _ in panels],
                            horizontal_spacing=0.08)
        for col, (_, s) in enumerate(panels, start=1):
            best = _best_over_rest(s, [x, y], data.maximize)
            _add_surface(fig, best, x, y, data.metric, col, zmin, zmax)
        title = f"{LABELS[y]} × {LABELS[x]}"
        fig.update_layout(title=f"{title}: final {LABELS[data.metric]}, best over the other "
                                f"hyperparameters (✕ = diverged in every seed)", height=420,
                          plot_bgcolor=DIVERGED_GROUND, margin={"t": 90})
        out.append((title, fig))
    return out


def _add_surface(fig: go.Figure, best: pd.DataFrame, x: str, y: str, metric: str, col: int,
                 zmin: float, zmax: float) -> None:
    xs, ys = sorted(best[x].unique()), sorted(best[y].unique())
    all_diverged = best["diverged"] >= best["seeds"]
    # A grid study fills every cell; random or TPE points leave most of a heatmap empty and
    # are shown where they lie instead, on the hyperparameter's own (log) scale.
    if (len(xs) > MAX_HEATMAP_VALUES or len(ys) > MAX_HEATMAP_VALUES
            or len(best) < MIN_HEATMAP_FILL * len(xs) * len(ys)):
        ok = best[~all_diverged]
        fig.add_trace(go.Scatter(
            x=ok[x], y=ok[y], mode="markers", name="configurations",
            marker={"color": ok["score"], "coloraxis": "coloraxis", "size": 10},
            text=[_hover(r, metric, (x, y)) for _, r in ok.iterrows()],
            hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>%{{text}}<extra></extra>",
            showlegend=False), row=1, col=col)
        axis_type = "log"
    else:
        z = np.full((len(ys), len(xs)), np.nan)
        text = [[""] * len(xs) for _ in ys]
        for _, r in best.iterrows():
            i, j = ys.index(r[y]), xs.index(r[x])
            if r["diverged"] < r["seeds"]:
                z[i, j] = r["score"]
            text[i][j] = _hover(r, metric, (x, y))
        fig.add_trace(go.Heatmap(
            x=[_fmt(v) for v in xs], y=[_fmt(v) for v in ys], z=z, text=text,
            coloraxis="coloraxis", xgap=2, ygap=2, name="surface",
            hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>%{{text}}<extra></extra>"),
            row=1, col=col)
        axis_type = "category"
        x_cats, y_cats = [_fmt(v) for v in xs], [_fmt(v) for v in ys]
        fig.update_xaxes(categoryorder="array", categoryarray=x_cats, row=1, col=col)
        fig.update_yaxes(categoryorder="array", categoryarray=y_cats, row=1, col=col)
    bad = best[all_diverged]
    if len(bad):
        fig.add_trace(go.Scatter(
            x=[_fmt(v) if axis_type == "category" else v for v in bad[x]],
            y=[_fmt(v) if axis_type == "category" else v for v in bad[y]],
            mode="markers", name="diverged", showlegend=False,
            marker={"symbol": "x-thin", "size": 14, "line": {"width": 2, "color": "#7a0000"}},
            hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>diverged in every seed<extra></extra>"),
            row=1, col=col)
    if axis_type == "log":
        fig.update_xaxes(type="log" if x in ("lr", "weight_decay") else "linear", row=1,
                         col=col)
    fig.update_xaxes(title_text=LABELS[x], row=1, col=col)
    fig.update_yaxes(title_text=LABELS[y] if col == 1 else None, row=1, col=col)
    fig.update_layout(coloraxis={"colorscale": "Viridis", "cmin": zmin, "cmax": zmax,
                                 "reversescale": metric != "test_acc",
                                 "colorbar": {"title": LABELS.get(metric, metric)}})


def lr_sensitivity_figure(data: StudyData) -> go.Figure:
    """Final metric against the inner learning rate, best over the other hyperparameters,
    with a band of ± one standard deviation over seeds (log axis)."""
    scores = config_scores(data.trials, data.metric, data.maximize)
    fig = go.Figure()
    for opt in data.optimizers:
        best = _best_over_rest(scores[scores.optimizer == opt], ["lr"], data.maximize)
        best = best.sort_values("lr")
        c = color(opt)
        fig.add_trace(go.Scatter(
            x=list(best["lr"]) + list(best["lr"])[::-1],
            y=list(best["score"] + best["std"]) + list(best["score"] - best["std"])[::-1],
            fill="toself", fillcolor=c, opacity=0.18, line={"width": 0}, hoverinfo="skip",
            name=f"{opt} ± sd over seeds", showlegend=False, legendgroup=opt))
        symbols = ["x" if d >= n else "circle" for d, n in zip(best["diverged"], best["seeds"])]
        fig.add_trace(go.Scatter(
            x=best["lr"], y=best["score"], mode="lines+markers", name=opt, legendgroup=opt,
            line={"color": c}, marker={"symbol": symbols, "size": 9},
            text=[_hover(r, data.metric, ("lr",)) for _, r in best.iterrows()],
            hovertemplate="lr=%{x:g}<br>%{text}<extra>" + opt + "</extra>"))
    fig.update_xaxes(type="log", title_text=LABELS["lr"])
    fig.update_yaxes(title_text=f"final {LABELS[data.metric]}")
    fig.update_layout(title="Sensitivity to the inner learning rate (best over the other "
                            "hyperparameters; ✕ = diverged)", height=420)
    return fig


def _best_config_trials(data: StudyData) -> dict[str, pd.DataFrame]:
    scores = config_scores(data.trials, data.metric, data.maximize)
    keys = [c for c in scores.columns if c not in ("score", "std", "seeds", "diverged")]
    out = {}
    for opt in data.optimizers:
        s = scores[scores.optimizer == opt]
        row = s.loc[s["score"].idxmax() if data.maximize else s["score"].idxmin()]
        mask = pd.Series(True, index=data.trials.index)
        for k in keys:
            mask &= (data.trials[k] == row[k]) | (data.trials[k].isna() & pd.isna(row[k]))
        out[opt] = data.trials[mask]
    return out


def curves_figure(data: StudyData, analytic: dict[str, np.ndarray] | None = None) -> go.Figure:
    """Learning curves of each optimizer's best configuration, mean ± sd over seeds."""
    metrics = ["test_acc", "test_loss"] if data.maximize else ["test_loss"]
    fig = make_subplots(rows=1, cols=len(metrics),
                        subplot_titles=[LABELS[m] for m in metrics])
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
    fig.update_layout(title="Learning curves of each optimizer's best configuration "
                            "(mean ± sd over seeds, evaluation weights)", height=420)
    return fig


def expected_best_figure(data: StudyData) -> go.Figure:
    """Expected best score after n random configurations (Dodge et al., 2019)."""
    scores = config_scores(data.trials, data.metric, data.maximize)
    fig = go.Figure()
    n_max = int(scores.groupby("optimizer").size().max())
    for opt in data.optimizers:
        s = scores.loc[scores.optimizer == opt, "score"].to_numpy(float)
        curve = expected_best(s, n_max, data.maximize)
        fig.add_trace(go.Scatter(x=np.arange(1, n_max + 1), y=curve, mode="lines+markers",
                                 name=opt, line={"color": color(opt)},
                                 hovertemplate="n=%{x}<br>%{y:.4g}<extra>" + opt +
                                               "</extra>"))
    fig.update_xaxes(title_text="configurations tried at random (n)", type="log")
    fig.update_yaxes(title_text=f"expected best {LABELS[data.metric]}")
    fig.update_layout(title="Expected best result after n random configurations "
                            "(Dodge et al., 2019)", height=420)
    return fig


def nqm_figure(data: StudyData) -> go.Figure | None:
    """The noisy quadratic: measured final loss beside Eq. 5's expected loss after the same
    number of steps and Proposition 2's steady state, against the learning rate."""
    if data.task != "nqm":
        return None
    from lookbench.tasks.nqm import NqmOptions, default_spectrum, expected_loss, steady_state_loss

    opts = NqmOptions(**data.task_options)
    a, sigma2 = default_spectrum(opts.dim)
    epochs = int(data.trials["epochs"].iloc[0])
    steps = epochs * opts.steps_per_epoch
    scores = config_scores(data.trials, data.metric, data.maximize)
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
    fig.update_xaxes(type="log", title_text=LABELS["lr"])
    fig.update_yaxes(type="log", title_text="expected loss (Eq. 5)")
    fig.update_layout(title="Noisy quadratic: measured final loss (markers), expected loss "
                            "after the same steps (solid) and steady state (dashed)",
                      height=480)
    return fig


def nqm_analytic_curves(data: StudyData) -> dict[str, np.ndarray] | None:
    """Eq. 5's expected loss per epoch for each optimizer's best configuration (NQM only)."""
    if data.task != "nqm":
        return None
    from lookbench.tasks.nqm import NqmOptions, default_spectrum, expected_loss_curve

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
