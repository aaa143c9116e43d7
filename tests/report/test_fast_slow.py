"""The paper's Figure 10 on the page: a traced study draws each wrapper's best configuration on
its evaluated and its fast weights; an untraced one has no such figure."""

from __future__ import annotations

from lookbench.report.data import load_study
from lookbench.report.figures import fast_slow_figure
from lookbench.report.page import study_page

from .conftest import known_rows, write_study


def test_untraced_study_has_no_fast_figure(known_study):
    data = load_study(known_study)
    assert fast_slow_figure(data) is None
    assert "Figure 10" not in study_page(data)


def test_traced_study_draws_fast_against_evaluated_weights(tmp_path):
    rows = [{**r, "fast": r["value"] - 0.05} if r["optimizer"] == "lookahead"
            and r["value"] is not None else r for r in known_rows()]
    data = load_study(write_study(tmp_path, "traced", rows))
    fig = fast_slow_figure(data)
    assert [t.name for t in fig.data] == ["lookahead: evaluated", "lookahead: fast weights"]
    evaluated, fast = fig.data
    # the best configuration (lr 0.1, α 0.5): seeds 0.89 and 0.91, fast 0.05 below, at epoch 3
    assert list(evaluated.x) == [1, 2, 3]
    assert abs(evaluated.y[-1] - 0.90) < 1e-9 and abs(fast.y[-1] - 0.85) < 1e-9
    assert fast.line.dash == "dash"
    assert "Figure 10" in study_page(data)
