"""The image-folder task's ``stream`` pipeline (``lookbench.tasks.image_stream``) on folders
written in the real layout: JPEG training images (one grayscale), PNG validation images."""

from __future__ import annotations

import pytest
import torch
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import v2

from lookbench import tasks
from lookbench.study.config import TrialConfig
from lookbench.tasks import image_stream
from lookbench.tasks.base import DataUnavailable
from lookbench.tasks.image_stream import (
    crop_params,
    decode_batch,
    epoch_plan,
    eval_stream,
    eval_view,
    fetch,
    image_seed,
    load_stream_folder,
    read_bytes,
    stream,
    train_stream,
    train_view,
)
from lookbench.tasks.imagefolder_data import clear_cache, read_rgb
from tests.tasks.resume import straight_and_resumed
from tests.tasks.test_imagefolder import write_folder

SIZE = 24


@pytest.fixture
def folder(tmp_path):
    root = write_folder(tmp_path / "data")
    yield root
    clear_cache()


def _epoch(root, seed: int, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    f = load_stream_folder(root, SIZE)
    g = torch.Generator().manual_seed(seed)
    return list(train_stream(f.train.files, f.train_y, SIZE, 8, g, **kwargs))


def test_an_epoch_is_every_training_image_once_as_uint8_batches(folder):
    f = load_stream_folder(folder, SIZE)
    n = len(f.train.files)
    assert n == 36 and f.train_y.tolist() == [0] * 12 + [1] * 12 + [2] * 12
    order, base = epoch_plan(n, torch.Generator().manual_seed(3))
    assert sorted(order) == list(range(n))
    view = lambda image, i: train_view(image, image_seed(base, i), SIZE)  # noqa: E731
    seen = [idx for _, idx in stream(f.train.files, order, 8, SIZE, view, workers=2)]
    assert torch.cat(seen).tolist() == order  # in the drawn order, each image once
    batches = _epoch(folder, 3)
    assert [len(x) for x, _ in batches] == [8, 8, 8, 8, 4]  # the last partial batch kept
    for x, y in batches:
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, SIZE, SIZE) and y.dtype == torch.int64
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert y.tolist() == f.train_y[order].tolist()
    # Each class's own channel is the brightest: the labels go with their images.
    assert (x.float().mean(dim=(2, 3)).argmax(1) == y).float().mean() > 0.9


def test_batches_depend_on_the_generator_only(folder):
    one = _epoch(folder, 5, workers=1, prefetch=1)
    two = _epoch(folder, 5, workers=2, prefetch=4)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two))
    other = _epoch(folder, 6, workers=2)  # another epoch's generator: another order and views
    assert not torch.equal(torch.cat([b[1] for b in one]), torch.cat([b[1] for b in other]))
    assert not torch.equal(torch.cat([b[0] for b in one]), torch.cat([b[0] for b in other]))


def test_the_training_view_is_a_random_resized_crop_and_flip():
    image = torch.arange(3 * 60 * 80, dtype=torch.int64).remainder(251).to(torch.uint8)
    image = image.view(3, 60, 80)
    shares, flips = [], 0
    for seed in range(400):
        top, left, h, w, flip = crop_params(seed, 60, 80)
        assert 0 <= top <= 60 - h and 0 <= left <= 80 - w
        shares.append(h * w / (60 * 80))
        flips += flip
        expected = v2.functional.resized_crop(image, top, left, h, w, [16, 16], antialias=True)
        view = train_view(image, seed, 16)
        assert torch.equal(view, expected.flip(-1) if flip else expected)
    assert min(shares) < 0.2 and max(shares) > 0.8 and 150 < flips < 250
    assert crop_params(7, 60, 80) == crop_params(7, 60, 80)
    # An image too thin for any crop of ratio 3/4..4/3 falls back to the central one.
    assert crop_params(0, 4, 400) == (0, 197, 4, 5, crop_params(0, 4, 400)[4])


