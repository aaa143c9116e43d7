"""Batched image augmentation on the device: the paper's CIFAR pipeline without a DataLoader.

The standard torchvision pipeline crops, flips and normalises one PIL image at a time in worker
processes (~266 µs per image on the development CPU, i.e. a 50k-image epoch costs ~13 s of CPU
before the model sees a batch). Here the whole training set sits on the device as one uint8
tensor and each batch is augmented by a handful of tensor ops: one gather with per-image index
grids does every crop and flip at once. All randomness comes from the ``generator`` passed in,
so an epoch replays exactly from the generator's seed (what a resumed trial needs).

Two recipes: CIFAR's zero-padded random crop and flip (:func:`augmented_batches`), and
ImageNet's RandomResizedCrop and flip (:func:`resized_crop_batches`), the latter cut from images
already resized and centre-cropped to a square (``lookbench.tasks.imagefolder_data``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

Stats = Sequence[float] | torch.Tensor
SCALE = (0.08, 1.0)  # RandomResizedCrop's share of the image's area (torchvision's default)
RATIO = (3 / 4, 4 / 3)  # and its aspect ratios, width / height (log-uniform)
TRIES = 10  # torchvision's tries at a crop that fits before it takes the central one


def random_crop_flip(images: torch.Tensor, generator: torch.Generator,
                     pad: int = 4) -> torch.Tensor:
    """Random ``H×W`` crops of the zero-padded images, each mirrored with probability ½.

    ``images`` is uint8 ``(B, C, H, W)`` on the generator's device. Per image the crop's top and
    left offsets into the ``pad``-padded image are uniform in ``[0, 2·pad]`` and the flip is a
    fair coin; they are drawn in that order (rows, columns, flips), one draw each per batch.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    b, c, h, w = images.shape
    device = images.device
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=device)
    flips = torch.rand(b, generator=generator, device=device) < 0.5
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = offsets[0, :, None] + torch.arange(h, device=device)  # (B, H) source rows
    cols = torch.arange(w, device=device)
    cols = torch.where(flips[:, None], cols.flip(0), cols) + offsets[1, :, None]  # (B, W)
    # One flat index per output pixel into each padded channel plane: a single gather does all
    # crops and flips, with no Python per image.
    index = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(b, 1, h * w)
    return padded.flatten(2).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)


def normalize(images: torch.Tensor, mean: Stats, std: Stats,
              channels_last: bool = False) -> torch.Tensor:
    """uint8 images → float32 ``(x/255 - mean) / std`` per channel (``mean``/``std`` in 0..1).

    Pass ``mean``/``std`` as float32 tensors on the images' device to spare a host-to-device
    copy per call; ``channels_last`` gives the memory format cuDNN convolutions prefer.
    """
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device)
    scale = (std * 255.0).reciprocal().view(1, -1, 1, 1)
    shift = (-mean / std).view(1, -1, 1, 1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = images.to(dtype=torch.float32, memory_format=fmt)
    return x.mul_(scale).add_(shift)  # in place on the fresh copy: keeps its memory format


def augmented_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                      generator: torch.Generator, mean: Stats, std: Stats, *, pad: int = 4,
                      channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(x float32, y int64)`` batches: shuffled, cropped, flipped, normalised.

    The order is a permutation drawn from ``generator`` first; the last partial batch is kept,
    so every example is seen exactly once per epoch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = images.device
    mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(std, dtype=torch.float32, device=device)
    order = torch.randperm(len(images), generator=generator, device=device)
    for idx in order.split(batch_size):
        x = random_crop_flip(images[idx], generator, pad)
        yield normalize(x, mean, std, channels_last), labels[idx]


def plain_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean: Stats,
                  std: Stats, *, channels_last: bool = False
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised, unaugmented batches in order (evaluation), the last partial one kept."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device)
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        yield normalize(x, mean, std, channels_last), y


def resized_crop_boxes(n: int, height: int, width: int, generator: torch.Generator,
                       scale: tuple[float, float] = SCALE, ratio: tuple[float, float] = RATIO
                       ) -> torch.Tensor:
    """``n`` RandomResizedCrop boxes in a ``height×width`` image: int64 ``(n, 4)`` rows of
    (top, left, crop height, crop width), on the generator's device.

    Per image this is torchvision's ``RandomResizedCrop.make_params`` (``get_params`` in v1):
    up to ten tries of an area share uniform in ``scale`` and an aspect ratio log-uniform in
    ``ratio``, rounded to whole pixels, the first that fits taken, its position uniform; if none
    fits, the central crop of the image clamped to ``ratio``. The tries are drawn for all images
    at once (shares, then ratios, then positions, all from ``generator``), so nothing syncs.
    """
    device = generator.device
    area = height * width
    u = torch.rand((2, n, TRIES), generator=generator, device=device, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * u[1])
    w = torch.sqrt(target * aspect).round()  # half to even, as Python's round()
    h = torch.sqrt(target / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first try that fits
    found = fits.any(dim=1)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    position = torch.rand((2, n), generator=generator, device=device, dtype=torch.float64)
    top = (position[0] * (height - h + 1)).floor().clamp(max=height - h)  # randint(0, H-h+1)
    left = (position[1] * (width - w + 1)).floor().clamp(max=width - w)
    # The fallback, the same for every image of this shape: the central crop within `ratio`.
    if width / height < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif width / height > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw],
                            dtype=torch.float64, device=device)
    boxes = torch.stack([top, left, h, w], dim=1)
    return torch.where(found[:, None], boxes, fallback).long()


