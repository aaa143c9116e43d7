"""CIFAR-10/100 read straight from the official python-pickle folders into uint8 tensors.

torchvision's ``CIFAR10``/``CIFAR100`` classes md5-check every file on each load and build a
list of PIL-ready arrays; lookbench needs one ``(N, 3, 32, 32)`` uint8 tensor it can move to the
device once, and must accept any folder in the official layout (e.g. the small ones the tests
write). So this module reads the pickles itself and uses torchvision only to download.

Layout (as extracted from the official tarballs), under ``data_dir`` (default
``~/.cache/lookbench/data``, see :data:`DEFAULT_DATA_DIR`):

* ``cifar-10-batches-py/``: ``data_batch_1`` … ``data_batch_5``, ``test_batch``,
  ``batches.meta`` (``b"label_names"``); each batch a dict with ``b"data"`` (n×3072 uint8,
  each row one image in CHW order) and ``b"labels"``.
* ``cifar-100-python/``: ``train``, ``test``, ``meta`` (``b"fine_label_names"``); labels in
  ``b"fine_labels"``.

The pickles were written by Python 2, so they are loaded with ``encoding="bytes"`` (bytes keys),
through an unpickler that admits only the few numpy globals an array needs: a data file cannot
run code. Every problem with a folder (missing or truncated file, wrong keys, sizes or labels)
becomes :class:`~lookbench.tasks.base.DataUnavailable` with a one-line message naming the file.
"""

from __future__ import annotations

import codecs
import pickle
import socket
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from lookbench.choices import CifarName  # noqa: E402,F401 (re-exported)
from lookbench.tasks.base import DataUnavailable

DEFAULT_DATA_DIR = Path("~/.cache/lookbench/data")
"""Where data sets live when no ``--data-dir`` is given (``~`` expanded at load time)."""

DOWNLOAD_TIMEOUT_S = 30.0
"""Socket timeout during a download: an offline machine fails fast instead of hanging."""

IMAGE_SHAPE = (3, 32, 32)
_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class _Spec:
    """Where one data set's files are and what their entries are called."""

    title: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    url: str
    torchvision_class: str


_SPECS: dict[str, _Spec] = {
    "cifar10": _Spec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        torchvision_class="CIFAR10",
    ),
    "cifar100": _Spec(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        torchvision_class="CIFAR100",
    ),
}


@dataclass(frozen=True)
class CifarArrays:
    """A whole CIFAR data set as CPU tensors (shared through the cache: do not modify)."""

    train_x: torch.Tensor  # uint8 (N, 3, 32, 32)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]


_CACHE: dict[tuple[str, Path], CifarArrays] = {}


def load_cifar(name: CifarName, data_dir: Path | None = None,
               download: bool = True) -> CifarArrays:
    """CIFAR-10 or CIFAR-100 from ``data_dir`` (downloading it there if absent and allowed).

    ``data_dir`` is the folder that *contains* ``cifar-10-batches-py``/``cifar-100-python``
    (the data set folder itself is accepted too); ``None`` means :data:`DEFAULT_DATA_DIR`.
    Results are cached per process, so the trials of one worker read the files once.
    """
    spec = _spec(name)
    root = Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR).expanduser().resolve()
    folder = root if root.name == spec.folder else root / spec.folder
    key = (name, folder)
    if key not in _CACHE:
        if not folder.is_dir():
            parent = folder.parent
            if not download:
                raise DataUnavailable(
                    f"{spec.title} not found in {parent}: {_where_to_put(spec, parent)}")
            _download(spec, parent)
        _CACHE[key] = _read_folder(spec, folder)
    return _CACHE[key]


def clear_cache() -> None:
    """Forget every loaded data set (tests; or to free memory)."""
    _CACHE.clear()


