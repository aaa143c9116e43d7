"""The cost pass (``lookbench.execution.cost``): what Lookahead costs per step and in memory,
timed interleaved on the study's own workload, within its budget, once per study."""

from __future__ import annotations

import errno
import io
import json
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.execution import cost
from lookbench.execution.engine import run_study
from lookbench.execution.trial import Trial
from lookbench.study.spec import load_spec
from lookbench.tasks.digits import build_mlp

STUDIES = Path(__file__).parents[2] / "studies"
KEYS = {"version", "skipped", "device", "device_name", "threads", "host", "torch_version",
        "measured_at", "task", "batch_size", "optimizers", "ratios", "extra_bytes", "seconds",
        "stopped"}
BUDGET = 1.5  # seconds: enough for warm-up and well over 5 rounds of digits on 2 cores


def digits(**options):
    """A one-epoch, one-seed digits study at lr 0.1 with momentum 0.9 (2 trials, or 3 with a
    baseline)."""
    inner = {"lr": [0.1], "momentum": [0.9]}
    return load_spec(None, task="digits", epochs=1, name="d",
                     grid={"lookahead": {**inner, "k": [5], "alpha": [0.5]}, "sgd": inner},
                     **options)


def param_bytes() -> int:
    return sum(p.numel() * p.element_size() for p in build_mlp(128).parameters())


@pytest.fixture
def blocks(monkeypatch):
    """Every timed block as (optimizer, steps, seconds), in the order they ran."""
    calls: list[tuple[str, int, float]] = []
    real = cost._Timed.block

    def spy(self, steps):
        seconds = real(self, steps)
        calls.append((self.trial.config.optimizer, steps, seconds))
        return seconds

    monkeypatch.setattr(cost._Timed, "block", spy)
    return calls


# -- which configurations -------------------------------------------------------------------


def test_the_digits_study_is_timed_at_the_papers_setting_and_its_shared_best_region():
    configs = cost.representatives(load_spec(STUDIES / "digits.toml"))
    assert list(configs) == ["lookahead", "sgd"]
    # k = 5, α = 0.5; lr 0.1 is the median of the 14 inner settings both ran, and of its two
    # momenta, 0.9 is the one the study runs most (Lookahead's k × α table is at 0.9).
    assert configs["lookahead"].hyperparameters() == {
        "lr": 0.1, "momentum": 0.9, "k": 5, "alpha": 0.5, "inner_state": "maintain"}
    assert configs["sgd"].hyperparameters() == {"lr": 0.1, "momentum": 0.9}
    assert {c.seed for c in configs.values()} == {0}


def test_a_grid_without_the_papers_setting_takes_its_most_frequent_one_and_the_lower_median():
    spec = load_spec(None, task="digits", epochs=1, baselines=["ema"], grid={
        "lookahead": [{"lr": [0.01, 0.1, 1000.0], "k": [10], "alpha": [0.8]},
                      {"lr": [0.1], "k": [20], "alpha": [0.8]}],
        "sgd": {"lr": [0.01, 0.1, 1000.0]},
        "ema": {"lr": [0.01, 0.1, 1000.0], "decay": [0.9, 0.99]}})
    configs = cost.representatives(spec)
    assert configs["lookahead"].k == 10 and configs["lookahead"].alpha == 0.8
    assert {c.lr for c in configs.values()} == {0.1}
    assert configs["ema"].decay == 0.9  # its own planned setting, at the shared inner values
    two = load_spec(None, task="digits", epochs=1,
                    grid_overrides={"lr": [0.1, 1000.0], "k": [5], "alpha": [0.5]})
    assert {c.lr for c in cost.representatives(two).values()} == {0.1}  # never the diverging


def test_tpe_and_random_studies_have_representatives_too():
    for sampler in ("tpe", "random"):
        spec = load_spec(None, task="digits", epochs=1, sampler=sampler, trials=4,
                         grid_overrides={"lr": [0.01, 1.0], "k": [5], "alpha": [0.5]})
        configs = cost.representatives(spec)
        assert list(configs) == ["lookahead", "sgd"]
        assert configs["lookahead"].lr == configs["sgd"].lr
        assert 0.01 <= configs["sgd"].lr <= 1.0 and configs["lookahead"].k == 5


# -- the pass -------------------------------------------------------------------------------


