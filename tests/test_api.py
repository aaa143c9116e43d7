"""The scripting API: lookbench.run_study and lookbench.load_results."""

from __future__ import annotations

import pytest

import lookbench
from lookbench.study.spec import SpecError


def test_run_a_study_from_python_and_read_its_tables(tmp_path):
    result = lookbench.run_study(task="digits", lr=[0.1], k=[5], alpha=[0.5], epochs=1,
                                 seeds=2, devices="cpu", workers=1, out=tmp_path)
    assert result.planned == result.recorded == 4 and not result.interrupted
    assert result.study_dir == tmp_path / "digits-sgd"  # named <task>-<inner>
    trials, curves = lookbench.load_results(result.study_dir)
    assert len(trials) == 4 and set(trials["optimizer"]) == {"lookahead", "sgd"}
    assert len(curves) == 4 and (trials["final_test_acc"] > 0.5).all()
    assert trials.groupby("config")["seed"].apply(sorted).tolist() == [[0, 1], [0, 1]]
    assert lookbench.load_results("digits-sgd", out=tmp_path)[0].equals(trials)
    again = lookbench.run_study(task="digits", lr=[0.1], k=[5], alpha=[0.5], epochs=1,
                                seeds=2, devices="cpu", workers=1, out=tmp_path)
    assert again.recorded == 4  # resumed: nothing new to run
    with pytest.raises(SpecError, match="alpha"):
        lookbench.run_study(task="digits", alpha=[1.5], out=tmp_path)


def test_load_results_finds_a_study_by_path_or_by_name(tmp_path, monkeypatch):
    study = tmp_path / "runs" / "digits-sgd"
    (study / "trials").mkdir(parents=True)  # a study with no finished trial yet
    for given, kw in ((study, {}), (str(study), {}), ("digits-sgd", {"out": tmp_path / "runs"})):
        trials, curves = lookbench.load_results(given, **kw)
        assert trials.empty and curves.empty and "config" in trials.columns
    monkeypatch.chdir(tmp_path)  # a name alone: under ./runs
    assert lookbench.load_results("digits-sgd")[0].empty
    assert lookbench.load_results("runs/digits-sgd")[0].empty


def test_load_results_refuses_a_path_that_holds_no_study(tmp_path, monkeypatch):
    """Before, a wrong path gave two empty frames, as a study with no results does."""
    from lookbench.api import StudyNotFound

    runs = tmp_path / "runs"
    (runs / "digits-sgd" / "trials").mkdir(parents=True)
    (runs / "notes").mkdir()
    monkeypatch.chdir(tmp_path)
    # The README's pairing: run_study(task="digits") writes runs/digits-sgd, not runs/digits.
    with pytest.raises(StudyNotFound, match=r"no study at runs/digits: it does not exist; "
                                            r"did you mean runs/digits-sgd\?"):
        lookbench.load_results("runs/digits")
    with pytest.raises(StudyNotFound, match=r"no study 'digits' here or under runs/; did you "
                                            r"mean runs/digits-sgd\?"):
        lookbench.load_results("digits")
    with pytest.raises(StudyNotFound, match="runs/notes is not a study folder"):
        lookbench.load_results("runs/notes")
    with pytest.raises(StudyNotFound, match=r"runs is not a study but holds studies "
                                            r"\(digits-sgd\)"):
        lookbench.load_results("runs")
    with pytest.raises(StudyNotFound, match=r"no study 'nothing' here or under elsewhere/$"):
        lookbench.load_results("nothing", out="elsewhere")
    # Either kind of error catches it.
    for kind in (FileNotFoundError, ValueError):
        with pytest.raises(kind):
            lookbench.load_results(tmp_path / "missing")
