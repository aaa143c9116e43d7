"""Epochs counted in steps (``Workload.epoch_steps``): the data is read as one stream of passes
that evaluation periods cut anywhere, and a resumed trial continues the stream exactly."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from lookbench.execution.trial import Trial
from lookbench.study.config import TrialConfig
from lookbench.tasks.base import Task, Workload

EXAMPLES = 10
BATCH = 3  # 4 batches per pass, the last of one example
SEEN: list[list[int]] = []  # the example indices of every step, in order


class Stream(Task):
    """A linear model on ten points whose loss records the indices it was given."""

    metric = "test_loss"
    higher_is_better = False
    epoch_steps: int | None = 3

    def workload(self, *, batch_size: int, device: torch.device, seed: int,
                 data_dir: Path | None = None) -> Workload:
        torch.manual_seed(seed)
        x = torch.linspace(-1, 1, EXAMPLES)[:, None]
        y = 3 * x + 1
        model = nn.Linear(1, 1)

        def train_batches(data_pass: int, generator: torch.Generator) -> Iterator[Any]:
            order = torch.randperm(EXAMPLES, generator=generator)
            for i in range(0, EXAMPLES, batch_size):
                yield order[i:i + batch_size]

        def loss(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
            SEEN.append(idx.tolist())
            return ((model(x[idx]) - y[idx]) ** 2).mean()

        def evaluate(model: nn.Module) -> dict[str, float]:
            return {"test_loss": float(((model(x) - y) ** 2).mean())}

        return Workload(model=model, steps_per_epoch=self.epoch_steps or 4,
                        train_batches=train_batches, loss=loss, evaluate=evaluate,
                        epoch_steps=self.epoch_steps)


def config(**kw: Any) -> TrialConfig:
    return TrialConfig(**{"task": f"{__name__}:Stream", "optimizer": "sgd", "lr": 0.1,
                          "momentum": 0.0, "epochs": 5, "seed": 0, "batch_size": BATCH, **kw})


def _run(cut_after: int | None = None) -> tuple[list[dict], list[list[int]]]:
    SEEN.clear()
    trial = Trial(config(), "cpu")
    if cut_after is not None:
        for _ in range(cut_after):
            trial.run_epoch()
        state = trial.state_dict()
        trial = Trial(config(), "cpu")
        trial.load_state_dict(state)
    list(trial.run())
    records = [{k: v for k, v in vars(r).items() if k != "wall_s"} for r in trial.records]
    return records, list(SEEN)


def test_an_epoch_is_a_number_of_steps_across_passes():
    records, seen = _run()
    assert [r["steps"] for r in records] == [3, 6, 9, 12, 15]
    flat = [i for batch in seen for i in batch]
    # 15 steps = three whole passes (4 batches each) and three batches of a fourth
    passes = [flat[p * EXAMPLES:(p + 1) * EXAMPLES] for p in range(3)]
    assert all(sorted(p) == list(range(EXAMPLES)) for p in passes)
    assert len({tuple(p) for p in passes}) == 3  # each pass has its own order
    assert len(flat) == 3 * EXAMPLES + 3 * BATCH
    assert all(math.isfinite(r["test_loss"]) for r in records)


@pytest.mark.parametrize("cut_after", [1, 2, 4])
def test_a_resumed_trial_continues_the_stream_exactly(cut_after):
    straight_records, straight_seen = _run()
    resumed_records, resumed_seen = _run(cut_after)
    assert resumed_records == straight_records
    # the resumed run saw the same batches from the cut on (before it, the first process did)
    assert resumed_seen == straight_seen


def test_without_epoch_steps_an_epoch_is_one_pass(monkeypatch):
    monkeypatch.setattr(Stream, "epoch_steps", None)
    records, seen = _run()
    assert [r["steps"] for r in records] == [4, 8, 12, 16, 20]
    assert len(seen) == 20
