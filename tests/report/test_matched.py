"""The matched comparison and the verdict on tables whose right answer is known by
construction: asymmetric grids, divergence, too few seeds, grids with no matched set, TPE, a
deterministic task, and the flags a careful reader needs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from lookbench.comparison.matched import Matched, Unmatched
from lookbench.report import load_study
from lookbench.report.analysis import analysis_of
from lookbench.report.verdict import headline, sentences, summary
from tests.report.conftest import write_study

LRS = [0.01, 0.1, 1.0, 10.0]
# Mean scores by lr, built so the answer is plain: in every sweep Lookahead (k = 5, α = 0.5)
# is within 1% of the sweep's best (0.90) at lr 0.1, 1 and 10, SGD at 0.1 only (10 diverges).
LA = {0.01: 0.80, 0.1: 0.90, 1.0: 0.895, 10.0: 0.893}
SGD = {0.01: 0.82, 0.1: 0.899, 1.0: 0.85, 10.0: None}
NOISE = (-0.001, 0.0, 0.001, 0.0005, -0.0005, 0.0002, -0.0002)  # seed s shifts every run alike


def _rows(extra_lookahead: bool = True, seeds: int = 3) -> list[dict]:
    rows = []
    for lr, seed in itertools.product(LRS, range(seeds)):
        rows.append({"optimizer": "lookahead", "lr": lr, "k": 5, "alpha": 0.5, "seed": seed,
                     "state": "complete", "value": LA[lr] + NOISE[seed]})
        v = SGD[lr]
        rows.append({"optimizer": "sgd", "lr": lr, "seed": seed,
                     "state": "diverged" if v is None else "complete",
                     "value": None if v is None else v + NOISE[seed]})
    if extra_lookahead:  # k × α at lr 0.1 only, all poor: more configurations, same answer
        for k, alpha, seed in itertools.product([10, 20], [0.2, 0.8], range(seeds)):
            rows.append({"optimizer": "lookahead", "lr": 0.1, "k": k, "alpha": alpha,
                         "seed": seed, "state": "complete", "value": 0.5 + NOISE[seed]})
    return rows


@pytest.fixture
def matched_study(tmp_path: Path) -> Path:
    return write_study(tmp_path, "matched", _rows())


def test_the_matched_set_is_the_paper_setting_on_the_shared_settings(matched_study):
    data = load_study(matched_study)
    (m,) = analysis_of(data).comparisons
    assert isinstance(m, Matched)
    assert m.setting["k"] == 5 and m.setting["alpha"] == 0.5
    assert "paper's default" in m.setting_reason and not m.setting_chosen_on_data
    assert m.configurations == 4 and m.learning_rates == LRS and m.seeds == [0, 1, 2]
    assert m.lookahead.lr_good["0.01"] == [0.1, 1.0, 10.0]
    assert m.base.lr_good["0.01"] == [0.1]
    assert m.lookahead.lrs["0.01"].estimate == 3 and m.base.lrs["0.01"].estimate == 1
    assert m.lookahead.span(0.01) == pytest.approx(2.0)
    assert m.lookahead.expected_to_good(0.01) == pytest.approx(5 / 4)
    assert m.base.expected_to_good(0.01) == pytest.approx(5 / 2)
    assert m.lookahead.configurations == 4  # the k × α points are not in it
    assert m.base.failures.diverged == pytest.approx(0.25)
    # The closed world: SGD's diverged runs stand in at the comparison's worst completed run
    # (no chance level is recorded for these hand-made tables), 0.80 − 0.001.
    assert m.stand_in == pytest.approx(0.799)
    # Per sweep, the same shift moves every run, so the difference of the means is the same in
    # every sweep but for the stand-in (fixed): (ΣLA − ΣSGD − 0.799 + shift·1) / 4.
    la_mean = sum(LA.values()) / 4
    diffs = [la_mean + NOISE[s] - (0.82 + 0.899 + 0.85 + 3 * NOISE[s] + 0.799) / 4
             for s in range(3)]
    mean = m.lines["mean"]
    assert mean.estimate == pytest.approx(float(np.median(diffs)))
    count = m.lines["lrs@0.01"]
    assert count.estimate == 2
    # Three seeds bracket nothing, whatever the runs: the line says how many would decide it.
    assert count.interval.n == 3 and not count.interval.bracketed
    assert count.label == "undecided" and count.seeds_needed == 5


def test_five_seeds_decide_what_three_cannot(tmp_path):
    data = load_study(write_study(tmp_path, "five", _rows(seeds=5)))
    m = analysis_of(data).comparisons[0]
    count = m.lines["lrs@0.01"]
    assert count.interval.bracketed and (count.interval.low, count.interval.high) == (2, 2)
    assert count.interval.coverage == pytest.approx(0.9375)
    assert count.label == "lookahead_better" and m.label == "lookahead_better"
    text = " ".join(sentences(analysis_of(data), data))
    assert "Lookahead − sgd: Lookahead ahead: +2 [+2, +2] (94% interval over 5 sweeps)" in text
    assert "Lookahead tolerates more of the range" in headline(analysis_of(data), data)
    js = summary(analysis_of(data), data)
    line = js["matched"]["lines"]["learning_rates_within@0.01"]
    assert line == {**line, "estimate": 2, "low": 2, "high": 2, "label": "lookahead_better"}
    assert isinstance(line["estimate"], int)


def test_extra_lookahead_configurations_do_not_change_the_matched_figures(tmp_path):
    """The defect the matched set removes: a grid that adds k × α points used to change
    Lookahead's shares and its best (the closed-world property test covers every kind of
    outside run)."""
    with_extra = load_study(write_study(tmp_path, "a", _rows(extra_lookahead=True)))
    without = load_study(write_study(tmp_path, "b", _rows(extra_lookahead=False)))
    assert sentences(analysis_of(with_extra), with_extra) == sentences(analysis_of(without), without)
    # ... while the whole-grid shares do move (which is why they are not the verdict).
    assert (analysis_of(with_extra).whole_of("lookahead").share(0.01)
            != analysis_of(without).whole_of("lookahead").share(0.01))


def test_without_the_paper_setting_the_best_covering_setting_is_used_and_flagged(tmp_path):
    rows = [r for r in _rows(extra_lookahead=False)]
    for r in rows:
        if r["optimizer"] == "lookahead":
            r["k"], r["alpha"] = 10, 0.8
    for seed, lr in itertools.product(range(3), LRS):  # as many settings, a worse median
        rows.append({"optimizer": "lookahead", "lr": lr, "k": 20, "alpha": 0.2, "seed": seed,
                     "state": "complete", "value": 0.7})
    data = load_study(write_study(tmp_path, "other", rows))
    m = analysis_of(data).comparisons[0]
    assert m.setting["k"] == 10 and m.setting["alpha"] == 0.8
    assert "no k = 5, α = 0.5" in m.setting_reason and m.setting_chosen_on_data
    text = " ".join(sentences(analysis_of(data), data))
    assert "k = 10, α = 0.8" in text and "picked by its best median" in text


def test_grids_with_one_shared_configuration_have_no_matched_set(tmp_path):
    """The paper's CIFAR files: Lookahead at lr 0.1 only, SGD over lr × weight decay."""
    rows = []
    for k, alpha, seed in itertools.product([5, 10], [0.2, 0.5, 0.8], range(5)):
        rows.append({"optimizer": "lookahead", "lr": 0.1, "k": k, "alpha": alpha,
                     "weight_decay": 1e-3, "seed": seed, "state": "complete",
                     "value": 0.95 + 0.001 * seed})
    for lr, wd, seed in itertools.product([0.05, 0.1, 0.2], [3e-4, 1e-3], range(5)):
        rows.append({"optimizer": "sgd", "lr": lr, "weight_decay": wd, "seed": seed,
                     "state": "complete", "value": 0.94 + 0.001 * seed})
    data = load_study(write_study(tmp_path, "cifar", rows))
    (u,) = analysis_of(data).comparisons
    assert isinstance(u, Unmatched)
    assert "share only one configuration (lr=0.1 momentum=0.9 weight_decay=0.001)" in u.reason
    assert u.shared.estimate == pytest.approx(0.01) and u.shared.label == "lookahead_better"
    text = sentences(analysis_of(data), data)
    assert text[0] == u.reason and any("not a robustness measure" in t for t in text)
    js = summary(analysis_of(data), data)
    assert js["matched"] is None and js["comparisons"][0]["matched"] is False
    assert "share too few settings" in headline(analysis_of(data), data)