def test_cost_json_holds_every_key_with_sane_values(tmp_path):
    spec = digits(baselines=["polyak"])
    out = cost.measure_cost(spec, tmp_path, "cpu", 1, None, seconds=BUDGET)
    assert json.loads((tmp_path / cost.COST_FILE).read_text()) == out
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, nothing left beside it
    assert set(out) == KEYS and out["version"] == 1 and out["skipped"] is None
    assert out["device"] == "cpu" and out["device_name"] and out["threads"] == 1
    assert out["task"] == "digits" and out["batch_size"] == 32 and out["host"]
    assert out["torch_version"] == torch.__version__
    assert datetime.fromisoformat(out["measured_at"]).utcoffset().total_seconds() == 0
    assert list(out["optimizers"]) == ["lookahead", "sgd", "polyak"]
    assert out["optimizers"]["lookahead"]["config"] == {  # (as planned: inner_state unset)
        "lr": 0.1, "momentum": 0.9, "k": 5, "alpha": 0.5}
    assert isinstance(out["optimizers"]["lookahead"]["config"]["k"], int)
    assert out["optimizers"]["polyak"]["config"] == {"lr": 0.1, "momentum": 0.9}
    for o in out["optimizers"].values():
        assert 0 < o["step_s"] < 0.1 and o["state_bytes"] > 0
    assert list(out["ratios"]) == ["sgd", "polyak"] == list(out["extra_bytes"])
    for r in out["ratios"].values():
        assert 0.2 < r["estimate"] < 5
        assert r["rounds"] >= 5  # the budget holds more than the fewest an interval needs
        assert r["low"] <= r["estimate"] <= r["high"] and 0.93 <= r["coverage"] < 1
    # What each keeps: SGD its momentum buffer; Polyak that and the average; Lookahead that
    # and the slow weights (its inner state sits beside its own in its state_dict).
    weights = param_bytes()
    assert out["optimizers"]["sgd"]["state_bytes"] == weights
    assert out["optimizers"]["lookahead"]["state_bytes"] == 2 * weights
    assert out["extra_bytes"] == {"sgd": weights, "polyak": 0}
    assert out["stopped"] in ("narrow", "time") and out["seconds"] > 0


