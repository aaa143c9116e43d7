"""Unstable configurations: seeds that disagree far beyond the study's usual spread are flagged
in the configuration table and named above it (where training is chaotic, a rerun on another
layout may end elsewhere)."""

from __future__ import annotations

import pandas as pd

from lookbench.comparison.metrics import UNSTABLE_FACTOR, unstable
from lookbench.report.page import unstable_note
from lookbench.report.units import Units


def scores(spreads: list[float], seeds: list[int] | None = None) -> pd.DataFrame:
    n = len(spreads)
    lo = pd.Series([0.9] * n)
    return pd.DataFrame({"optimizer": ["sgd"] * n, "lr": [0.01 * (i + 1) for i in range(n)],
                         "momentum": [0.9] * n, "seed_min": lo, "seed_max": lo + spreads,
                         "seeds": seeds or [3] * n, "score": lo + pd.Series(spreads) / 2})


def test_a_spread_far_beyond_the_usual_one_is_flagged():
    s = scores([0.01] * 9 + [0.3, 0.05])  # median range 0.01: 0.3 is 30×, 0.05 only 5×
    assert unstable(s).tolist() == [False] * 9 + [True, False]


def test_the_threshold_is_the_factor_times_the_median():
    s = scores([0.01] * 5 + [UNSTABLE_FACTOR * 0.01 * 0.99, UNSTABLE_FACTOR * 0.01 * 1.01])
    assert unstable(s).tolist() == [False] * 6 + [True]


def test_single_seeds_and_identical_seeds_flag_nothing():
    assert not unstable(scores([0.0, 0.5, 0.0], seeds=[3, 1, 3])).any()  # (median range 0)
    assert not unstable(scores([0.2, 0.5], seeds=[1, 1])).any()


def test_the_page_names_them_with_their_range():
    s = scores([0.01] * 9 + [0.3])
    s["unstable"] = unstable(s)
    note = unstable_note(s)  # a metric in its own units: four significant digits, as elsewhere
    assert note.startswith('<p class="note unstable">Unstable: sgd lr=0.1 momentum=0.9 '
                           '(0.9000–1.200)')
    assert f"more than {UNSTABLE_FACTOR:g}× the study's median" in note
    # An accuracy: in %, as every other number of the page writes it.
    s = scores([0.005] * 9 + [0.08])
    s["unstable"] = unstable(s)
    assert "(90.00%–98.00%)" in unstable_note(s, Units(fraction=True))
    s["unstable"] = False
    assert unstable_note(s) == ""
