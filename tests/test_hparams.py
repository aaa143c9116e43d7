"""The hyperparameter table is the one place a hyperparameter is defined: every layer derives
from it, and one added there (Adam's β2) is sweepable, stored and plotted."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from typer.testing import CliRunner

from lookbench import hparams
from lookbench.cli import app
from lookbench.results import TRIALS
from lookbench.study.config import TrialConfig
from lookbench.study.spec import distribution, load_spec, plan, search_space

runner = CliRunner()


def test_every_layer_derives_its_names_from_the_table():
    for h in hparams.HYPERPARAMETERS:
        assert h.name in TrialConfig.model_fields
        for column in h.columns():
            assert column in TRIALS.names
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    for h in hparams.HYPERPARAMETERS:
        assert h.option in result.output


@pytest.mark.parametrize("name", [h.name for h in hparams.HYPERPARAMETERS if h.numeric])
def test_one_check_with_one_message_for_every_bound(name):
    h = hparams.BY_NAME[name]
    inside = h.low + 1 if h.kind == "int" else (
        (h.low + min(h.high, h.low + 2)) / 2 if math.isfinite(h.low) else 0.5)
    assert h.check(inside) is None
    for bad in (h.low - 1, math.inf, True, "0.5"):
        assert h.check(bad) is not None
    if not h.low_open and math.isfinite(h.low):
        assert h.check(h.low) is None
    message = h.check(h.low - 1)
    assert message == f"{name} must be in {h.bounds()}, got {h.low - 1!r}"


def test_distributions_follow_the_table_scale():
    assert distribution("lr", [0.01, 0.1]) == FloatDistribution(0.01, 0.1, log=True)
    # weight decay is log-scale in the table: the random sampler and Optuna agree on it now
    assert distribution("weight_decay", [1e-4, 1e-2]).log
    assert not distribution("weight_decay", [0.0, 1e-2]).log  # a zero has no logarithm
    assert distribution("momentum", [0.5, 0.9]) == FloatDistribution(0.5, 0.9, log=False)
    assert distribution("k", [5, 10]) == IntDistribution(5, 10)
    assert distribution("inner_state", ["reset"]) == CategoricalDistribution(
        ["maintain", "reset", "interpolate"])
    assert distribution("alpha", ["adaptive"]) is None
    spec = load_spec(None, task="digits", inner="adam", sampler="tpe", trials=2,
                     grid_overrides={"beta2": [0.99, 0.9999]})
    assert search_space(spec, "adam")["beta2"] == FloatDistribution(0.99, 0.9999)


def test_a_hyperparameter_applies_to_every_optimizer_that_takes_it():
    spec = load_spec(None, task="digits", inner="adam", baselines=["polyak"],
                     grid_overrides={"beta2": [0.99, 0.999], "lr": [1e-3]})
    seen = {(c.optimizer, c.beta2) for c in plan(spec)}
    for opt in ("lookahead", "adam", "polyak"):
        assert {(opt, 0.99), (opt, 0.999)} <= seen
    with pytest.raises(ValueError, match="--beta2: no optimizer of this study"):
        load_spec(None, task="digits", inner="sgd", grid_overrides={"beta2": [0.99]})


def test_beta2_is_swept_from_the_command_line_stored_and_plotted(tmp_path: Path):
    out, reports = tmp_path / "runs", tmp_path / "reports"
    result = runner.invoke(app, [
        "run", "digits", "--inner", "adam", "--lr", "0.001,0.003", "--beta2", "0.99,0.999",
        "--k", "5", "--alpha", "0.5", "--epochs", "1", "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    trials = pq.read_table(out / "digits-adam" / "trials").to_pandas()
    assert sorted(trials["beta2"].unique()) == [0.99, 0.999]
    assert set(trials["optimizer"]) == {"lookahead", "adam"}
    result = runner.invoke(app, ["report", "--runs", str(out), "--out", str(reports)])
    assert result.exit_code == 0, result.output
    page = (reports / "digits-adam.html").read_text()
    label = hparams.label("beta2").encode("ascii", "backslashreplace").decode()  # as JSON has it
    assert f"{label} \\u00d7 inner learning rate" in page  # the surface of lr × β2
    header = (reports / "digits-adam-configs.csv").read_text().splitlines()[0]
    assert "beta2" in header.split(",")


@pytest.mark.parametrize(("inner", "baselines", "field", "values"), [
    ("rmsprop", [], "smoothing", [0.9, 0.99]),
    ("adadelta", [], "rho", [0.8, 0.95]),
    ("adagrad", [], "lr_decay", [0.0, 1e-4]),
    ("adam", [], "eps", [1e-8, 1e-6]),
    ("nadam", [], "beta2", [0.99, 0.999]),
    ("sgd", ["ema"], "decay", [0.9, 0.99]),
    ("sgd", ["polyak", "swa"], "start", [0, 100]),
])
def test_each_optimizers_own_hyperparameters_are_sweepable(inner, baselines, field, values):
    import torch

    from lookbench.optim import build

    spec = load_spec(None, task="digits", inner=inner, baselines=baselines,
                     grid_overrides={field: values})
    configs = [c for c in plan(spec) if getattr(c, field) is not None]
    takers = {c.optimizer for c in configs}
    assert takers == ({"lookahead", inner} if not baselines else set(baselines))
    assert {getattr(c, field) for c in configs} == set(values)
    for c in configs[:2]:  # each builds, with the value where the optimizer keeps it
        build(c.optimizer, [torch.nn.Parameter(torch.zeros(2))], **c.optimizer_hparams())
