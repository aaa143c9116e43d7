"""Batched image augmentation on the device: the paper's CIFAR pipeline without a DataLoader.

The standard torchvision pipeline crops, flips and normalises one PIL image at a time in worker
processes (~266 µs per image on the development CPU, i.e. a 50k-image epoch costs ~13 s of CPU
before the model sees a batch). Here the whole training set sits on the device as one uint8
tensor and each batch is augmented by a handful of tensor ops: one gather with per-image index
grids does every crop and flip at once. All randomness comes from the ``generator`` passed in,
so an epoch replays exactly from the generator's seed (what a resumed trial needs).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

Stats = Sequence[float] | torch.Tensor


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