def test_one_seed_gives_no_interval_in_words(tmp_path):
    data = load_study(write_study(tmp_path, "one", _rows(seeds=1)))
    m = analysis_of(data).comparisons[0]
    assert m.lines["mean"].interval.low is None and m.lookahead.lrs["0.01"].low is None
    text = " ".join(sentences(analysis_of(data), data))
    assert "1 seeds cannot tell" in text and "±0.0000" not in text
    js = summary(analysis_of(data), data)
    assert js["matched"]["optimizers"]["lookahead"]["best"]["low"] is None


def test_undecided_says_what_the_seeds_could_see_never_just_no_clear_difference(tmp_path):
    rows = []
    rng = np.random.default_rng(1)
    for lr, seed in itertools.product([0.01, 0.1, 1.0], range(6)):
        for opt in ("lookahead", "sgd"):
            rows.append({"optimizer": opt, "lr": lr, "seed": seed, "state": "complete",
                         "value": 0.9 + float(rng.normal(0, 0.02))})
    data = load_study(write_study(tmp_path, "same", rows))
    text = " ".join(sentences(analysis_of(data), data))
    assert "no clear difference" not in text.lower()
    mean = analysis_of(data).comparisons[0].lines["mean"]
    assert mean.label in ("undecided", "equivalent")
    if mean.label == "undecided":
        assert "6 seeds cannot tell (a difference smaller than" in text
        assert "would decide it" in text or "unlikely to decide" in text


