"""Streaming an image folder: each training image is decoded again from its file every epoch
and cut with the usual ImageNet recipe (RandomResizedCrop to ``size`` with scale 0.08-1 and
aspect ratio 3/4-4/3, then a horizontal flip with probability ½, torchvision's
``RandomResizedCrop`` exactly, on the whole image at its own resolution), for folders too big
to hold decoded in memory (all of ImageNet: 252 GB as kept at 224 px). Evaluation resizes the
shorter side to ``size``·256/224 (:func:`~lookbench.tasks.imagefolder_data.eval_resize`) and
centre-crops ``size``. The other recipe, ``padded_crop``, streams each image resized to ``size`` and
centre-cropped (:func:`epoch_stream`), and the task crops and flips it on the device.

Randomness: per epoch, a permutation and one base seed are drawn from the trial's generator
(:func:`epoch_plan`); each image's crop and flip come from a ``random.Random`` seeded by
(base seed, the image's index in the folder). So the batches depend on the generator alone,
not on how many threads decode or in which order they finish, and a resumed epoch replays.

Decoding: on the CPU a pool of threads reads, decodes (torchvision.io: libjpeg-turbo, libpng)
and crops-and-resizes whole images, a few batches ahead of the training loop; the loop gets
uint8 batches, which the task moves to its device and normalises there. On CUDA the threads
only read the files and a batch of JPEGs is decoded on the GPU in one call
(``torchvision.io.decode_jpeg(list, device="cuda")``); crop and resize then run on the GPU.
Both go through :func:`decode_batch` and the same view functions, so the CUDA path is the CPU
one with another device (the tests run it with ``device="cpu"``).
"""

from __future__ import annotations

import math
import os
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from lookbench.choices import Pipeline  # noqa: E402,F401 (re-exported)
from lookbench.tasks.augment import RATIO, SCALE
from lookbench.tasks.base import DataUnavailable
from lookbench.tasks.imagefolder_data import (
    CACHE_CLEARERS,
    Augment,
    Split,
    centre_view,
    eval_resize,
    list_split,
    read_rgb,
    stored_sides,
)

PREFETCH = 3  # batches decoded ahead of the one the training loop takes
_JPEG_MAGIC = b"\xff\xd8\xff"

View = Callable[[torch.Tensor, int], torch.Tensor]  # (uint8 (3, H, W), index) -> (3, S, S)


def memory_budget() -> int:
    """Bytes a decoded folder may take in memory before ``pipeline="auto"`` streams it: a
    quarter of the machine's RAM (tests patch this)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (AttributeError, ValueError, OSError):  # not POSIX
        return 4 << 30


def decoded_bytes(images: int, size: int) -> int:
    """Memory of ``images`` decoded uint8 ``(3, size, size)`` images."""
    return images * 3 * size * size


def choose_pipeline(pipeline: Pipeline, root: Path, size: int, classes: int | None = None,
                    per_class: int | None = None, augment: Augment = "padded_crop"
                    ) -> tuple[str, str]:
    """``("memory" | "stream", why)``: ``auto`` keeps the folder decoded in memory when its
    training and validation images, as the memory pipeline keeps them for the recipe
    ``augment`` at ``size`` px (:func:`~lookbench.tasks.imagefolder_data.stored_sides`), fit
    :func:`memory_budget`, else streams. Either way the recipe is the same; only the cost
    differs."""
    if pipeline != "auto":
        return pipeline, "asked for"
    _, splits = list_split(Path(root).expanduser().resolve(), classes, per_class)
    train_side, val_side = stored_sides(augment, size)
    need = (decoded_bytes(len(splits["train"].files), train_side)
            + decoded_bytes(len(splits["val"].files), val_side))
    budget = memory_budget()
    choice = "memory" if need <= budget else "stream"
    return choice, f"decoded at {size} px: {need / 2**30:.1f} GiB, budget {budget / 2**30:.1f} GiB"


def crop_params(seed: int, height: int, width: int) -> tuple[int, int, int, int, bool]:
    """``(top, left, crop height, crop width, flip)`` of one image's training view: torchvision's
    RandomResizedCrop.make_params (ten tries, then the central crop) and a fair coin, drawn
    from ``random.Random(seed)``."""
    rng = random.Random(seed)
    area = height * width
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            break
    else:
        in_ratio = width / height
        if in_ratio < min(RATIO):
            w, h = width, int(round(width / min(RATIO)))
        elif in_ratio > max(RATIO):
            w, h = int(round(height * max(RATIO))), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
    return top, left, h, w, rng.random() < 0.5


def image_seed(base: int, index: int) -> int:
    """The seed of image ``index``'s view in the epoch whose base seed is ``base``."""
    return (base << 32) | index


def train_view(image: torch.Tensor, seed: int, size: int) -> torch.Tensor:
    """An image's training view: a random resized crop to ``size``² (bilinear, antialiased, as
    torchvision's RandomResizedCrop), mirrored or not; on the image's device."""
    from torchvision.transforms.v2 import functional as TF

    top, left, h, w, flip = crop_params(seed, image.shape[-2], image.shape[-1])
    out = TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    return out.flip(-1) if flip else out