def test_the_evaluation_view_is_resize_then_centre_crop(folder):
    f = load_stream_folder(folder, SIZE)
    expected = v2.Compose([v2.Resize(int(SIZE * 256 / 224), antialias=True),
                           v2.CenterCrop(SIZE)])
    for i, path in enumerate(f.val.files):
        image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        assert torch.equal(eval_view(image, SIZE), expected(image))
        assert torch.equal(f.val_x[i], expected(image))  # decoded once, kept


def test_batched_decode_equals_per_file_decode(folder):
    """On the CPU ``decode_jpeg(list)`` is the same libjpeg-turbo as the per-file path: the
    pixels are equal (on CUDA nvJPEG may differ from it by a few levels)."""
    f = load_stream_folder(folder, SIZE)
    paths = f.train.files[:5] + f.val.files[:2]  # JPEGs (one grayscale) and PNGs
    for data in ([read_bytes(p) for p in paths], [fetch(p) for p in paths]):
        images = decode_batch(data, paths, "cpu")
        assert all(torch.equal(a, read_rgb(p)) for a, p in zip(images, paths))
        assert all(a.shape[0] == 3 for a in images)
    threads = _epoch(folder, 9)
    batched = _epoch(folder, 9, decode_device=torch.device("cpu"))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for a, b in zip(threads, batched))
    val = eval_stream(f.val.files, f.val_y, SIZE, 5, decode_device="cpu")  # PNGs
    assert torch.equal(torch.cat([x for x, _ in val]), f.val_x)


@pytest.mark.parametrize("decode_device", [None, "cpu"])
def test_an_undecodable_file_is_one_line_naming_it(folder, decode_device):
    bad = folder / "train" / "dog" / "005.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataUnavailable, match=r"cannot decode .*005\.jpg") as info:
        _epoch(folder, 0, decode_device=decode_device)
    assert "\n" not in str(info.value)


def test_auto_decodes_a_small_folder_once_and_streams_past_the_budget(folder, monkeypatch):
    task = tasks.get("imagefolder", image_size=16)
    assert task.pipeline(folder) == "memory"
    assert tasks.get("imagefolder", image_size=16, pipeline="stream").pipeline(folder) == "stream"
    monkeypatch.setattr(image_stream, "memory_budget", lambda: 1000)
    assert task.pipeline(folder) == "stream"
    assert tasks.get("imagefolder", image_size=16, pipeline="memory").pipeline(folder) == "memory"


def test_a_validation_set_past_the_budget_is_streamed_to_the_same_metrics(folder, monkeypatch):
    task = tasks.get("imagefolder", image_size=16, pipeline="stream", model="resnet18")
    kept = task.workload(batch_size=8, device=torch.device("cpu"), seed=0, data_dir=folder)
    clear_cache()
    monkeypatch.setattr(image_stream, "memory_budget", lambda: 0)
    streamed = task.workload(batch_size=8, device=torch.device("cpu"), seed=0, data_dir=folder)
    assert load_stream_folder(folder, 16).val_x is None
    assert kept.evaluate(kept.model) == streamed.evaluate(streamed.model)


def _config(**options) -> TrialConfig:
    return TrialConfig(task="imagefolder", optimizer="lookahead", inner="sgd", lr=0.05,
                       momentum=0.9, k=2, alpha=0.5, epochs=2, batch_size=8,
                       task_options={"image_size": 16, "model": "resnet18", **options})


def test_a_streamed_trial_trains_and_resumes_exactly(folder):
    straight, records, resumed = straight_and_resumed(_config(pipeline="stream", train_eval=True),
                                                      folder)
    assert len(records) == 2 and all(r.train_loss > 0 for r in records)
    assert [r.test_loss for r in resumed] == [r.test_loss for r in records]
    assert [r.train_loss for r in resumed] == [r.train_loss for r in records]
    assert [r.train_eval_loss for r in resumed] == [r.train_eval_loss for r in records]
    assert 0 <= records[-1].extra["test_acc_top5"] <= 1
