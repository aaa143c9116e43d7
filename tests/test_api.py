"""The scripting API: lookbench.run_study and lookbench.load_results."""

from __future__ import annotations

import pytest

import lookbench
from lookbench.study.spec import SpecError


def test_run_a_study_from_python_and_read_its_tables(tmp_path):
    result = lookbench.run_study(task="digits", lr=[0.1], k=[5], alpha=[0.5], epochs=1,
                                 seeds=2, devices="cpu", workers=1, out=tmp_path)
    assert result.planned == result.recorded == 4 and not result.interrupted
    trials, curves = lookbench.load_results(tmp_path / "digits-sgd")
    assert len(trials) == 4 and set(trials["optimizer"]) == {"lookahead", "sgd"}
    assert len(curves) == 4 and (trials["final_test_acc"] > 0.5).all()
    again = lookbench.run_study(task="digits", lr=[0.1], k=[5], alpha=[0.5], epochs=1,
                                seeds=2, devices="cpu", workers=1, out=tmp_path)
    assert again.recorded == 4  # resumed: nothing new to run
    with pytest.raises(SpecError, match="alpha"):
        lookbench.run_study(task="digits", alpha=[1.5], out=tmp_path)
