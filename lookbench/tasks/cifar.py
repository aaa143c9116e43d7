"""CIFAR-10 and CIFAR-100 classification: the paper's main workload (section 5.1, Appendix C.1).

ResNet-18 (or the cheaper ResNet-20), batches of 128, 200 epochs with the step schedule, and the
standard augmentation (zero-pad 4, random 32×32 crop, horizontal flip with probability ½,
per-channel normalisation). The data is moved to the device once as uint8 and every batch is
augmented there (``lookbench.tasks.augment``), so no DataLoader workers compete with the model
for the CPU and a GPU is not starved by PIL.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from lookbench._lazy import lazy
from lookbench.choices import CifarName, ModelName
from lookbench.tasks.base import Task, TaskSize, Workload, parameter_count

if TYPE_CHECKING:
    from torch import nn

# Imported on first use: the classes are read, to check a study, before torch is imported.
torch, F = lazy("torch"), lazy("torch.nn.functional")
augment, cifar_data, models = (lazy("lookbench.tasks.augment"), lazy("lookbench.tasks.cifar_data"),
                               lazy("lookbench.tasks.models"))

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
TRAIN_EXAMPLES = 50_000
TEST_EXAMPLES = 10_000
EVAL_BATCH = 1000  # images per forward pass when evaluating: large, but bounded in memory

_LOOKAHEAD_AXES: dict[str, list[Any]] = {"k": [5, 10], "alpha": [0.2, 0.5, 0.8]}
_ADAM_LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
# The paper's grids (Appendix C.1). Lookahead wraps the inner optimizer's tuned setting (SGD
# lr 0.1 as the paper states; AdamW's best lr 3e-4, wd 1) and sweeps k and alpha. The paper only
# tuned AdamW ("Adam" in its CIFAR section); plain Adam gets the same learning rates with
# classic L2 weight decay values.
_GRIDS: dict[str, dict[str, dict[str, list[Any]]]] = {
    "sgd": {
        "lookahead": {"lr": [0.1], "momentum": [0.9], "weight_decay": [1e-3], **_LOOKAHEAD_AXES},
        "sgd": {"lr": [0.01, 0.03, 0.05, 0.1, 0.2, 0.3], "momentum": [0.9],
                "weight_decay": [3e-4, 1e-3, 3e-3]},
    },
    "adamw": {
        "lookahead": {"lr": [3e-4], "weight_decay": [1.0], **_LOOKAHEAD_AXES},
        "adamw": {"lr": _ADAM_LRS, "weight_decay": [0.1, 0.3, 1.0, 3.0]},
    },
    "adam": {
        "lookahead": {"lr": [3e-4], "weight_decay": [0.0], **_LOOKAHEAD_AXES},
        "adam": {"lr": _ADAM_LRS, "weight_decay": [0.0, 5e-4]},
    },
}


class CifarOptions(BaseModel):
    """Options of the CIFAR tasks."""

    model_config = ConfigDict(extra="forbid")
    model: ModelName = Field("resnet18", description="resnet18 (the paper's) or resnet20 (cheap)")
    train_eval: bool = Field(
        False, description="after each epoch, the training loss from a pass without updates"
    )
    train_subset: int | None = Field(
        None, ge=1, description="train on the first N training images only (quick runs)"
    )


class _Cifar(Task):
    """What CIFAR-10 and CIFAR-100 share; subclasses name the data set and its statistics."""

    dataset: ClassVar[CifarName]
    num_classes: ClassVar[int]
    mean: ClassVar[tuple[float, float, float]]
    std: ClassVar[tuple[float, float, float]]

    metric = "test_acc"
    higher_is_better = True
    default_epochs = 200
    default_batch_size = 128
    default_schedule = "step"
    Options = CifarOptions
    paper_grids = _GRIDS

    def size(self) -> TaskSize:
        subset = self.opts.train_subset
        train = TRAIN_EXAMPLES if subset is None else min(subset, TRAIN_EXAMPLES)
        return TaskSize(train, TEST_EXAMPLES, parameter_count(
            lambda: models.build_model(self.opts.model, self.num_classes)))

    def chance_level(self) -> float:
        """1 / classes: both test sets hold the same number of images of every class."""
        return 1.0 / self.num_classes

    def check_data(self, data_dir: Path | None) -> None:
        # (cached: the first trial in this process reuses it)
        cifar_data.load_cifar(self.dataset, data_dir)

    def workload(self, *, batch_size: int, device: torch.device, seed: int,
                 data_dir: Path | None = None) -> Workload:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        opts = self.opts
        arrays = cifar_data.load_cifar(self.dataset, data_dir)
        train_x = arrays.train_x[: opts.train_subset].to(device)
        train_y = arrays.train_y[: opts.train_subset].to(device)
        test_x, test_y = arrays.test_x.to(device), arrays.test_y.to(device)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device)
        std = torch.tensor(self.std, dtype=torch.float32, device=device)
        channels_last = device.type == "cuda"

        torch.manual_seed(seed)
        model = models.build_model(opts.model, self.num_classes).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)

        def train_batches(epoch: int, generator: torch.Generator) -> Iterator[Any]:
            return augment.augmented_batches(train_x, train_y, batch_size, generator, mean,
                                             std, channels_last=channels_last)

        def loss(model: nn.Module, batch: Any) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(model(x), y)

        def evaluate(model: nn.Module) -> dict[str, float]:
            test_loss, test_acc = _loss_and_accuracy(model, test_x, test_y, mean, std,
                                                     channels_last)
            return {"test_loss": test_loss, "test_acc": test_acc}

        def train_eval(model: nn.Module) -> float:
            return _loss_and_accuracy(model, train_x, train_y, mean, std, channels_last)[0]

        return Workload(
            model=model,
            steps_per_epoch=math.ceil(len(train_x) / batch_size),
            train_batches=train_batches,
            loss=loss,
            evaluate=evaluate,
            train_eval=train_eval if opts.train_eval else None,
            channels_last=channels_last,
            amp=device.type == "cuda",
            criterion=_per_example_cross_entropy,
        )


def _per_example_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def _loss_and_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       mean: torch.Tensor, std: torch.Tensor,
                       channels_last: bool) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over unaugmented images, with one sync at the end."""
    with torch.no_grad():
        loss_sum = torch.zeros((), dtype=torch.float64, device=images.device)
        correct = torch.zeros((), dtype=torch.int64, device=images.device)
        for x, y in augment.plain_batches(images, labels, EVAL_BATCH, mean, std,
                                          channels_last=channels_last):
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
        n = len(labels)
        return float(loss_sum) / n, int(correct) / n


class Cifar10(_Cifar):
    """CIFAR-10 with a CIFAR ResNet."""

    name = "cifar10"
    summary = "ResNet-18/20 on CIFAR-10 (paper §5.1)"
    data = "CIFAR-10 files (--data-dir)"
    dataset = "cifar10"
    num_classes = 10
    mean = CIFAR10_MEAN
    std = CIFAR10_STD


class Cifar100(_Cifar):
    """CIFAR-100 with a CIFAR ResNet."""

    name = "cifar100"
    summary = "ResNet-18/20 on CIFAR-100 (paper §5.1)"
    data = "CIFAR-100 files (--data-dir)"
    dataset = "cifar100"
    num_classes = 100
    mean = CIFAR100_MEAN
    std = CIFAR100_STD
