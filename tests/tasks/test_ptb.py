"""The Penn Treebank language model (and WikiText-2 on the same reader) on text the test
writes in the real formats, and the runner features it needs: gradient clipping, the step
scaled by the window's length, the learning rate halved on a plateau, the training perplexity
from a pass without updates, and NT-ASGD (the ``asgd`` baseline) as the paper ran it."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from lookbench import tasks
from lookbench.cli import app
from lookbench.execution.trial import Trial
from lookbench.study.config import TrialConfig
from lookbench.tasks.awd_lstm import AWDLSTM
from lookbench.tasks.base import DataUnavailable, perplexity
from lookbench.tasks.ptb import PRESETS, load_corpus
from tests.tasks.resume import straight_and_resumed

runner = CliRunner()


def write_corpus(root: Path, pattern: str = "ptb.{}.txt", lines: int = 300) -> Path:
    """PTB's format: one sentence per line, words separated by spaces, <unk> for rare ones."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", lines), ("valid", lines // 10), ("test", lines // 10)):
        text = [" " + " ".join([rng.choice(words[:10]), rng.choice(words[10:]), "<unk>"]) + " "
                for _ in range(n)]
        (root / pattern.format(split)).write_text("\n".join(text) + "\n")
    load_corpus.__globals__["_CACHE"].clear()
    return root


def test_the_corpus_is_read_as_ptb_and_wikitext_write_it(tmp_path):
    corpus = load_corpus("ptb", write_corpus(tmp_path / "ptb"))
    first_line = (tmp_path / "ptb" / "ptb.train.txt").read_text().splitlines()[0].split()
    assert corpus.words[:4] == [*first_line, "<eos>"]  # numbered by first appearance
    assert corpus.train[:4].tolist() == [0, 1, 2, 3]
    assert len(corpus.train) == 300 * 4  # three words and <eos> per line
    wiki = load_corpus("wikitext2", write_corpus(tmp_path / "wiki", "wiki.{}.tokens"))
    assert len(wiki.valid) == 30 * 4
    with pytest.raises(DataUnavailable, match=r"ptb.test.txt is missing"):
        (tmp_path / "ptb" / "ptb.test.txt").unlink()
        load_corpus.__globals__["_CACHE"].clear()
        load_corpus("ptb", tmp_path / "ptb")


def test_the_paper_model_is_merity_et_als_size():
    with torch.device("meta"):
        model = AWDLSTM(10_000, PRESETS["paper"])
    assert [r.hidden_size for r in model.rnns] == [1150, 1150, 400]
    assert model.decoder.weight is model.encoder.weight  # tied
    # Merity et al.'s script prints "Model total parameters: 24221600" for PTB's 10k words.
    assert sum(p.numel() for p in model.parameters()) == 24_221_600
    assert tasks.get("ptb").size().parameters == 24_221_600
    # WikiText-2's 33,278 words: 33.6M (the size without data used to assume PTB's 10k).
    assert tasks.get("wikitext2").size().parameters == 24_221_600 + (33_278 - 10_000) * 401


def _config(schedule: str = "plateau", epochs: int = 2) -> TrialConfig:
    return TrialConfig(task="ptb", optimizer="lookahead", inner="sgd", lr=10.0, momentum=0.0,
                       k=5, alpha=0.5, epochs=epochs, batch_size=4, schedule=schedule,
                       task_options={"size": "small"})


def test_a_trial_resumes_exactly_and_clips_its_gradient(tmp_path):
    root = write_corpus(tmp_path / "ptb")
    straight, records, resumed = straight_and_resumed(_config(), root)
    assert straight.workload.clip_grad_norm == 0.25
    assert [r.test_loss for r in resumed] == [r.test_loss for r in records]
    r = records[-1]
    assert math.isclose(r.extra["valid_perplexity"], math.exp(r.extra["valid_loss"]))


def test_the_learning_rate_halves_after_a_plateau_and_resumes_with_it(tmp_path):
    root = write_corpus(tmp_path / "ptb")
    trial = Trial(_config(epochs=5), "cpu", root)
    trial.task.plateau_patience = 1  # (on the instance: the class keeps the paper's 15)
    values = iter([5.0, 4.0, 4.5, 4.6, 3.0])  # better, better, worse, worse, better
    real = trial.workload.evaluate
    trial.workload.evaluate = lambda m: {**real(m), "valid_perplexity": next(values)}
    lrs = [trial.run_epoch().lr for _ in range(3)]
    state = trial.state_dict()
    assert lrs == [10.0, 10.0, 10.0] and state["plateau"]["halvings"] == 1
    assert trial.run_epoch().lr == 5.0  # halved after the worse epoch
    again = Trial(_config(epochs=5), "cpu", root)
    again.load_state_dict(state)
    assert again.plateau == state["plateau"]


