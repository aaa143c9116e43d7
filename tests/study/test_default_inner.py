"""A study that names no inner optimizer takes its task's (``Task.default_inner``), with the
settings the task's reference fixes (``inner_defaults``) in its default grid."""

from __future__ import annotations

import pytest

from lookbench import tasks
from lookbench.cli import INNER_NAMES
from lookbench.study.spec import SpecError, StudySpec, load_spec


def test_wmt14_defaults_to_adam_at_its_references_settings():
    spec = load_spec(None, task="wmt14")
    assert (spec.inner, spec.study_name) == ("adam", "wmt14-adam")
    assert spec.optimizers == ("lookahead", "adam")
    task = tasks.get("wmt14")
    assert (task.default_inner, task.inner_defaults) == (
        "adam", {"momentum": 0.9, "beta2": 0.98, "eps": 1e-9})
    for opt in ("lookahead", "adam"):
        for name, value in task.inner_defaults.items():
            assert spec.grid[opt][name] == [value]
    assert StudySpec.model_validate(spec.model_dump(mode="json")) == spec  # stored: resolved


def test_a_named_inner_optimizer_wins_and_other_tasks_keep_sgd():
    assert load_spec(None, task="wmt14", inner="sgd").inner == "sgd"
    assert load_spec(None, task="wmt14", inner="sgd").study_name == "wmt14-sgd"
    assert load_spec(None, task="digits").inner == "sgd"
    assert StudySpec(task="digits").inner == "sgd"
    assert StudySpec(task="wmt14").inner == "adam"


def test_an_unknown_task_is_still_reported_by_name():
    with pytest.raises(SpecError, match="task: .*nosuchtask"):
        load_spec(None, task="nosuchtask")


def test_the_run_commands_help_lists_every_plain_optimizer():
    """(in a fresh interpreter: other tests register optimizers of their own)"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "from lookbench.optim.factory import plain; "
                          "print(','.join(plain()))"], capture_output=True, text=True,
                         check=True).stdout
    assert list(INNER_NAMES) == out.strip().split(",")


def test_a_default_grid_around_the_default_inner_holds_its_settings():
    """Task.inner_defaults reach the grid a study takes around the default inner optimizer, also
    for a task that overrides default_grid (digits); another inner optimizer's is left alone."""
    from lookbench.tasks.digits import Digits

    class Fixed(Digits):
        default_inner = "adam"
        inner_defaults = {"beta2": 0.98, "eps": 1e-9}

    grid = Fixed().study_grid("adam")
    for table in (grid["lookahead"], grid["adam"]):
        assert table["beta2"] == [0.98] and table["eps"] == [1e-9]
    assert "eps" not in Fixed().study_grid("sgd")["sgd"]
    wmt = tasks.get("wmt14").study_grid("adam")
    assert wmt["adam"]["eps"] == [1e-9] and wmt["lookahead"]["beta2"] == [0.98]
