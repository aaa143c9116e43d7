"""Image classification on any class-per-subfolder folder, and ImageNet as its preset (paper
section 5.2, Appendix C.2).

``--data-dir`` holds ``train/<class>/*`` and ``val/<class>/*`` (JPEG or PNG).

Presets are recipes, not hints: the option ``augment`` fixes how images are augmented and
evaluated, the option ``pipeline`` only where they come from, so the machine's memory changes
a run's cost, never what it trains on. The recipes:

* ``resized_crop`` (``imagenet`` allows no other): torchvision's ImageNet reference recipe,
  the one the paper ran (pytorch/examples' ``imagenet/main.py``). Training:
  RandomResizedCrop(image_size, scale 0.08-1, ratio 3/4-4/3) + horizontal flip; evaluation:
  the shorter side resized to image_size·256/224 (rounded down: 256 at 224 px, 146 at 128 px),
  the central image_size² crop; ImageNet's mean and std. At any ``image_size``. Also
  ``imagefolder``'s default: photos of any shape and size are what that task reads, this is
  torchvision's recipe for them, and an ImageNet subset under ``imagefolder`` then trains as
  ``imagenet`` does.
* ``padded_crop``: CIFAR's, for small images already framed on their object (where a crop of
  8 % of the area would lose it): the image resized to image_size and centre-cropped, a random
  crop of it zero-padded by an eighth + flip; evaluation on the resized image.

The pipelines (``auto`` takes ``memory`` when the folder as the memory pipeline keeps it fits a
quarter of the RAM, else ``stream``):

* ``memory``: images decoded once per process (``lookbench.tasks.imagefolder_data``) and
  augmented on the device in batches (``lookbench.tasks.augment``). For ``resized_crop`` each
  training image is kept as the central square of side image_size·256/224 of the image resized
  to that shorter side, and the crops are cut from it with torchvision's box distribution
  (``resized_crop_boxes``) and resized with its antialiased bilinear filter; each validation
  image is kept as evaluation sees it, exactly torchvision's Resize + CenterCrop (and
  ``train_eval`` takes the central image_size² of the square: the same view).
* ``stream``: every epoch decodes each training image again from its file and cuts
  torchvision's RandomResizedCrop + flip from the whole image
  (``lookbench.tasks.image_stream``; JPEGs decoded in batches on the GPU under CUDA).

The memory pipeline's one deviation from the recipe: its RandomResizedCrops are drawn from the
image's central square, resized to image_size·256/224, instead of from the whole image at its
own resolution. What that loses: the strips beside the square (a 4:3 photo, ImageNet's most
common shape, keeps 3/4 of its area, so a crop's share of the whole photo is 0.06-0.75
instead of 0.08-1 and never reaches the outer eighth of its width on either side; a 3:2
photo keeps 2/3), and detail where a crop is enlarged: a crop of less than (224/256)² = 77 %
of the square is upsampled to image_size, where the original (ImageNet's photos average about
470×390 px) would often have had the pixels. Evaluation is not affected: its crop lies inside
the square. The ``stream`` pipeline has no deviation (what ``-o pipeline=stream`` buys, at the
cost of decoding every epoch).

Any torchvision classification model by name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lookbench._lazy import lazy
from lookbench.choices import TORCHVISION_CLASSIFIERS, Augment, Pipeline
from lookbench.tasks.base import (
    DataUnavailable,
    Task,
    TaskSize,
    Workload,
    parameter_count,
)
from lookbench.tasks.layout import find_image_folder

if TYPE_CHECKING:
    import torch
    from torch import nn

# Imported on first use: the classes are read, to check a study, before torch is imported.
torch, F = lazy("torch"), lazy("torch.nn.functional")  # noqa: F811
augment_ops, image_stream, imagefolder_data = (lazy("lookbench.tasks.augment"),
                                               lazy("lookbench.tasks.image_stream"),
                                               lazy("lookbench.tasks.imagefolder_data"))

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
    augment: Augment = Field("resized_crop", description="the recipe, whatever the pipeline: "
                             "resized_crop: RandomResizedCrop + flip, evaluation Resize(size·"
                             "256/224) + CenterCrop(size) (torchvision's ImageNet recipe); "
                             "padded_crop: resized to size, padded random crop + flip (CIFAR's)")
    pipeline: Pipeline = Field("auto", description="the cost, never the recipe: memory: decode "
                               "once; stream: decode every epoch; auto: memory if it fits a "
                               "quarter of the RAM")

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name in TORCHVISION_CLASSIFIERS:  # (known without importing torchvision)
            return name
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

    def pipeline(self, data_dir: Path) -> str:
        """``"memory"`` or ``"stream"``: the option, with ``auto`` resolved for this folder."""
        o = self.opts
        return image_stream.choose_pipeline(o.pipeline, data_dir, o.image_size, o.classes,
                                            o.per_class, o.augment)[0]

    def find_data(self, data_dir: Path | None) -> None:
        if data_dir is None:
            raise DataUnavailable(f"{self.name} reads images from --data-dir: give the folder "
                                  f"that holds train/<class>/ and val/<class>/")
        find_image_folder(Path(data_dir))

    def _load(self, data_dir: Path | None):
        self.find_data(data_dir)
        assert data_dir is not None
        o = self.opts
        if self.pipeline(data_dir) == "stream":
            return image_stream.load_stream_folder(data_dir, o.image_size, o.classes, o.per_class,
                                      augment=o.augment)
        return imagefolder_data.load_image_folder(data_dir, o.image_size, o.classes, o.per_class,
                                 augment=o.augment)

    def check_data(self, data_dir: Path | None) -> None:
        self._load(data_dir)  # cached: the first trial in this process reuses it

    def workload(self, *, batch_size: int, device: torch.device, seed: int,
                 data_dir: Path | None = None) -> Workload:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        arrays = self._load(data_dir)
        if isinstance(arrays, image_stream.StreamFolder):
            return self._stream_workload(arrays, batch_size, device, seed)
        from torchvision.transforms.v2 import functional as TF

        size = self.opts.image_size
        train_x, train_y = arrays.train_x.to(device), arrays.train_y.to(device)
        val_x, val_y = arrays.val_x.to(device), arrays.val_y.to(device)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device)
        pad = max(1, size // 8)
        channels_last = device.type == "cuda"
        resized_crop = self.opts.augment == "resized_crop"
        # What train_eval sees: the evaluation view of each training image (for resized_crop
        # the central size² of its kept square, exactly Resize + CenterCrop; a view, no copy).
        train_seen = TF.center_crop(train_x, [size, size]) if resized_crop else train_x

        torch.manual_seed(seed)
        model = self._model(len(arrays.classes)).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)

        def train_batches(epoch: int, generator: torch.Generator) -> Iterator[Any]:
            if resized_crop:
                return augment_ops.resized_crop_batches(train_x, train_y, batch_size, generator,
                                                        mean, std, size=size,
                                                        channels_last=channels_last)
            return augment_ops.augmented_batches(train_x, train_y, batch_size, generator, mean,
                                                 std, pad=pad, channels_last=channels_last)

        def loss(model: nn.Module, batch: Any) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(_logits(model(x)), y)

        def evaluate(model: nn.Module) -> dict[str, float]:
            return _metrics(model, augment_ops.plain_batches(
                val_x, val_y, EVAL_BATCH, mean, std, channels_last=channels_last), len(val_y))

        def train_eval(model: nn.Module) -> float:
            return _metrics(model, augment_ops.plain_batches(
                train_seen, train_y, EVAL_BATCH, mean, std, channels_last=channels_last),
                len(train_y))["test_loss"]

        return Workload(
            model=model, steps_per_epoch=math.ceil(len(train_x) / batch_size),
            train_batches=train_batches, loss=loss, evaluate=evaluate,
            train_eval=train_eval if self.opts.train_eval else None,
            channels_last=channels_last, amp=device.type == "cuda", criterion=_per_example_loss,
        )

    def _stream_workload(self, folder: image_stream.StreamFolder, batch_size: int,
                         device: torch.device, seed: int) -> Workload:
        """The ``stream`` pipeline: uint8 batches decoded by ``image_stream`` (on the GPU for
        JPEGs under CUDA), moved to the device and normalised there; for ``padded_crop`` also
        cropped and flipped there, from the epoch's generator."""
        size = self.opts.image_size
        augment = self.opts.augment
        pad = max(1, size // 8)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device)
        channels_last = device.type == "cuda"
        decode_device = device if device.type == "cuda" else None
        train_files, val_files = folder.train.files, folder.val.files

        torch.manual_seed(seed)
        model = self._model(len(folder.classes)).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)

        def on_device(batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x, y in batches:
                x = x.to(device, non_blocking=True)
                yield (augment_ops.normalize(x, mean, std, channels_last),
                       y.to(device, non_blocking=True))

        def train_batches(epoch: int, generator: torch.Generator) -> Iterator[Any]:
            if augment == "resized_crop":
                return on_device(image_stream.train_stream(
                    train_files, folder.train_y, size, batch_size, generator,
                    decode_device=decode_device))
            return padded(image_stream.epoch_stream(
                train_files, folder.train_y, size, batch_size, generator,
                decode_device=decode_device), generator)

        def padded(batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
                   generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x, y in batches:
                x = augment_ops.random_crop_flip(x.to(device, non_blocking=True), generator, pad)
                yield (augment_ops.normalize(x, mean, std, channels_last),
                       y.to(device, non_blocking=True))

        def loss(model: nn.Module, batch: Any) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(_logits(model(x)), y)

        def evaluate(model: nn.Module) -> dict[str, float]:
            if folder.val_x is not None:
                batches = zip(folder.val_x.split(EVAL_BATCH), folder.val_y.split(EVAL_BATCH))
            else:
                batches = image_stream.eval_stream(val_files, folder.val_y, size, EVAL_BATCH,
                                      augment=augment, decode_device=decode_device)
            return _metrics(model, on_device(batches), len(val_files))

        def train_eval(model: nn.Module) -> float:
            batches = image_stream.eval_stream(train_files, folder.train_y, size, EVAL_BATCH,
                                  augment=augment, decode_device=decode_device)
            return _metrics(model, on_device(batches), len(train_files))["test_loss"]

        return Workload(
            model=model, steps_per_epoch=math.ceil(len(train_files) / batch_size),
            train_batches=train_batches, loss=loss, evaluate=evaluate,
            train_eval=train_eval if self.opts.train_eval else None,
            channels_last=channels_last, amp=device.type == "cuda", criterion=_per_example_loss,
        )


def _per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per image (what lets configurations train as a population)."""
    return F.cross_entropy(logits, labels, reduction="none")


def _logits(output: Any) -> torch.Tensor:
    """A model's class scores (Inception and GoogLeNet return a tuple in training mode)."""
    return output.logits if hasattr(output, "logits") else output


def _metrics(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], n: int
             ) -> dict[str, float]:
    """Cross-entropy, top-1 and top-5 accuracy over ``n`` unaugmented images in normalised
    batches on the model's device, one sync at the end."""
    with torch.no_grad():
        device = next(model.parameters()).device
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        top1 = torch.zeros((), dtype=torch.int64, device=device)
        top5 = torch.zeros((), dtype=torch.int64, device=device)
        for x, y in batches:
            logits = _logits(model(x)).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            best = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 += (best[:, 0] == y).sum()
            top5 += (best == y[:, None]).any(dim=1).sum()
        return {"test_loss": float(loss_sum) / n, "test_acc": int(top1) / n,
                "test_acc_top5": int(top5) / n}


class ImageNet(ImageFolder):
    """The paper's ImageNet protocol on an ImageNet folder (or any subset of it), always with
    its recipe: RandomResizedCrop + flip, evaluation Resize(image_size·256/224) +
    CenterCrop(image_size), at any ``image_size``, from memory or streamed. At full scale (1.28 M
    images, 252 GB as the memory pipeline keeps them at 224 px) ``auto`` streams, JPEGs decoded
    on the GPU under CUDA; a subset that fits a quarter of the RAM is decoded once
    (``-o pipeline=stream`` avoids the memory pipeline's crops-from-the-central-square
    deviation, at the cost of decoding every epoch)."""

    name = "imagenet"
    summary = "ResNet-50 on ImageNet, the paper's protocol (§5.2); streamed at full scale"
    data = "ImageNet train/ and val/ re-foldered by class, in --data-dir"
    default_epochs = 90
    default_batch_size = 256
    default_schedule = "thirds"  # ×0.1 at epochs 30 and 60 of 90

    class Options(ImageFolderOptions):
        model: str = Field("resnet50", description="any torchvision classification model")
        image_size: int = Field(224, ge=8, le=1024, description="pixels per side")

        @field_validator("augment")
        @classmethod
        def _the_papers_recipe(cls, augment: str) -> str:
            if augment != "resized_crop":
                raise ValueError(f"imagenet always trains with the paper's recipe, "
                                 f"resized_crop (RandomResizedCrop + flip); {augment} is the "
                                 f"task imagefolder's")
            return augment

    paper_grids = _IMAGENET_GRIDS

    def chance_level(self) -> float:
        """1 / classes: ImageNet's validation set holds 50 images of every class (a budget run
        of ``classes`` of them keeps that balance)."""
        return 1.0 / (self.opts.classes or 1000)