def test_a_short_study_runs_and_reports(tmp_path):
    root = write_corpus(tmp_path / "ptb")
    out = tmp_path / "runs"
    result = runner.invoke(app, [
        "run", "ptb", "-o", "size=small", "--data-dir", str(root), "--lr", "10,30",
        "--k", "5", "--alpha", "0.5", "--epochs", "2", "--batch-size", "4", "--workers", "1",
        "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    trials = pq.read_table(out / "ptb-sgd" / "trials").to_pandas()
    assert len(trials) == 4 and set(trials["metric"]) == {"valid_perplexity"}
    assert not trials["higher_is_better"].any()
    curves = pq.read_table(out / "ptb-sgd" / "curves").to_pandas()
    assert {"valid_perplexity", "test_perplexity", "valid_loss"} <= set(curves.columns)
    report = runner.invoke(app, ["report", "--runs", str(out), "--out", str(tmp_path / "r")])
    assert report.exit_code == 0, report.stderr
    summary = json.loads((tmp_path / "r" / "ptb-sgd.json").read_text())
    assert summary["metric"] == "valid_perplexity" and summary["higher_is_better"] is False


STUDIES = Path(__file__).resolve().parents[2] / "studies"


def test_the_ptb_study_file_is_appendix_c3():
    from lookbench.study.spec import load_spec

    spec = load_spec(STUDIES / "ptb-paper.toml")
    assert (spec.task, spec.batch_size, spec.schedule, spec.baselines, spec.epochs) == (
        "ptb", 80, "plateau", ["asgd"], 750)
    assert spec.epochs == tasks.get("ptb").default_epochs
    assert spec.task_options == {"size": "paper", "train_eval": True}
    assert spec.grid["sgd"]["lr"] == [50.0, 30.0, 10.0, 5.0, 2.5, 1.0, 0.1]
    assert spec.grid["sgd"]["momentum"] == [0.0]
    assert spec.grid["asgd"] == spec.grid["sgd"]  # NT-ASGD over SGD's rates
    assert spec.grid["lookahead"]["k"] == [5, 10, 20]
    assert spec.grid["lookahead"]["alpha"] == [0.2, 0.5, 0.8]
    assert {t["weight_decay"][0] for t in spec.grid.values()} == {1.2e-6}
    assert tasks.get("ptb").default_grid("sgd") == {
        k: v for k, v in spec.grid.items() if k != "asgd"}


def test_the_ptb_adam_study_file_is_appendix_c3():
    from lookbench.study.spec import load_spec

    spec = load_spec(STUDIES / "ptb-adam-paper.toml")
    assert (spec.task, spec.inner, spec.batch_size, spec.schedule, spec.baselines,
            spec.epochs) == ("ptb", "adam", 80, "plateau", [], 750)
    assert spec.grid["adam"]["lr"] == [0.1, 0.05, 0.01, 0.005, 0.001, 0.0005, 0.0001]
    assert "momentum" not in spec.grid["adam"] and "beta2" not in spec.grid["adam"]  # defaults
    assert spec.grid["lookahead"]["lr"] == [0.001]
    assert spec.grid["lookahead"]["k"] == [5, 10, 20]
    assert spec.grid["lookahead"]["alpha"] == [0.2, 0.5, 0.8]
    assert {t["weight_decay"][0] for t in spec.grid.values()} == {1.2e-6}
    assert tasks.get("ptb").default_grid("adam") == spec.grid


def _trial(optimizer: str, root: Path, epochs: int = 1, **kw) -> Trial:
    hparams = {"momentum": 0.0} if optimizer != "adam" else {}
    inner = {"inner": "sgd"} if optimizer == "asgd" else {}
    config = TrialConfig(task="ptb", optimizer=optimizer, lr=kw.pop("lr", 10.0), epochs=epochs,
                         batch_size=4, schedule="plateau",
                         task_options={"size": "small", **kw}, **inner, **hparams)
    return Trial(config, "cpu", root)


def _start(trial: Trial) -> None:
    """Ready to train: the model in training mode, its hidden state at the epoch's start."""
    trial.workload.model.train()
    next(trial.workload.train_batches(0, torch.Generator()))


def _step_size(trial: Trial, batch) -> float:
    """The largest change of any weight in one training step on ``batch``."""
    before = [p.detach().clone() for p in trial.workload.model.parameters()]
    _start(trial)
    trial.train_step(batch, 1)
    return max(float((p.detach() - b).abs().max())
               for p, b in zip(trial.workload.model.parameters(), before))


def test_a_short_window_makes_a_proportionally_smaller_step_under_adam(tmp_path):
    # Merity et al. scale the learning rate by length / bptt. Scaling the loss instead made
    # no difference under Adam: its first step moves each weight by lr whatever the scale.
    root = write_corpus(tmp_path / "ptb")
    lr, bptt = 1e-3, PRESETS["small"].bptt
    full = _step_size(_trial("adam", root, lr=lr), (0, bptt, 1.0))
    short = _step_size(_trial("adam", root, lr=lr), (0, 7, 7 / bptt))
    assert full == pytest.approx(lr, rel=1e-3)
    assert short == pytest.approx(lr * 7 / bptt, rel=1e-3)
    trial = _trial("adam", root, lr=lr)
    assert trial.workload.step_scale((0, 7, 7 / bptt)) == 7 / bptt
    assert trial.optimizer.param_groups[0]["lr"] == lr  # restored after the step


def test_a_short_window_makes_a_smaller_step_under_sgd_with_clipping(tmp_path):
    # With the gradient clipped to norm 0.25, a scaled loss gave the same step as a full one.
    root = write_corpus(tmp_path / "ptb")
    trial = _trial("sgd", root, lr=1.0)
    params = list(trial.workload.model.parameters())
    before = torch.cat([p.detach().flatten().clone() for p in params])
    _start(trial)
    trial.train_step((0, 7, 0.2), 1)
    grad_norm = torch.cat([p.grad.flatten() for p in params]).norm()
    assert float(grad_norm) == pytest.approx(0.25, rel=1e-4)  # clipped: it was larger
    moved = torch.cat([p.detach().flatten() for p in params]) - before
    assert float(moved.norm()) == pytest.approx(0.2 * 0.25, rel=1e-3)


def test_the_training_perplexity_is_one_pass_without_updates(tmp_path):
    root = write_corpus(tmp_path / "ptb")
    assert _trial("sgd", root).workload.train_eval is None  # off by default
    trial = _trial("sgd", root, train_eval=True)
    wl = trial.workload
    calls = []
    forward = wl.model.forward
    wl.model.forward = lambda *a: calls.append(1) or forward(*a)
    wl.model.eval()
    with torch.no_grad():
        loss = wl.train_eval(wl.model)
        passes = len(calls)
        extra = wl.extra(wl.model)
        assert len(calls) == passes  # the metric reuses the pass
        assert wl.train_eval(wl.model) == loss  # eval mode: no dropout, the same number
    assert extra == {"train_perplexity": perplexity(loss)}
    wl.model.forward = forward
    record = trial.run_epoch()
    assert math.isclose(record.extra["train_perplexity"], math.exp(record.train_eval_loss))


def test_asgd_runs_as_sgd_until_its_trigger_then_evaluates_the_average(tmp_path):
    root = write_corpus(tmp_path / "ptb")
    values = [5.0, 4.0, 6.0, 6.0, 6.0]  # patience 1: the third is worse than the first

    def run(optimizer: str, cut: int | None = None) -> Trial:
        trial = _trial(optimizer, root, epochs=5)
        if optimizer == "asgd":
            trial.optimizer.patience = 1  # (the paper's 5 needs 7 epochs at least)
        real, given = trial.workload.evaluate, iter(values)
        trial.workload.evaluate = lambda m: {**real(m), "valid_perplexity": next(given)}
        for _ in range(cut or 5):
            trial.run_epoch()
        return trial

    sgd, asgd = run("sgd"), run("asgd")
    assert asgd.optimizer.param_groups[0]["average_start"] == asgd.records[2].steps
    same = [(r.train_loss, r.test_loss) for r in sgd.records]
    mine = [(r.train_loss, r.test_loss) for r in asgd.records]
    assert mine[:3] == same[:3]  # the weights themselves until the trigger
    assert [m[0] for m in mine] == [s[0] for s in same]  # the inner SGD runs unchanged
    assert all(m[1] != s[1] for m, s in zip(mine[3:], same[3:]))  # then the average
    # Cut after epoch 4 (averaging under way) and resumed: the same records.
    first = run("asgd", cut=4)
    resumed = _trial("asgd", root, epochs=5)
    resumed.optimizer.patience = 1
    resumed.load_state_dict(first.state_dict())
    real = resumed.workload.evaluate
    resumed.workload.evaluate = lambda m: {**real(m), "valid_perplexity": 6.0}
    resumed.run_epoch()
    assert [r.test_loss for r in resumed.records] == [r.test_loss for r in asgd.records]


@pytest.mark.slow
def test_the_paper_study_runs_nt_asgd_small(tmp_path):
    root = write_corpus(tmp_path / "ptb")
    out = tmp_path / "runs"
    result = runner.invoke(app, [
        "run", "--spec", str(STUDIES / "ptb-paper.toml"), "-o", "size=small", "--epochs", "3",
        "--data-dir", str(root), "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    trials = pq.read_table(out / "ptb-paper" / "trials").to_pandas()
    assert trials.groupby("optimizer").size().to_dict() == {"asgd": 7, "lookahead": 9, "sgd": 7}
    curves = pq.read_table(out / "ptb-paper" / "curves").to_pandas()
    by_trial = curves.sort_values("epoch").groupby("trial")["test_loss"].apply(list).to_dict()
    asgd = trials[trials["optimizer"] == "asgd"].set_index("lr")["trial"]
    sgd = trials[trials["optimizer"] == "sgd"].set_index("lr")["trial"]
    # Three epochs are fewer than the trigger needs (more than 5): NT-ASGD is SGD so far.
    assert {lr: by_trial[t] for lr, t in asgd.items()} == {
        lr: by_trial[t] for lr, t in sgd.items()}