def test_rounds_are_interleaved_in_rotating_order_in_blocks_of_whole_syncs(tmp_path, blocks):
    out = cost.measure_cost(digits(baselines=["polyak"]), tmp_path, "cpu", 1, None,
                            seconds=BUDGET)
    names = ["lookahead", "sgd", "polyak"]
    rounds = out["ratios"]["sgd"]["rounds"]
    timed = blocks[-3 * rounds:]
    assert len(blocks) > len(timed)  # warm-up blocks came first, not counted
    assert [n for n, _, _ in blocks[:6]] == ["lookahead"] * 2 + ["sgd"] * 2 + ["polyak"] * 2
    for r in range(rounds):
        assert [n for n, _, _ in timed[3 * r:3 * r + 3]] == names[r % 3:] + names[:r % 3]
    steps = {s for _, s, _ in timed}
    assert len(steps) == 1 and steps.pop() % 5 == 0  # the same whole number of syncs
    assert all(s % 5 == 0 for _, s, _ in blocks)
    # step_s is the median of the blocks' own per-step times
    per_step = sorted(sec / s for n, s, sec in timed if n == "sgd")
    assert out["optimizers"]["sgd"]["step_s"] == pytest.approx(
        (per_step[(rounds - 1) // 2] + per_step[rounds // 2]) / 2)


def test_every_optimizer_starts_from_the_same_weights(tmp_path, monkeypatch):
    start: dict[str, list[torch.Tensor]] = {}
    real = cost._Timed.__init__

    def spy(self, trial):
        start[trial.config.optimizer] = [p.detach().clone()
                                         for p in trial.workload.model.parameters()]
        real(self, trial)

    monkeypatch.setattr(cost._Timed, "__init__", spy)
    cost.measure_cost(digits(baselines=["ema"]), tmp_path, "cpu", 1, None, seconds=0.2)
    assert set(start) == {"lookahead", "sgd", "ema"}
    for weights in start.values():
        assert all(torch.equal(a, b) for a, b in zip(weights, start["lookahead"]))


@pytest.mark.parametrize("budget", [0.3, BUDGET])
def test_the_pass_keeps_to_its_budget(tmp_path, blocks, budget):
    began = time.perf_counter()
    out = cost.measure_cost(digits(), tmp_path, "cpu", 1, None, seconds=budget)
    wall = time.perf_counter() - began
    rounds = out["ratios"]["sgd"]["rounds"]
    round_s = max(blocks[-2 * (r + 1)][2] + blocks[-2 * r - 1][2] for r in range(rounds))
    assert out["seconds"] <= budget + round_s + 0.05  # (the stop check itself)
    assert wall < out["seconds"] + 5  # (building two digits workloads is quick)
    if out["stopped"] == "time":
        assert out["seconds"] >= budget
    if rounds < cost.MIN_ROUNDS:  # too few rounds for an interval: none, said so
        assert out["ratios"]["sgd"]["low"] is None and out["ratios"]["sgd"]["coverage"] is None


def test_no_time_for_five_rounds_gives_no_interval(tmp_path):
    # 0.02 s is less than the warm-up alone takes, so one round runs whatever the machine
    # (a 0.3 s budget once held five rounds on a fast, idle one).
    out = cost.measure_cost(digits(), tmp_path, "cpu", 1, None, seconds=0.02)
    r = out["ratios"]["sgd"]
    assert out["stopped"] == "time" and r["rounds"] == 1
    assert r["low"] is None and r["high"] is None and r["coverage"] is None
    assert "no interval from 1 rounds" in cost.summary(out, "sgd")


@pytest.mark.parametrize(("narrow", "budget", "stopped"),
                         [(10.0, 5.0, "narrow"), (0.0, 1.2, "time")])
def test_rounds_stop_once_every_interval_is_narrow(tmp_path, monkeypatch, narrow, budget,
                                                   stopped):
    monkeypatch.setattr(cost, "NARROW", narrow)  # 10: any interval is narrow; 0: none is
    out = cost.measure_cost(digits(baselines=["ema"]), tmp_path, "cpu", 1, None,
                            seconds=budget)
    assert out["stopped"] == stopped
    rounds = {r["rounds"] for r in out["ratios"].values()}
    if stopped == "narrow":  # as soon as both intervals exist: at the fifth round
        assert rounds == {cost.MIN_ROUNDS} and out["seconds"] < budget
    else:
        assert out["seconds"] >= budget and len(rounds) == 1 and rounds.pop() >= 2


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(cost.SECONDS_ENV, raising=False)
    assert cost.budget_seconds() == 10.0
    monkeypatch.setenv(cost.SECONDS_ENV, "2.5")
    assert cost.budget_seconds() == 2.5 and cost.budget_seconds(1.0) == 1.0
    monkeypatch.setenv(cost.SECONDS_ENV, "soon")
    assert cost.budget_seconds() == 10.0
    # Unset, it is 5% of the study's own training time, between 3 and 10 s.
    monkeypatch.delenv(cost.SECONDS_ENV)
    assert cost.budget_seconds(study_s=15.0) == 3.0
    assert cost.budget_seconds(study_s=120.0) == 6.0
    assert cost.budget_seconds(study_s=3600.0) == 10.0


def test_an_analytic_study_is_skipped(tmp_path):
    spec = load_spec(STUDIES / "nqm-analytic.toml")
    out = cost.measure_cost(spec, tmp_path, "cpu", 1, None, seconds=BUDGET)
    assert out == {"version": 1, "skipped": "an analytic task has no training step to time"}
    assert json.loads((tmp_path / cost.COST_FILE).read_text()) == out


def test_a_task_that_fails_while_timed_is_skipped_with_its_first_line(tmp_path, monkeypatch):
    def broken(self, batch, step):
        raise RuntimeError("the model broke\n  (a traceback's worth of detail)")

    monkeypatch.setattr(Trial, "train_step", broken)
    out = cost.measure_cost(digits(), tmp_path, "cpu", 1, None, seconds=BUDGET)
    assert out == {"version": 1, "skipped": "the model broke"}
    assert cost.summary(out, "sgd") == "cost: not measured (the model broke)"


def test_an_error_of_the_machine_writes_nothing(tmp_path, monkeypatch):
    def full(self, batch, step):
        raise RuntimeError("save failed") from OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Trial, "train_step", full)
    with pytest.raises(OSError, match="No space left"):
        cost.measure_cost(digits(), tmp_path, "cpu", 1, None, seconds=BUDGET)
    assert not list(tmp_path.iterdir())


def test_the_pass_leaves_the_callers_threads_and_rng_alone(tmp_path):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    torch.set_num_threads(2)
    try:
        out = cost.measure_cost(digits(), tmp_path, "cpu", 1, None, seconds=0.2)
        assert out["threads"] == 1  # the study's count, during the pass
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(torch.rand(3), expected)


def test_the_summary_line():
    measured = {"skipped": None,
                "ratios": {"sgd": {"estimate": 1.0512, "low": 1.03, "high": 1.071,
                                   "coverage": 0.96, "rounds": 40},
                           "polyak": {"estimate": 0.99, "low": None, "high": None,
                                      "coverage": None, "rounds": 3}},
                "extra_bytes": {"sgd": 70_000, "polyak": 0}}
    assert cost.summary(measured, "sgd") == (
        "cost: Lookahead(sgd) 1.05× sgd per step [1.03–1.07], +70.00 kB state; "
        "0.99× polyak (no interval from 3 rounds), +0 B state")


# -- in a run -------------------------------------------------------------------------------


def run(tmp_path: Path, spec=None):
    return run_study(spec or digits(), out=tmp_path, storage_url=None, devices="cpu",
                     workers=1, data_dir=None, console=Console(file=io.StringIO()))


def test_a_finished_run_ends_with_cost_json_and_a_rerun_does_not_measure_again(
        tmp_path, monkeypatch):
    monkeypatch.setenv(cost.SECONDS_ENV, str(BUDGET))
    first = run(tmp_path)
    path = tmp_path / "d" / cost.COST_FILE
    assert first.recorded == first.planned == 2 and not first.warnings
    assert first.cost is not None and json.loads(path.read_text()) == first.cost
    assert first.cost["skipped"] is None and first.cost["seconds"] <= BUDGET + 0.5
    mtime = path.stat().st_mtime_ns

    def measured(*args, **kwargs):
        raise AssertionError("a finished study with cost.json was measured again")

    monkeypatch.setattr(cost, "measure_cost", measured)
    began = time.perf_counter()
    again = run(tmp_path)
    assert time.perf_counter() - began < 2.0  # (the pass alone would take its budget)
    assert again.cost is None and again.recorded == 2 and not again.interrupted
    assert path.stat().st_mtime_ns == mtime


def test_a_study_complete_on_entry_is_measured_once(tmp_path, monkeypatch):
    monkeypatch.setenv(cost.SECONDS_ENV, "0")  # 0: no pass
    assert run(tmp_path).cost is None
    assert not (tmp_path / "d" / cost.COST_FILE).exists()
    monkeypatch.setenv(cost.SECONDS_ENV, "0.3")
    result = run(tmp_path)  # nothing left to train: the pass runs on the early return
    assert result.recorded == 2 and result.cost is not None
    assert json.loads((tmp_path / "d" / cost.COST_FILE).read_text()) == result.cost


def test_ctrl_c_during_the_pass_interrupts_the_run_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(cost.SECONDS_ENV, "0")
    run(tmp_path)
    monkeypatch.setenv(cost.SECONDS_ENV, str(BUDGET))

    def ctrl_c(self, steps):
        raise KeyboardInterrupt

    monkeypatch.setattr(cost._Timed, "block", ctrl_c)
    result = run(tmp_path)
    assert result.interrupted and result.cost is None
    assert not [p for p in (tmp_path / "d").iterdir() if "cost" in p.name]


def test_a_cost_file_that_cannot_be_written_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv(cost.SECONDS_ENV, "0")
    run(tmp_path)
    monkeypatch.setenv(cost.SECONDS_ENV, "0.2")

    def full(study_dir, content):
        raise OSError(errno.ENOSPC, "No space left on device", str(study_dir / "cost.json"))

    monkeypatch.setattr(cost, "write_cost", full)
    result = run(tmp_path)
    assert not result.interrupted and not result.errors and result.cost is None
    assert len(result.warnings) == 1 and "No space left on device" in result.warnings[0]
    assert "not measured" in result.warnings[0]
    assert not (tmp_path / "d" / cost.COST_FILE).exists()


def test_lookbench_run_prints_the_cost_once(tmp_path, monkeypatch):
    monkeypatch.setenv(cost.SECONDS_ENV, "1")
    args = ["run", "digits", "--lr", "0.1", "--k", "5", "--alpha", "0.5", "--epochs", "1",
            "--devices", "cpu", "--workers", "1", "--out", str(tmp_path)]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    line = next(x for x in first.output.splitlines() if x.startswith("cost: "))
    assert line.startswith("cost: Lookahead(sgd) ") and "× sgd per step" in line, line
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "cost: " not in again.output
