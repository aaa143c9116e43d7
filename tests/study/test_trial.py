"""The shared trial runner, on the digits task (real data, seconds on a CPU)."""

from __future__ import annotations

import io
import math

import pytest
import torch
from pydantic import ValidationError

from lookbench.execution.trial import Trial, lr_factor, run_trial
from lookbench.optim import Lookahead
from lookbench.study.config import TrialConfig


def digits(optimizer="sgd", **kw) -> TrialConfig:
    base = {"task": "digits", "optimizer": optimizer, "lr": 0.1, "momentum": 0.9,
            "epochs": 20, "seed": 0}
    if optimizer == "lookahead":
        base.update(inner="sgd", k=5, alpha=0.5)
    return TrialConfig(**{**base, **kw})


def _without_wall(records):
    return [{k: v for k, v in vars(r).items() if k != "wall_s"} for r in records]


@pytest.mark.parametrize("optimizer", ["sgd", "lookahead", "adam", "polyak"])
def test_digits_reaches_95_percent(optimizer):
    extra = {"lr": 1e-3} if optimizer == "adam" else {}
    records = run_trial(digits(optimizer, **extra), "cpu")
    assert len(records) == 20 and not any(r.diverged for r in records)
    assert records[-1].test_acc > 0.95
    assert records[-1].steps == 20 * 45  # 1,437 training images in batches of 32
    assert records[-1].train_eval_loss is not None and records[-1].train_eval_loss < 0.1


def test_same_config_and_seed_give_the_same_result_and_other_seeds_do_not():
    a = run_trial(digits("lookahead", epochs=3), "cpu")
    b = run_trial(digits("lookahead", epochs=3), "cpu")
    c = run_trial(digits("lookahead", epochs=3, seed=1), "cpu")
    assert _without_wall(a) == _without_wall(b)
    assert _without_wall(a) != _without_wall(c)


@pytest.mark.parametrize("stop_after", [1, 3])
def test_resume_from_a_checkpoint_is_exact(stop_after):
    cfg = digits("lookahead", epochs=5, inner_state="interpolate")
    straight = Trial(cfg, "cpu")
    full = list(straight.run())

    first = Trial(cfg, "cpu")
    for _ in range(stop_after):
        first.run_epoch()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = Trial(cfg, "cpu")
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    rest = list(resumed.run())
    assert len(rest) == 5 - stop_after
    assert _without_wall(resumed.records) == _without_wall(full)
    for p, q in zip(straight.workload.model.parameters(), resumed.workload.model.parameters()):
        assert torch.equal(p, q)


def test_checkpoint_of_another_config_is_refused():
    trial = Trial(digits(epochs=2), "cpu")
    other = Trial(digits(epochs=2, lr=0.05), "cpu")
    with pytest.raises(ValueError, match="different trial configuration"):
        other.load_state_dict(trial.state_dict())


def test_a_blown_up_loss_is_a_diverged_record_not_an_error():
    records = run_trial(digits(lr=1e3, epochs=5), "cpu")
    assert len(records) == 1 and records[0].diverged


def test_nan_is_a_diverged_record():
    trial = Trial(digits(epochs=4), "cpu")
    trial.run_epoch()
    with torch.no_grad():
        next(trial.workload.model.parameters()).fill_(float("nan"))
    record = trial.run_epoch()
    assert record.diverged and math.isnan(record.train_loss)
    assert trial.finished and list(trial.run()) == []


def test_lookahead_is_evaluated_on_its_slow_weights():
    trial = Trial(digits("lookahead", epochs=1, k=7), "cpu")  # 45 steps: ends mid-cycle
    record = trial.run_epoch()
    opt = trial.optimizer
    assert isinstance(opt, Lookahead)
    model = trial.workload.model
    model.eval()
    with torch.no_grad():
        fast = trial.workload.evaluate(model)
        with opt.evaluation_weights():
            slow = trial.workload.evaluate(model)
    assert record.test_loss == slow["test_loss"] != fast["test_loss"]


def test_step_schedule_is_the_papers():
    factors = [lr_factor("step", e, 200) for e in range(200)]
    assert factors[59] == 1.0 and factors[60] == pytest.approx(0.2)
    assert factors[120] == pytest.approx(0.04) and factors[160] == pytest.approx(0.008)
    assert lr_factor("cosine", 0, 10) == 1.0 and lr_factor("constant", 5, 10) == 1.0
    trial = Trial(digits(epochs=10, schedule="step"), "cpu")
    lrs = [trial.run_epoch().lr for _ in range(10)]
    assert lrs[2] == pytest.approx(0.1) and lrs[3] == pytest.approx(0.02)
    assert lrs[9] == pytest.approx(0.1 * 0.2**3)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"alpha": 1.5}, "alpha must be in"),
        ({"alpha": 0.0}, "alpha must be in"),
        ({"k": 0}, r"k must be in \[1, 2147483647\], got 0"),
        ({"lr": -0.1}, r"lr must be in \(0, inf\), got -0.1"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1.0"),
        ({"epochs": 0}, "greater than or equal to 1"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_configs_name_the_field(fields, match):
    with pytest.raises(ValidationError, match=match):
        digits("lookahead", **fields)


def test_k_and_alpha_only_for_lookahead():
    with pytest.raises(ValidationError, match="k applies to lookahead only, not to sgd"):
        digits("sgd", k=5)


@pytest.mark.slow
def test_a_compiled_trial_trains_as_the_plain_one_and_checkpoints_plain_weights():
    config = digits("lookahead", epochs=2)
    plain = run_trial(config, "cpu")
    compiled = Trial(config, "cpu", compile=True)
    records = list(compiled.run())
    for a, b in zip(records, plain):
        assert a.test_loss == pytest.approx(b.test_loss, rel=1e-4)
        assert a.test_acc == pytest.approx(b.test_acc, abs=1 / 360)
    assert not any("_orig_mod" in k for k in compiled.state_dict()["model"])
