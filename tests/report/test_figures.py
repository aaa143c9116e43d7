"""The figures hold the traces a reader expects, built from the tables alone."""

from __future__ import annotations

import itertools

import numpy as np
import plotly.graph_objects as go
import pytest

from lookbench.report import load_study
from lookbench.report.analysis import analysis_of
from lookbench.report.figures import (
    caption,
    curves_figure,
    expected_best_figure,
    lr_sensitivity_figure,
    nqm_figure,
    surface_figures,
)


def test_surfaces_cover_every_swept_pair_coloured_by_the_gap_to_the_best(grid_study):
    data = load_study(grid_study)
    figs = dict(surface_figures(data))
    assert set(figs) == {"α (slow step) × inner learning rate", "α (slow step) × k (steps per "
                         "sync)", "momentum × inner learning rate",
                         "k (steps per sync) × inner learning rate"}
    lr_alpha = figs["α (slow step) × inner learning rate"]
    heatmaps = [t for t in lr_alpha.data if isinstance(t, go.Heatmap)]
    # The baseline has no α: it is drawn as itself where it has the axes, never as "α = 1".
    assert len(heatmaps) == 1 and "α = 1" not in str(lr_alpha.layout)
    (la,) = heatmaps
    assert list(la.x) == ["0.01", "0.1", "1"]
    # Colour: % below the study's best (0.89), clipped at 10%: the good region is not washed
    # out by the bad columns (0.79, 11% below, takes the end colour).
    z = np.array(la.z, dtype=float)
    assert z[0, 1] == 0.0 and z[0, 0] == 10.0
    axis = lr_alpha.layout.coloraxis
    assert axis.cmin == 0 and axis.cmax == 10 and axis.reversescale
    # The score in the cell, as the whole page writes an accuracy (units.py): in %.
    assert la.texttemplate == "%{text}" and la.text[0][1] == "89.00%"
    assert "mean of 3 seeds, which span 88.00%–90.00%" in la.customdata[0][1]
    momentum = figs["momentum × inner learning rate"]
    la_strip, sgd_map, sgd_dead = [t for t in momentum.data if isinstance(t, go.Heatmap)]
    assert len(la_strip.y) == 1 and len(sgd_map.y) == 2
    # Diverged cells: not a colour, a ✕ on grey, a trace of their own; the ground is white, so
    # a cell that was never run reads as blank, not as diverged.
    assert np.isnan(np.array(sgd_map.z, dtype=float)[0, 3]) and sgd_map.text[0][3] == ""
    assert sgd_dead.name == "diverged" and sgd_dead.text[0][3] == "✕"
    assert sgd_dead.colorscale[0][1] == "#c8c8c8" and not sgd_dead.showscale
    assert np.isnan(np.array(sgd_dead.z, dtype=float)[0, 2])  # lr 1 trained: not grey
    assert momentum.layout.plot_bgcolor == "white"
    assert "whole grids" in momentum.layout.title.text
    assert "best configuration over the other hyperparameters" in caption(momentum)


def test_the_matched_figure_puts_both_optimizers_on_the_same_settings(grid_study):
    from lookbench.report.figures import k_alpha_figure, matched_figure

    data = load_study(grid_study)
    fig = matched_figure(data)
    (hm,) = [t for t in fig.data if isinstance(t, go.Heatmap)]
    # SGD ran momentum 0.5 and 0.9, Lookahead 0.9 only: the matched set is momentum 0.9, and
    # lr 10 (SGD only) is not in it.
    assert list(hm.x) == ["0.01", "0.1", "1"]
    # (a long label wraps onto two lines: no tick label is wider than a narrow window allows)
    assert len(hm.y) == 2 and any("k = 5, α = 0.5" in str(y).replace("<br>", " ")
                                  for y in hm.y)
    ka = k_alpha_figure(data)
    (cells,) = [t for t in ka.data if isinstance(t, go.Heatmap)]
    assert len(cells.x) == 2 and len(cells.y) == 2  # α × k at one inner setting
    assert "sgd at the same setting: 88.00%" in caption(ka)


