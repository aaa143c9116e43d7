"""One unit per metric on the whole page (``lookbench.report.units``): an accuracy is a
percentage in heatmaps, tables, hover text, verdict sentences and axes, a difference of two is
in percentage points, and a loss is written in its own units with the same digits everywhere.
Before, one page showed 97.4 in a heatmap, 0.9769 in the table and a gap of 0.0009478."""

from __future__ import annotations

import html
import itertools
import re

import plotly.graph_objects as go
import pytest

from lookbench.report import figures as F
from lookbench.report import load_study
from lookbench.report.page import config_frame, study_page
from lookbench.report.units import Units, units_of

from .conftest import write_study


def test_a_fraction_is_a_percentage_and_its_differences_are_points():
    u = Units(fraction=True)
    assert u.score(0.9768518) == "97.69%" and u.score(0.1) == "10.00%"
    assert u.diff(0.0009478) == "+0.09 pp" and u.diff(-0.0028) == "-0.28 pp"
    assert u.diff(-0.0028, unit=False) == "-0.28" and u.magnitude(-0.0028) == "0.28 pp"
    assert u.gap(0.0009478) == "0.09%"  # a share of the best: ε-good when gap ≤ ε
    assert u.score(None) == u.score(float("nan")) == u.diff(float("inf")) == "–"
    # Plotly writes the same digits: ticks and hover in %.
    assert u.d3 == ".2%" and u.axis() == {"tickformat": ".2~%", "hoverformat": ".2%"}


def test_a_loss_keeps_its_own_units_with_the_same_digits_everywhere():
    u = Units(fraction=False)
    assert u.score(52.0) == "52.00" and u.score(52.514) == "52.51"  # a column reads alike
    assert u.score(0.1234567) == "0.1235" and u.score(1.5e-6) == "1.500e-06"
    assert u.diff(0.001234) == "+0.00123" and u.diff(-0.5) == "-0.500"
    assert u.gap(0.5) == "50.00%" and u.gap(float("inf")) == "∞"
    assert Units(fraction=False, absolute=True).gap(0.0123) == "0.0123"
    assert u.d3 == ".4g" and "tickformat" not in u.axis()


def _visible_text(page: str) -> str:
    """The page as a reader sees it: no scripts (plotly.js, the figures' data), no tags."""
    text = re.sub(r"<script>.*?</script>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", text))


def _figure_text(fig: go.Figure) -> list[str]:
    """Every string of a figure a reader sees: cell text, hover text, titles, its caption."""
    out = [F.caption(fig), str(fig.layout.title.text or "")]
    for t in fig.data:
        for field in ("text", "customdata", "hovertemplate"):
            v = getattr(t, field, None)
            if v is None:
                continue
            if isinstance(v, str):
                out.append(v)
            else:
                out += [str(x) for row in v for x in (row if isinstance(row, (list, tuple))
                                                      else [row])]
    return out


def _figures(data) -> list[go.Figure]:
    figs = [F.matched_figure(data), F.k_alpha_figure(data), F.lr_sensitivity_figure(data),
            F.expected_best_figure(data), F.curves_figure(data)]
    figs += [fig for _, fig in F.surface_figures(data)]
    return [f for f in figs if f is not None]


def test_an_accuracy_reads_the_same_in_every_table_figure_and_sentence(union_study):
    data = load_study(union_study)
    assert data.score_is_fraction
    units = units_of(data)
    page = study_page(data)
    text = _visible_text(page)
    frame = config_frame(data)
    best = frame.iloc[0]
    # The best configuration's score, in %, in the table; never as the raw fraction anywhere.
    assert units.score(best["score"]) in text
    for v in frame["score"]:
        raw = f"{v:.4g}"
        assert raw not in text, f"{raw} is written raw on the page beside {units.score(v)}"
    # No long raw decimal (a score or a gap as 0.9768518 or 0.0009478) anywhere a reader looks.
    assert not re.findall(r"(?<![\d.])0\.\d{5,}", text)
    # Differences in points, never "points" beside percentages of another kind.
    assert " pp" in text and " points" not in text
    # Every number printed in a heatmap cell is a percentage with two decimals.
    cells = [c for fig in _figures(data) for t in fig.data if isinstance(t, go.Heatmap)
             and t.name == "surface" for row in t.text for c in row if c]
    assert cells and all(re.fullmatch(r"\d+\.\d\d%( \(\d+✕\))?", c) for c in cells), cells
    strings = [s for fig in _figures(data) for s in _figure_text(fig)]
    assert not [s for s in strings if re.search(r"(?<![\d.])0\.\d{4,}", s)], \
        "a raw fraction in a figure's text"
    # Hover templates of scores and every score axis use the same % format.
    for fig in (F.lr_sensitivity_figure(data), F.expected_best_figure(data)):
        assert fig.layout.yaxis.tickformat == ".2~%" and fig.layout.yaxis.hoverformat == ".2%"
    assert any("%{y:.2%}" in s for s in _figure_text(F.expected_best_figure(data)))


def test_a_loss_reads_the_same_in_the_table_and_the_heatmap(tmp_path):
    rows = []
    for lr, seed in itertools.product([0.01, 0.1, 0.3], range(2)):
        rows.append({"optimizer": "lookahead", "lr": lr, "momentum": 0.0, "seed": seed,
                     "state": "complete", "value": 52.0 + lr})
        rows.append({"optimizer": "sgd", "lr": lr, "momentum": 0.0, "seed": seed,
                     "state": "complete", "value": 52.514 + lr})
    data = load_study(write_study(tmp_path, "loss", rows, task="nqm", metric="test_loss"))
    assert not data.score_is_fraction
    text = _visible_text(study_page(data))
    (hm,) = [t for t in F.matched_figure(data).data if isinstance(t, go.Heatmap)]
    cells = {c for row in hm.text for c in row if c}
    assert {"52.01", "52.10", "52.52"} <= cells  # four significant digits, zeros kept
    for c in cells:
        assert f" {c} " in text  # the table writes the same number the same way


@pytest.mark.parametrize("fraction", [True, False])
def test_the_verdict_and_the_table_use_the_one_helper(fraction, known_study, tmp_path):
    """The verdict's numbers come from the same helper as the cells (no second formatter)."""
    from lookbench.report import verdict

    data = load_study(known_study)
    object.__setattr__(data, "score_is_fraction", fraction)  # (a cached property: overridden)
    units = units_of(data)
    assert verdict.fmt_score(0.9769, data) == units.score(0.9769)
    assert verdict.fmt_diff(0.0009, data) == units.diff(0.0009)
    assert verdict.fmt_diff(0.0009, data, False) == units.diff(0.0009, unit=False)
