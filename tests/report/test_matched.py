"""The matched comparison and the verdict on tables whose right answer is known by
construction: asymmetric grids, divergence, one seed, grids with no matched set, TPE."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from lookbench.report import load_study
from lookbench.report.matched import Matched, Unmatched
from lookbench.report.verdict import sentences, summary
from tests.report.conftest import write_study

LRS = [0.01, 0.1, 1.0, 10.0]
# Mean scores by lr, built so the answer is plain: Lookahead (k = 5, α = 0.5) is within 1% of
# the study's best (0.90) at lr 0.1, 1 and 10 (10 diverges for SGD), SGD at 0.1 only.
LA = {0.01: 0.80, 0.1: 0.90, 1.0: 0.895, 10.0: 0.893}
SGD = {0.01: 0.82, 0.1: 0.899, 1.0: 0.85, 10.0: None}
NOISE = (-0.001, 0.0, 0.001)  # seed s shifts every configuration alike (paired seeds)


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
    (m,) = data.analysis.comparisons
    assert isinstance(m, Matched)
    assert m.setting["k"] == 5 and m.setting["alpha"] == 0.5
    assert "paper's default" in m.setting_reason
    assert m.configurations == 4 and m.learning_rates == LRS
    assert m.lookahead.lr_good["0.01"] == [0.1, 1.0, 10.0]
    assert m.base.lr_good["0.01"] == [0.1]
    assert m.lookahead.span(0.01) == pytest.approx(2.0)
    assert m.lookahead.expected_to_good["0.01"] == pytest.approx(5 / 4)
    assert m.base.expected_to_good["0.01"] == pytest.approx(5 / 2)
    assert m.lookahead.robustness.configurations == 4  # the k × α points are not in it
    assert m.base.robustness.divergence_rate == pytest.approx(0.25)
    # Seeds shift both alike, so only the diverged SGD runs (0, whatever the seed) leave any
    # spread in the paired differences.
    diff = m.score_difference
    expected = sum(LA[lr] - (SGD[lr] or 0.0) for lr in LRS) / 4  # a diverged SGD run scores 0
    assert diff.estimate == pytest.approx(expected) and diff.clear
    assert diff.high - diff.low < 0.002
    count, rng = m.lr_count_difference["0.01"]
    assert count == 2 and rng[0] <= 2 <= rng[1]


def test_extra_lookahead_configurations_do_not_change_the_matched_figures(tmp_path):
    """The defect the matched set removes: a grid that adds k × α points used to change
    Lookahead's shares and its best."""
    with_extra = load_study(write_study(tmp_path, "a", _rows(extra_lookahead=True)))
    without = load_study(write_study(tmp_path, "b", _rows(extra_lookahead=False)))
    ma, mb = with_extra.analysis.comparisons[0], without.analysis.comparisons[0]
    for side in ("lookahead", "base"):
        ra, rb = getattr(ma, side).robustness, getattr(mb, side).robustness
        assert ra.good == rb.good and ra.median == rb.median and ra.best == rb.best
    assert sentences(with_extra.analysis, with_extra) == sentences(without.analysis, without)
    # ... while the whole-grid shares do move (which is why they are not the verdict).
    assert (with_extra.analysis.whole_of("lookahead").within_1
            != without.analysis.whole_of("lookahead").within_1)


def test_without_the_paper_setting_the_best_covering_setting_is_used_and_named(tmp_path):
    rows = [r for r in _rows(extra_lookahead=False)]
    for r in rows:
        if r["optimizer"] == "lookahead":
            r["k"], r["alpha"] = 10, 0.8
    for seed in range(3):  # a second setting at one lr only: covers less, never chosen
        rows.append({"optimizer": "lookahead", "lr": 0.1, "k": 20, "alpha": 0.2, "seed": seed,
                     "state": "complete", "value": 0.95})
    data = load_study(write_study(tmp_path, "other", rows))
    m = data.analysis.comparisons[0]
    assert m.setting["k"] == 10 and m.setting["alpha"] == 0.8
    assert "no k = 5, α = 0.5" in m.setting_reason
    assert "k = 10, α = 0.8" in sentences(data.analysis, data)[0]


def test_grids_with_one_shared_configuration_have_no_matched_set(tmp_path):
    """The paper's CIFAR files: Lookahead at lr 0.1 only, SGD over lr × weight decay."""
    rows = []
    for k, alpha, seed in itertools.product([5, 10], [0.2, 0.5, 0.8], range(2)):
        rows.append({"optimizer": "lookahead", "lr": 0.1, "k": k, "alpha": alpha,
                     "weight_decay": 1e-3, "seed": seed, "state": "complete",
                     "value": 0.95 + 0.001 * seed})
    for lr, wd, seed in itertools.product([0.05, 0.1, 0.2], [3e-4, 1e-3], range(2)):
        rows.append({"optimizer": "sgd", "lr": lr, "weight_decay": wd, "seed": seed,
                     "state": "complete", "value": 0.94 + 0.001 * seed})
    data = load_study(write_study(tmp_path, "cifar", rows))
    (u,) = data.analysis.comparisons
    assert isinstance(u, Unmatched)
    assert "share only one configuration (lr=0.1 momentum=0.9 weight_decay=0.001)" in u.reason
    assert u.shared_difference.estimate == pytest.approx(0.01)
    text = sentences(data.analysis, data)
    assert text[0] == u.reason and "not a robustness measure" in text[-1]
    js = summary(data.analysis, data)
    assert js["matched"] is None and js["comparisons"][0]["matched"] is False