def test_a_diverged_loss_run_never_sets_a_colour_or_an_axis(tmp_path):
    """One quadratic study had a diverged run's last loss at 5e88: it set the colour range and
    every real cell became one colour. Now it counts as the worst completed loss."""
    from lookbench.report.figures import matched_figure
    from tests.report.conftest import write_study

    rows = []
    for lr, seed in itertools.product([0.01, 0.1, 1.0], range(2)):
        rows.append({"optimizer": "lookahead", "lr": lr, "momentum": 0.0, "seed": seed,
                     "state": "complete", "value": 1.0 + lr})
        blown = lr == 1.0
        rows.append({"optimizer": "sgd", "lr": lr, "momentum": 0.0, "seed": seed,
                     "state": "diverged" if blown else "complete",
                     "value": 5e88 if blown else 1.02 + lr})
    study = write_study(tmp_path, "quad", rows, task="quadratic", metric="test_loss")
    for part in (study / "trials").glob("*.parquet"):  # the diverged rows keep their last loss
        import pyarrow.parquet as pq

        t = pq.read_table(part)
        if t["state"][0].as_py() == "diverged":
            t = t.set_column(t.schema.get_field_index("final_test_loss"), "final_test_loss",
                             __import__("pyarrow").array([5e88]))
            pq.write_table(t, part)
    data = load_study(study)
    # The worst completed loss (2.0), or the loss at the start where the task knows it.
    assert data.initial_loss is not None and data.initial_loss > 2.0
    assert analysis_of(data).stand_in == pytest.approx(data.initial_loss)
    fig = matched_figure(data)
    z = np.array([t for t in fig.data if isinstance(t, go.Heatmap)][0].z, dtype=float)
    # Coloured by the share of the improvement from the start given up (0–10%, clipped).
    assert np.nanmax(z) <= 10.0 and np.isnan(z).sum() == 1  # the ✕ takes no colour
    lr_fig = lr_sensitivity_figure(data)
    assert lr_fig.layout.yaxis.type == "log"
    ys = [y for t in lr_fig.data if t.y is not None for y in t.y]
    assert max(ys) < 2 * data.initial_loss


def test_random_points_are_drawn_where_they_lie_not_as_a_mostly_empty_grid(tmp_path):
    from tests.report.conftest import write_study

    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):  # six random configurations: six distinct lr and k values
        lr, k = float(10 ** rng.uniform(-3, 0)), 3 + i
        for seed in range(2):
            rows.append({"optimizer": "lookahead", "lr": lr, "k": k, "seed": seed,
                         "state": "complete", "value": 0.8 + 0.01 * i})
            rows.append({"optimizer": "sgd", "lr": lr, "seed": seed, "state": "complete",
                         "value": 0.7})
    figs = dict(surface_figures(load_study(write_study(tmp_path, "random", rows))))
    fig = figs["k (steps per sync) × inner learning rate"]
    assert not [t for t in fig.data if isinstance(t, go.Heatmap)]
    points = [t for t in fig.data if t.name == "configurations"][0]
    assert len(points.x) == 6 and fig.layout.xaxis.type == "log"


def test_lr_sensitivity_has_a_line_and_a_seed_band_per_optimizer(grid_study, known_study):
    fig = lr_sensitivity_figure(load_study(grid_study))
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert [t.name for t in lines] == ["lookahead", "sgd"] and len(bands) == 2
    assert fig.layout.xaxis.type == "log"
    # On the matched set: SGD's lr 10 and momentum 0.5 were never run by Lookahead.
    assert list(lines[1].x) == [0.01, 0.1, 1.0] and "matched settings" in caption(fig)
    fig = lr_sensitivity_figure(load_study(known_study))
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    # SGD's lr 1 diverged in every seed: a ✕ at the bottom of the plot, not a point on a line.
    assert list(lines[1].x) == [0.1]
    (cross,) = [t for t in fig.data if t.name == "sgd: diverged"]
    assert list(cross.x) == [1.0] and cross.y[0] == min(min(t.y) for t in lines)


