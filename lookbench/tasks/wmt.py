"""Translation with the Transformer (paper section 5.4, Appendix C.4) on WMT'14 English→German
or any parallel corpus, read as the usual preprocessing scripts leave it: tokenised,
BPE-applied text, one sentence per line, ``train.<src>``/``train.<tgt>``, ``valid.*``,
``test.*``.

The vocabulary is joint (source and target share it, and the embeddings, as in Vaswani et
al.), built from the training files or read from a fairseq-style dictionary (``word count``
per line, ``-o dict_file=...``). Batches hold up to ``batch_size`` *tokens* of sentences of
similar length (the batch composition is fixed; the order of batches comes from the epoch's
generator, so a resumed trial replays it). The model is Transformer base (post-norm, as the
original) with label smoothing 0.1, trained under the ``rsqrt`` schedule (linear warmup over
4000 steps, then ∝ 1/√step). Ranked by validation perplexity (per target token, without
smoothing), lower is better; test loss and perplexity beside it, and BLEU on the test set with
``-o bleu=true`` where ``sacrebleu`` is installed: greedy decoding, or with ``-o beam=4`` the
paper's beam search (beam 4, GNMT's length penalty with α = ``length_penalty`` = 0.6, outputs up
to the source's length + 50). Pairs with a side longer than the model's ``MAX_LEN`` positions
are left out of every split, as the loader warns.

The paper trained 250k steps of 8 workers × 2048 tokens (Appendix C.4): ``-o
tokens_per_step=16384`` accumulates ⌈tokens_per_step / batch_size⌉ batches into each optimizer
step (``batch_size`` is what one device holds at once), and ``-o epoch_steps=N`` evaluates every
N optimizer steps instead of every pass. ``-o size=small`` trains on a CPU in minutes.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from lookbench._lazy import lazy
from lookbench.tasks.base import (
    DataUnavailable,
    MicroBatches,
    Task,
    TaskSize,
    Workload,
    parameter_count,
    perplexity,
)
from lookbench.tasks.sizes import TRANSFORMER_PRESETS, TransformerPreset
from lookbench.tasks.wmt_data import (
    BOS,
    EOS,
    MAX_LEN,
    PAD,
    SPECIALS,
    UNK,
    Parallel,
    find_parallel,
    load_parallel,
    token_batches,
    too_long_lines,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

# Imported on first use: the classes are read, to check a study, before torch is imported.
torch, F = lazy("torch"), lazy("torch.nn.functional")  # noqa: F811
transformer = lazy("lookbench.tasks.transformer")

__all__ = ["BOS", "EOS", "LABEL_SMOOTHING", "MAX_LEN", "PAD", "PRESETS", "SPECIALS", "UNK",
           "Parallel", "Preset", "WMT14", "WMTOptions", "find_parallel", "load_parallel",
           "token_batches", "too_long_lines"]  # (the corpus's names: lookbench.tasks.wmt_data)

LABEL_SMOOTHING = 0.1


Preset = TransformerPreset  # (the names the task has always used)
PRESETS = TRANSFORMER_PRESETS
# Appendix C.4: Adam at "the default hyperparameters" of Vaswani et al. (β = (0.9, 0.98),
# ε = 1e-9) under the warmup schedule, and Lookahead over the learning rate × k at α = 0.5.
# The paper's rates {0.02, 0.04, 0.06} are tensor2tensor's learning-rate constant, whose scale
# depends on its schedule's code; here a rate is the schedule's peak, and Lookahead's grid
# spans half to twice Vaswani et al.'s peak (d_model^-0.5 · warmup^-0.5 = 7e-4): a 4× range
# where the paper's spans 3×.
VASWANI_ADAM: dict[str, Any] = {"momentum": 0.9, "beta2": 0.98, "eps": 1e-9}
_ADAM_GRID = {"lr": [3.5e-4, 7e-4, 1.4e-3], **{k: [v] for k, v in VASWANI_ADAM.items()}}
_GRIDS: dict[str, dict[str, dict[str, list[Any]]]] = {
    "adam": {"lookahead": {**_ADAM_GRID, "k": [5, 10], "alpha": [0.5]}, "adam": _ADAM_GRID},
}


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it."""
    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None



class WMTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: Literal["base", "small"] = Field("base", description="base: Transformer base; "
                                           "small: minutes on a CPU")
    src: str = Field("en", pattern=r"^[A-Za-z0-9_-]+$", description="source file extension")
    tgt: str = Field("de", pattern=r"^[A-Za-z0-9_-]+$", description="target file extension")
    dict_file: str | None = Field(None, description="a joint dictionary (fairseq's format); "
                                  "default: built from the training files")
    bleu: bool = Field(False, description="BLEU on the test set each epoch, greedy or by beam "
                                          "search (needs sacrebleu)")
    beam: int = Field(1, ge=1, le=64, description="BLEU's decoding: 1 greedy, N beam search of "
                                                  "width N (the paper's: 4)")
    length_penalty: float = Field(0.6, ge=0, description="beam search's α in GNMT's length "
                                                         "penalty ((5+|Y|)/6)^α")
    epoch_steps: int | None = Field(None, ge=1, description="optimizer steps between two "
                                    "evaluations (the paper trained 250k steps in all); "
                                    "default: one pass")
    tokens_per_step: int | None = Field(
        None, ge=1, description="tokens per optimizer step: ⌈tokens_per_step / batch_size⌉ "
        "batches accumulated into one step (the paper: 8 × 2048 = 16384); default: one batch")


