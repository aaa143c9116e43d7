"""The trial runner's hooks for the paper's workloads: a step accumulated over micro-batches
is the step on the whole batch (WMT's tokens per step), and a per-batch step scale changes the
step size itself, so Adam and gradient clipping keep it (Merity et al.'s length scaling)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from lookbench.execution.trial import Trial
from lookbench.study.config import TrialConfig

TASK = textwrap.dedent('''
    import torch
    from pydantic import BaseModel, ConfigDict
    from torch import nn
    from lookbench import Task, Workload
    from lookbench.tasks.base import MicroBatches


    class Opts(BaseModel):
        model_config = ConfigDict(extra="forbid")
        parts: int = 1
        scale: float = 1.0


    class Linear(Task):
        metric = "test_loss"
        higher_is_better = False
        Options = Opts

        def workload(self, *, batch_size, device, seed, data_dir=None):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(48, 4, generator=g)
            y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(48, generator=g)
            torch.manual_seed(seed)
            model = nn.Linear(4, 1)
            parts = self.opts.parts

            def train_batches(epoch, generator):
                order = torch.randperm(48, generator=generator)
                for i in range(0, 48, 16):
                    idx = order[i:i + 16]
                    if parts == 1:
                        yield idx
                    else:  # unequal parts, weighted by their share of the batch
                        cuts = [idx[:3], idx[3:]]
                        yield MicroBatches(cuts, [len(c) / len(idx) for c in cuts])

            def loss(model, idx):
                return nn.functional.mse_loss(model(x[idx]).squeeze(1), y[idx])

            def evaluate(model):
                return {"test_loss": float(nn.functional.mse_loss(model(x).squeeze(1), y))}

            return Workload(model=model, steps_per_epoch=3, train_batches=train_batches,
                            loss=loss, evaluate=evaluate, clip_grad_norm=0.5,
                            step_scale=(lambda b: self.opts.scale)
                            if self.opts.scale != 1.0 else None)
''')


@pytest.fixture
def task(tmp_path: Path) -> str:
    path = tmp_path / "linear_task.py"
    path.write_text(TASK)
    return f"{path}:Linear"


def _weights(task: str, optimizer: str, lr: float, **options: float) -> torch.Tensor:
    config = TrialConfig(task=task, optimizer=optimizer, lr=lr, epochs=2, task_options=options,
                         **({"momentum": 0.9} if optimizer == "sgd" else {}))
    trial = Trial(config, "cpu")
    list(trial.run())
    return torch.cat([p.detach().flatten() for p in trial.workload.model.parameters()])


def test_micro_batches_make_the_whole_batch_step(task: str) -> None:
    whole = _weights(task, "sgd", 0.05)
    accumulated = _weights(task, "sgd", 0.05, parts=2)
    assert torch.allclose(whole, accumulated, atol=1e-6)
    assert not torch.allclose(whole, _weights(task, "sgd", 0.04), atol=1e-4)  # (it can fail)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_step_scale_scales_the_step_size(task: str, optimizer: str) -> None:
    """Under Adam (scale-free) and with clipping at 0.5 active, scaling the loss would change
    nothing; scaling the step size is the same as a smaller learning rate."""
    scaled = _weights(task, optimizer, 0.02, scale=0.5)
    assert torch.allclose(scaled, _weights(task, optimizer, 0.01), atol=1e-6)
    assert not torch.allclose(scaled, _weights(task, optimizer, 0.02), atol=1e-4)
