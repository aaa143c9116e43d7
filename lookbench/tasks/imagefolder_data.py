"""Reading a class-per-subfolder image folder (``train/<class>/*.jpg``, ``val/<class>/*.png``:
ImageNet after the usual re-foldering of its validation set, or a folder of your own photos)
into uint8 tensors, decoded once per process.

A trial's epochs then cost no decoding at all: the images sit on the device as one uint8
tensor and are augmented there in batches (``lookbench.tasks.augment``), as the CIFAR tasks
do. Decoding is torchvision's (libjpeg-turbo, libpng), resized with antialiasing and
centre-cropped to a square, on a pool of threads (the decoders and the resize release the GIL).
What is kept depends on the recipe (the task's ``augment`` option, :func:`stored_sides`):

* ``resized_crop`` (ImageNet's): each training image's shorter side resized to
  :func:`eval_resize` (``image_size``·256/224, 256 px at 224) and its central square of that side
  kept, from which every epoch cuts RandomResizedCrops on the device; each validation image as
  evaluation sees it, Resize(``image_size``·256/224) + CenterCrop(``image_size``), exactly
  torchvision's. The one deviation from torchvision's recipe: the training crops come from the
  image's central square at 256/224·``image_size`` px, not from the whole image at its own
  resolution (see ``lookbench.tasks.imagefolder``).
* ``padded_crop`` (CIFAR's, for small already-framed images): both splits at ``image_size``
  (shorter side resized to it, centre crop), padded crops cut from that.

The decoded set must fit in memory: at 64 px an image is 12 kB, at 224 px 150 kB, its
training square at 256 px 197 kB (ImageNet's 1.28 M training images would need 252 GB); a
folder that does not is streamed instead, with the same recipe (``lookbench.tasks.image_stream``,
the task's ``pipeline`` option).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from lookbench.tasks.base import DataUnavailable

EXTENSIONS = (".jpg", ".jpeg", ".png")
# torchvision 0.29 (the newest this project's pins allow) deprecates its image decoders in
# favour of TorchCodec; they work, and one warning per decoded image would drown the output.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of "
                        "TorchVision are deprecated", category=DeprecationWarning)
from lookbench.choices import Augment  # noqa: E402,F401 (re-exported)
from lookbench.tasks.layout import SPLITS, find_image_folder, layout_hint  # noqa: E402


def eval_resize(size: int) -> int:
    """The shorter side evaluation resizes an image to before its central ``size``² crop:
    ``size``·256/224 rounded down (256 at 224 px, the reference's Resize(256) + CenterCrop(224);
    146 at 128 px), as timm's ``floor(size / crop_pct)`` with crop_pct 0.875."""
    return size * 256 // 224


def stored_sides(augment: Augment, size: int) -> tuple[int, int]:
    """The side of a training and of a validation image as the memory pipeline keeps them
    for the recipe ``augment`` at ``size`` px (see the module's docstring)."""
    return (eval_resize(size), size) if augment == "resized_crop" else (size, size)


@dataclass(frozen=True)
class Split:
    """One split's files and labels, in a fixed order (classes sorted, files sorted)."""

    files: list[Path]
    labels: list[int]


