"""Optimizers beyond the built-ins: every torch.optim family by name, your own class by
reference or registration, and installed entry points; with your own task, two workers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lookbench.optim import Lookahead, build, hyperparameters, register_optimizer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.mark.parametrize("name, cls", [
    ("nadam", torch.optim.NAdam), ("radam", torch.optim.RAdam), ("adamax", torch.optim.Adamax),
    ("rmsprop", torch.optim.RMSprop), ("adagrad", torch.optim.Adagrad),
    ("adadelta", torch.optim.Adadelta), ("adafactor", torch.optim.Adafactor),
])
def test_every_torch_optim_family_is_an_inner_optimizer_by_name(name, cls):
    ps = [nn.Parameter(torch.ones(3))]
    takes = hyperparameters(name)
    hp = {"lr": 0.01, **({"momentum": 0.5} if "momentum" in takes else {})}
    opt = build("lookahead", ps, inner=name, k=2, alpha=0.5, inner_state="reset", **hp)
    assert isinstance(opt, Lookahead) and type(opt.inner) is cls
    for _ in range(4):
        opt.zero_grad()
        (ps[0] ** 2).sum().backward()
        opt.step()
    assert float(ps[0].detach().sum()) < 3.0  # it trained
    if "betas" in opt.param_groups[0]:
        assert opt.param_groups[0]["betas"][0] == 0.5  # momentum means β1


def test_rmsprop_smoothing_is_not_lookaheads_alpha():
    opt = build("lookahead", [nn.Parameter(torch.ones(1))], inner="rmsprop", lr=0.01,
                smoothing=0.9, alpha=0.5)
    assert opt.inner.param_groups[0]["alpha"] == 0.9 and opt.alpha == 0.5


def test_an_optimizer_class_of_ones_own_by_reference_and_by_registration(monkeypatch):
    monkeypatch.chdir(DOCS.parents[1])
    ref = "docs/examples/my_optimizer.py:HeavyBall"
    assert set(hyperparameters(ref)) == {"lr", "momentum", "weight_decay"}
    ps = [nn.Parameter(torch.ones(2))]
    la = build("lookahead", ps, inner=ref, lr=0.1, momentum=0.5, k=2, inner_state="reset")
    assert type(la.inner).__name__ == "HeavyBall" and la.inner.defaults["momentum"] == 0.5
    for _ in range(2):
        la.zero_grad()
        (ps[0] ** 2).sum().backward()
        la.step()
    # "reset" knew which state to zero, from the class's MOMENTUM_KEYS.
    assert all(float(s["momentum_buffer"].abs().sum()) == 0 for s in la.inner.state.values())
    register_optimizer("heavy", type(la.inner), "heavy-ball SGD, hand-written")
    assert type(build("heavy", ps, lr=0.1)).__name__ == "HeavyBall"
    with pytest.raises(ValueError, match="has no Nope"):
        build("docs/examples/my_optimizer.py:Nope", ps, lr=0.1)
    with pytest.raises(ValueError, match="not a torch.optim.Optimizer subclass"):
        build("collections:OrderedDict", ps, lr=0.1)


def test_an_unknown_optimizer_says_how_to_name_ones_own():
    class Odd(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {})

    with pytest.raises(ValueError, match="MOMENTUM_KEYS"):
        Lookahead(Odd([nn.Parameter(torch.ones(1))]), inner_state="reset")


def test_installed_optimizers_are_found_by_name(tmp_path, monkeypatch):
    shutil.copy(DOCS / "my_optimizer.py", tmp_path / "tiny_opt.py")
    info = tmp_path / "tiny_opt-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-opt\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lookbench.optimizers]\nheavyball = "
                                           "tiny_opt:HeavyBall\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from lookbench.optim import available

    assert "heavyball" in available()
    assert type(build("heavyball", [nn.Parameter(torch.ones(1))], lr=0.1)).__name__ == \
        "HeavyBall"


@pytest.mark.slow
def test_a_task_and_an_optimizer_of_ones_own_run_with_two_workers(tmp_path):
    """Both in files outside the package, named by reference; workers load them again."""
    shutil.copy(DOCS / "iris_task.py", tmp_path / "my_task.py")
    shutil.copy(DOCS / "my_optimizer.py", tmp_path / "my_opt.py")
    run = subprocess.run(
        [sys.executable, "-m", "lookbench", "run", "my_task.py:Iris", "--inner",
         "my_opt.py:HeavyBall", "--lr", "0.03,0.3", "--momentum", "0.9", "--epochs", "2",
         "--seeds", "2", "--workers", "2", "--devices", "cpu", "--out", "runs"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    study = tmp_path / "runs" / "iris-heavyball"
    import pandas as pd

    trials = pd.read_parquet(study / "trials")
    assert trials.groupby("optimizer").size().to_dict() == {"lookahead": 4,
                                                            "my_opt.py:HeavyBall": 4}
    assert set(trials["state"]) == {"complete"}
    report = subprocess.run([sys.executable, "-m", "lookbench", "report", str(study),
                             "--out", "reports"], cwd=tmp_path, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    summary = json.loads((tmp_path / "reports" / "iris-heavyball.json").read_text())
    assert summary["matched"]["baseline"] == "my_opt.py:HeavyBall"
    assert summary["matched"]["configurations"] == 2


def test_a_class_takes_the_tables_hyperparameters_it_has_under_their_names():
    """An optimizer class named by reference: the inner optimizer's hyperparameters of the
    table pass under their own names (eps, rho, ...), momentum and beta2 as Adam's betas, and
    never Lookahead's own (RMSprop's ``alpha`` is not Lookahead's α)."""
    params = [torch.nn.Parameter(torch.zeros(2))]
    takes = hyperparameters("torch.optim:RAdam")
    assert {"lr", "momentum", "beta2", "eps", "weight_decay"} <= set(takes)
    assert takes["beta2"] == 0.999
    opt = build("torch.optim:RAdam", params, lr=0.01, beta2=0.95, eps=1e-6)
    assert opt.param_groups[0]["betas"] == (0.9, 0.95) and opt.param_groups[0]["eps"] == 1e-6
    rms = hyperparameters("torch.optim:RMSprop")
    assert "alpha" not in rms and "k" not in rms and {"momentum", "eps"} <= set(rms)
    wrapped = build("lookahead", params, inner="torch.optim:Adadelta", lr=1.0, rho=0.5, alpha=0.8)
    assert wrapped.inner.param_groups[0]["rho"] == 0.5
