"""Word-level language modelling on Penn Treebank (paper section 5.3, Appendix C.3) and on
WikiText-2, read from the files everyone has: Mikolov's ``ptb.{train,valid,test}.txt``, or
WikiText's ``wiki.{train,valid,test}.tokens``.

The model is Merity et al.'s AWD-LSTM, as the paper trained it: an embedding, LSTM layers whose
hidden-to-hidden weights are dropped out (weight drop), locked (variational) dropout between
layers, embedding dropout, activation (AR) and temporal activation (TAR) regularisation of the
last layer, truncated back-propagation through variable-length sequences, gradient clipping
at 0.25, a shorter window's step scaled by its length / bptt, and the learning rate halved
after 15 epochs without a better validation perplexity (the ``plateau`` schedule). Ranked by
validation perplexity, lower is better (the paper picks its models by validation); test
perplexity is recorded beside it, and with ``-o train_eval=true`` the training perplexity
(Table 3) from a pass without updates. ``-o size=small`` is a two-layer model that trains on a
CPU in minutes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from lookbench._lazy import lazy
from lookbench.tasks.base import (
    DataUnavailable,
    Task,
    TaskSize,
    Workload,
    parameter_count,
    perplexity,
)
from lookbench.tasks.sizes import LSTM_PRESETS, LSTMPreset

if TYPE_CHECKING:
    import torch
    from torch import nn

# Imported on first use: the classes are read, to check a study, before torch is imported.
torch, F = lazy("torch"), lazy("torch.nn.functional")  # noqa: F811
awd_lstm = lazy("lookbench.tasks.awd_lstm")

EOS = "<eos>"
EVAL_BATCH = 10  # sequences evaluated side by side (Merity et al.'s validation batch)


Preset = LSTMPreset  # (the names the task has always used)
PRESETS = LSTM_PRESETS
# The paper's grids (Appendix C.3): SGD without momentum and Adam at its default betas, each
# over its learning rates; Lookahead k × α around the baseline's setting. The paper does not
# say which baseline rates it picked: Lookahead wraps SGD at Merity et al.'s lr 30 and Adam at
# 0.001, and weight decay is 1.2e-6 for all.
_GRIDS: dict[str, dict[str, dict[str, list[Any]]]] = {
    "sgd": {
        "lookahead": {"lr": [30.0], "momentum": [0.0], "weight_decay": [1.2e-6],
                      "k": [5, 10, 20], "alpha": [0.2, 0.5, 0.8]},
        "sgd": {"lr": [50.0, 30.0, 10.0, 5.0, 2.5, 1.0, 0.1], "momentum": [0.0],
                "weight_decay": [1.2e-6]},
    },
    "adam": {
        "lookahead": {"lr": [0.001], "weight_decay": [1.2e-6], "k": [5, 10, 20],
                      "alpha": [0.2, 0.5, 0.8]},
        "adam": {"lr": [0.1, 0.05, 0.01, 0.005, 0.001, 0.0005, 0.0001],
                 "weight_decay": [1.2e-6]},
    },
}


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus: word ids per split, and the vocabulary (train's words)."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    words: list[str]


FILES = {"ptb": "ptb.{}.txt", "wikitext2": "wiki.{}.tokens"}
_CACHE: dict[tuple[str, Path], Corpus] = {}


def find_corpus(kind: str, data_dir: Path | None) -> Path:
    """The corpus's folder; :class:`DataUnavailable` if one of its three files is missing."""
    if data_dir is None:
        raise DataUnavailable(f"{kind} reads {FILES[kind].format('{train,valid,test}')} from "
                              f"--data-dir")
    root = Path(data_dir).expanduser().resolve()
    for split in ("train", "valid", "test"):
        path = root / FILES[kind].format(split)
        if not path.is_file():
            raise DataUnavailable(f"{path} is missing: expected "
                                  f"{root}/{FILES[kind].format('{train,valid,test}')}")
    return root


