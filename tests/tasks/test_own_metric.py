"""A task ranks by any metric it names, in the direction it declares, and every per-epoch
metric it reports is kept: a regression task ranked by test RMSE, lower is better."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pyarrow.parquet as pq
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.coordination.storage import open_storage

runner = CliRunner()

SINE = '''
import math
import torch
from torch import nn
from lookbench import Task, Workload


class Sine(Task):
    summary = "an MLP fits sin(x)"
    metric = "test_rmse"
    higher_is_better = False
    default_epochs = 2
    default_batch_size = 32

    def workload(self, *, batch_size, device, seed, data_dir=None):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(256, 1, generator=g) * 6 - 3
        y = torch.sin(x) + 0.05 * torch.randn(256, 1, generator=g)
        xt, yt = x[:192], y[:192]
        xv, yv = x[192:], y[192:]
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))

        def train_batches(epoch, generator):
            order = torch.randperm(len(xt), generator=generator)
            for i in range(0, len(order), batch_size):
                yield order[i:i + batch_size]

        def loss(model, idx):
            return nn.functional.mse_loss(model(xt[idx]), yt[idx])

        def evaluate(model):
            mse = float(nn.functional.mse_loss(model(xv), yv))
            return {"test_loss": mse, "test_rmse": math.sqrt(mse)}

        def extra(model):
            return {"weight_norm": float(sum(p.norm() ** 2 for p in model.parameters()) ** 0.5)}

        return Workload(model=model, steps_per_epoch=6, train_batches=train_batches,
                        loss=loss, evaluate=evaluate, extra=extra)


class BadMetric(Sine):
    metric = "lr"
'''


def test_a_task_ranks_by_its_own_metric_and_keeps_every_metric(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sine.py").write_text(SINE)
    out = tmp_path / "runs"
    result = runner.invoke(app, ["run", "sine.py:Sine", "--lr", "0.01,0.1", "--k", "5",
                                 "--alpha", "0.5", "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "best: final test_rmse" in " ".join(result.output.split())
    study = out / "sine-sgd"
    curves = pq.read_table(study / "curves").to_pandas()
    assert {"test_rmse", "weight_norm"} <= set(curves.columns)
    assert curves["test_rmse"].notna().all() and (curves["weight_norm"] > 0).all()
    trials = pq.read_table(study / "trials").to_pandas()
    assert set(trials["metric"]) == {"test_rmse"} and not trials["higher_is_better"].any()
    for _, t in trials.iterrows():
        rmse = curves.loc[curves.trial == t.trial, "test_rmse"]
        assert t.final_test_rmse == rmse.iloc[-1] and t.best_test_rmse == rmse.min()
        assert t.best_epoch == int(curves.loc[rmse.idxmin(), "epoch"])
    # Optuna holds the same metric and direction (optuna-dashboard ranks as the report does).
    storage = open_storage(None, study)
    opt = optuna.load_study(study_name="sine-sgd.sgd", storage=storage)
    assert opt.direction == optuna.study.StudyDirection.MINIMIZE
    assert sorted(t.value for t in opt.trials) == sorted(
        trials.loc[trials.optimizer == "sgd", "final_test_rmse"])
    reports = tmp_path / "reports"
    result = runner.invoke(app, ["report", "--runs", str(out), "--out", str(reports)])
    assert result.exit_code == 0, result.output
    summary = json.loads((reports / "sine-sgd.json").read_text())
    assert summary["metric"] == "test_rmse" and summary["higher_is_better"] is False
    best = trials.loc[trials.optimizer == "sgd", "final_test_rmse"].min()
    assert abs(summary["whole_study"]["optimizers"]["sgd"]["best"] - best) < 1e-12
    assert "ranked by final test rmse" in (reports / "sine-sgd.html").read_text()


def test_a_metric_that_would_overwrite_a_column_is_refused_before_any_trial(tmp_path: Path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sine.py").write_text(SINE)
    result = runner.invoke(app, ["run", "sine.py:BadMetric", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "metric 'lr' would overwrite the curves table's own column" in result.output
    assert not (tmp_path / "runs").exists()