def test_the_json_summary_has_the_fields_scripts_read(matched_study):
    data = load_study(matched_study)
    js = json.loads(json.dumps(summary(analysis_of(data), data), default=float))
    assert js["schema_version"] == 2 and js["headline"].startswith("On digits")
    assert js["whole_study"]["optimizers"]["lookahead"]["configs"] == 8  # the whole grid
    c = js["matched"]
    for opt in ("lookahead", "sgd"):
        side = c["optimizers"][opt]
        assert side["configs"] == 4
        for field in ("learning_rates_within", "share_within", "expected_configs_to_good",
                      "lr_good"):
            assert set(side[field]) == {"0.01", "0.05"}
        assert set(side["failures"]) >= {"diverged", "did_not_train", "total"}
    assert c["lookahead_setting"]["k"] == 5 and isinstance(c["lookahead_setting"]["k"], int)
    assert c["optimizers"]["lookahead"]["learning_rates_within"]["0.01"]["estimate"] == 3
    assert c["optimizers"]["lookahead"]["lr_good"]["0.01"] == [0.1, 1.0, 10.0]
    assert c["optimizers"]["sgd"]["expected_configs_to_good"]["0.01"] == 2.5
    assert set(c["lines"]) == {"learning_rates_within@0.01", "learning_rates_within@0.05",
                               "mean_score", "best_score"}
    assert c["verdict"]["label"] == "undecided" and c["cost"] is None
    assert js["inference"]["level"] == 0.95 and "sign test" in js["inference"]["method"]
    assert js["best_of_each_grid"]["sgd"]["caveat"].startswith("each optimizer's best")
    assert js["verdict"].startswith("Compared on the 4 settings of inner learning rate")


def test_a_tpe_study_is_described_as_one(tmp_path):
    rows = []
    for i in range(5):
        for opt in ("lookahead", "sgd"):
            for seed in range(2):
                rows.append({"optimizer": opt, "lr": 0.01 * (i + 1) + (0.001 if opt == "sgd"
                                                                      else 0),
                             "seed": seed, "state": "complete", "value": 0.8 + 0.01 * i})
    study = write_study(tmp_path, "tpe", rows)
    (study / "study.json").write_text(json.dumps({"sampler": "tpe"}))
    data = load_study(study)
    assert data.sampler == "tpe"
    text = " ".join(sentences(analysis_of(data), data))
    assert "TPE chose where to sample" in text and "random pick" not in text
    from lookbench.report.figures import expected_best_figure

    fig = expected_best_figure(data)
    assert "TPE proposals" in fig.layout.title.text.replace("<br>", " ")
    assert list(fig.data[0].y) == sorted(fig.data[0].y)  # best so far never falls


def test_status_shows_no_spread_for_one_seed(tmp_path):
    from rich.console import Console

    from lookbench.progress.status import status_table

    console = Console(width=200, record=True)
    console.print(status_table(write_study(tmp_path, "one", _rows(seeds=1))))
    text = console.export_text()
    assert "89.90% n=1" in text and "%±" not in text  # seed 0 of lr 0.1: 0.90 − 0.001