def load_corpus(kind: str, data_dir: Path | None) -> Corpus:
    """The three splits, each line's words followed by ``<eos>``; words are numbered by first
    appearance in train. Cached per process."""
    root = find_corpus(kind, data_dir)
    key = (kind, root)
    if key in _CACHE:
        return _CACHE[key]
    texts = {}
    for split in ("train", "valid", "test"):
        path = root / FILES[kind].format(split)
        texts[split] = [line.split() + [EOS] for line in
                        path.read_text(encoding="utf-8", errors="replace").splitlines()
                        if line.strip()]
    vocab: dict[str, int] = {}
    for line in texts["train"]:
        for w in line:
            vocab.setdefault(w, len(vocab))
    unk = vocab.setdefault("<unk>", len(vocab))
    ids = {s: torch.tensor([vocab.get(w, unk) for line in lines for w in line],
                           dtype=torch.int64) for s, lines in texts.items()}
    if len(ids["train"]) < 2 or len(ids["valid"]) < 2:
        raise DataUnavailable(f"{root}: the train and valid files hold fewer than two words")
    _CACHE[key] = Corpus(ids["train"], ids["valid"], ids["test"], list(vocab))
    return _CACHE[key]


def batchify(data: torch.Tensor, batch: int) -> torch.Tensor:
    """``(steps, batch)``: the corpus cut into ``batch`` parallel streams (the tail dropped)."""
    steps = len(data) // batch
    return data[: steps * batch].view(batch, steps).t().contiguous()


class PTBOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: Literal["paper", "small"] = Field("paper", description="paper: 3×1150 AWD-LSTM; "
                                            "small: 2×200, minutes on a CPU")
    train_eval: bool = Field(False, description="after each epoch, the training perplexity "
                             "from a pass without updates (Table 3): one more pass over train")


