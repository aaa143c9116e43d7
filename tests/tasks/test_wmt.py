"""Translation with the Transformer on a tiny parallel corpus the test writes in the usual
preprocessed format (train/valid/test.{en,de}, one tokenised sentence per line)."""

from __future__ import annotations

import json
import random
import sys
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from lookbench import tasks
from lookbench.cli import app
from lookbench.study.config import TrialConfig
from lookbench.study.trial import Trial, rsqrt_factor
from lookbench.tasks.base import DataUnavailable
from lookbench.tasks.wmt import EOS, PRESETS, Transformer, load_parallel, token_batches
from tests.tasks.resume import straight_and_resumed

runner = CliRunner()


def write_corpus(root: Path, n: int = 200) -> Path:
    """German is English reversed, word for word: a task a small Transformer learns."""
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", n), ("valid", n // 10), ("test", n // 10)):
        src, tgt = [], []
        for _ in range(size):
            ws = [rng.randrange(20) for _ in range(rng.randint(3, 8))]
            src.append(" ".join(f"e{w}" for w in ws))
            tgt.append(" ".join(f"d{w}@@ x" if w == 0 else f"d{w}" for w in reversed(ws)))
        (root / f"{split}.en").write_text("\n".join(src) + "\n")
        (root / f"{split}.de").write_text("\n".join(tgt) + "\n")
    load_parallel.__globals__["_CACHE"].clear()
    return root


def test_the_corpus_shares_one_vocabulary_and_batches_by_tokens(tmp_path):
    corpus = load_parallel(write_corpus(tmp_path / "c"), "en", "de")
    assert corpus.words[:4] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert {"e1", "d1"} <= set(corpus.words)  # one joint vocabulary
    assert all(s[-1] == EOS and t[-1] == EOS for s, t in corpus.train)
    batches = token_batches(corpus.train, 64)
    assert sorted(i for b in batches for i in b) == list(range(len(corpus.train)))
    for b in batches:
        longest = max(max(len(corpus.train[i][0]), len(corpus.train[i][1]) + 1) for i in b)
        assert longest * len(b) <= 64 or len(b) == 1
    (tmp_path / "c" / "valid.de").write_text("one line\n")
    load_parallel.__globals__["_CACHE"].clear()
    with pytest.raises(DataUnavailable, match="different numbers of lines"):
        load_parallel(tmp_path / "c", "en", "de")


def test_the_base_model_is_vaswani_et_als():
    with torch.device("meta"):
        model = Transformer(37_000, PRESETS["base"])
    # 63M parameters with a 37k joint vocabulary (Vaswani et al.'s base model: 65M)
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 63.1) < 0.5
    assert not model.core.encoder.layers[0].norm_first  # post-norm, as the original


def test_the_warmup_schedule_peaks_at_the_base_rate():
    assert rsqrt_factor(1, 4000) == 1 / 4000 and rsqrt_factor(4000, 4000) == 1.0
    assert rsqrt_factor(16000, 4000) == 0.5


def _config() -> TrialConfig:
    return TrialConfig(task="wmt14", optimizer="lookahead", inner="adam", lr=3e-3,
                       momentum=0.9, beta2=0.98, k=5, alpha=0.5, epochs=2, batch_size=200,
                       schedule="rsqrt", task_options={"size": "small"})


def test_a_trial_resumes_exactly_under_the_per_step_schedule(tmp_path):
    root = write_corpus(tmp_path / "c")
    straight, records, resumed = straight_and_resumed(_config(), root)
    steps = straight.workload.steps_per_epoch
    assert records[0].lr == pytest.approx(3e-3 * rsqrt_factor(steps, 100))  # still warming up
    assert [r.test_loss for r in resumed] == [r.test_loss for r in records]


def test_greedy_bleu_is_reported_where_sacrebleu_is_installed(tmp_path, monkeypatch):
    root = write_corpus(tmp_path / "c")
    seen = {}

    def corpus_bleu(hyps, refs):
        seen["hyps"], seen["refs"] = hyps, refs
        return types.SimpleNamespace(score=12.5)

    monkeypatch.setitem(sys.modules, "sacrebleu", types.SimpleNamespace(corpus_bleu=corpus_bleu))
    config = _config().model_copy(update={"task_options": {"size": "small", "bleu": True}})
    record = Trial(config, "cpu", root).run_epoch()
    assert record.extra["test_bleu"] == 12.5
    assert len(seen["hyps"]) == 20 and "@@" not in " ".join(seen["refs"][0])  # BPE joined


def test_a_short_study_runs_and_reports(tmp_path):
    root = write_corpus(tmp_path / "c")
    out = tmp_path / "runs"
    result = runner.invoke(app, [
        "run", "wmt14", "--inner", "adam", "-o", "size=small", "--data-dir", str(root),
        "--lr", "0.001,0.003", "--k", "5", "--alpha", "0.5", "--epochs", "2",
        "--batch-size", "200", "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    trials = pq.read_table(out / "wmt14-adam" / "trials").to_pandas()
    assert len(trials) == 4 and set(trials["state"]) == {"complete"}
    assert set(trials["beta2"]) == {0.98}
    report = runner.invoke(app, ["report", "--runs", str(out), "--out", str(tmp_path / "r")])
    assert report.exit_code == 0, report.stderr
    summary = json.loads((tmp_path / "r" / "wmt14-adam.json").read_text())
    assert summary["metric"] == "valid_perplexity"


def test_the_wmt_study_file_is_appendix_c4():
    from lookbench.study.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "studies" / "wmt14-paper.toml")
    assert (spec.task, spec.inner, spec.schedule) == ("wmt14", "adam", "rsqrt")
    assert spec.grid["lookahead"]["k"] == [5, 10] and spec.grid["lookahead"]["alpha"] == [0.5]
    lrs = spec.grid["lookahead"]["lr"]
    assert len(lrs) == 3 and max(lrs) / min(lrs) == pytest.approx(4.0)  # half to twice 7e-4
    assert spec.grid == tasks.get("wmt14").default_grid("adam")