def _nqm_rows(values: dict[float, tuple[float, float]], seeds: int = 1) -> list[dict]:
    rows = []
    for lr, (la, sgd) in values.items():
        for opt, v in (("lookahead", la), ("sgd", sgd)):
            for seed in range(seeds):
                rows.append({"optimizer": opt, "lr": lr, "momentum": 0.0, "seed": seed,
                             "state": "diverged" if v is None else "complete", "value": v})
    return rows


def test_a_noisy_quadratic_is_judged_by_the_improvement_from_its_start(tmp_path):
    """The analytic noisy quadratic (floor 50, start 52.59): a loss is good when it gives up
    little of the improvement the best made from the start, so two neighbouring learning rates
    can both be good; the study is deterministic, so its figures are exact."""
    from lookbench.tasks.nqm import NqmOptions

    opts = NqmOptions(analytic=True)  # the defaults: floor 50, start 52.59
    values = {0.03: (50.47, 50.264), 0.1: (50.17, 50.155), 0.3: (50.19, 50.41),
              1.0: (50.66, 51.64), 1.5: (51.23, 53.31)}
    data = load_study(write_study(tmp_path, "nqm", _nqm_rows(values), task="nqm",
                                  metric="test_loss", task_options=opts.model_dump_json()))
    assert data.deterministic and data.initial_loss > 50
    m = analysis_of(data).comparisons[0]
    initial = data.initial_loss
    tol = 0.05 * (initial - 50.155)
    assert m.lookahead.lr_good["0.05"] == [lr for lr, (la, _) in values.items()
                                           if la <= 50.155 + tol]
    assert len(m.lookahead.lr_good["0.05"]) >= 2  # neighbours on a 3× grid, both good
    assert m.base.failures.untrained == pytest.approx(0.2)  # 53.31 is above the start
    mean = m.lines["mean"]
    assert mean.exact and mean.interval is None and mean.label == "lookahead_better"
    text = " ".join(sentences(analysis_of(data), data))
    assert "a deterministic task: exact, no interval" in text
    assert "Runs that did not train: Lookahead 0%" in text


def test_best_learning_rate_at_the_edge_and_a_slow_ema_are_flagged(tmp_path):
    rows = []
    for lr, seed in itertools.product([0.01, 0.1, 1.0], range(3)):
        rows.append({"optimizer": "lookahead", "lr": lr, "seed": seed, "state": "complete",
                     "value": 0.80 + 0.05 * np.log10(lr / 0.01)})  # best at the top
        rows.append({"optimizer": "sgd", "lr": lr, "seed": seed, "state": "complete",
                     "value": 0.85})
        rows.append({"optimizer": "ema", "lr": lr, "seed": seed, "state": "complete",
                     "value": 0.84})
    study = write_study(tmp_path, "edge", rows)
    data = load_study(study)
    ema = next(c for c in analysis_of(data).comparisons if c.baseline == "ema")
    sgd = next(c for c in analysis_of(data).comparisons if c.baseline == "sgd")
    assert sgd.lookahead.edge == "highest"
    assert any("extend the grid above" in f for f in sgd.flags)
    # The tables' curves say 30 steps (3 epochs × 10): EMA's default decay 0.999 keeps 97% of
    # its start.
    assert any("decay 0.999 is slow for the budget" in f for f in ema.flags)


def test_report_within_sets_the_tolerances(matched_study, tmp_path):
    from typer.testing import CliRunner

    from lookbench.cli import app

    out = tmp_path / "reports"
    result = CliRunner().invoke(app, ["report", str(matched_study), "--out", str(out),
                                      "--within", "0.005,0.02"])
    assert result.exit_code == 0, result.output
    js = json.loads((out / "matched.json").read_text())
    assert js["rules"]["within"] == [0.005, 0.02]
    assert set(js["matched"]["lines"]) >= {"learning_rates_within@0.005",
                                           "learning_rates_within@0.02"}
    assert "within 0.5% of the best" in js["headline"]
    bad = CliRunner().invoke(app, ["report", str(matched_study), "--out", str(out),
                                   "--within", "-1"])
    assert bad.exit_code == 2 and "--within" in bad.output