class WMT14(Task):
    """Transformer base on WMT'14 English→German (or any parallel corpus)."""

    name = "wmt14"
    summary = "Transformer base on WMT'14 en→de or any parallel corpus (§5.4)"
    data = "train/valid/test.{en,de}, tokenised and BPE-applied, in --data-dir"
    metric = "valid_perplexity"
    higher_is_better = False
    default_epochs = 20
    default_batch_size = 4096  # tokens per batch
    default_schedule = "rsqrt"
    default_inner = "adam"  # Vaswani et al.'s, and the paper's
    inner_defaults = VASWANI_ADAM
    Options: ClassVar[type[BaseModel]] = WMTOptions

    paper_grids = _GRIDS

    def size(self) -> TaskSize:  # (with WMT'14's 37k joint BPE vocabulary)
        return TaskSize(None, None, parameter_count(
            lambda: transformer.Transformer(37_000, PRESETS[self.opts.size])))

    def _load(self, data_dir: Path | None) -> Parallel:
        o = self.opts
        return load_parallel(data_dir, o.src, o.tgt, o.dict_file)

    def find_data(self, data_dir: Path | None) -> None:
        o = self.opts
        find_parallel(data_dir, o.src, o.tgt, o.dict_file)
        if o.bleu and not _installed("sacrebleu"):
            raise DataUnavailable("-o bleu=true needs sacrebleu: pip install 'lookbench[bleu]'")

    def check_data(self, data_dir: Path | None) -> None:
        o = self.opts
        self.find_data(data_dir)
        for line in too_long_lines(self._load(data_dir), o.src, o.tgt):  # once per run
            print(f"warning: {line}", file=sys.stderr, flush=True)

    def check_config(self, config: Any) -> None:
        tokens, batch = self.opts.tokens_per_step, config.batch_size or self.default_batch_size
        if tokens is not None and tokens < batch:
            raise ValueError(f"tokens_per_step={tokens} is less than one batch of {batch} "
                             f"tokens: lower the batch size to {tokens} or below")

    def batches_per_step(self, batch_size: int) -> int:
        """Batches accumulated into one optimizer step: enough to hold ``tokens_per_step``."""
        tokens = self.opts.tokens_per_step
        return 1 if tokens is None else max(1, math.ceil(tokens / batch_size))

    def workload(self, *, batch_size: int, device: torch.device, seed: int,
                 data_dir: Path | None = None) -> Workload:
        corpus = self._load(data_dir)
        p = PRESETS[self.opts.size]
        train = corpus.train
        batches = token_batches(train, batch_size)
        per_step = self.batches_per_step(batch_size)
        torch.manual_seed(seed)
        model = transformer.Transformer(len(corpus.words), p).to(device)

        def train_batches(epoch: int, generator: torch.Generator) -> Iterator[Any]:
            order = torch.randperm(len(batches), generator=generator, device=device).tolist()
            if per_step == 1:
                for b in order:
                    yield transformer.collate(train, batches[b], device)
                return
            # Consecutive batches of the pass's order make a step (the last one: what is
            # left), each weighted by its share of the step's target tokens, so the step's
            # gradient is that of the mean loss over all of them. A part is its sentences'
            # indices, collated when trained: a resumed pass skips steps without collating.
            for start in range(0, len(order), per_step):
                parts = [batches[b] for b in order[start:start + per_step]]
                tokens = [sum(len(train[i][1]) for i in index) for index in parts]
                yield MicroBatches(parts, [t / sum(tokens) for t in tokens])

        def loss(model: nn.Module, batch: Any) -> torch.Tensor:
            src, dec, tgt = (transformer.collate(train, batch, device)
                             if isinstance(batch, list) else batch)
            logits = model(src, dec)
            return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1),
                                   ignore_index=PAD, label_smoothing=LABEL_SMOOTHING)

        def cross_entropy(pairs: list) -> float:
            total = torch.zeros((), dtype=torch.float64, device=device)
            tokens = 0
            for index in token_batches(pairs, batch_size):
                src, dec, tgt = transformer.collate(pairs, index, device)
                logits = model(src, dec).float()
                total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1),
                                         ignore_index=PAD, reduction="sum").double()
                tokens += int((tgt != PAD).sum())
            return float(total) / max(tokens, 1)

        def evaluate(model: nn.Module) -> dict[str, float]:
            v = cross_entropy(corpus.valid)
            t = cross_entropy(corpus.test) if corpus.test else v
            out = {"test_loss": t, "test_perplexity": perplexity(t), "valid_loss": v,
                   "valid_perplexity": perplexity(v)}
            if self.opts.bleu:
                out["test_bleu"] = transformer.bleu(model, corpus, batch_size, device,
                                                    self.opts.beam, self.opts.length_penalty)
            return out

        return Workload(model=model, steps_per_epoch=math.ceil(len(batches) / per_step),
                        train_batches=train_batches, loss=loss, evaluate=evaluate,
                        warmup_steps=p.warmup, epoch_steps=self.opts.epoch_steps,
                        amp=device.type == "cuda")
