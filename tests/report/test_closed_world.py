"""A comparison is a closed world: runs outside it, better or worse, of either optimizer or of
another baseline, change none of its numbers or words.

The study is a digits-like matched design (Lookahead at k = 5, α = 0.5 and SGD over the same
learning rates × momenta, 5 seeds, some runs diverged); each draw adds random runs outside the
Lookahead-vs-SGD comparison: Lookahead at other k × α settings, Lookahead or SGD at learning
rates or momenta only one of them ran, and a further baseline (Polyak averaging) anywhere. Scores
are drawn from well below to well above the comparison's own, and some of them diverge, so an
outside run could move a best, a stand-in, a colour scale or a count if anything leaked.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from lookbench.comparison.matched import Matched
from lookbench.report import load_study
from lookbench.report.analysis import analysis_of
from lookbench.report.verdict import _comparison_json, headline, matched_sentences
from tests.report.conftest import write_study

LRS = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
MOMENTA = [0.0, 0.9]
SEEDS = 5


def _base_rows(metric: str) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for lr, mom, seed in itertools.product(LRS, MOMENTA, range(SEEDS)):
        shift = 0.002 * (seed - 2)
        for opt, top in (("lookahead", 0.1), ("sgd", 0.3)):
            centre = 0.97 - 0.03 * abs(np.log10(lr / top)) - (0.01 if mom == 0 else 0)
            diverged = lr == 1.0 and mom == 0.9 and (opt == "sgd" or seed == 3)
            value = centre + shift + float(rng.normal(0, 0.003))
            if metric == "test_loss":
                value = 1.0 - value + 0.05  # a loss: lower is better, in (0.05, 1.05)
            rows.append({"optimizer": opt, "lr": lr, "momentum": mom, "seed": seed,
                         "state": "diverged" if diverged else "complete",
                         "value": None if diverged else value})
    return rows


def _outside_rows(rng: np.random.Generator, metric: str) -> list[dict]:
    """Random runs outside the Lookahead (k = 5, α = 0.5) vs SGD comparison."""
    rows = []

    def value() -> float | None:
        if rng.random() < 0.15:
            return None  # diverged
        v = float(rng.uniform(0.05, 1.0))  # far worse to better than anything inside
        return v if metric == "test_acc" else 1.1 - v

    def add(opt: str, lr: float, mom: float, **own) -> None:
        for seed in range(SEEDS):
            v = value()
            rows.append({"optimizer": opt, "lr": lr, "momentum": mom, "seed": seed,
                         "state": "diverged" if v is None else "complete", "value": v, **own})

    for _ in range(int(rng.integers(1, 6))):
        kind = rng.integers(0, 5)
        if kind == 0:  # Lookahead's own hyperparameters at another setting, on shared lrs
            add("lookahead", float(rng.choice(LRS)), float(rng.choice(MOMENTA)),
                k=int(rng.choice([10, 20])), alpha=float(rng.choice([0.2, 0.8])))
        elif kind == 1:  # a learning rate only Lookahead ran
            add("lookahead", float(rng.choice([3.0, 0.001])), float(rng.choice(MOMENTA)))
        elif kind == 2:  # a learning rate only SGD ran
            add("sgd", float(rng.choice([10.0, 0.0003])), float(rng.choice(MOMENTA)))
        elif kind == 3:  # a momentum only one of them ran
            add(str(rng.choice(["lookahead", "sgd"])), float(rng.choice(LRS)), 0.5)
        else:  # another baseline, anywhere
            add("polyak", float(rng.choice(LRS + [10.0])), float(rng.choice(MOMENTA)))
    return rows


def _fields(study: Path) -> dict:
    """Every field of the Lookahead-vs-SGD comparison: its JSON, its sentences, the headline
    (which is about that comparison), and its per-setting table with the colours' gaps."""
    data = load_study(study)
    m = next(c for c in analysis_of(data).comparisons if c.baseline == "sgd")
    assert isinstance(m, Matched)
    table = {name: frame.drop(columns=["first_finished"]).round(12).to_dict("list")
             for name, frame in (("lookahead", m.lookahead_scores), ("sgd", m.base_scores))}
    return json.loads(json.dumps({
        "json": _comparison_json(m, analysis_of(data), data),
        "sentences": matched_sentences(m, analysis_of(data), data),
        "headline": headline(analysis_of(data), data),
        "table": table,
    }, default=str))


@pytest.mark.parametrize("metric", ["test_acc", "test_loss"])
def test_no_field_of_a_comparison_moves_when_runs_outside_it_are_added(tmp_path, metric):
    base = _base_rows(metric)
    # ranked by accuracy (digits, chance unrecorded), or by a loss of a task of ones own
    task = "digits" if metric == "test_acc" else "mine.py:LossTask"
    reference = _fields(write_study(tmp_path, "base", base, metric=metric, task=task))
    assert reference["json"]["lines"]["mean_score"]["low"] is not None  # intervals exist
    rng = np.random.default_rng(2026)
    for draw in range(15):
        extra = _outside_rows(rng, metric)
        study = write_study(tmp_path, f"draw{draw}", base + extra, metric=metric, task=task)
        assert _fields(study) == reference, (draw, extra[:3])


def test_the_whole_study_best_moves_but_stays_out_of_the_comparison(tmp_path):
    """The counterpart: an outside configuration better than anything inside does change the
    whole study's best (shown, labelled), and nothing in the comparison."""
    base = _base_rows("test_acc")
    better = [{"optimizer": "lookahead", "lr": 0.1, "momentum": 0.9, "k": 10, "alpha": 0.8,
               "seed": s, "state": "complete", "value": 0.999} for s in range(SEEDS)]
    a = load_study(write_study(tmp_path, "a", base))
    b = load_study(write_study(tmp_path, "b", base + better))
    assert analysis_of(b).study_best == pytest.approx(0.999) != analysis_of(a).study_best
    assert _fields(tmp_path / "a") == _fields(tmp_path / "b")
