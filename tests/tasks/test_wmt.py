"""Translation with the Transformer on a tiny parallel corpus the test writes in the usual
preprocessed format (train/valid/test.{en,de}, one tokenised sentence per line)."""

from __future__ import annotations

import itertools
import json
import random
import sys
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from lookbench import tasks
from lookbench.cli import app
from lookbench.execution.trial import Trial, rsqrt_factor
from lookbench.study.config import TrialConfig
from lookbench.tasks.base import DataUnavailable
from lookbench.tasks.transformer import Transformer, beam_search, bleu, collate, greedy
from lookbench.tasks.wmt import (
    BOS,
    EOS,
    PAD,
    PRESETS,
    Preset,
    load_parallel,
    token_batches,
)
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


def _fake_sacrebleu(monkeypatch) -> dict:
    seen: dict = {}

    def corpus_bleu(hyps, refs):
        seen["hyps"], seen["refs"] = hyps, refs
        return types.SimpleNamespace(score=12.5)

    monkeypatch.setitem(sys.modules, "sacrebleu", types.SimpleNamespace(corpus_bleu=corpus_bleu))
    return seen


@pytest.mark.parametrize("beam", [1, 4])
def test_bleu_is_reported_where_sacrebleu_is_installed(tmp_path, monkeypatch, beam):
    root = write_corpus(tmp_path / "c")
    seen = _fake_sacrebleu(monkeypatch)
    options = {"size": "small", "bleu": True, "beam": beam}
    config = _config().model_copy(update={"task_options": options})
    record = Trial(config, "cpu", root).run_epoch()
    assert record.extra["test_bleu"] == 12.5
    assert len(seen["hyps"]) == 20 and "@@" not in " ".join(seen["refs"][0])  # BPE joined


def test_epoch_steps_reach_the_workload(tmp_path):
    root = write_corpus(tmp_path / "c")
    options = {"size": "small", "epoch_steps": 7}
    trial = Trial(_config().model_copy(update={"task_options": options}), "cpu", root)
    assert trial.workload.epoch_steps == 7
    assert Trial(_config(), "cpu", root).workload.epoch_steps is None