@dataclass(frozen=True)
class ImageFolderArrays:
    """A decoded folder: uint8 ``(N, 3, S, S)`` images and int64 labels per split (``S`` per
    split as :func:`stored_sides` says)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: list[str]


_LISTINGS: dict[tuple, tuple[list[str], dict[str, Split]]] = {}


def list_split(root: Path, classes: int | None = None, per_class: int | None = None
               ) -> tuple[list[str], dict[str, Split]]:
    """The class names and each split's files: the first ``classes`` classes (sorted by name)
    and the first ``per_class`` images of each (sorted), for budget runs. Raises
    :class:`DataUnavailable` saying what was expected where. Cached per process (listing
    ImageNet's 1.3 M files takes seconds)."""
    key = (Path(root).expanduser().resolve(), classes, per_class)
    if key not in _LISTINGS:
        _LISTINGS[key] = _list_split(Path(root), classes, per_class)
    return _LISTINGS[key]


def _list_split(root: Path, classes: int | None, per_class: int | None
                ) -> tuple[list[str], dict[str, Split]]:
    find_image_folder(root)
    found = {split: sorted(p.name for p in (root / split).iterdir() if p.is_dir())
             for split in SPLITS}
    if not found["train"]:
        raise DataUnavailable(f"{root / 'train'} has no class folders: {layout_hint(root)}")
    if found["train"] != found["val"]:
        only = sorted(set(found["train"]) ^ set(found["val"]))
        raise DataUnavailable(f"train/ and val/ in {root} hold different classes (e.g. "
                              f"{only[0]!r}): {layout_hint(root)}")
    names = found["train"][:classes]
    splits = {}
    for split in SPLITS:
        files: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(names):
            images = sorted(p for p in (root / split / name).iterdir()
                            if p.suffix.lower() in EXTENSIONS)[:per_class]
            if not images:
                raise DataUnavailable(f"{root / split / name} holds no .jpg/.jpeg/.png image")
            files += images
            labels += [label] * len(images)
        splits[split] = Split(files, labels)
    return names, splits


def read_rgb(path: Path, data: torch.Tensor | None = None) -> torch.Tensor:
    """One image decoded as RGB uint8 ``(3, H, W)`` from ``path`` (or from its bytes ``data``,
    already read); a file that cannot be decoded raises :class:`DataUnavailable` naming it."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        return decode_image(read_file(str(path)) if data is None else data,
                            mode=ImageReadMode.RGB)
    except RuntimeError as e:
        raise DataUnavailable(f"cannot decode {path} ({str(e).splitlines()[0]})") from None


def centre_view(image: torch.Tensor, resize: int, crop: int, inner: int | None = None
                ) -> torch.Tensor:
    """``image``'s shorter side resized to ``resize`` (antialiased bilinear), then the central
    ``crop``² square: torchvision's Resize(resize) + CenterCrop(crop). With ``inner`` (≤ crop),
    the square is placed so that its own central ``inner``² crop is exactly Resize(resize) +
    CenterCrop(inner)'s (torchvision rounds each centring, so a crop of a crop could land a
    pixel off; this one is at most a pixel off the centre instead)."""
    from torchvision.transforms.v2 import functional as TF

    image = TF.resize(image, resize, antialias=True)
    if inner is None:
        return TF.center_crop(image, [crop, crop])
    h, w = image.shape[-2:]

    def start(n: int) -> int:  # torchvision's centring of inner in n, less inner's in crop
        return min(max(0, round((n - inner) / 2) - round((crop - inner) / 2)), n - crop)

    top, left = start(h), start(w)
    return image[..., top:top + crop, left:left + crop]


def decode(path: Path, size: int) -> torch.Tensor:
    """One image as uint8 ``(3, size, size)``: decoded as RGB, its shorter side resized to
    ``size`` (antialiased), centre-cropped."""
    return centre_view(read_rgb(path), size, size)


def decode_all(files: list[Path], size: int, threads: int | None = None,
               view: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Every file decoded into one uint8 ``(N, 3, size, size)`` tensor, on a thread pool:
    passed through ``view`` (an RGB image to ``(3, size, size)``), by default :func:`decode`'s
    resize to ``size`` and centre crop."""
    out = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    threads = threads or min(32, os.cpu_count() or 1)
    view = view or (lambda image: centre_view(image, size, size))

    def one(i: int) -> None:
        out[i] = view(read_rgb(files[i]))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, range(len(files))))
    return out


def views(augment: Augment, size: int) -> dict[str, tuple[int, Callable[[torch.Tensor],
                                                                          torch.Tensor]]]:
    """Per split, the side and the view the memory pipeline keeps for the recipe ``augment``
    at ``size`` px: ``resized_crop`` keeps the training square its crops are cut from and the
    validation images as evaluated; ``padded_crop`` both at ``size``."""
    train_side, _ = stored_sides(augment, size)
    if augment == "resized_crop":
        return {"train": (train_side, lambda x: centre_view(x, train_side, train_side, size)),
                "val": (size, lambda x: centre_view(x, eval_resize(size), size))}
    plain = (size, lambda x: centre_view(x, size, size))
    return {"train": plain, "val": plain}


_CACHE: dict[tuple, ImageFolderArrays] = {}


def load_image_folder(root: Path, size: int, classes: int | None = None,
                      per_class: int | None = None, *, augment: Augment = "padded_crop"
                      ) -> ImageFolderArrays:
    """The folder decoded for the recipe ``augment`` at ``size`` px (:func:`views`; the
    default keeps both splits at ``size``), cached per process (the trials of one worker decode
    it once)."""
    root = Path(root).expanduser().resolve()
    key = (root, size, classes, per_class, augment)
    if key not in _CACHE:
        names, splits = list_split(root, classes, per_class)
        torch_threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)  # the pool's threads decode in parallel instead
            arrays = {s: decode_all(splits[s].files, side, view=view)
                      for s, (side, view) in views(augment, size).items()}
        finally:
            torch.set_num_threads(torch_threads)
        _CACHE[key] = ImageFolderArrays(
            arrays["train"], torch.tensor(splits["train"].labels, dtype=torch.int64),
            arrays["val"], torch.tensor(splits["val"].labels, dtype=torch.int64), names)
    return _CACHE[key]


# What other pipelines keep of a folder (the stream's listings), cleared with this module's:
# they register here, so this module, which they read, does not import them back.
CACHE_CLEARERS: list[Callable[[], None]] = []


def clear_cache() -> None:
    """Forget every decoded or listed folder (tests; or to free memory)."""
    _CACHE.clear()
    _LISTINGS.clear()
    for clear in CACHE_CLEARERS:
        clear()
