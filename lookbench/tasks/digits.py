"""scikit-learn's 8×8 handwritten digits: real data that ships with the package.

1,797 images of 10 classes (UCI optical digits), no download, so it is the embedded default of
lookbench's main command: a whole study trains in minutes on two CPU cores, and a small MLP
reaches more than 95% test accuracy in about a second. The train/test split is fixed (stratified
80/20, independent of the trial seed) so every trial is judged on the same held-out images.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lookbench._lazy import lazy
from lookbench.tasks.base import Task, TaskSize, Workload

torch, nn = lazy("torch"), lazy("torch.nn")  # (the class is read before torch is imported)

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


SPLIT_NAMES = ("x_train", "y_train", "x_test", "y_test")


@lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed stratified split, once per process: from the machine's cache where an
    earlier process left it, else computed (and cached for the next)."""
    cached = _read_cache()
    if cached is not None:
        return cached
    split = _compute_split()
    _write_cache(split)
    return split


def _compute_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / PIXEL_MAX).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return x_train, y_train, x_test, y_test


# Why a cache: importing scikit-learn (SciPy with it) takes 0.8 s after torch on 2 cores, in
# the command and in every worker process, for a split that never changes; a .npz of it
# loads in milliseconds (benchmarks/study_timeline.py). It is keyed by scikit-learn's version
# (the split is its train_test_split's) and by this layout's version.
CACHE_VERSION = 1


def cache_path() -> Path | None:
    """Where the split is cached: ``$LOOKBENCH_CACHE`` (empty: no cache) or
    ``~/.cache/lookbench``, one file per scikit-learn version."""
    from importlib.metadata import PackageNotFoundError, version

    root = os.environ.get("LOOKBENCH_CACHE", str(Path("~/.cache/lookbench").expanduser()))
    if not root:
        return None
    try:
        sklearn = version("scikit-learn")
    except PackageNotFoundError:
        return None
    return Path(root) / f"digits-split-v{CACHE_VERSION}-sklearn-{sklearn}.npz"


def _read_cache() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    path = cache_path()
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            split = tuple(f[name] for name in SPLIT_NAMES)
    except Exception:  # damaged or foreign (zipfile, pickle, OS errors alike): computed again
        return None
    x_train, y_train, x_test, y_test = split
    if not (x_train.dtype == x_test.dtype == np.float32 and y_train.dtype == y_test.dtype
            == np.int64 and x_train.shape[1:] == x_test.shape[1:] == (64,)
            and len(x_train) + len(x_test) == 1797 and len(x_train) == len(y_train)
            and len(x_test) == len(y_test)):
        return None
    return split  # type: ignore[return-value]


def _write_cache(split: tuple[np.ndarray, ...]) -> None:
    """Best effort (a read-only home only costs the next process the computation): written
    to a temporary file of this process, then renamed, so a reader never sees half of it."""
    path = cache_path()
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **dict(zip(SPLIT_NAMES, split)))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


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