def _old_greedy(model, src):
    """The greedy decoder as it was before beam search, verbatim."""
    memory = model.encode(src)
    out = torch.full((src.size(0), 1), BOS, device=src.device)
    done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    for _ in range(src.size(1) + 50):
        nxt = model.decode(memory, src, out)[:, -1].argmax(-1)
        out = torch.cat([out, nxt[:, None]], dim=1)
        done |= nxt == EOS
        if bool(done.all()):
            break
    return out[:, 1:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The small model after a few dozen steps on the reversal corpus (untrained, it repeats
    <s>, which beam search never emits), and the corpus."""
    corpus = load_parallel(write_corpus(tmp_path_factory.mktemp("c")), "en", "de")
    torch.manual_seed(0)
    model = Transformer(len(corpus.words), PRESETS["small"])
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    batches = token_batches(corpus.train, 400)
    for step in range(40):
        src, dec, tgt = collate(corpus.train, batches[step % len(batches)], torch.device("cpu"))
        logits = model(src, dec)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1),
                               ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), corpus


def _hypothesis(row: list[int]) -> list[int]:
    return row[: row.index(EOS) + 1] if EOS in row else row


@torch.no_grad()
def _score(model, src: torch.Tensor, hyp: list[int], alpha: float) -> float:
    """log p(hyp | src) / ((5 + |hyp|)/6)^α, by one teacher-forced pass over one sentence."""
    src = src[None, : int((src != PAD).sum())]
    dec = torch.tensor([[BOS] + hyp[:-1]])
    logp = model.decode(model.encode(src), src, dec).float().log_softmax(-1)[0]
    return float(logp[torch.arange(len(hyp)), torch.tensor(hyp)].sum()) / ((5 + len(hyp)) / 6
                                                                           ) ** alpha


def test_beam_one_is_the_greedy_decoder_as_before(trained, monkeypatch):
    model, corpus = trained
    untrained = Transformer(len(corpus.words), PRESETS["small"]).eval()
    for m in (model, untrained):
        for index in token_batches(corpus.test, 60):
            src, _, _ = collate(corpus.test, index, torch.device("cpu"))
            assert torch.equal(greedy(m, src), _old_greedy(m, src))
    seen = _fake_sacrebleu(monkeypatch)
    bleu(model, corpus, 60, torch.device("cpu"), beam=1)
    old = []
    for index in token_batches(corpus.test, 60):
        src, _, _ = collate(corpus.test, index, torch.device("cpu"))
        old += [" ".join(corpus.words[i] for i in _hypothesis(row) if i != EOS)
                .replace("@@ ", "") for row in _old_greedy(model, src).tolist()]
    assert seen["hyps"] == old


def test_beam_search_scores_at_least_as_well_as_greedy(trained):
    model, corpus = trained
    src, _, _ = collate(corpus.test, list(range(len(corpus.test))), torch.device("cpu"))
    ids, scores = beam_search(model, src, 4, 0.6)
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first
    better = 0
    for i, s in enumerate(src):
        # (greedy alone, so that its length limit is this sentence's, as beam search's is)
        g = _hypothesis(greedy(model, s[None, : int((s != PAD).sum())])[0].tolist())
        b = _hypothesis(ids[i, 0].tolist())
        assert PAD not in g and BOS not in g
        assert _score(model, s, b, 0.6) == pytest.approx(float(scores[i, 0]), abs=1e-4)
        assert _score(model, s, b, 0.6) >= _score(model, s, g, 0.6) - 1e-4
        better += _score(model, s, b, 0.6) > _score(model, s, g, 0.6) + 1e-4
    assert better >= 5  # beam search is not simply greedy here


class _TableModel:
    """A decoder whose next-token logits are arbitrary (seeded by the source and the prefix):
    what the best output is can only be found by search."""

    vocab = 6

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        return src[:, :, None].float()

    def decode(self, memory, src, dec) -> torch.Tensor:
        out = torch.empty(dec.size(0), dec.size(1), self.vocab)
        for r in range(dec.size(0)):
            source = tuple(t for t in src[r].tolist() if t != PAD)
            for j in range(dec.size(1)):
                g = torch.Generator().manual_seed(hash((source, tuple(dec[r, : j + 1].tolist())))
                                                  % 2**31)
                out[r, j] = 3 * torch.randn(self.vocab, generator=g)
        out[:, :, EOS] -= 3  # (else the shortest output, with one factor, wins too often)
        return out


def _tiny_transformer() -> Transformer:
    torch.manual_seed(2)
    model = Transformer(6, Preset(d_model=16, heads=2, layers=1, ffn=32, dropout=0.0,
                                  warmup=1)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 1.0)  # far from initialisation, whose outputs barely vary
    return model


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
@pytest.mark.parametrize("make", [_tiny_transformer, _TableModel], ids=["transformer", "table"])
def test_a_wide_beam_finds_the_best_output_of_an_exhaustive_search(alpha, make):
    """Vocabulary of 6 (3 tokens and EOS may be output; never PAD or BOS), outputs of at most 3
    tokens: 40 hypotheses (ended by EOS, or 3 tokens long without it), all within a beam of 27.
    """
    model = make()
    src = torch.tensor([[3, 4, 5, EOS], [5, 5, EOS, PAD], [4, EOS, PAD, PAD], [5, 3, 4, EOS],
                        [3, EOS, PAD, PAD], [4, 4, 3, EOS]])
    space = [[*p, EOS] for n in range(3) for p in itertools.product([3, 4, 5], repeat=n)]
    space += [list(p) for p in itertools.product([3, 4, 5], repeat=3)]
    assert len(space) == 40
    ids, scores = beam_search(model, src, 27, alpha, max_len=3)
    narrow = beam_search(model, src, 1, alpha, max_len=3)[0]
    missed = 0
    for i, s in enumerate(src):
        brute = max(space, key=lambda h: _score(model, s, h, alpha))
        assert _hypothesis(ids[i, 0].tolist()) == brute
        assert float(scores[i, 0]) == pytest.approx(_score(model, s, brute, alpha), abs=1e-4)
        missed += _hypothesis(narrow[i, 0].tolist()) != brute
    if make is _TableModel:
        assert missed  # (greedy misses it: the search is needed)


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
    assert set(trials["beta2"]) == {0.98} and set(trials["eps"]) == {1e-9}
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
    for table in spec.grid.values():  # Vaswani et al.'s Adam (the paper's "defaults")
        assert (table["momentum"], table["beta2"], table["eps"]) == ([0.9], [0.98], [1e-9])
    # the paper's budget: 250k optimizer steps of 8 × 2048 tokens
    assert spec.task_options["tokens_per_step"] == 16384
    assert spec.epochs * spec.task_options["epoch_steps"] == 250_000
    assert spec.task_options["tokens_per_step"] % spec.batch_size == 0
