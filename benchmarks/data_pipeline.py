"""Images per second of lookbench's device-side CIFAR pipeline against torchvision's standard one.

Both produce the paper's training batches (zero-pad 4, random 32×32 crop, horizontal flip with
probability ½, per-channel normalisation; batches of 128, shuffled) from 50,000 random uint8
CIFAR-shaped images:

* lookbench: the whole set as one uint8 tensor on the device (CUDA when present, else this
  CPU), a full epoch of ``lookbench.tasks.augment.augmented_batches``.
* torchvision: a Dataset doing what ``torchvision.datasets.CIFAR10.__getitem__`` does
  (``PIL.Image.fromarray`` of an HWC array, then ``Compose([RandomCrop(32, padding=4),
  RandomHorizontalFlip(), ToTensor(), Normalize(mean, std)])``) in a
  ``DataLoader(batch_size=128, shuffle=True, num_workers=2)``. Timed on the first
  ``--tv-batches`` batches of each epoch only (it is the slow side), and from the second batch
  on, so worker start-up is not counted: a best case for torchvision.

The two are timed alternately, ``--rounds`` times, so machine noise hits both alike; the median
rates and their ratio are printed against the goal (lookbench at least 10x faster).

Usage: python benchmarks/data_pipeline.py [--rounds 3] [--tv-batches 100] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from lookbench.tasks.augment import augmented_batches
from lookbench.tasks.cifar import CIFAR10_MEAN, CIFAR10_STD

N_IMAGES = 50_000
BATCH = 128
GOAL = 10.0


class TorchvisionStyleCifar(Dataset):
    """What ``torchvision.datasets.CIFAR10`` does per item, minus reading the files."""

    def __init__(self, data_hwc: np.ndarray, targets: list[int]) -> None:
        self.data = data_hwc
        self.targets = targets
        self.transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ])

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.data[index])
        return self.transform(img), self.targets[index]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_lookbench(images: torch.Tensor, labels: torch.Tensor, seed: int) -> float:
    """Images per second over one full epoch, including the last partial batch."""
    g = torch.Generator(device=images.device)
    g.manual_seed(seed)
    sync(images.device)
    start = time.perf_counter()
    n = 0
    for x, y in augmented_batches(images, labels, BATCH, g, CIFAR10_MEAN, CIFAR10_STD,
                                  channels_last=images.device.type == "cuda"):
        n += len(y)
    sync(images.device)
    return n / (time.perf_counter() - start)


def time_torchvision(loader: DataLoader, batches: int) -> float:
    """Images per second over ``batches`` batches, after the first (worker start-up) one."""
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        x, y = next(it)
        n += len(y)
    elapsed = time.perf_counter() - start
    del it  # shuts the workers down before the other side is timed
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tv-batches", type=int, default=100,
                        help="torchvision batches timed per round (a fraction of an epoch)")
    parser.add_argument("--device", default="auto", help="lookbench's side: auto, cpu or cuda")
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)

    rng = np.random.default_rng(0)
    data_chw = rng.integers(0, 256, (N_IMAGES, 3, 32, 32), dtype=np.uint8)
    targets = rng.integers(0, 10, N_IMAGES)
    images = torch.from_numpy(data_chw).to(device)
    labels = torch.from_numpy(targets).to(device)
    dataset = TorchvisionStyleCifar(np.ascontiguousarray(data_chw.transpose(0, 2, 3, 1)),
                                    targets.tolist())
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=2)
    tv_batches = min(args.tv_batches, len(loader) - 1)

    print(f"lookbench on {device} ({torch.get_num_threads()} CPU threads), torchvision on the CPU "
          f"with 2 workers; {N_IMAGES:,} images, batches of {BATCH}")
    print(f"torchvision timed on {tv_batches} of {len(loader)} batches per epoch "
          f"({tv_batches * BATCH / N_IMAGES:.0%}), worker start-up excluded")
    time_lookbench(images, labels, seed=12345)  # warm-up: allocator, kernels
    ours, theirs = [], []
    for r in range(args.rounds):
        ours.append(time_lookbench(images, labels, seed=r))
        theirs.append(time_torchvision(loader, tv_batches))
        print(f"  round {r + 1}: lookbench {ours[-1]:>10,.0f} img/s   "
              f"torchvision {theirs[-1]:>8,.0f} img/s")
    a, b = statistics.median(ours), statistics.median(theirs)
    for name, rate in (("lookbench", a), ("torchvision", b)):
        print(f"{name:<11} {rate:>10,.0f} images/s (median; {N_IMAGES / rate:.2f} s per epoch)")
    verdict = "met" if a / b >= GOAL else "NOT met"
    print(f"ratio {a / b:.1f}x (goal: at least {GOAL:.0f}x) -> {verdict}")


if __name__ == "__main__":
    main()