class PennTreebank(Task):
    """AWD-LSTM on Penn Treebank, the paper's protocol."""

    name = "ptb"
    summary = "AWD-LSTM on Penn Treebank (paper §5.3); -o size=small for a CPU"
    data = "ptb.train.txt, ptb.valid.txt, ptb.test.txt in --data-dir"
    corpus: ClassVar[str] = "ptb"
    # The words of Merity et al.'s vocabulary (train's, <unk> and <eos>): the model's size
    # before any data is read (``lookbench tasks``). PTB's paper model: 24,221,600 parameters.
    vocabulary: ClassVar[int] = 10_000
    metric = "valid_perplexity"
    higher_is_better = False
    default_epochs = 750  # the paper's (section 5.3)
    default_batch_size = 80
    default_schedule = "plateau"
    plateau_patience = 15
    Options: ClassVar[type[BaseModel]] = PTBOptions

    paper_grids = _GRIDS

    @property
    def _preset(self) -> Preset:
        return PRESETS[self.opts.size]

    def size(self) -> TaskSize:
        return TaskSize(None, None, parameter_count(
            lambda: awd_lstm.AWDLSTM(self.vocabulary, self._preset)))

    def find_data(self, data_dir: Path | None) -> None:
        find_corpus(self.corpus, data_dir)

    def check_data(self, data_dir: Path | None) -> None:
        load_corpus(self.corpus, data_dir)

    def workload(self, *, batch_size: int, device: torch.device, seed: int,
                 data_dir: Path | None = None) -> Workload:
        corpus = load_corpus(self.corpus, data_dir)
        p = self._preset
        train = batchify(corpus.train, batch_size).to(device)
        valid = batchify(corpus.valid, EVAL_BATCH).to(device)
        test = batchify(corpus.test, EVAL_BATCH).to(device) if len(corpus.test) > EVAL_BATCH \
            else valid
        torch.manual_seed(seed)
        model = awd_lstm.AWDLSTM(len(corpus.words), p).to(device)
        state: dict[str, Any] = {"hidden": None}

        def train_batches(epoch: int, generator: torch.Generator) -> Iterator[Any]:
            """Variable-length windows (Merity et al.): mostly ``bptt`` long, sometimes half,
            with normal jitter; the hidden state carries over between windows."""
            state["hidden"] = model.init_hidden(batch_size)
            # Every window's draws at once: one copy to the host per epoch, not per window.
            draws = torch.rand(len(train) // 5 + 1, 3, generator=generator, device=device)
            draws = draws.cpu().tolist()
            i = w = 0
            while i < len(train) - 2:
                u, u1, u2 = draws[w]
                w += 1
                base = p.bptt if u < 0.95 else p.bptt / 2
                normal = math.sqrt(-2 * math.log(max(u1, 1e-12))) * math.cos(2 * math.pi * u2)
                length = min(max(5, int(base + 5 * normal)), len(train) - 1 - i)
                yield i, length, length / p.bptt
                i += length

        def loss(model: nn.Module, batch: Any) -> torch.Tensor:
            i, length, _ = batch  # (the third: the step's scale, see step_scale)
            x, y = train[i: i + length], train[i + 1: i + 1 + length]
            hidden = awd_lstm.detach(state["hidden"])
            logits, hidden, raw, dropped = model(x, hidden)
            state["hidden"] = hidden
            out = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            return out + p.ar * dropped.pow(2).mean() + p.tar * (raw[1:] - raw[:-1]).pow(2).mean()

        def step_scale(batch: Any) -> float:
            """A shorter window counts for less: Merity et al. scale the learning rate by
            length / bptt. Scaling the loss instead would be undone by the clipping at 0.25
            whenever it is active, and by Adam's normalisation always."""
            return batch[2]

        def cross_entropy(data: torch.Tensor) -> float:
            hidden = model.init_hidden(data.size(1))
            total = torch.zeros((), dtype=torch.float64, device=device)
            for i in range(0, len(data) - 1, p.bptt):
                x, y = data[i: i + p.bptt], data[i + 1: i + 1 + p.bptt]
                x = x[: len(y)]
                logits, hidden, _, _ = model(x, hidden)
                total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                         reduction="sum").double()
            return float(total) / ((len(data) - 1) * data.size(1))

        def evaluate(model: nn.Module) -> dict[str, float]:
            v, t = cross_entropy(valid), cross_entropy(test)
            return {"test_loss": t, "test_perplexity": perplexity(t), "valid_loss": v,
                    "valid_perplexity": perplexity(v)}

        def train_eval(model: nn.Module) -> float:
            """The training cross-entropy as Merity et al.'s ``evaluate`` computes it (eval
            mode: no dropout, no AR/TAR), over the training batches' own streams; kept for
            ``train_metrics`` so one pass gives both numbers."""
            state["train_eval"] = cross_entropy(train)
            return state["train_eval"]

        def train_metrics(model: nn.Module) -> dict[str, float]:
            loss = state.pop("train_eval", None)
            return {"train_perplexity": perplexity(cross_entropy(train) if loss is None
                                                   else loss)}

        on = self.opts.train_eval
        return Workload(model=model, steps_per_epoch=max(1, len(train) // p.bptt),
                        train_batches=train_batches, loss=loss, evaluate=evaluate,
                        train_eval=train_eval if on else None,
                        extra=train_metrics if on else None,
                        clip_grad_norm=0.25, step_scale=step_scale)


class WikiText2(PennTreebank):
    """The same model and protocol on WikiText-2."""

    name = "wikitext2"
    summary = "AWD-LSTM on WikiText-2 (the PTB protocol); -o size=small for a CPU"
    data = "wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens in --data-dir"
    corpus = "wikitext2"
    vocabulary = 33_278  # Merity et al.'s WikiText-2 vocabulary: a 33.6M-parameter model


__all__ = ["PennTreebank", "WikiText2", "load_corpus"]  # (the model: lookbench.tasks.awd_lstm)
