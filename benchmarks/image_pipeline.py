"""Images per second of lookbench's image-folder pipeline against torchvision's standard one,
on the same folder of JPEGs and the same CPU cores.

The folder: ``--images`` JPEGs of 10 classes, 256×192 pixels (a photo's shape), written once to
a temporary folder. Both sides turn it into shuffled, normalised training batches of
``--size``-pixel images with a random padded crop and a horizontal flip:

* torchvision: ``datasets.ImageFolder`` with ``Compose([Resize(size), CenterCrop(size),
  RandomCrop(size, padding=size // 8), RandomHorizontalFlip(), ToTensor(), Normalize])`` in a
  ``DataLoader(batch_size=64, shuffle=True, num_workers=<cores>)``: every epoch decodes every
  file again (PIL).
* lookbench: ``load_image_folder`` decodes the folder once (torchvision.io on a thread pool, at
  ``size`` px) and ``augmented_batches`` crops, flips and normalises batches of the uint8 tensor.

Printed: images/s of the first epoch (lookbench's includes decoding the whole folder) and of a
later epoch, and the ratio over an ``--epochs``-epoch run (what a trial costs). The sides run
alternately ``--rounds`` times, so machine noise hits both alike; the medians are compared
against the goal (at least 3× over the run).

Then the streaming pipeline (``-o pipeline=stream``, the ImageNet recipe at full scale), on the
same folder at ``--stream-size`` px, where both sides decode every image every epoch:

* torchvision: ``ImageFolder`` with ``Compose([RandomResizedCrop(size), RandomHorizontalFlip(),
  ToTensor(), Normalize])`` (PIL) in a ``DataLoader(batch_size=64, shuffle=True,
  num_workers=<cores>, persistent_workers=True)``.
* lookbench: ``image_stream.train_stream`` (torchvision.io decode + RandomResizedCrop + flip on
  ``<cores>`` threads, uint8 batches) and ``normalize``, all on the CPU, torch at 1 intra-op
  thread as a study's CPU worker runs.

Printed: images/s of each side's first epoch (the DataLoader's includes starting its workers)
and of its later epochs, alternating ``--rounds`` times, and the ratio of the later epochs.

Usage: python benchmarks/image_pipeline.py [--images 2000] [--size 64] [--epochs 10] [--rounds 3]
                                           [--stream-size 224] [--stream-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.io import encode_jpeg

from lookbench.tasks.augment import augmented_batches, normalize
from lookbench.tasks.image_stream import train_stream
from lookbench.tasks.imagefolder import IMAGENET_MEAN, IMAGENET_STD
from lookbench.tasks.imagefolder_data import clear_cache, list_split, load_image_folder

BATCH = 64
GOAL = 3.0


def write_folder(root: Path, n: int) -> None:
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        for split in ("train", "val"):
            folder = root / split / f"class{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            if split == "val" and i >= 10:
                continue
            # smooth content compresses like a photo (noise would make huge JPEGs)
            base = torch.randint(0, 256, (3, 12, 16), generator=g, dtype=torch.uint8)
            img = torch.nn.functional.interpolate(base[None].float(), size=(192, 256),
                                                  mode="bilinear")[0].to(torch.uint8)
            (folder / f"{i:06d}.jpg").write_bytes(encode_jpeg(img, quality=90).numpy().tobytes())


def torchvision_epoch(loader: DataLoader) -> float:
    start = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - start)


def lookbench_epoch(x: torch.Tensor, y: torch.Tensor, size: int, epoch: int) -> float:
    start = time.perf_counter()
    g = torch.Generator().manual_seed(epoch)
    n = 0
    for xb, _ in augmented_batches(x, y, BATCH, g, IMAGENET_MEAN, IMAGENET_STD, pad=size // 8):
        n += len(xb)
    return n / (time.perf_counter() - start)


def stream_epoch(files: list[Path], labels: torch.Tensor, size: int, epoch: int,
                 workers: int) -> float:
    start = time.perf_counter()
    g = torch.Generator().manual_seed(epoch)
    n = 0
    for xb, _ in train_stream(files, labels, size, BATCH, g, workers=workers):
        n += len(normalize(xb, IMAGENET_MEAN, IMAGENET_STD))
    return n / max(time.perf_counter() - start, 1e-9)


def compare_stream(root: Path, size: int, rounds: int, cores: int) -> None:
    """The streaming pipeline against torchvision's RandomResizedCrop pipeline, every epoch
    decoding every file on both sides."""
    tf = transforms.Compose([
        transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    dataset = datasets.ImageFolder(str(root / "train"), transform=tf)
    _, splits = list_split(root)
    files = splits["train"].files
    labels = torch.tensor(splits["train"].labels, dtype=torch.int64)
    tv_first, tv_later, lb_first, lb_later, ratios = [], [], [], [], []
    threads = torch.get_num_threads()
    for r in range(rounds):
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=cores,
                            persistent_workers=True)
        tv_first.append(torchvision_epoch(loader))
        tv_later.append(torchvision_epoch(loader))
        del loader
        torch.set_num_threads(1)
        try:
            lb_first.append(stream_epoch(files, labels, size, 2 * r, cores))
            lb_later.append(stream_epoch(files, labels, size, 2 * r + 1, cores))
        finally:
            torch.set_num_threads(threads)
        ratios.append(lb_later[-1] / tv_later[-1])
    med = statistics.median
    spread = (max(ratios) - min(ratios)) / med(ratios)
    print(f"streaming, RandomResizedCrop({size}) + flip, every epoch decoding all "
          f"{len(files)} files, {cores} CPU cores, {rounds} alternating rounds (medians)")
    print(f"  torchvision ImageFolder + DataLoader({cores} workers, PIL): first epoch "
          f"{med(tv_first):,.0f} img/s, later epochs {med(tv_later):,.0f} img/s")
    print(f"  lookbench image_stream ({cores} threads, torchvision.io):   first epoch "
          f"{med(lb_first):,.0f} img/s, later epochs {med(lb_later):,.0f} img/s")
    print(f"  later epochs: lookbench {med(ratios):.2f}x torchvision "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}x)")
    if spread > 0.3:
        print(f"  note: the ratio varied by {spread:.0%} across rounds (a busy machine): "
              f"differences within that are noise")


def compare_memory(root: Path, args: argparse.Namespace, cores: int) -> None:
    """Decode-once + device batches against torchvision's per-epoch decoding."""
    tf = transforms.Compose([
        transforms.Resize(args.size), transforms.CenterCrop(args.size),
        transforms.RandomCrop(args.size, padding=args.size // 8),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    dataset = datasets.ImageFolder(str(root / "train"), transform=tf)
    tv_first, tv_later, lb_first, lb_later, run_ratios = [], [], [], [], []
    for _ in range(args.rounds):
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=cores,
                            persistent_workers=False)
        tv_first.append(torchvision_epoch(loader))  # includes starting the workers
        tv_later.append(torchvision_epoch(loader))
        clear_cache()
        start = time.perf_counter()
        arrays = load_image_folder(root, args.size)
        decode_s = time.perf_counter() - start
        n = len(arrays.train_x)
        later = lookbench_epoch(arrays.train_x, arrays.train_y, args.size, 0)
        lb_first.append(n / (decode_s + n / later))
        lb_later.append(lookbench_epoch(arrays.train_x, arrays.train_y, args.size, 1))
        # a trial of --epochs epochs: torchvision decodes every epoch, lookbench once
        tv_run = n / tv_first[-1] + (args.epochs - 1) * n / tv_later[-1]
        lb_run = n / lb_first[-1] + (args.epochs - 1) * n / lb_later[-1]
        run_ratios.append(tv_run / lb_run)
    med = statistics.median
    spread = (max(run_ratios) - min(run_ratios)) / med(run_ratios)
    print(f"{args.images} JPEGs 256x192 -> {args.size}px batches of {BATCH}, {cores} CPU cores, "
          f"{args.rounds} alternating rounds (medians)")
    print(f"  torchvision ImageFolder + DataLoader({cores} workers): first epoch "
          f"{med(tv_first):,.0f} img/s, later epochs {med(tv_later):,.0f} img/s")
    print(f"  lookbench decode-once + device batches:        first epoch "
          f"{med(lb_first):,.0f} img/s, later epochs {med(lb_later):,.0f} img/s")
    print(f"  first epoch ratio {med(lb_first) / med(tv_first):.2f}x; later epochs "
          f"{med(lb_later) / med(tv_later):.1f}x")
    verdict = "meets" if med(run_ratios) >= GOAL else "misses"
    if spread > 0.5:
        print(f"  note: the run ratio varied by {spread:.0%} across rounds (a busy machine)")
    print(f"  a {args.epochs}-epoch trial: lookbench {med(run_ratios):.1f}x faster "
          f"(range {min(run_ratios):.1f}-{max(run_ratios):.1f}x); {verdict} the goal of "
          f"{GOAL:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stream-size", type=int, default=224)
    parser.add_argument("--stream-only", action="store_true", help="skip the decode-once part")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder(root, args.images)
        if not args.stream_only:
            compare_memory(root, args, cores)
        compare_stream(root, args.stream_size, args.rounds, cores)


if __name__ == "__main__":
    main()
