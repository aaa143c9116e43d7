"""One population member's error is that member's own: it fails alone, with its own error
text, as it would have failed trained alone, and the population goes on without it (frozen,
as a diverged member is), its survivors computing the same bits as if it had not failed. An
error in building one seed's workload fails that seed's members only; an error that belongs to
no one member (the data, the machine) still stops the population as before."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.execution.population.trial import PopulationTrial
from lookbench.results import StudyResults
from lookbench.study.config import TrialConfig
from lookbench.tasks import DataUnavailable

runner = CliRunner()

# A small classifier whose failures are switched on from the environment (the same task, so
# the same trial ids, with and without them): FLAKY_SEED makes the workload of that seed
# raise; FLAKY_NORM makes evaluate raise once the network's weights are larger than that.
FLAKY = '''
import os
import torch
from torch import nn
from lookbench import Task, Workload
from lookbench.tasks import DataUnavailable


class Flaky(Task):
    summary = "an MLP on separable blobs, failing where told to"
    default_epochs = 3
    default_batch_size = 32

    def workload(self, *, batch_size, device, seed, data_dir=None):
        if str(seed) in os.environ.get("FLAKY_SEED", "").split(","):
            raise RuntimeError(f"no workload for seed {seed}\\nsecond line")
        if str(seed) in os.environ.get("FLAKY_DATA", "").split(","):
            raise DataUnavailable("the blobs are missing")
        g = torch.Generator().manual_seed(0)
        centers = torch.randn(3, 8, generator=g) * 2
        y = torch.randint(0, 3, (320,), generator=g)
        x = centers[y] + torch.randn(320, 8, generator=g)
        xt, yt, xv, yv = x[:256], y[:256], x[256:], y[256:]
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
        limit = float(os.environ.get("FLAKY_NORM", "inf"))

        def train_batches(epoch, generator):
            order = torch.randperm(len(xt), generator=generator)
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                yield xt[idx], yt[idx]

        def criterion(out, target):
            return nn.functional.cross_entropy(out, target, reduction="none")

        def loss(model, batch):
            return criterion(model(batch[0]), batch[1]).mean()

        def evaluate(model):
            norm = float(sum(p.norm() ** 2 for p in model.parameters()) ** 0.5)
            if norm > limit:
                raise ValueError(f"weights too large for seed {seed}")
            logits = model(xv)
            return {"test_loss": float(criterion(logits, yv).mean()),
                    "test_acc": float((logits.argmax(1) == yv).float().mean())}

        return Workload(model=model, steps_per_epoch=8, train_batches=train_batches,
                        loss=loss, evaluate=evaluate, criterion=criterion)
'''

GRID = ["flaky.py:Flaky", "--k", "5,10", "--alpha", "0.5", "--seeds", "3", "--devices", "cpu",
        "--workers", "1"]
COLUMNS = ("final_test_loss", "final_train_loss", "final_test_acc", "epochs_done")


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flaky.py").write_text(FLAKY)
    for name in ("FLAKY_SEED", "FLAKY_NORM", "FLAKY_DATA"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _run(out, lr: str, *extra: str, code: int = 0):
    result = runner.invoke(app, ["run", *GRID, "--lr", lr, "--out", str(out), *extra])
    assert result.exit_code == code, result.output
    return result


def _trials(out) -> pd.DataFrame:
    return StudyResults(out / "flaky-sgd").trials().to_pandas().set_index("trial").sort_index()


def _failed(trials: pd.DataFrame) -> dict[str, str]:
    return trials.loc[trials["state"] == "failed", "error"].to_dict()


def test_a_seed_whose_workload_raises_fails_its_own_trials_only(here, monkeypatch):
    lr = "0.05,0.2,1000"  # (1000 diverges at once)
    _run(here / "clean", lr, "--population", "8")
    clean = _trials(here / "clean")
    monkeypatch.setenv("FLAKY_SEED", "1")
    _run(here / "pop", lr, "--population", "8", code=1)
    _run(here / "one", lr, "--population", "1", code=1)
    pop, one = _trials(here / "pop"), _trials(here / "one")
    assert len(pop) == len(one) == len(clean) == 27
    assert set(pop["population"]) == {7, 6}  # four populations (7 + 7 + 7 + 6)
    failed = _failed(pop)
    assert failed == _failed(one)
    assert set(failed) == set(pop.index[pop["seed"] == 1]) and len(failed) == 9
    assert set(failed.values()) == {"RuntimeError: no workload for seed 1"}  # one line
    assert (pop.loc[list(failed), "epochs_done"] == 0).all()
    # The survivors: what trials alone give (to float tolerance), and the very bits of the
    # populations in which seed 1 trained.
    alive = [t for t in pop.index if t not in failed]
    assert (pop.loc[alive, "state"] == one.loc[alive, "state"]).all()
    assert (pop.loc[alive, "state"] == clean.loc[alive, "state"]).all()
    for column in COLUMNS:
        assert pop.loc[alive, column].fillna(-1).tolist() \
            == clean.loc[alive, column].fillna(-1).tolist(), column
        done = pop.loc[alive, "state"] == "complete"
        assert pop.loc[alive][done][column].to_numpy() == pytest.approx(
            one.loc[alive][done][column].to_numpy(), rel=1e-4, abs=1e-5), column
    curves = StudyResults(here / "pop" / "flaky-sgd").curves().to_pandas()
    assert len(curves) == int(pop["epochs_done"].sum())
    # Fixed, the failed trials run again (in their populations' layout): the clean bits.
    monkeypatch.delenv("FLAKY_SEED")
    result = _run(here / "pop", lr, "--population", "8", "--retry-failed")
    assert "9" in result.output
    again = _trials(here / "pop")
    assert set(again["state"]) <= {"complete", "diverged"}
    for column in (*COLUMNS, "state"):
        assert again[column].fillna(-1).tolist() == clean[column].fillna(-1).tolist(), column


def test_an_evaluation_that_raises_fails_the_same_trials_in_populations_as_alone(here,
                                                                                 monkeypatch):
    _run(here / "clean", "0.05,1", "--population", "8")
    monkeypatch.setenv("FLAKY_NORM", "20")  # (lr 1 passes it in the first epochs, 0.05 never)
    _run(here / "pop", "0.05,1", "--population", "8", code=1)
    _run(here / "one", "0.05,1", "--population", "1", code=1)
    clean, pop, one = _trials(here / "clean"), _trials(here / "pop"), _trials(here / "one")
    assert set(pop["population"]) == {6}  # three populations of six
    failed = _failed(pop)
    assert failed == _failed(one)
    assert 0 < len(failed) < len(pop)
    for trial, error in failed.items():  # each with its own seed's error
        assert error == f"ValueError: weights too large for seed {pop.loc[trial, 'seed']}"
    assert (pop["epochs_done"] == one["epochs_done"]).all()
    assert (pop["state"] == one["state"]).all()
    # The survivors: the bits of the populations where nothing failed, and what they give
    # alone (to float tolerance where training is not chaotic: at lr 1 the last bits grow).
    alive = [t for t in pop.index if t not in failed]
    for column in COLUMNS:
        assert pop.loc[alive, column].fillna(-1).tolist() \
            == clean.loc[alive, column].fillna(-1).tolist(), column
    calm = (pop["lr"] == 0.05) & (pop["state"] == "complete")
    assert calm.sum() == 9
    for column in COLUMNS:
        assert pop.loc[calm, column].to_numpy() == pytest.approx(
            one.loc[calm, column].to_numpy(), rel=1e-4, abs=1e-5), column
    curves = StudyResults(here / "pop" / "flaky-sgd").curves().to_pandas()
    assert len(curves) == int(pop["epochs_done"].sum())


def _configs(lrs=(0.05, 0.2)) -> list[TrialConfig]:
    return [TrialConfig(task="flaky.py:Flaky", epochs=2, optimizer="sgd", lr=lr, seed=seed)
            for seed in (0, 1, 2) for lr in lrs]


def _finals(pop: PopulationTrial) -> list:
    return [[(r.train_loss, r.test_loss, r.test_acc, r.steps) for r in records]
            for records in pop.records]


def test_the_first_seeds_workload_failing_leaves_the_others_their_bits(here, monkeypatch):
    configs = _configs()
    clean = PopulationTrial(configs, "cpu")
    list(clean.run())
    monkeypatch.setenv("FLAKY_SEED", "0")
    pop = PopulationTrial(configs, "cpu")
    assert sorted(pop.errors) == [0, 1]
    assert {str(e) for e in pop.errors.values()} == {"no workload for seed 0\nsecond line"}
    assert all(pop.member_finished(m) for m in (0, 1))
    list(pop.run())
    assert pop.records[0] == pop.records[1] == []
    assert _finals(pop)[2:] == _finals(clean)[2:]


def test_every_seed_failing_fails_every_member_with_its_own_error(here, monkeypatch):
    from lookbench.execution.population.trial import MembersFailed

    monkeypatch.setenv("FLAKY_SEED", "0,1,2")
    with pytest.raises(MembersFailed) as failed:
        PopulationTrial(_configs(), "cpu")
    assert [str(failed.value.errors[m]).splitlines()[0] for m in range(6)] == [
        f"no workload for seed {s}" for s in (0, 0, 1, 1, 2, 2)]


def test_an_error_of_no_one_member_still_stops_the_population(here, monkeypatch):
    monkeypatch.setenv("FLAKY_DATA", "1")
    with pytest.raises(DataUnavailable):
        PopulationTrial(_configs(), "cpu")


def test_a_member_failing_in_evaluate_is_frozen_and_the_others_keep_their_bits(here,
                                                                               monkeypatch):
    configs = _configs(lrs=(0.05, 1))  # lr 1 goes past the limit: seed 1 in the first epoch
    clean = PopulationTrial(configs, "cpu")
    list(clean.run())
    monkeypatch.setenv("FLAKY_NORM", "20")
    pop = PopulationTrial(configs, "cpu")
    trained = list(pop.run())
    failed = sorted(pop.errors)
    assert failed == [1, 3, 5]
    assert [len(pop.records[m]) for m in failed] == [1, 0, 1]
    for m in failed:
        assert pop.member_finished(m) and pop.optimizer.is_frozen(m)
        assert str(pop.errors[m]) == f"weights too large for seed {configs[m].seed}"
        assert all(m not in t for t in trained[len(pop.records[m]):])  # no record after
    alive = [m for m in range(6) if m not in failed]
    assert [_finals(pop)[m] for m in alive] == [_finals(clean)[m] for m in alive]


def test_a_population_with_failed_members_cut_off_resumes_to_the_same_bits(here, monkeypatch):
    monkeypatch.setenv("FLAKY_NORM", "20")
    _run(here / "straight", "0.05,1", "--population", "32", code=1)  # (one of all 18)
    real = PopulationTrial.run_epoch

    def cut_off(self):
        if self.epoch == 2:  # after the second epoch's checkpoints
            raise KeyboardInterrupt
        return real(self)

    with monkeypatch.context() as m:
        m.setattr(PopulationTrial, "run_epoch", cut_off)
        _run(here / "cut", "0.05,1", "--population", "32", code=130)
    cut = _trials(here / "cut")
    assert 0 < len(cut) < 18 and set(cut["state"]) == {"failed"}  # those failed before it
    # (a recorded member's checkpoint is gone: deleted after the save in flight landed)
    checkpoints = list((here / "cut" / "flaky-sgd" / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 18 - len(cut)
    _run(here / "cut", "0.05,1", "--population", "32", code=1)
    a, b = _trials(here / "straight"), _trials(here / "cut")
    assert list(a.index) == list(b.index) and set(b["population"]) == {18}
    assert (b.loc[[p.stem for p in checkpoints], "resumes"] >= 1).all()
    for column in COLUMNS:
        assert a[column].fillna(-1).tolist() == b[column].fillna(-1).tolist(), column
    for column in ("state", "error"):
        assert a[column].fillna("").tolist() == b[column].fillna("").tolist(), column