def write_synthetic_cifar(root: Path, name: CifarName, n_train: int, n_test: int,
                          seed: int = 0) -> Path:
    """Write random images in the official on-disk layout under ``root`` (for benchmarks and
    end-to-end tests on a machine without the data set); returns the data set's folder.

    The files are the same pickled dicts the official archives hold (protocol 2, bytes keys),
    so ``load_cifar`` reads them through exactly the path real data takes.
    """
    spec = _spec(name)
    folder = Path(root) / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def dump(path: Path, entry: dict[bytes, Any]) -> None:
        with open(path, "wb") as f:
            pickle.dump(entry, f, protocol=2)

    def batch(n: int, label: str) -> dict[bytes, Any]:
        return {
            b"batch_label": label.encode(),
            spec.label_key: rng.integers(0, spec.num_classes, n).tolist(),
            b"data": rng.integers(0, 256, (n, _PIXELS), dtype=np.uint8),
            b"filenames": [f"synthetic_{i}.png".encode() for i in range(n)],
        }

    per_file = -(-n_train // len(spec.train_files))
    for i, file in enumerate(spec.train_files):
        dump(folder / file, batch(max(0, min(per_file, n_train - i * per_file)), f"train {i}"))
    dump(folder / spec.test_file, batch(n_test, "test"))
    names = [f"class_{i}".encode() for i in range(spec.num_classes)]
    dump(folder / spec.meta_file, {spec.names_key: names})
    return folder


def _spec(name: str) -> _Spec:
    try:
        return _SPECS[name]
    except KeyError:
        known = ", ".join(_SPECS)
        raise ValueError(f"unknown CIFAR data set {name!r}; choose one of {known}") from None


def _where_to_put(spec: _Spec, root: Path) -> str:
    return (f"put the folder {spec.folder} (extracted from {spec.url}) in {root}, "
            f"or pass --data-dir DIR for a folder that contains it")


def _download(spec: _Spec, root: Path) -> None:
    """Fetch and extract with torchvision's own class (its URL and md5), failing fast offline."""
    from torchvision import datasets

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        getattr(datasets, spec.torchvision_class)(root=str(root), train=True, download=True)
    except (OSError, RuntimeError, tarfile.TarError) as exc:  # URLError/timeouts are OSErrors
        raise DataUnavailable(
            f"{spec.title} not found in {root} and the download failed ({_oneline(exc)}): "
            f"{_where_to_put(spec, root)}"
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)


def _read_folder(spec: _Spec, folder: Path) -> CifarArrays:
    train_x, train_y = _read_split(spec, [folder / f for f in spec.train_files])
    test_x, test_y = _read_split(spec, [folder / spec.test_file])
    classes = _read_classes(spec, folder / spec.meta_file)
    return CifarArrays(train_x, train_y, test_x, test_y, classes)


def _read_split(spec: _Spec, paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of some batch files, as one tensor each (one copy, no per-image work)."""
    batches = [_read_batch(spec, path) for path in paths]
    images = np.concatenate([data for data, _ in batches]).reshape(-1, *IMAGE_SHAPE)
    labels = np.concatenate([labels for _, labels in batches])
    return torch.from_numpy(images), torch.from_numpy(labels)


def _read_batch(spec: _Spec, path: Path) -> tuple[np.ndarray, np.ndarray]:
    entry = _unpickle(spec, path)
    data = _entry(spec, entry, b"data", path)
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != _PIXELS or len(data) == 0):
        raise _broken(spec, path, f"b'data' should be a non-empty uint8 array of shape "
                                  f"(n, {_PIXELS}), got {_describe(data)}")
    try:
        labels = np.asarray(_entry(spec, entry, spec.label_key, path), dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _broken(spec, path, f"{spec.label_key!r} is not a list of integers ({exc})") from exc
    if labels.shape != (len(data),):
        raise _broken(spec, path,
                      f"{labels.size} labels in {spec.label_key!r} for {len(data)} images")
    if labels.min() < 0 or labels.max() >= spec.num_classes:
        raise _broken(spec, path, f"labels must lie in [0, {spec.num_classes}), "
                                  f"found {labels.min()}..{labels.max()}")
    return np.ascontiguousarray(data), labels


def _read_classes(spec: _Spec, path: Path) -> list[str]:
    names = _entry(spec, _unpickle(spec, path), spec.names_key, path)
    if (not isinstance(names, list) or len(names) != spec.num_classes
            or not all(isinstance(n, (bytes, str)) for n in names)):
        raise _broken(spec, path, f"{spec.names_key!r} should list {spec.num_classes} class names, "
                                  f"got {_describe(names)}")
    return [n.decode("latin-1") if isinstance(n, bytes) else n for n in names]


_RECONSTRUCT = np.array(0).__reduce__()[0]  # numpy's array rebuilder, whatever its module


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only what a pickled numpy array needs, so a data file cannot run code."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # the official Python 2 files
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # written by numpy >= 2
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 Python 3 files
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}") from None


def _unpickle(spec: _Spec, path: Path) -> dict[bytes, Any]:
    try:
        with path.open("rb") as f:
            entry = _load(f)
    except FileNotFoundError:
        raise DataUnavailable(f"{path} is missing: the folder {spec.folder} is incomplete; "
                              f"extract it again from {spec.url}") from None
    except Exception as exc:  # noqa: BLE001 — unpickling garbage can raise almost anything
        raise _broken(spec, path, f"not a readable pickle, truncated or corrupted "
                                  f"({type(exc).__name__}: {_oneline(exc)})") from exc
    if not isinstance(entry, dict):
        raise _broken(spec, path, f"expected a dict, got {type(entry).__name__}")
    return entry


def _load(f: BinaryIO) -> Any:
    return _ArrayUnpickler(f, encoding="bytes").load()


def _entry(spec: _Spec, entry: dict[bytes, Any], key: bytes, path: Path) -> Any:
    try:
        return entry[key]
    except KeyError:
        keys = ", ".join(repr(k) for k in entry)
        raise _broken(spec, path, f"no {key!r} entry (has {keys})") from None


def _broken(spec: _Spec, path: Path, what: str) -> DataUnavailable:
    return DataUnavailable(f"{path} is not a valid {spec.title} file: {what}; "
                           f"extract it again from {spec.url}")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return type(value).__name__


def _oneline(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
