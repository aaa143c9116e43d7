"""`lookbench run` and `lookbench status` end to end: exactly once, nothing lost, clear errors.

Fast tests run the command in this process (one worker); the ones marked ``slow`` start real
worker processes and kill them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pyarrow.dataset as ds
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.coordination.queue import OWNER_ATTR, SUPERSEDED_ATTR, TrialQueue
from lookbench.coordination.storage import open_storage
from lookbench.results import CURVES, TRIALS, StudyResults
from lookbench.study.config import TrialConfig
from lookbench.study.spec import lookbench_id

runner = CliRunner()
TINY = ["digits", "--lr", "0.1,1000", "--k", "5", "--alpha", "0.5", "--epochs", "2",
        "--seeds", "2", "--devices", "cpu", "--workers", "1"]


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its content hash."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def optuna_trials(out: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(None, out / study)
    trials = []
    for opt in ("lookahead", "sgd"):
        trials += optuna.load_study(study_name=f"{study}.{opt}", storage=storage).trials
    return trials


def test_a_study_records_every_planned_trial_once(tmp_path):
    result = invoke("run", *TINY, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output + result.stderr
    study = tmp_path / "digits-sgd"
    trials = pd.read_parquet(study / "trials")  # a plain directory of Parquet parts
    assert len(trials) == 8 and trials["trial"].is_unique  # 2 lr × 2 optimizers × 2 seeds
    assert set(trials["state"]) == {"complete", "diverged"}
    assert (trials.loc[trials.lr == 1000, "state"] == "diverged").all()
    assert (trials.loc[trials.lr == 0.1, "final_test_acc"] > 0.8).all()
    la = trials[trials.optimizer == "lookahead"]
    assert set(la["k"]) == {5} and set(la["alpha"]) == {0.5} and set(la["inner"]) == {"sgd"}
    assert trials.loc[trials.optimizer == "sgd", "k"].isna().all()
    curves = ds.dataset(study / "curves", format="parquet").to_table()
    assert curves.schema.equals(CURVES) or set(CURVES.names) <= set(curves.schema.names)
    assert curves.num_rows == int(trials["epochs_done"].sum())
    assert set(TRIALS.names) == set(trials.columns)
    # Optuna agrees: one finished trial per planned run, none left running or waiting.
    frozen = optuna_trials(tmp_path, "digits-sgd")
    live = [t for t in frozen if SUPERSEDED_ATTR not in t.user_attrs]
    assert len(live) == 8
    assert {t.state for t in live} == {TrialState.COMPLETE, TrialState.PRUNED}
    assert "done" in result.output and "lookahead" in result.output


def test_running_again_adds_nothing_and_changes_no_result(tmp_path):
    assert invoke("run", *TINY, "--out", str(tmp_path)).exit_code == 0
    before = tree_digest(tmp_path / "digits-sgd" / "trials")
    result = invoke("run", *TINY, "--out", str(tmp_path))
    assert result.exit_code == 0
    assert "8 of 8 trials recorded" in result.output
    assert tree_digest(tmp_path / "digits-sgd" / "trials") == before


@pytest.mark.parametrize(
    ("args", "code", "match"),
    [
        (["mnist"], 2, "unknown task 'mnist'"),
        (["digits", "--inner", "lbfgs"], 2, "inner: unknown inner optimizer 'lbfgs'"),
        (["digits", "--alpha", "1.5"], 2, r"alpha must be in (0, 1], got 1.5"),
        (["digits", "--alpha", "0"], 2, r"alpha must be in (0, 1], got 0.0"),
        (["digits", "--k", "0"], 2, r"k: k must be in [1, 2147483647], got 0"),
        (["digits", "--lr", "-0.1"], 2, r"lr: lr must be in (0, inf), got -0.1"),
        (["digits", "--lr", "fast"], 2, "--lr: 'fast' is not a number"),
        (TINY[:-4] + ["--epochs", "3"], 2, "already exists with epochs=2, not 3"),
        (TINY[:1] + ["--lr", "0.1"] + TINY[3:], 2,
         "already exists with grid.lookahead.lr=[0.1, 1000.0], not [0.1]"),
        # (a refused connection is an outage, waited out: an unknown host is not)
        (["digits", "--storage", "postgresql://nobody@no-such-host.invalid/none"], 2,
         "cannot open storage"),
        (["digits", "--storage", "redis://x"], 2, "unsupported storage URL"),
        (TINY[:-4] + ["--devices", "7"], 2, "no CUDA device 7"),
        (["digits", "--option", "hidden"], 2, "--option: expected KEY=VALUE"),
        (["cifar10", "--data-dir", "{tmp}/nodata", "--option", "train_subset=8"], 2,
         "CIFAR-10 not found in"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit_and_touches_nothing(tmp_path, args, code,
                                                                       match):
    assert invoke("run", *TINY, "--out", str(tmp_path)).exit_code == 0
    before = tree_digest(tmp_path)
    (tmp_path / "nodata").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = invoke("run", *args, "--out", str(tmp_path))
    assert result.exit_code == code, result.output + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert match in lines[0]
    assert "Traceback" not in result.output + result.stderr
    after = {k: v for k, v in tree_digest(tmp_path).items() if not k.startswith("digits-sgd/.")}
    assert after == {k: v for k, v in before.items() if not k.startswith("digits-sgd/.")}


def test_a_malformed_study_file_is_one_line(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text('task = "digits"\n[grid.lookahead]\nlr = [0.1]\nalpha = [2.0]\n')
    result = invoke("run", "--spec", str(spec), "--out", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {spec}: grid.lookahead.alpha: alpha must be in (0, 1], got 2.0")
    assert not (tmp_path / "digits-sgd").exists()


def test_status_shows_progress_and_best_configs(tmp_path):
    assert invoke("run", *TINY, "--out", str(tmp_path)).exit_code == 0
    result = runner.invoke(app, ["status", "--out", str(tmp_path)], terminal_width=160)
    assert result.exit_code == 0
    assert "digits-sgd" in result.output and "4/4" in result.output
    assert "lr=0.1" in result.output
    missing = invoke("status", "nope", "--out", str(tmp_path))
    assert missing.exit_code == 2 and missing.stderr.startswith("error: no study at")
    empty = invoke("status", "--out", str(tmp_path / "none"))
    assert empty.exit_code == 2 and "no studies under" in empty.stderr


def test_analytic_nqm_study_runs_in_seconds(tmp_path):
    result = invoke("run", "nqm", "--option", "analytic=true", "--lr", "0.1,0.3,2.5",
                    "--k", "5", "--alpha", "0.2,0.8", "--devices", "cpu", "--workers", "1",
                    "--out", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    trials = pd.read_parquet(tmp_path / "nqm-sgd" / "trials")
    assert len(trials) == 9
    # Beyond SGD's 2/L, SGD diverges; Lookahead with a small alpha is still a contraction:
    # |1 − α + α(1 − γa)^k| = |0.8 + 0.2·(−1.5)^5| < 1 (Lemma 1's mean dynamics).
    assert (trials.loc[(trials.lr == 2.5) & (trials.optimizer == "sgd"), "state"]
            == "diverged").all()
    assert (trials.loc[(trials.lr == 2.5) & (trials.alpha == 0.2), "state"] == "complete").all()
    assert (trials.loc[(trials.lr == 2.5) & (trials.alpha == 0.8), "state"] == "diverged").all()
    la = trials[(trials.optimizer == "lookahead") & (trials.lr == 0.3)]
    sgd = trials[(trials.optimizer == "sgd") & (trials.lr == 0.3)]
    assert (la["final_test_loss"].to_numpy() < sgd["final_test_loss"].to_numpy()[0]).all()


def test_a_trial_that_fails_before_its_task_is_built_records_the_tasks_metric(tmp_path,
                                                                             monkeypatch):
    from lookbench.execution import runner

    class Broken(runner.Trial):
        def __init__(self, *args, **kwargs):
            raise RuntimeError("no model today")

    monkeypatch.setattr(runner, "Trial", Broken)
    result = invoke("run", "nqm", "--option", "analytic=true", "--lr", "0.1", "--k", "5",
                    "--alpha", "0.5", "--devices", "cpu", "--workers", "1",
                    "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "failed: trial" in result.stderr and "RuntimeError: no model today" in result.stderr
    trials = pd.read_parquet(tmp_path / "nqm-sgd" / "trials")
    assert (trials["state"] == "failed").all() and (trials["metric"] == "test_loss").all()
    assert "final test_loss" in " ".join(result.output.split())


def _queue(tmp_path: Path, config: TrialConfig) -> tuple[TrialQueue, str]:
    storage = open_storage(None, tmp_path)
    queue = TrialQueue(storage, "s", ["lookahead", "sgd"], "maximize", tmp_path, grace_s=1.0)
    tid = lookbench_id(config)
    queue.replan({tid: config}, set())
    return queue, tid


def test_a_trial_whose_worker_died_is_taken_over(tmp_path):
    config = TrialConfig(task="digits", optimizer="sgd", lr=0.1, momentum=0.9, epochs=1)
    queue, tid = _queue(tmp_path, config)
    claimed = queue.claim()
    assert claimed is not None and claimed.lookbench_id == tid
    # Make the owner a process that has exited.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = dict(queue.storage.get_trial(claimed.storage_id).system_attrs[OWNER_ATTR])
    owner["pid"] = dead.pid
    queue.storage.set_trial_system_attr(claimed.storage_id, OWNER_ATTR, owner)
    assert queue.claim() is None  # nothing waiting: the dead one still looks RUNNING
    assert queue.replan({tid: config}, set()) == 1  # stale: superseded and planned again
    again = queue.claim()
    assert again is not None and again.lookbench_id == tid and again.storage_id != claimed.storage_id
    old = queue.storage.get_trial(claimed.storage_id)
    assert old.state == TrialState.FAIL and "stale" in old.user_attrs[SUPERSEDED_ATTR]
    # A live owner on another host is left alone until its heartbeat is older than the grace.
    owner = {"host": "elsewhere", "pid": 1, "start": None}
    queue.storage.set_trial_system_attr(again.storage_id, OWNER_ATTR, owner)
    queue.heartbeat(again)
    assert queue.replan({tid: config}, set()) == 0
    time.sleep(1.2)
    assert queue.replan({tid: config}, set()) == 1


def test_a_claim_cut_off_between_running_and_owner_is_taken_back_at_once(tmp_path):
    """A kill between a claim's two storage writes leaves a RUNNING trial with no owner; the
    next run must plan it again at once, not count it as running for the whole grace period."""
    config = TrialConfig(task="digits", optimizer="sgd", lr=0.1, momentum=0.9, epochs=1)
    queue, tid = _queue(tmp_path, config)
    waiting = [t for t in queue.studies["sgd"].trials if t.state == TrialState.WAITING]
    queue.storage.set_trial_state_values(waiting[0]._trial_id, TrialState.RUNNING)  # then killed
    assert queue.replan({tid: config}, set()) == 1
    again = queue.claim()
    assert again is not None and again.lookbench_id == tid
    assert OWNER_ATTR in queue.storage.get_trial(again.storage_id).system_attrs


def test_a_recorded_trial_is_never_run_again(tmp_path):
    config = TrialConfig(task="digits", optimizer="sgd", lr=0.1, momentum=0.9, epochs=1)
    queue, tid = _queue(tmp_path, config)
    claimed = queue.claim()
    assert queue.is_duplicate(claimed, {tid}) == "already recorded"
    assert queue.replan({tid: config}, {tid}) == 0


def test_a_corrupt_checkpoint_is_one_line_and_keeps_the_results(tmp_path):
    from lookbench.execution.engine import prepare
    from lookbench.study.spec import load_spec

    args = ["digits", "--lr", "0.1", "--k", "5", "--alpha", "0.5", "--epochs", "2",
            "--seeds", "2", "--devices", "cpu", "--workers", "1", "--out", str(tmp_path)]
    spec = load_spec(None, task="digits", epochs=2, seeds=2,
                     grid_overrides={"lr": [0.1], "k": [5], "alpha": [0.5]})
    _, planned, _ = prepare(spec, tmp_path, None)  # the study is planned, nothing has run yet
    study = tmp_path / "digits-sgd"
    victim = sorted(planned)[0]
    ckpt = study / "checkpoints" / f"{victim}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"not a checkpoint at all")
    result = invoke("run", *args)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(ckpt) in errors[0] and "delete it" in errors[0]
    assert "Traceback" not in result.output + result.stderr
    assert victim not in StudyResults(study).recorded()
    before = StudyResults(study).trials().to_pandas().set_index("trial")
    ckpt.unlink()
    assert invoke("run", *args).exit_code == 0
    after = StudyResults(study).trials().to_pandas().set_index("trial")
    assert len(before) and after.loc[before.index].equals(before)  # recorded: untouched
    assert len(StudyResults(study).recorded()) == 4


# -- real processes ----------------------------------------------------------------------------


def lookbench(*args: str, cwd: Path, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "lookbench", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


# Populations of 6 (three of them): some are recorded while the next is mid-way.
GRID = ["digits", "--lr", "0.03,0.1,0.3", "--k", "5,10", "--alpha", "0.5", "--seeds", "2",
        "--epochs", "12", "--devices", "cpu", "--workers", "2", "--population", "6"]


def comparable(out: Path, study: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables without the columns that legitimately differ between runs."""
    results = StudyResults(out / study)
    trials = results.trials().to_pandas().drop(
        columns=["wall_s", "finished_at", "resumes", "host", "study"])
    curves = results.curves().to_pandas().drop(columns=["wall_s"])
    return (trials.sort_values("trial").reset_index(drop=True),
            curves.sort_values(["trial", "epoch"]).reset_index(drop=True))