def test_one_seed_gives_no_interval_in_words(tmp_path):
    data = load_study(write_study(tmp_path, "one", _rows(seeds=1)))
    m = data.analysis.comparisons[0]
    assert m.score_difference.low is None and m.lookahead.lr_good_range is None
    text = " ".join(sentences(data.analysis, data))
    assert "With one seed there is no interval" in text and "one seed: no interval" in text
    assert "±0.0000" not in text
    js = summary(data.analysis, data)
    assert js["matched"]["optimizers"]["lookahead"]["best_interval"] is None


def test_no_clear_difference_when_the_intervals_say_so(tmp_path):
    rows = []
    rng = __import__("numpy").random.default_rng(1)
    for lr, seed in itertools.product([0.01, 0.1, 1.0], range(3)):
        for opt in ("lookahead", "sgd"):
            rows.append({"optimizer": opt, "lr": lr, "seed": seed, "state": "complete",
                         "value": 0.9 + float(rng.normal(0, 0.02))})
    data = load_study(write_study(tmp_path, "same", rows))
    text = " ".join(sentences(data.analysis, data))
    assert "no clear difference in score" in text


def test_the_json_summary_has_the_fields_scripts_read(matched_study):
    data = load_study(matched_study)
    js = json.loads(json.dumps(summary(data.analysis, data), default=float))
    for opt in ("lookahead", "sgd"):
        assert set(js["optimizers"][opt]) >= {"configs", "best", "median", "divergence_rate"}
        side = js["matched"]["optimizers"][opt]
        assert side["configs"] == 4
        assert set(side["share_within"]) == {"0.01", "0.05"}
        assert set(side["expected_configs_to_good"]) == {"0.01", "0.05"}
        assert set(side["lr_good"]) == {"0.01", "0.05"}
    assert js["optimizers"]["lookahead"]["configs"] == 8  # the whole grid
    assert js["matched"]["lookahead_setting"]["k"] == 5
    assert js["matched"]["optimizers"]["lookahead"]["share_within"]["0.01"] == 0.75
    assert js["matched"]["optimizers"]["lookahead"]["lr_good"]["0.01"] == [0.1, 1.0, 10.0]
    assert js["matched"]["optimizers"]["sgd"]["expected_configs_to_good"]["0.01"] == 2.5
    assert js["verdict"].startswith("On the 4 settings of inner learning rate")
    assert "Lookahead tolerates more of the learning-rate range" in js["verdict"]


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
    text = " ".join(sentences(data.analysis, data))
    assert "TPE chose where to sample" in text and "random pick" not in text
    from lookbench.report.figures import expected_best_figure

    fig = expected_best_figure(data)
    assert "TPE proposals" in fig.layout.title.text
    assert list(fig.data[0].y) == sorted(fig.data[0].y)  # best so far never falls


def test_status_shows_no_spread_for_one_seed(tmp_path):
    from rich.console import Console

    from lookbench.study.status import status_table

    console = Console(width=200, record=True)
    console.print(status_table(write_study(tmp_path, "one", _rows(seeds=1))))
    text = console.export_text()
    assert "0.8990 n=1" in text and "±0.0000" not in text  # seed 0 of lr 0.1: 0.90 − 0.001


def test_a_noisy_quadratic_study_is_judged_by_its_excess_over_the_floor(tmp_path):
    """½Σaσ² is the floor of the noisy quadratic's loss: a relative threshold on the loss itself
    would count nearly every configuration as within 5%."""
    from lookbench.tasks.nqm import NqmOptions, default_spectrum

    opts = NqmOptions(dim=10, steps_per_epoch=10)
    a, s2 = default_spectrum(10)
    floor = 0.5 * float((a * s2).sum())
    rows = []
    for lr, excess in ((0.01, 1.0), (0.1, 0.2), (0.3, 0.1), (1.0, 0.3)):
        for opt in ("lookahead", "sgd"):
            rows.append({"optimizer": opt, "lr": lr, "momentum": 0.0, "seed": 0,
                         "state": "complete", "value": floor + excess})
    data = load_study(write_study(tmp_path, "nqm", rows, task="nqm", metric="test_loss",
                                  task_options=opts.model_dump_json()))
    assert data.loss_floor == pytest.approx(floor)
    m = data.analysis.comparisons[0]
    # Every loss is within 5% of the best loss (the floor is 5.0 here), but only lr 0.3 has
    # an excess within 1.05× the best excess.
    assert all(floor + e <= (floor + 0.1) * 1.05 for e in (0.2, 0.3))
    assert m.lookahead.lr_good["0.05"] == [0.3]
