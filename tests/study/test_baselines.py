"""Every baseline in one study: Lookahead(inner), the inner optimizer alone, and averaging."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.study.spec import SpecError, load_spec, plan

runner = CliRunner()
STUDY = """
name = "digits-all"
task = "digits"
inner = "sgd"
epochs = 2
seeds = 2
baselines = ["polyak", "ema"]

[grid.lookahead]
lr = [0.03, 0.3]
momentum = [0.9]
k = [5]
alpha = [0.5]

[grid.sgd]
lr = [0.03, 0.3]
momentum = [0.9]
"""
# EMA's own decay swept too: it is compared with Lookahead at one decay, as Lookahead at one k, α.
EMA_DECAYS = """
[grid.ema]
lr = [0.03, 0.3]
momentum = [0.9]
decay = [0.5, 0.9]
"""


def test_baselines_join_the_study_on_the_inner_optimizers_grid(tmp_path):
    path = tmp_path / "all.toml"
    path.write_text(STUDY)
    spec = load_spec(path)
    assert spec.optimizers == ("lookahead", "sgd", "polyak", "ema")
    assert spec.grid["polyak"] == spec.grid["sgd"] == {"lr": [0.03, 0.3], "momentum": [0.9]}
    configs = plan(spec)
    polyak = [c for c in configs if c.optimizer == "polyak"]
    assert len(polyak) == 4 and {c.inner for c in polyak} == {"sgd"}
    assert {c.lr for c in polyak} == {0.03, 0.3} and all(c.k is None for c in polyak)
    # From the command line, with the task's grid.
    spec = load_spec(None, task="digits", baselines=["swa", "swa"])
    assert spec.optimizers == ("lookahead", "sgd", "swa")
    with pytest.raises(SpecError, match="baselines"):
        load_spec(None, task="digits", baselines=["lbfgs"])
    with pytest.raises(SpecError, match="applies to lookahead only"):
        load_spec(None, task="digits", baselines=["ema"], grid={"ema": {"lr": [0.1], "k": [5]}})


@pytest.mark.slow
def test_a_study_of_lookahead_sgd_polyak_and_ema_is_run_and_reported(tmp_path):
    path = tmp_path / "all.toml"
    path.write_text(STUDY + EMA_DECAYS)
    out = tmp_path / "runs"
    result = runner.invoke(app, ["run", "--spec", str(path), "--out", str(out), "--devices",
                                 "cpu", "--workers", "1"])
    assert result.exit_code == 0, result.output + result.stderr
    trials = pd.read_parquet(out / "digits-all" / "trials")
    assert trials.groupby("optimizer").size().to_dict() == {
        "lookahead": 4, "sgd": 4, "polyak": 4, "ema": 8}
    assert sorted(trials.loc[trials.optimizer == "ema", "decay"].unique()) == [0.5, 0.9]
    assert trials.loc[trials.optimizer != "ema", "decay"].isna().all()
    assert set(trials.loc[trials.optimizer.isin(["polyak", "ema"]), "inner"]) == {"sgd"}
    report = runner.invoke(app, ["report", str(out / "digits-all"), "--out",
                                 str(tmp_path / "reports")])
    assert report.exit_code == 0, report.stderr
    summary = json.loads((tmp_path / "reports" / "digits-all.json").read_text())
    assert [c["baseline"] for c in summary["comparisons"]] == ["sgd", "ema", "polyak"]
    assert all(c["matched"] and c["configurations"] == 2 for c in summary["comparisons"])
    ema = next(c for c in summary["comparisons"] if c["baseline"] == "ema")
    assert ema["baseline_setting"]["decay"] in (0.5, 0.9)
    assert all(c["baseline_setting"] == {} for c in summary["comparisons"] if c is not ema)
    for name in ("sgd", "ema", "polyak"):
        assert f"Lookahead − {name}" in summary["verdict"]
    html = (tmp_path / "reports" / "digits-all.html").read_text()
    assert html.count('class="verdict-table"') == 3