def test_learning_curves_and_expected_best(grid_study):
    data = load_study(grid_study)
    curves = curves_figure(data)
    names = {t.name for t in curves.data if t.mode == "lines"}
    assert names == {"lookahead (best)", "sgd (best)"}
    mean = [t for t in curves.data if t.name == "lookahead (best)"][0]
    assert list(mean.x) == [1, 2, 3, 4]
    evp = expected_best_figure(data)
    # On the matched set: both draw from the same 3 shared settings.
    assert [t.name for t in evp.data] == ["lookahead (k = 5, α = 0.5, maintain)", "sgd"]
    assert len(evp.data[0].x) == 3 and evp.data[0].y[-1] <= 0.9
    assert "matched settings" in caption(evp)


def test_nqm_figure_overlays_the_analysis(tmp_path):
    from lookbench.tasks.nqm import NqmOptions, default_spectrum, expected_loss
    from tests.report.conftest import write_study

    opts = NqmOptions(dim=10, steps_per_epoch=10)
    a, s2 = default_spectrum(10)
    rows = []
    for lr in (0.1, 0.3):
        rows.append({"optimizer": "sgd", "lr": lr, "momentum": 0.0, "seed": 0,
                     "state": "complete", "value": expected_loss(a, s2, lr, 30, 1.0)})
        rows.append({"optimizer": "lookahead", "lr": lr, "momentum": 0.0, "k": 5,
                     "alpha": 0.5, "seed": 0, "state": "complete",
                     "value": expected_loss(a, s2, lr, 30, 1.0, 5, 0.5)})
    study = write_study(tmp_path, "nqm", rows, task="nqm", metric="test_loss",
                        task_options=opts.model_dump_json())
    fig = nqm_figure(load_study(study))
    names = [t.name for t in fig.data]
    assert "sgd" in names and "lookahead k=5 α=0.5" in names
    assert any("Prop. 2" in n for n in names) and any("Eq. 5" in n for n in names)
    solid = [t for t in fig.data if t.name == "sgd: expected after 30 steps (Eq. 5)"][0]
    measured = [t for t in fig.data if t.name == "sgd"][0]
    # The measured points sit on the analytic curve (they were made from it).
    assert np.interp(0.1, solid.x, solid.y) == np.float64(measured.y[0]) or \
        abs(np.interp(0.1, solid.x, solid.y) / measured.y[0] - 1) < 1e-9
    assert nqm_figure(load_study(write_study(tmp_path, "d", rows[:1]))) is None


def test_a_loss_study_is_read_as_one_whatever_its_failed_rows_say(tmp_path):
    """Earlier versions recorded ``test_acc`` for a trial that failed before its task was
    built; the study's metric comes from its task, and such rows break no figure."""
    from lookbench.progress.status import status_table
    from lookbench.report import build_reports
    from tests.report.conftest import write_study

    rows = [{"optimizer": "lookahead", "lr": 0.1, "momentum": 0.9, "seed": 0,
             "state": "failed", "value": None, "metric": "test_acc"}]
    for lr, seed in itertools.product((0.1, 0.3), range(2)):
        rows.append({"optimizer": "sgd", "lr": lr, "momentum": 0.0, "seed": seed,
                     "state": "complete", "value": 50.0 + lr})
        rows.append({"optimizer": "lookahead", "lr": lr, "momentum": 0.0, "seed": seed,
                     "state": "complete", "value": 49.0 + lr})
    study = write_study(tmp_path, "nqm", rows, task="nqm", metric="test_loss")
    data = load_study(study)
    assert data.metric == "test_loss" and not data.maximize
    pages = build_reports([study], tmp_path / "reports")
    assert pages and all(p.stat().st_size > 0 for p in pages)
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(status_table(study))
    text = console.export_text()
    assert "final test_loss" in text and "49.10±" in text  # (a loss: 4 significant digits)


