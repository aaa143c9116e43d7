"""WMT'14 as the paper ran it: every split safe from sentences longer than the model's
positions, tokens per optimizer step by gradient accumulation, Adam (Vaswani et al.'s) as the
task's default inner optimizer."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.execution.trial import Trial
from lookbench.study.config import TrialConfig
from lookbench.study.spec import SpecError, load_spec
from lookbench.tasks.base import MicroBatches
from lookbench.tasks.transformer import Transformer, collate, greedy
from lookbench.tasks.wmt import (
    EOS,
    LABEL_SMOOTHING,
    MAX_LEN,
    PAD,
    PRESETS,
    load_parallel,
)
from tests.tasks.resume import straight_and_resumed
from tests.tasks.test_wmt import _fake_sacrebleu, write_corpus

runner = CliRunner()
BATCH = 200  # tokens per batch


def _with_long_sentences(root):
    """The tiny corpus plus one 300-token pair at the end of valid.* and of test.*."""
    write_corpus(root)
    for split in ("valid", "test"):
        for lang, word in (("en", "e1"), ("de", "d1")):
            with open(root / f"{split}.{lang}", "a") as f:
                f.write(" ".join([word] * 300) + "\n")
    load_parallel.__globals__["_CACHE"].clear()
    return root


def _run(root, out, *extra):
    return runner.invoke(app, [
        "run", "wmt14", "-o", "size=small", "--data-dir", str(root), "--lr", "0.001",
        "--k", "5", "--epochs", "1", "--batch-size", str(BATCH), "--workers", "1",
        "--out", str(out), *extra])


def test_long_validation_and_test_pairs_are_left_out_and_said_once(tmp_path, monkeypatch):
    root = _with_long_sentences(tmp_path / "c")
    corpus = load_parallel(root, "en", "de")
    assert corpus.too_long == {"valid": (1, 21), "test": (1, 21)}
    assert len(corpus.valid) == len(corpus.test) == 20
    assert all(len(s) <= MAX_LEN and len(t) <= MAX_LEN
               for split in (corpus.train, corpus.valid, corpus.test) for s, t in split)
    for extra in ([], ["-o", "bleu=true"]):  # (BLEU through a stand-in for sacrebleu)
        seen = _fake_sacrebleu(monkeypatch)
        out = tmp_path / f"runs{len(extra)}"
        result = _run(root, out, *extra)
        assert result.exit_code == 0, result.output + result.stderr
        trials = pq.read_table(out / "wmt14-adam" / "trials").to_pandas()
        assert len(trials) == 2 and set(trials["state"]) == {"complete"}
        warned = [line for line in result.stderr.splitlines() if "longer than 256" in line]
        assert len(warned) == 2, result.stderr  # one line per split, once per run
        assert "1 of 21 pairs in valid.en/valid.de" in warned[0]
        assert "test perplexity and BLEU" in warned[1]
        if extra:
            assert len(seen["hyps"]) == 20 and trials["best_test_bleu"].notna().all()


def test_greedy_decoding_stops_at_the_models_positions():
    class NeverEnds(Transformer):
        def decode(self, memory, src, dec):
            out = super().decode(memory, src, dec)
            out[..., EOS] = -math.inf
            return out

    model = NeverEnds(10, PRESETS["small"]).eval()
    src = torch.full((1, MAX_LEN), 5)
    src[0, -1] = EOS
    assert greedy(model, src).shape == (1, MAX_LEN)  # (it ran into the table's end before)


def _config(**options) -> TrialConfig:
    return TrialConfig(task="wmt14", optimizer="sgd", lr=0.5, momentum=0.0, epochs=2,
                       batch_size=BATCH, schedule="constant",
                       task_options={"size": "small", **options})


def test_a_step_of_two_accumulated_batches_is_a_step_on_their_union(tmp_path):
    root = write_corpus(tmp_path / "c")
    corpus = load_parallel(root, "en", "de")
    one = Trial(_config(), "cpu", root)
    two = Trial(_config(tokens_per_step=2 * BATCH), "cpu", root)
    assert two.workload.steps_per_epoch == math.ceil(one.workload.steps_per_epoch / 2)
    batch = next(iter(two.workload.train_batches(0, two._pass_generator(0))))
    assert isinstance(batch, MicroBatches) and len(batch.parts) == 2
    tokens = [sum(len(corpus.train[i][1]) for i in part) for part in batch.parts]
    assert batch.weights == pytest.approx([t / sum(tokens) for t in tokens])

    union = batch.parts[0] + batch.parts[1]  # one batch of both, computed directly
    model = one.workload.model
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(),
                                                 two.workload.model.parameters()))
    model.eval()  # (no dropout: the same function both ways)
    two.workload.model.eval()
    src, dec, tgt = collate(corpus.train, union, torch.device("cpu"))
    logits = model(src, dec)
    direct = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1),
                             ignore_index=PAD, label_smoothing=LABEL_SMOOTHING)
    direct.backward()
    expected = [(p - 0.5 * p.grad).detach() for p in model.parameters()]
    loss = two.train_step(batch, 1)
    assert float(loss) == pytest.approx(float(direct.detach()), rel=1e-5)
    for p, g, e in zip(two.workload.model.parameters(), model.parameters(), expected):
        torch.testing.assert_close(p.grad, g.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(p.detach(), e, rtol=1e-4, atol=1e-6)


def test_accumulated_steps_count_as_steps_and_resume_exactly(tmp_path):
    root = write_corpus(tmp_path / "c")
    config = _config(tokens_per_step=2 * BATCH, epoch_steps=3).model_copy(
        update={"optimizer": "lookahead", "inner": "adam", "lr": 3e-3, "momentum": 0.9,
                "k": 5, "alpha": 0.5, "schedule": "rsqrt"})
    straight, records, resumed = straight_and_resumed(config, root)
    assert straight.workload.steps_per_epoch > 3  # (so an epoch of 3 steps ends mid-pass)
    assert [r.steps for r in records] == [3, 6]
    assert straight.data_pass == 1  # the second epoch crossed into the next pass
    assert [r.test_loss for r in resumed] == [r.test_loss for r in records]
    assert [r.train_loss for r in resumed] == [r.train_loss for r in records]


def test_fewer_tokens_per_step_than_a_batch_is_refused():
    with pytest.raises(SpecError, match="tokens_per_step=100 is less than one batch of 200"):
        load_spec(None, task="wmt14", batch_size=200,
                  task_options={"size": "small", "tokens_per_step": 100})


def test_wmt14_without_inner_is_an_adam_study_at_vaswani_et_als_settings(tmp_path):
    root = write_corpus(tmp_path / "c")
    out = tmp_path / "runs"
    result = _run(root, out)
    assert result.exit_code == 0, result.output + result.stderr
    trials = pq.read_table(out / "wmt14-adam" / "trials").to_pandas()
    assert set(trials["optimizer"]) == {"adam", "lookahead"}
    assert set(trials["state"]) == {"complete"}
    assert set(trials["beta2"]) == {0.98} and set(trials["eps"]) == {1e-9}
    assert set(trials["momentum"]) == {0.9}
    again = _run(root, out)  # the same command finds the same study, complete
    assert again.exit_code == 0, again.output + again.stderr
    assert "2 of 2 trials recorded" in again.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["wmt14-adam"]
    sgd = _run(root, out, "--inner", "sgd")
    assert sgd.exit_code == 0, sgd.output + sgd.stderr
    trials = pq.read_table(out / "wmt14-sgd" / "trials").to_pandas()
    assert set(trials["optimizer"]) == {"sgd", "lookahead"}
    assert set(trials["state"]) == {"complete"}
