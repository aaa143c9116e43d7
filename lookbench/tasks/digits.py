"""scikit-learn's 8×8 handwritten digits: real data that ships with the package.

1,797 images of 10 classes (UCI optical digits), no download, so it is the embedded default of
lookbench's main command: a whole study trains in minutes on two CPU cores, and a small MLP
reaches more than 95% test accuracy in about a second. The train/test split is fixed (stratified
80/20, independent of the trial seed) so every trial is judged on the same held-out images.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lookbench.tasks.base import Task, TaskSize, Workload

SPLIT_SEED = 0
TEST_FRACTION = 0.2
PIXEL_MAX = 16.0  # load_digits' pixel values are counts of set pixels in 4×4 blocks: 0..16
_GRIDS: dict[str, list[float]] = {
    "sgd": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
    "adam": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
    "adamw": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
}


class DigitsOptions(BaseModel):
    """Options of the digits task."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(128, ge=1, description="width of the MLP's hidden layer")


@lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed stratified split, computed once per process."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / PIXEL_MAX).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return x_train, y_train, x_test, y_test


def build_mlp(hidden: int) -> nn.Module:
    """64 → hidden → 10 with ReLU: small enough for a CPU, big enough to need tuning."""
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


class Digits(Task):
    """An MLP on scikit-learn's bundled 8×8 digits."""

    name = "digits"
    summary = "MLP on the 8x8 handwritten digits (real data)"
    data = "ships with scikit-learn"
    metric = "test_acc"
    higher_is_better = True
    default_epochs = 20
    default_batch_size = 32
    default_schedule = "constant"
    Options = DigitsOptions

    def size(self) -> TaskSize:
        hidden = self.options.hidden  # type: ignore[attr-defined]
        n_test = int(np.ceil(1797 * TEST_FRACTION))
        return TaskSize(1797 - n_test, n_test, sum(p.numel() for p in build_mlp(hidden).parameters()))

    def chance_level(self) -> float:
        """The largest digit's share of the fixed test split (a constant guess's accuracy)."""
        y_test = _split()[3]
        return float(np.bincount(y_test).max() / len(y_test))

    def default_grid(self, inner: str) -> dict[str, dict[str, list[Any]]]:
        if inner not in _GRIDS:
            return super().default_grid(inner)
        lrs = _GRIDS[inner]
        return {
            "lookahead": {"lr": lrs, "momentum": [0.9], "k": [5, 10], "alpha": [0.5, 0.8]},
            inner: {"lr": lrs, "momentum": [0.9]},
        }

    def workload(self, *, batch_size: int, device: torch.device, seed: int,
                 data_dir: Path | None = None) -> Workload:
        x_train, y_train, x_test, y_test = (torch.from_numpy(a).to(device) for a in _split())
        torch.manual_seed(seed)
        model = build_mlp(self.options.hidden).to(device)  # type: ignore[attr-defined]
        n = len(x_train)

        def train_batches(epoch: int, generator: torch.Generator) -> Iterator[Any]:
            order = torch.randperm(n, generator=generator, device=device)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                yield x_train[idx], y_train[idx]

        def loss(model: nn.Module, batch: Any) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(model(x), y)

        def evaluate(model: nn.Module) -> dict[str, float]:
            logits = model(x_test)
            return {
                "test_loss": float(nn.functional.cross_entropy(logits, y_test)),
                "test_acc": float((logits.argmax(1) == y_test).float().mean()),
            }

        def train_eval(model: nn.Module) -> float:
            return float(nn.functional.cross_entropy(model(x_train), y_train))

        return Workload(
            model=model,
            steps_per_epoch=-(-n // batch_size),
            train_batches=train_batches,
            loss=loss,
            evaluate=evaluate,
            train_eval=train_eval,
            criterion=lambda logits, y: nn.functional.cross_entropy(logits, y, reduction="none"),
        )