def eval_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """An image's evaluation view: its shorter side resized to ``size``·256/224 rounded down
    (antialiased; :func:`~lookbench.tasks.imagefolder_data.eval_resize`), the central ``size``²
    crop: torchvision's Resize + CenterCrop."""
    return centre_view(image, eval_resize(size), size)


def plain_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """An image as the ``padded_crop`` recipe takes it, for training and evaluation alike: its
    shorter side resized to ``size``, the central ``size``² crop."""
    return centre_view(image, size, size)


def evaluation_view(augment: Augment, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The evaluation view of the recipe ``augment``."""
    return (lambda x: eval_view(x, size)) if augment == "resized_crop" else (
        lambda x: plain_view(x, size))


def read_bytes(path: Path) -> torch.Tensor:
    """A file's bytes as a uint8 tensor."""
    from torchvision.io import read_file

    try:
        return read_file(str(path))
    except RuntimeError as e:
        raise DataUnavailable(f"cannot read {path} ({str(e).splitlines()[0]})") from None


def is_jpeg(data: torch.Tensor) -> bool:
    """Whether a file's bytes are a JPEG's."""
    return data.ndim == 1 and bytes(data[:3].tolist()) == _JPEG_MAGIC


def fetch(path: Path) -> torch.Tensor:
    """A file for :func:`decode_batch`: a JPEG's bytes, anything else (PNG) decoded here."""
    data = read_bytes(path)
    return data if is_jpeg(data) else read_rgb(path, data)


def decode_batch(data: Sequence[torch.Tensor], paths: Sequence[Path],
                 device: torch.device | str) -> list[torch.Tensor]:
    """Files' bytes decoded as RGB uint8 ``(3, H, W)`` on ``device``: the JPEGs in one batched
    ``decode_jpeg`` call there (nvJPEG on CUDA; libjpeg-turbo on the CPU, where it equals
    :func:`~lookbench.tasks.imagefolder_data.read_rgb`), anything else (PNG) on the CPU and
    moved; items already decoded (3-D, from :func:`fetch`) are only moved. A file that cannot
    be decoded raises :class:`DataUnavailable` naming it."""
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    jpegs = [i for i, d in enumerate(data) if is_jpeg(d)]
    out: list[torch.Tensor | None] = [None] * len(data)
    if jpegs:
        try:
            decoded = decode_jpeg([data[i] for i in jpegs], mode=ImageReadMode.RGB,
                                  device=device)
            for i, image in zip(jpegs, decoded):
                out[i] = image
        except RuntimeError:
            pass  # one bad (or, for nvJPEG, unsupported) file: the CPU decodes each below
    for i, image in enumerate(out):
        if image is None:
            decoded = data[i] if data[i].ndim == 3 else read_rgb(paths[i], data[i])
            out[i] = decoded.to(device)
    return out  # type: ignore[return-value]


def epoch_plan(n: int, generator: torch.Generator) -> tuple[list[int], int]:
    """An epoch's order of the ``n`` images and its base seed, drawn from ``generator`` on its
    own device (a CUDA generator draws there) and brought to the host."""
    device = generator.device
    order = torch.randperm(n, generator=generator, device=device).tolist()
    base = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
    return order, base


def stream(files: Sequence[Path], order: Sequence[int], batch_size: int, size: int,
           view: View, *, workers: int | None = None, prefetch: int = PREFETCH,
           decode_device: torch.device | str | None = None
           ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(uint8 (B, 3, size, size), int64 indices)`` of ``files`` in ``order``, each
    image decoded and passed through ``view(image, index)``; the last partial batch kept.

    ``workers`` threads (default: torch's intra-op threads, at least 2) read ahead up to
    ``prefetch`` batches. Without ``decode_device`` they also decode and view each image, and
    the batches are on the CPU; with it they only read the JPEGs (decoding other files), and
    :func:`decode_batch` decodes each batch's JPEGs on that device, where the views run too.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = workers or max(2, torch.get_num_threads())
    chunks = [list(order[k:k + batch_size]) for k in range(0, len(order), batch_size)]

    def one(out: torch.Tensor, j: int, i: int) -> None:
        out[j] = view(read_rgb(files[i]), i)

    def submit(pool: ThreadPoolExecutor, idx: list[int]
               ) -> tuple[list[int], torch.Tensor | None, list[Future]]:
        if decode_device is not None:
            return idx, None, [pool.submit(fetch, files[i]) for i in idx]
        out = torch.empty((len(idx), 3, size, size), dtype=torch.uint8)
        return idx, out, [pool.submit(one, out, j, i) for j, i in enumerate(idx)]

    # Threads, not DataLoader worker processes: the decoders and the resize release the GIL,
    # and on 2 cores the threads were measured faster (no pickling of batches between
    # processes, no worker start-up each epoch); see benchmarks/image_pipeline.py.
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lookbench-decode")
    pending: deque = deque()
    try:
        for chunk in chunks[:prefetch + 1]:
            pending.append(submit(pool, chunk))
        for next_chunk in [*chunks[prefetch + 1:], *[None] * min(len(chunks), prefetch + 1)]:
            idx, out, futures = pending.popleft()
            results = [f.result() for f in futures]  # re-raises a worker's DataUnavailable
            if next_chunk is not None:
                pending.append(submit(pool, next_chunk))
            if out is None:
                paths = [files[i] for i in idx]
                images = decode_batch(results, paths, decode_device)  # type: ignore[arg-type]
                out = torch.stack([view(image, i) for image, i in zip(images, idx)])
            yield out, torch.tensor(idx, dtype=torch.int64)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def train_stream(files: Sequence[Path], labels: torch.Tensor, size: int, batch_size: int,
                 generator: torch.Generator, **kwargs) -> Iterator[tuple[torch.Tensor,
                                                                        torch.Tensor]]:
    """One epoch of ``(uint8 training views, int64 labels)`` batches, shuffled; everything
    random drawn from ``generator`` (:func:`epoch_plan`). ``kwargs`` go to :func:`stream`."""
    order, base = epoch_plan(len(files), generator)

    def view(image: torch.Tensor, i: int) -> torch.Tensor:
        return train_view(image, image_seed(base, i), size)

    for x, idx in stream(files, order, batch_size, size, view, **kwargs):
        yield x, labels[idx]


def epoch_stream(files: Sequence[Path], labels: torch.Tensor, size: int, batch_size: int,
                 generator: torch.Generator, **kwargs) -> Iterator[tuple[torch.Tensor,
                                                                        torch.Tensor]]:
    """One epoch of ``(uint8 images, int64 labels)`` batches in the order :func:`epoch_plan`
    draws from ``generator``, each image as :func:`plain_view` takes it (no randomness per
    image): the ``padded_crop`` recipe's stream, whose crop and flip the caller draws on the
    device from the same generator. ``kwargs`` go to :func:`stream`."""
    order, _ = epoch_plan(len(files), generator)
    for x, idx in stream(files, order, batch_size, size,
                         lambda image, i: plain_view(image, size), **kwargs):
        yield x, labels[idx]


def eval_stream(files: Sequence[Path], labels: torch.Tensor, size: int, batch_size: int, *,
                augment: Augment = "resized_crop", **kwargs
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(uint8 evaluation views, int64 labels)`` batches of ``files`` in order, as the recipe
    ``augment`` evaluates (:func:`evaluation_view`)."""
    view = evaluation_view(augment, size)
    for x, idx in stream(files, range(len(files)), batch_size, size,
                         lambda image, i: view(image), **kwargs):
        yield x, labels[idx]


@dataclass(frozen=True)
class StreamFolder:
    """A folder listed for streaming: the files and labels per split, and the validation set's
    evaluation views decoded once (``val_x``) where they fit the memory budget, else ``None``
    (then streamed at each evaluation)."""

    classes: list[str]
    train: Split
    val: Split
    train_y: torch.Tensor
    val_y: torch.Tensor
    val_x: torch.Tensor | None


_CACHE: dict[tuple, StreamFolder] = {}


def load_stream_folder(root: Path, size: int, classes: int | None = None,
                       per_class: int | None = None, *, augment: Augment = "resized_crop"
                       ) -> StreamFolder:
    """The folder listed (and its validation set decoded as the recipe ``augment`` evaluates,
    if it fits), cached per process."""
    root = Path(root).expanduser().resolve()
    key = (root, size, classes, per_class, augment)
    if key not in _CACHE:
        names, splits = list_split(root, classes, per_class)
        train, val = splits["train"], splits["val"]
        val_y = torch.tensor(val.labels, dtype=torch.int64)
        # The validation set is decoded once and kept (uint8, on the host) when it fits the
        # budget: it is evaluated after every epoch, is small beside the training set
        # (ImageNet's 50k images: 7.5 GB at 224 px against 190 GB) and has no randomness, so
        # decoding it again each epoch would only cost time. A validation set too big for
        # the budget is streamed at each evaluation instead.
        val_x = None
        if decoded_bytes(len(val.files), size) <= memory_budget():
            val_x = torch.empty((len(val.files), 3, size, size), dtype=torch.uint8)
            start = 0
            for x, _ in eval_stream(val.files, val_y, size, 256, augment=augment):
                val_x[start:start + len(x)] = x
                start += len(x)
        _CACHE[key] = StreamFolder(names, train, val,
                                   torch.tensor(train.labels, dtype=torch.int64), val_y, val_x)
    return _CACHE[key]


def clear_cache() -> None:
    """Forget every listed folder (also done by ``imagefolder_data.clear_cache``)."""
    _CACHE.clear()


CACHE_CLEARERS.append(clear_cache)
