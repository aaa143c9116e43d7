"""The Penn Treebank language model (and WikiText-2 on the same reader) on text the test
writes in the real formats, and the runner features it needs: gradient clipping and the
learning rate halved on a plateau."""

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
from lookbench.study.config import TrialConfig
from lookbench.study.trial import Trial
from lookbench.tasks.base import DataUnavailable
from lookbench.tasks.ptb import AWDLSTM, PRESETS, load_corpus
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
    # 24.2M parameters, as Merity et al. report for their PTB model (with a 10k vocabulary)
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 24.2) < 0.1


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


def test_the_ptb_study_file_is_appendix_c3():
    from lookbench.study.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "studies" / "ptb-paper.toml")
    assert (spec.task, spec.batch_size, spec.schedule, spec.baselines) == (
        "ptb", 80, "plateau", ["polyak"])
    assert spec.grid["sgd"]["lr"] == [50.0, 30.0, 10.0, 5.0, 2.5, 1.0, 0.1]
    assert spec.grid["sgd"]["momentum"] == [0.0]
    assert spec.grid["lookahead"]["k"] == [5, 10, 20]
    assert spec.grid["lookahead"]["alpha"] == [0.2, 0.5, 0.8]
    assert {t["weight_decay"][0] for t in spec.grid.values()} == {1.2e-6}
    assert tasks.get("ptb").default_grid("sgd") == {
        k: v for k, v in spec.grid.items() if k != "polyak"}
