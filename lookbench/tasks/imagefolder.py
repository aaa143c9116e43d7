"""Image classification on any class-per-subfolder folder, and ImageNet as its preset (paper
section 5.2, Appendix C.2).

``--data-dir`` holds ``train/<class>/*`` and ``val/<class>/*`` (JPEG or PNG). Images are decoded
once per process at ``image_size`` (``lookbench.tasks.imagefolder_data``) and augmented on the
device in batches like CIFAR's: a random crop of the image zero-padded by an eighth of its size,
and a horizontal flip. (Not the RandomResizedCrop of the usual ImageNet recipe: that needs the
full-resolution images per epoch; see the README.) Any torchvision classification model by name.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from lookbench.tasks.augment import augmented_batches, plain_batches
from lookbench.tasks.base import DataUnavailable, Task, TaskSize, Workload, parameter_count
from lookbench.tasks.imagefolder_data import load_image_folder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_BATCH = 256

# The paper's ImageNet grid (Appendix C.2): SGD with momentum 0.9 and weight decay 1e-4 over
# six learning rates; Lookahead k = 5, α = 0.5 around SGD at lr 0.1.
_IMAGENET_GRIDS: dict[str, dict[str, dict[str, list[Any]]]] = {
    "sgd": {
        "lookahead": {"lr": [0.1], "momentum": [0.9], "weight_decay": [1e-4], "k": [5],
                      "alpha": [0.5]},
        "sgd": {"lr": [0.01, 0.02, 0.05, 0.1, 0.2, 0.3], "momentum": [0.9],
                "weight_decay": [1e-4]},
    },
}


class ImageFolderOptions(BaseModel):
    """Options of an image-folder task."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field("resnet18", description="any torchvision classification model")
    image_size: int = Field(128, ge=8, le=1024, description="pixels per side after resizing")
    classes: int | None = Field(None, ge=2, description="the first N classes only (budget runs)")
    per_class: int | None = Field(None, ge=1, description="the first N images of each class")
    train_eval: bool = Field(False, description="after each epoch, the training loss from a "
                                                "pass without updates")

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        if name not in known:
            raise ValueError(f"not a torchvision classification model: {name!r} (e.g. "
                             f"resnet18, resnet50, mobilenet_v3_small, vit_b_16)")
        return name


class ImageFolder(Task):
    """A torchvision model on your own class-per-subfolder images."""

    name = "imagefolder"
    summary = "any torchvision model on a class-per-subfolder image folder"
    data = "train/<class>/*.jpg, val/<class>/*.jpg in --data-dir"
    metric = "test_acc"
    higher_is_better = True
    default_epochs = 30
    default_batch_size = 64
    default_schedule = "cosine"
    Options: ClassVar[type[BaseModel]] = ImageFolderOptions

    def _model(self, num_classes: int) -> nn.Module:
        import torchvision

        return torchvision.models.get_model(self.opts.model, weights=None,
                                            num_classes=num_classes)

    def size(self) -> TaskSize:
        return TaskSize(None, None, parameter_count(lambda: self._model(self.opts.classes or
                                                                        1000)))

    def _load(self, data_dir: Path | None):
        if data_dir is None:
            raise DataUnavailable(f"{self.name} reads images from --data-dir: give the folder "
                                  f"that holds train/<class>/ and val/<class>/")
        o = self.opts
        return load_image_folder(data_dir, o.image_size, o.classes, o.per_class)

    def check_data(self, data_dir: Path | None) -> None:
        self._load(data_dir)  # cached: the first trial in this process reuses it

    def workload(self, *, batch_size: int, device: torch.device, seed: int,
                 data_dir: Path | None = None) -> Workload:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        arrays = self._load(data_dir)
        train_x, train_y = arrays.train_x.to(device), arrays.train_y.to(device)
        val_x, val_y = arrays.val_x.to(device), arrays.val_y.to(device)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device)
        pad = max(1, self.opts.image_size // 8)
        channels_last = device.type == "cuda"

        torch.manual_seed(seed)
        model = self._model(len(arrays.classes)).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)

        def train_batches(epoch: int, generator: torch.Generator) -> Iterator[Any]:
            return augmented_batches(train_x, train_y, batch_size, generator, mean, std,
                                     pad=pad, channels_last=channels_last)

        def loss(model: nn.Module, batch: Any) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(_logits(model(x)), y)

        def evaluate(model: nn.Module) -> dict[str, float]:
            return _metrics(model, val_x, val_y, mean, std, channels_last)

        def train_eval(model: nn.Module) -> float:
            return _metrics(model, train_x, train_y, mean, std, channels_last)["test_loss"]

        return Workload(
            model=model, steps_per_epoch=math.ceil(len(train_x) / batch_size),
            train_batches=train_batches, loss=loss, evaluate=evaluate,
            train_eval=train_eval if self.opts.train_eval else None,
            channels_last=channels_last, amp=device.type == "cuda",
        )


def _logits(output: Any) -> torch.Tensor:
    """A model's class scores (Inception and GoogLeNet return a tuple in training mode)."""
    return output.logits if hasattr(output, "logits") else output


@torch.no_grad()
def _metrics(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
             std: torch.Tensor, channels_last: bool) -> dict[str, float]:
    """Cross-entropy, top-1 and top-5 accuracy over unaugmented images, one sync at the end."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=images.device)
    top1 = torch.zeros((), dtype=torch.int64, device=images.device)
    top5 = torch.zeros((), dtype=torch.int64, device=images.device)
    for x, y in plain_batches(images, labels, EVAL_BATCH, mean, std, channels_last=channels_last):
        logits = _logits(model(x)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += (best[:, 0] == y).sum()
        top5 += (best == y[:, None]).any(dim=1).sum()
    n = len(labels)
    return {"test_loss": float(loss_sum) / n, "test_acc": int(top1) / n,
            "test_acc_top5": int(top5) / n}


class ImageNet(ImageFolder):
    """The paper's ImageNet protocol on an ImageNet folder (or any subset of it)."""

    name = "imagenet"
    summary = "ResNet-50 on ImageNet, the paper's protocol (§5.2)"
    data = "ImageNet train/ and val/ re-foldered by class, in --data-dir"
    default_epochs = 90
    default_batch_size = 256
    default_schedule = "thirds"  # ×0.1 at epochs 30 and 60 of 90

    class Options(ImageFolderOptions):
        model: str = Field("resnet50", description="any torchvision classification model")
        image_size: int = Field(224, ge=8, le=1024, description="pixels per side")

    paper_grids = _IMAGENET_GRIDS