def test_status_names_adaptive_alpha_and_never_ranks_a_configuration_that_lost_a_seed(tmp_path):
    from rich.console import Console

    from lookbench.progress.status import status_table
    from tests.report.conftest import write_study

    rows = [
        # The highest mean among completed seeds, but its other seed diverged.
        {"optimizer": "lookahead", "lr": 1.0, "seed": 0, "state": "complete", "value": 0.99},
        {"optimizer": "lookahead", "lr": 1.0, "seed": 1, "state": "diverged", "value": None},
        {"optimizer": "lookahead", "lr": 0.1, "alpha": None, "alpha_adaptive": True, "seed": 0,
         "state": "complete", "value": 0.9},
        {"optimizer": "lookahead", "lr": 0.1, "alpha": None, "alpha_adaptive": True, "seed": 1,
         "state": "complete", "value": 0.92},
        {"optimizer": "sgd", "lr": 0.1, "seed": 0, "state": "complete", "value": 0.8},
    ]
    console = Console(width=200, record=True)
    console.print(status_table(write_study(tmp_path, "s", rows)))
    line = [t for t in console.export_text().splitlines() if t.strip().startswith("lookahead")][0]
    assert "91.00%±1.41 pp n=2" in line and "lr=0.1" in line and "alpha=adaptive" in line


def test_a_union_grid_draws_no_mostly_empty_panel(union_study):
    """The digits preset's union grid (an lr × momentum table at k = 5, α = 0.5 and a k × α
    table at lr 0.1) sweeps lr and k, and lr and α, only as a cross: a row and a column of a
    mostly empty panel. Those surfaces are not drawn; the pairs a table does sweep together
    are, with every cell filled."""
    data = load_study(union_study)
    figs = dict(surface_figures(data))
    assert set(figs) == {"α (slow step) × k (steps per sync)", "momentum × inner learning rate"}
    for title, fig in figs.items():
        for t in fig.data:
            if isinstance(t, go.Heatmap) and t.name == "surface":
                z = np.array(t.z, dtype=float)
                assert not np.isnan(z).any(), f"{title}: a panel with empty cells"
                assert z.shape[0] >= 1 and z.shape[1] >= 2
    # Both optimizers sweep lr × momentum: two panels, Lookahead's over all its 22
    # configurations (the k × α table's best sits at lr 0.1, momentum 0.9).
    lr_mom = figs["momentum × inner learning rate"]
    names = [a.text.replace("<br>", " ") for a in lr_mom.layout.annotations]
    assert names == ["lookahead (22 configurations)", "sgd (14 configurations)"]


def test_surface_cells_keeps_what_crosses_and_drops_the_rest():
    import pandas as pd

    from lookbench.report.figures import surface_cells

    def cells(points):
        return pd.DataFrame([{"lr": x, "k": y, "score": 0.5} for x, y in points])

    full = cells(itertools.product([0.1, 1.0, 10.0], [5, 10]))
    assert surface_cells(full, "lr", "k", "grid") is full  # a grid: drawn whole
    cross = cells([(x, 5) for x in (0.001, 0.01, 0.1, 1.0, 10.0)] + [(0.1, 10), (0.1, 20)])
    assert surface_cells(cross, "lr", "k", "grid") is None  # a row and a column: nothing
    # Mostly empty (19 of 40 cells): the 3 × 4 block that sweeps lr × k together is kept,
    # the row's lone learning rates around it are dropped.
    row = [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.1, 1.0, 10.0, 30.0, 100.0]
    block = cells([(x, 5) for x in row] + list(itertools.product([0.01, 0.1, 1.0],
                                                                   [10, 20, 40])))
    kept = surface_cells(block, "lr", "k", "grid")
    assert sorted(kept["lr"].unique()) == [0.01, 0.1, 1.0]
    assert sorted(kept["k"].unique()) == [5, 10, 20, 40] and len(kept) == 12
    # Half filled or more: drawn whole (blank cells read as not run).
    half = cells([(x, 5) for x in row[:4]] + [(0.0001, 10), (0.0003, 10)])
    assert surface_cells(half, "lr", "k", "grid") is half
    # Random points repeat no value: kept where they lie (a scatter), whatever the sampler says.
    scattered = cells([(0.01, 3), (0.2, 4), (0.05, 7)])
    assert surface_cells(scattered, "lr", "k", "unknown") is scattered
    assert surface_cells(cross, "lr", "k", "random") is cross