def resize_weights(start: torch.Tensor, length: torch.Tensor, out_size: int, in_size: int
                   ) -> torch.Tensor:
    """float32 ``(B, out_size, in_size)`` matrices that resize the segment ``[start, start +
    length)`` of an ``in_size`` axis to ``out_size`` samples: bilinear interpolation with
    antialiasing, the weights of ``F.interpolate(mode="bilinear", antialias=True)`` (PIL's
    triangle filter widened by the scale factor when shrinking, normalised, clamped to the
    segment's edges) on the crop alone; one matrix per image of the batch."""
    start, length = start.double()[:, None, None], length.double()[:, None, None]
    scale = length / out_size  # source pixels per output pixel
    support = scale.clamp(min=1.0)  # the triangle's half-width in source pixels
    centre = scale * (torch.arange(out_size, dtype=torch.float64, device=start.device)
                      [None, :, None] + 0.5)
    j = torch.arange(in_size, dtype=torch.float64, device=start.device)[None, None, :] - start
    lo = (centre - support + 0.5).floor().clamp(min=0)  # the kernel's window, in the crop
    hi = torch.minimum((centre + support + 0.5).floor(), length)
    w = (1 - ((j - centre + 0.5) / support).abs()).clamp(min=0)
    w = torch.where((j >= lo) & (j < hi), w, 0.0)
    return (w / w.sum(dim=2, keepdim=True)).float()


def random_resized_crop_flip(images: torch.Tensor, generator: torch.Generator, size: int,
                             scale: tuple[float, float] = SCALE,
                             ratio: tuple[float, float] = RATIO) -> torch.Tensor:
    """torchvision's RandomResizedCrop(``size``, ``scale``, ``ratio``) then a horizontal flip
    with probability ½, for a whole batch at once: float32 ``(B, C, size, size)`` in 0..255.

    ``images`` is ``(B, C, H, W)`` (uint8 or float) on the generator's device. The boxes are
    :func:`resized_crop_boxes`', then the flips are drawn. Each crop is resized with
    antialiased bilinear interpolation, torchvision's default, as two batched matrix products
    (rows, then columns, the flip folded into the columns' matrix): no Python per image and
    no host sync. Against torchvision's uint8 ``resized_crop`` of the same box the pixels
    differ by at most one level (its output is rounded to uint8; this is not).
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    b, _, h, w = images.shape
    boxes = resized_crop_boxes(b, h, w, generator, scale, ratio)
    flips = torch.rand(b, generator=generator, device=images.device) < 0.5
    rows = resize_weights(boxes[:, 0], boxes[:, 2], size, h)  # (B, size, H)
    cols = resize_weights(boxes[:, 1], boxes[:, 3], size, w)  # (B, size, W)
    cols = torch.where(flips[:, None, None], cols.flip(1), cols)
    x = images.float()
    return rows[:, None] @ x @ cols.transpose(1, 2)[:, None]


def resized_crop_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                         generator: torch.Generator, mean: Stats, std: Stats, *, size: int,
                         channels_last: bool = False
                         ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(x float32, y int64)`` batches: shuffled, RandomResizedCrop to ``size``
    and flipped (:func:`random_resized_crop_flip`), normalised. As :func:`augmented_batches`:
    the order is a permutation drawn from ``generator`` first, the last partial batch kept."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = images.device
    mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(std, dtype=torch.float32, device=device)
    order = torch.randperm(len(images), generator=generator, device=device)
    for idx in order.split(batch_size):
        x = random_resized_crop_flip(images[idx], generator, size)
        yield normalize(x, mean, std, channels_last), labels[idx]
