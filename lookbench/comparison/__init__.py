"""What a comparison of Lookahead with a baseline is, and how it is judged: the rules
(``rules``), the per-sweep figures and their intervals (``sweeps``), the matched set as a closed
world (``matched``) and the descriptive figures of configurations (``metrics``).

It sits below both ``lookbench.study`` (a study that adds seeds asks it whether its verdict is
decided) and ``lookbench.report`` (which words and draws it), and needs neither: only the
hyperparameter table, ``lookbench.stats``, numpy and pandas.

May import: the base modules only.
"""

from __future__ import annotations

from lookbench._lazy import exports

# Each public name and its module, imported on first use (``lookbench._lazy.exports``).
_WHERE = {
    "Cost": "matched",
    "Matched": "matched",
    "Side": "matched",
    "Unmatched": "matched",
    "compare": "matched",
    "describe_setting": "matched",
    "paired_line": "matched",
    "ranking_scores": "matched",
    "shared_values": "matched",
    "EXPLANATIONS": "metrics",
    "Robustness": "metrics",
    "SHARED": "metrics",
    "UNSTABLE_FACTOR": "metrics",
    "annotate": "metrics",
    "best_score": "metrics",
    "best_so_far": "metrics",
    "completed_values": "metrics",
    "config_keys": "metrics",
    "config_scores": "metrics",
    "expected_best": "metrics",
    "matching": "metrics",
    "robustness_by_optimizer": "metrics",
    "unstable": "metrics",
    "Rules": "rules",
    "WITHIN": "rules",
    "eps_key": "rules",
    "parse_within": "rules",
    "Line": "sweeps",
}
__getattr__ = exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
