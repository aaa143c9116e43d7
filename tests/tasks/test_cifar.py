"""The CIFAR tasks and their loader, on small folders written here in the official format.

The official pickles were written by Python 2: strings (keys, names, the array's raw bytes) are
Python 2 ``str`` (pickle's BINSTRING opcodes) and the array is rebuilt through
``numpy.core.multiarray._reconstruct``. ``Py2Pickler`` writes exactly that, so the loader is
tested against the real layout; a plain Python 3 protocol-2 pickle with bytes keys is accepted
too. No test touches the network: ``socket.getaddrinfo`` fails as it does on an offline machine.
"""

import io
import math
import pickle
import socket
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
import torch

from lookbench import tasks
from lookbench.tasks import cifar_data
from lookbench.tasks.base import DataUnavailable, TaskSize
from lookbench.tasks.cifar import Cifar10, Cifar100
from lookbench.tasks.cifar_data import (
    DOWNLOAD_TIMEOUT_S,
    load_cifar,
    write_synthetic_cifar,
)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
_RECONSTRUCT = np.array(0).__reduce__()[0]


class Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose opcodes can be chosen
    """Writes str and bytes as Python 2 ``str`` and names numpy's module as Python 2 numpy did."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def write_pickle(path: Path, obj: Any, style: str = "py2") -> None:
    buf = io.BytesIO()
    if style == "py2":
        Py2Pickler(buf, protocol=2).dump(obj)
    else:
        pickle.dump(obj, buf, protocol=2)
    path.write_bytes(buf.getvalue())


def batch(images: np.ndarray, labels: np.ndarray, label_key: bytes, name: str) -> dict[bytes, Any]:
    entry = {
        b"batch_label": name.encode(),
        label_key: [int(v) for v in labels],
        b"data": images.reshape(len(images), 3072),
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(images))],
    }
    if label_key == b"fine_labels":
        entry[b"coarse_labels"] = [int(v) // 5 for v in labels]
    return entry


def random_split(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, classes, n)


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 10,
                  style: str = "py2") -> dict[str, Any]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = zip(*(random_split(per_batch, 10, seed=i) for i in range(5)))
    for i, (x, y) in enumerate(zip(xs, ys), start=1):
        entry = batch(x, y, b"labels", f"training batch {i} of 5")
        write_pickle(folder / f"data_batch_{i}", entry, style)
    test_x, test_y = random_split(n_test, 10, seed=99)
    entry = batch(test_x, test_y, b"labels", "testing batch 1 of 1")
    write_pickle(folder / "test_batch", entry, style)
    names = ["airplane", "automobile", "bird", "cat", "deer",
             "dog", "frog", "horse", "ship", "truck"]
    meta = {b"label_names": [n.encode() for n in names], b"num_cases_per_batch": per_batch,
            b"num_vis": 3072}
    write_pickle(folder / "batches.meta", meta, style)
    return {"folder": folder, "train_x": np.concatenate(xs), "train_y": np.concatenate(ys),
            "test_x": test_x, "test_y": test_y, "classes": names}


def write_cifar100(root: Path, n_train: int = 30, n_test: int = 12) -> dict[str, Any]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train_x, train_y = random_split(n_train, 100, seed=1)
    test_x, test_y = random_split(n_test, 100, seed=2)
    write_pickle(folder / "train", batch(train_x, train_y, b"fine_labels", "training batch 1"))
    write_pickle(folder / "test", batch(test_x, test_y, b"fine_labels", "testing batch 1"))
    names = [f"class_{i}" for i in range(100)]
    write_pickle(folder / "meta", {
        b"fine_label_names": [n.encode() for n in names],
        b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
    })
    return {"folder": folder, "train_x": train_x, "train_y": train_y, "test_x": test_x,
            "test_y": test_y, "classes": names}


@pytest.fixture(autouse=True)
def _fresh_cache():
    cifar_data.clear_cache()
    yield
    cifar_data.clear_cache()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """Name resolution fails as on a machine without network; records the socket timeout."""
    timeouts: list[float | None] = []

    def no_dns(*args: Any, **kwargs: Any) -> Any:
        timeouts.append(socket.getdefaulttimeout())
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    return timeouts


def assert_one_line(exc: pytest.ExceptionInfo[DataUnavailable], *parts: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


# -- the loader --------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["py2", "py3"])
def test_cifar10_round_trip(tmp_path: Path, style: str) -> None:
    ref = write_cifar10(tmp_path, style=style)
    arrays = load_cifar("cifar10", tmp_path, download=False)
    assert arrays.train_x.dtype == torch.uint8 and arrays.train_x.shape == (30, 3, 32, 32)
    assert arrays.train_y.dtype == torch.int64
    np.testing.assert_array_equal(arrays.train_x.numpy(), ref["train_x"])
    np.testing.assert_array_equal(arrays.train_y.numpy(), ref["train_y"])
    np.testing.assert_array_equal(arrays.test_x.numpy(), ref["test_x"])
    np.testing.assert_array_equal(arrays.test_y.numpy(), ref["test_y"])
    assert arrays.classes == ref["classes"]
    # The 2nd image of data_batch_2, read from its raw row: 1024 red values row by row, then
    # green, then blue (the layout the CIFAR page documents).
    row = ref["train_x"][6 + 1].reshape(3072)
    image = arrays.train_x[6 + 1]
    assert image[0, 0, 1] == row[1] and image[0, 1, 0] == row[32]
    assert image[1, 0, 0] == row[1024] and image[2, 31, 31] == row[3071]


def test_cifar100_round_trip(tmp_path: Path) -> None:
    ref = write_cifar100(tmp_path)
    arrays = load_cifar("cifar100", tmp_path, download=False)
    np.testing.assert_array_equal(arrays.train_x.numpy(), ref["train_x"])
    np.testing.assert_array_equal(arrays.train_y.numpy(), ref["train_y"])  # fine labels
    np.testing.assert_array_equal(arrays.test_x.numpy(), ref["test_x"])
    np.testing.assert_array_equal(arrays.test_y.numpy(), ref["test_y"])
    assert arrays.classes == ref["classes"]


def test_cached_per_folder_and_the_folder_itself_is_accepted(tmp_path: Path) -> None:
    ref = write_cifar10(tmp_path)
    first = load_cifar("cifar10", tmp_path, download=False)
    (ref["folder"] / "data_batch_1").unlink()  # a second read would now fail
    assert load_cifar("cifar10", tmp_path / ".", download=False) is first
    assert load_cifar("cifar10", ref["folder"], download=False) is first


def test_missing_folder_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailable) as exc:
        load_cifar("cifar100", tmp_path, download=False)
    assert_one_line(exc, "cifar-100-python", CIFAR100_URL, str(tmp_path), "--data-dir")


def test_default_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar_data, "DEFAULT_DATA_DIR", tmp_path)
    write_cifar10(tmp_path)
    assert len(load_cifar("cifar10", None, download=False).train_y) == 30
    assert str(cifar_data.DEFAULT_DATA_DIR) != "~/.cache/lookbench/data"  # patched, not the real


def test_offline_download_fails_fast_with_one_line(tmp_path: Path, offline: list) -> None:
    """The real torchvision download path runs, until name resolution fails."""
    socket.setdefaulttimeout(None)
    with pytest.raises(DataUnavailable) as exc:
        load_cifar("cifar10", tmp_path / "data", download=True)
    msg = assert_one_line(exc, "cifar-10-batches-py", CIFAR10_URL, "--data-dir", "download failed")
    assert "Name or service not known" in msg
    assert offline and all(t == DOWNLOAD_TIMEOUT_S for t in offline)  # the timeout was set …
    assert socket.getdefaulttimeout() is None  # … and restored


def test_download_then_read_with_own_reader(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    calls = []

    def fake_cifar100(root: str, train: bool, download: bool) -> None:
        calls.append((root, download))
        write_cifar100(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", fake_cifar100)
    arrays = load_cifar("cifar100", tmp_path, download=True)
    assert calls == [(str(tmp_path.resolve()), True)] and len(arrays.train_y) == 30


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: 3000])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x80\x02}q\x00(U\x04data\x93 definitely not a pickle" * 3)


def _rewrite(path: Path, change: Any) -> None:
    entry = pickle.loads(path.read_bytes(), encoding="bytes")
    change(entry)
    write_pickle(path, entry)


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this must never run",))


def _set(key: bytes, value: Any) -> Any:
    """Damage: replace entry ``key`` by ``value(entry)``."""
    return lambda path: _rewrite(path, lambda e: e.__setitem__(key, value(e)))


BROKEN = {
    "truncated": ("data_batch_2", _truncate, "truncated or corrupted"),
    "garbage": ("test_batch", _garbage, "truncated or corrupted"),
    "empty": ("data_batch_1", lambda p: p.write_bytes(b""), "truncated or corrupted"),
    "code": ("data_batch_1", lambda p: p.write_bytes(pickle.dumps({b"data": _Evil()})),
             "unexpected object builtins.print"),
    "not a dict": ("data_batch_4", lambda p: write_pickle(p, [1, 2, 3]), "expected a dict"),
    "missing key": ("data_batch_3", lambda p: _rewrite(p, lambda e: e.pop(b"labels")),
                    "no b'labels' entry"),
    "labels out of range": ("data_batch_5", _set(b"labels", lambda e: [10] + e[b"labels"][1:]),
                            "labels must lie in [0, 10), found"),
    "negative label": ("test_batch", _set(b"labels", lambda e: [-1] + e[b"labels"][1:]),
                       "labels must lie in [0, 10), found -1"),
    "label count": ("data_batch_1", _set(b"labels", lambda e: e[b"labels"][:-1]),
                    "5 labels in b'labels' for 6 images"),
    "wrong size": ("data_batch_2", _set(b"data", lambda e: e[b"data"][:, :3000]),
                   "shape (n, 3072), got uint8 array of shape (6, 3000)"),
    "wrong dtype": ("test_batch", _set(b"data", lambda e: e[b"data"].astype(np.float32)),
                    "got float32 array"),
    "missing file": ("data_batch_3", lambda p: p.unlink(), "is missing"),
    "class names": ("batches.meta", _set(b"label_names", lambda e: e[b"label_names"][:-1]),
                    "should list 10 class names, got a list of 9"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_files_raise_data_unavailable(tmp_path: Path, case: str, capsys) -> None:
    filename, damage, what = BROKEN[case]
    ref = write_cifar10(tmp_path)
    damage(ref["folder"] / filename)
    with pytest.raises(DataUnavailable) as exc:
        load_cifar("cifar10", tmp_path, download=False)
    assert_one_line(exc, str(ref["folder"] / filename), what, CIFAR10_URL)
    assert "never run" not in capsys.readouterr().out


def test_broken_cifar100_names_its_label_key(tmp_path: Path) -> None:
    ref = write_cifar100(tmp_path)
    _rewrite(ref["folder"] / "train", lambda e: e.pop(b"fine_labels"))
    with pytest.raises(DataUnavailable) as exc:
        load_cifar("cifar100", tmp_path, download=False)
    assert_one_line(exc, "train is not a valid CIFAR-100 file", "no b'fine_labels' entry")


# -- the tasks ---------------------------------------------------------------------------


def test_registered() -> None:
    assert tasks.task_class("cifar10") is Cifar10 and tasks.task_class("cifar100") is Cifar100
    task = tasks.get("cifar100", model="resnet20", train_eval=True, train_subset=8)
    assert (task.name, task.metric, task.higher_is_better) == ("cifar100", "test_acc", True)
    defaults = (task.default_epochs, task.default_batch_size, task.default_schedule)
    assert defaults == (200, 128, "step")


@pytest.mark.parametrize("options", [{"model": "resnet50"}, {"train_subset": 0},
                                     {"train_eval": "maybe"}, {"augment": False}])
def test_bad_options_are_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        tasks.get("cifar10", **options)


def test_size_without_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_data(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("size() must not load data")

    monkeypatch.setattr("lookbench.tasks.cifar_data.load_cifar", no_data)
    assert Cifar10.with_options().size() == TaskSize(50_000, 10_000, 11_173_962)
    assert Cifar100.with_options(model="resnet20").size() == TaskSize(50_000, 10_000, 275_572)
    assert Cifar10.with_options(train_subset=500).size().train_examples == 500
    assert Cifar10().size().parameters == 11_173_962  # built without with_options: defaults


def test_default_grids() -> None:
    task = Cifar100.with_options()
    sgd = task.default_grid("sgd")
    assert sgd == {
        "lookahead": {"lr": [0.1], "momentum": [0.9], "weight_decay": [1e-3], "k": [5, 10],
                      "alpha": [0.2, 0.5, 0.8]},
        "sgd": {"lr": [0.01, 0.03, 0.05, 0.1, 0.2, 0.3], "momentum": [0.9],
                "weight_decay": [3e-4, 1e-3, 3e-3]},
    }
    assert task.default_grid("adamw") == {
        "lookahead": {"lr": [3e-4], "weight_decay": [1.0], "k": [5, 10], "alpha": [0.2, 0.5, 0.8]},
        "adamw": {"lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "weight_decay": [0.1, 0.3, 1.0, 3.0]},
    }
    assert task.default_grid("adam") == {
        "lookahead": {"lr": [3e-4], "weight_decay": [0.0], "k": [5, 10], "alpha": [0.2, 0.5, 0.8]},
        "adam": {"lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "weight_decay": [0.0, 5e-4]},
    }
    sgd["lookahead"]["k"].append(99)  # callers may edit their copy
    assert task.default_grid("sgd")["lookahead"]["k"] == [5, 10]
    # No paper grid for RMSprop: the section 5.5 design around its default learning rate.
    assert task.default_grid("rmsprop") == {
        "lookahead": {"lr": [0.001, 0.003, 0.01, 0.03, 0.1], "momentum": [0.0], "k": [5],
                      "alpha": [0.5]},
        "rmsprop": {"lr": [0.001, 0.003, 0.01, 0.03, 0.1], "momentum": [0.0]}}


@pytest.mark.parametrize(("cls", "write"), [(Cifar10, write_cifar10), (Cifar100, write_cifar100)])
def test_workload_trains_and_evaluates(tmp_path: Path, cls: type, write: Any) -> None:
    ref = write(tmp_path)
    task = cls.with_options(model="resnet20", train_eval=True, train_subset=20)
    wl = task.workload(batch_size=8, device=torch.device("cpu"), seed=0, data_dir=tmp_path)
    assert wl.steps_per_epoch == 3 and not wl.channels_last and not wl.amp
    assert sum(p.numel() for p in wl.model.parameters()) == task.size().parameters

    g = torch.Generator()
    g.manual_seed(0)
    batches = list(wl.train_batches(0, g))
    assert [len(y) for _, y in batches] == [8, 8, 4]
    assert torch.cat([y for _, y in batches]).sort().values.tolist() == sorted(ref["train_y"][:20])

    wl.model.train()
    opt = torch.optim.SGD(wl.model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):  # fit one fixed batch: the loss must fall
        opt.zero_grad()
        loss = wl.loss(wl.model, batches[0])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.5 * losses[0]

    wl.model.eval()
    metrics = wl.evaluate(wl.model)
    assert set(metrics) == {"test_loss", "test_acc"}
    assert math.isfinite(metrics["test_loss"]) and 0.0 <= metrics["test_acc"] <= 1.0
    n_test = len(ref["test_y"])
    assert round(metrics["test_acc"] * n_test, 6) == round(metrics["test_acc"] * n_test)
    assert wl.train_eval is not None and math.isfinite(wl.train_eval(wl.model))


def test_workload_is_seeded_and_train_eval_optional(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    task = Cifar10.with_options(model="resnet20")

    def build(seed: int) -> Any:
        return task.workload(batch_size=16, device=torch.device("cpu"), seed=seed,
                             data_dir=tmp_path)

    a, b, c = build(1), build(1), build(2)
    assert a.train_eval is None and a.steps_per_epoch == 2  # all 30 images
    first = next(iter(a.model.parameters()))
    assert torch.equal(first, next(iter(b.model.parameters())))
    assert not torch.equal(first, next(iter(c.model.parameters())))


def test_workload_without_data_is_data_unavailable(tmp_path: Path, offline: list) -> None:
    with pytest.raises(DataUnavailable, match="cifar-10-batches-py"):
        Cifar10.with_options(model="resnet20").workload(
            batch_size=4, device=torch.device("cpu"), seed=0, data_dir=tmp_path)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_synthetic_writer_round_trips_through_the_loader(tmp_path: Path, name: str) -> None:
    folder = write_synthetic_cifar(tmp_path, name, n_train=23, n_test=7, seed=3)
    data = load_cifar(name, tmp_path, download=False)
    assert folder.is_dir() and data.train_x.shape == (23, 3, 32, 32)
    assert data.test_x.shape == (7, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert len(data.classes) == (10 if name == "cifar10" else 100)
    assert int(data.train_y.max()) < len(data.classes)