@pytest.mark.slow
def test_workers_run_every_grid_point_exactly_once(tmp_path):
    proc = lookbench("run", *GRID, "--out", str(tmp_path), cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    trials = pd.read_parquet(tmp_path / "digits-sgd" / "trials")
    assert len(trials) == (3 * 2 + 3) * 2 and trials["trial"].is_unique
    frozen = [t for t in optuna_trials(tmp_path, "digits-sgd")
              if SUPERSEDED_ATTR not in t.user_attrs]
    ids = [t.user_attrs["lookbench_id"] for t in frozen]
    assert sorted(ids) == sorted(trials["trial"]) and len(set(ids)) == len(ids)
    # Two workers: the command's own process and one worker process (with its log).
    logs = list((tmp_path / "digits-sgd" / "logs").glob("worker-*.log"))
    assert len(logs) == 1
    pids = {t.system_attrs[OWNER_ATTR]["pid"] for t in frozen}
    assert proc.pid in pids and len(pids) <= 2  # (the other may start after all is claimed)


@pytest.mark.slow
@pytest.mark.parametrize("population", ["1", "6"])
def test_a_study_killed_with_sigkill_resumes_to_the_same_tables(tmp_path, population):
    grid = [*GRID[:-1], population]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    proc = lookbench("run", *grid, "--out", str(straight), cwd=tmp_path)
    assert proc.wait(timeout=600) == 0

    proc = lookbench("run", *grid, "--out", str(killed), cwd=tmp_path, start_new_session=True)
    study = killed / "digits-sgd"
    deadline = time.monotonic() + 300
    def midway() -> set[str]:  # trials with a checkpoint and no result yet
        recorded = StudyResults(study).recorded()
        ckpts = {p.stem for p in (study / "checkpoints").glob("*.pt")} \
            if (study / "checkpoints").exists() else set()
        return ckpts - recorded if len(recorded) >= 3 else set()

    while time.monotonic() < deadline and not midway():  # some done, some mid-way
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the command and every worker, no cleanup at all
    proc.wait()
    cut_off = midway()
    recorded = StudyResults(study).recorded()
    assert 3 <= len(recorded) < 18 and cut_off, (len(recorded), cut_off)

    proc = lookbench("run", *grid, "--out", str(killed), cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    a_trials, a_curves = comparable(straight, "digits-sgd")
    b_trials, b_curves = comparable(killed, "digits-sgd")
    pd.testing.assert_frame_equal(a_trials, b_trials)
    pd.testing.assert_frame_equal(a_curves, b_curves)
    resumed = StudyResults(study).trials().to_pandas().set_index("trial")["resumes"]
    assert (resumed[sorted(cut_off)] >= 1).all()  # they really continued from their checkpoints
    assert not list((study / "checkpoints").glob("*.pt"))


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_study_resumes(tmp_path):
    proc = lookbench("run", *GRID, "--out", str(tmp_path), cwd=tmp_path, start_new_session=True)
    study = tmp_path / "digits-sgd"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(StudyResults(study).recorded()) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
    frozen = optuna_trials(tmp_path, "digits-sgd")
    assert not [t for t in frozen if t.state == TrialState.RUNNING]  # none left hanging
    proc = lookbench("run", *GRID, "--out", str(tmp_path), cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert len(StudyResults(study).recorded()) == 18


def test_optuna_dashboard_opens_the_study_journal(tmp_path):
    from optuna_dashboard._cli import (
        get_storage,  # how `optuna-dashboard PATH` opens a file
    )

    assert invoke("run", *TINY, "--out", str(tmp_path)).exit_code == 0
    storage = get_storage(str(tmp_path / "digits-sgd" / "optuna.journal"))
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names == ["digits-sgd.lookahead", "digits-sgd.sgd"]
    la = optuna.load_study(study_name="digits-sgd.lookahead", storage=storage)
    finished = [t for t in la.trials if t.state == TrialState.COMPLETE]
    assert finished and set(finished[0].params) >= {"lr", "k", "alpha"}


def test_optuna_trials_carry_the_seed_as_an_attribute_and_their_last_epoch(tmp_path):
    from lookbench.coordination.queue import EPOCH_ATTR, SEED_ATTR

    assert invoke("run", *TINY, "--out", str(tmp_path)).exit_code == 0
    trials = optuna_trials(tmp_path, "digits-sgd")
    # The seed is not searched: a parameter would count in optuna-dashboard's importance.
    assert all("seed" not in t.params and "seed" not in t.distributions for t in trials)
    assert sorted(t.user_attrs[SEED_ATTR] for t in trials) == [0] * 4 + [1] * 4
    assert all(t.user_attrs[SEED_ATTR] == t.user_attrs["lookbench_config"]["seed"]
               for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and all(t.system_attrs[EPOCH_ATTR] == 2 for t in complete)
    # A diverged trial stops early: its attribute is the epoch it stopped at.
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    done = pd.read_parquet(tmp_path / "digits-sgd" / "trials").set_index("trial")["epochs_done"]
    assert pruned and all(t.system_attrs[EPOCH_ATTR] == done[t.user_attrs["lookbench_id"]]
                          for t in pruned)


UNION_STUDY = """
name = "union"
task = "digits"
epochs = 2
seeds = 2

[[grid.lookahead]]
lr = [0.1, 1000.0]
momentum = [0.9]
k = [5]
alpha = [0.5]

[[grid.lookahead]]
lr = [0.1]
momentum = [0.9]
k = [5, 10]
alpha = [0.5]

[grid.sgd]
lr = [0.1, 1000.0]
momentum = [0.9]
"""


def test_a_union_of_grids_runs_once_per_configuration_and_is_frozen(tmp_path):
    spec = tmp_path / "union.toml"
    spec.write_text(UNION_STUDY)
    args = ["run", "--spec", str(spec), "--devices", "cpu", "--workers", "1",
            "--out", str(tmp_path)]
    result = invoke(*args)
    assert result.exit_code == 0, result.output + result.stderr
    trials = pd.read_parquet(tmp_path / "union" / "trials")
    la = trials[trials.optimizer == "lookahead"]
    # (lr 0.1, k 5) is in both tables and runs once: 3 configurations × 2 seeds.
    assert len(la) == 6 and len(trials) == 10 and trials["trial"].is_unique
    assert sorted(set(zip(la.lr, la.k))) == [(0.1, 5), (0.1, 10), (1000.0, 5)]
    again = invoke(*args)  # the stored definition reads back as the same study
    assert again.exit_code == 0 and "10 of 10 trials recorded" in again.output
    spec.write_text(UNION_STUDY.replace("k = [5, 10]", "k = [5, 20]"))
    changed = invoke(*args)
    assert changed.exit_code == 2
    assert "already exists with grid.lookahead[1].k=[5, 10], not [5, 20]" in changed.stderr


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_workers_exit_when_the_command_that_started_them_dies(tmp_path):
    proc = lookbench("run", *GRID, "--out", str(tmp_path), cwd=tmp_path, start_new_session=True)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 1:
        workers = _children(proc.pid)  # (one: the command itself is the other worker)
        time.sleep(0.1)
    assert len(workers) == 1
    wait_until = time.monotonic() + 120  # let them claim trials
    while time.monotonic() < wait_until and not list((tmp_path / "digits-sgd").glob(
            "checkpoints/*.pt")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # only the parent
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers)
    # They gave their trials back on the way out: nothing is left RUNNING but the killed
    # command's own (its worker could not; a dead owner on this host is known at once, so
    # the next run takes them over).
    frozen = optuna_trials(tmp_path, "digits-sgd")
    owners = {t.system_attrs[OWNER_ATTR]["pid"] for t in frozen if t.state == TrialState.RUNNING}
    assert owners <= {proc.pid}


def test_a_damaged_journal_is_one_line_and_the_parquet_results_rebuild_the_study(tmp_path):
    assert invoke("run", *TINY, "--out", str(tmp_path)).exit_code == 0
    study = tmp_path / "digits-sgd"
    journal = study / "optuna.journal"
    journal.write_bytes(b"garbage\n" + journal.read_bytes())
    parts = tree_digest(study / "trials")
    for args in (["run", *TINY], ["status", "digits-sgd"]):
        result = invoke(*args, "--out", str(tmp_path))
        assert result.exit_code == 2  # a damaged file: bad input, the same for every command
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "optuna.journal is unreadable" in lines[0]
        assert "move it aside" in lines[0]
    assert tree_digest(study / "trials") == parts
    # As the message says: without the journal, finished trials come from Parquet.
    journal.rename(tmp_path / "journal.bad")
    result = invoke("run", *TINY, "--out", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert tree_digest(study / "trials") == parts  # nothing ran again
    assert "8 of 8 trials recorded" in result.output


def test_a_checkpoint_left_by_a_worker_killed_after_recording_is_removed(tmp_path):
    assert invoke("run", *TINY, "--out", str(tmp_path)).exit_code == 0
    study = tmp_path / "digits-sgd"
    done = sorted(StudyResults(study).recorded())[0]
    leftover = study / "checkpoints" / f"{done}.pt"
    leftover.parent.mkdir(exist_ok=True)
    leftover.write_bytes(b"stale")
    unrelated = study / "checkpoints" / "0123456789abcdef.pt"  # a trial not recorded here
    unrelated.write_bytes(b"keep")
    assert invoke("run", *TINY, "--out", str(tmp_path)).exit_code == 0
    assert not leftover.exists() and unrelated.exists()


def test_a_run_that_ends_with_trials_running_elsewhere_says_so(tmp_path):
    from lookbench.execution.engine import prepare
    from lookbench.study.spec import load_spec

    spec = load_spec(task="digits", seeds=2, epochs=2,
                     grid_overrides={"lr": [0.1, 1000.0], "k": [5], "alpha": [0.5]})
    queue, _, _ = prepare(spec, tmp_path, None)
    claimed = queue.claim()  # now owned by a live worker on another machine
    queue.storage.set_trial_system_attr(claimed.storage_id, OWNER_ATTR,
                                        {"host": "elsewhere", "pid": 1, "start": None})
    queue.heartbeat(claimed)
    result = invoke("run", *TINY, "--out", str(tmp_path))
    assert result.exit_code == 3, result.stderr  # not finished here: the rest runs elsewhere
    assert "7 of 8 trials recorded" in result.output
    assert "warning: 1 trials are still running elsewhere" in result.stderr


def test_a_tpe_study_proposes_without_a_seed_parameter(tmp_path):
    from lookbench.coordination.queue import POINT_ATTR, SEED_ATTR

    result = invoke("run", "digits", "--sampler", "tpe", "--trials", "2", "--seeds", "2",
                    "--epochs", "1", "--lr", "0.03,0.3", "--k", "5", "--alpha", "0.5",
                    "--devices", "cpu", "--workers", "1", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output + result.stderr
    assert len(pd.read_parquet(tmp_path / "digits-sgd" / "trials")) == 8  # 2 × 2 seeds × 2
    trials = [t for t in optuna_trials(tmp_path, "digits-sgd")
              if SUPERSEDED_ATTR not in t.user_attrs]
    assert len(trials) == 8 and all("seed" not in t.params and "lr" in t.params for t in trials)
    seeds: dict[tuple[str, str], set[int]] = {}
    for t in trials:  # each proposed point runs once per seed
        key = (t.user_attrs["lookbench_config"]["optimizer"], t.user_attrs[POINT_ATTR])
        seeds.setdefault(key, set()).add(t.user_attrs[SEED_ATTR])
    assert len(seeds) == 4 and all(s == {0, 1} for s in seeds.values())


def test_the_study_definition_lies_beside_its_tables_and_the_report_reads_its_sampler(tmp_path):
    """A report reads the study folder only: ``study.json`` tells it how trials were chosen."""
    import json

    args = ["digits", "--sampler", "random", "--trials", "2", "--lr", "0.01,0.3", "--epochs",
            "1", "--seeds", "2", "--devices", "cpu", "--workers", "1", "--out", str(tmp_path)]
    assert invoke("run", *args).exit_code == 0
    study = tmp_path / "digits-sgd"
    definition = json.loads((study / "study.json").read_text())
    assert definition["sampler"] == "random" and definition["task"] == "digits"
    before = tree_digest(study)
    assert invoke("run", *args).exit_code == 0
    assert tree_digest(study)["study.json"] == before["study.json"]
    result = invoke("report", str(study), "--out", str(tmp_path / "reports"))
    assert result.exit_code == 0, result.stderr
    summary = json.loads((tmp_path / "reports" / "digits-sgd.json").read_text())
    assert summary["sampler"] == "random"
    assert "drawn at random" in summary["verdict"]
