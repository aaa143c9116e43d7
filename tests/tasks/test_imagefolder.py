"""The image-folder task (and ImageNet as its preset) on folders the test writes in the real
layout: train/<class>/*.jpg and val/<class>/*.png, decoded by the same libraries ImageNet's
files need."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torchvision.io import encode_jpeg, encode_png
from typer.testing import CliRunner

from lookbench import tasks
from lookbench.cli import app
from lookbench.study.config import TrialConfig
from lookbench.tasks.base import DataUnavailable
from lookbench.tasks.imagefolder_data import clear_cache, list_split, load_image_folder
from tests.tasks.resume import straight_and_resumed

runner = CliRunner()
CLASSES = ("cat", "dog", "fox")


def write_folder(root: Path, train: int = 12, val: int = 4, size: tuple[int, int] = (40, 52)
                 ) -> Path:
    """Each class a colour (its own channel bright) plus noise; train as JPEG, val as PNG, one
    grayscale image among them (decoded as RGB)."""
    g = torch.Generator().manual_seed(0)
    for split, n, encode, ext in (("train", train, encode_jpeg, "jpg"),
                                  ("val", val, encode_png, "png")):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = torch.randint(0, 90, (3, *size), generator=g, dtype=torch.uint8)
                img[c] += 150
                if i == 0 and c == 0:
                    img = img[:1]  # one grayscale image
                (folder / f"{i:03d}.{ext}").write_bytes(encode(img).numpy().tobytes())
    clear_cache()
    return root


def test_the_folder_is_read_in_a_fixed_order_at_the_asked_size(tmp_path):
    root = write_folder(tmp_path / "data")
    arrays = load_image_folder(root, 24)
    assert arrays.classes == list(CLASSES)
    assert arrays.train_x.shape == (36, 3, 24, 24) and arrays.train_x.dtype == torch.uint8
    assert arrays.val_x.shape == (12, 3, 24, 24)
    assert arrays.train_y.tolist() == [0] * 12 + [1] * 12 + [2] * 12
    # The colour survives decoding and resizing: each class's own channel is the brightest.
    means = arrays.val_x.float().mean(dim=(2, 3))
    assert (means.argmax(1) == arrays.val_y).all()
    names, splits = list_split(root, classes=2, per_class=5)
    assert names == ["cat", "dog"] and len(splits["train"].files) == 10
    assert load_image_folder(root, 24) is arrays  # decoded once per process
    # ImageNet's recipe keeps the training squares its crops are cut from (24·256/224 = 27 px)
    # and the validation images as evaluated.
    square = load_image_folder(root, 24, augment="resized_crop")
    assert square.train_x.shape == (36, 3, 27, 27) and square.val_x.shape == (12, 3, 24, 24)
    assert torch.equal(square.train_y, arrays.train_y) and square.classes == arrays.classes


@pytest.mark.parametrize(("damage", "match"), [
    (lambda r: None, "no image folder at"),
    (lambda r: write_folder(r) and __import__("shutil").rmtree(r / "val"), "val is missing"),
    (lambda r: write_folder(r) and (r / "val" / "cat").rename(r / "val" / "cow"),
     "hold different classes"),
    (lambda r: write_folder(r) and (r / "train" / "dog" / "005.jpg").write_bytes(b"not a jpeg"),
     "cannot decode"),
])
def test_bad_folders_are_one_line_naming_what_was_expected(tmp_path, damage, match):
    root = tmp_path / "data"
    damage(root)
    clear_cache()
    with pytest.raises(DataUnavailable, match=match):
        load_image_folder(root, 16)
    result = runner.invoke(app, ["run", "imagefolder", "--data-dir", str(root),
                                 "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2  # missing or unusable data: bad input
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and match in lines[0], lines
    assert not (tmp_path / "runs").exists()  # checked before anything is created


def _config(**options) -> TrialConfig:
    return TrialConfig(task="imagefolder", optimizer="lookahead", inner="sgd", lr=0.05,
                       momentum=0.9, k=2, alpha=0.5, epochs=2, batch_size=8,
                       task_options={"image_size": 16, "model": "resnet18", **options})


@pytest.mark.parametrize("augment", ["resized_crop", "padded_crop"])
def test_a_trial_resumes_exactly_from_its_checkpoint(tmp_path, augment):
    root = write_folder(tmp_path / "data")
    _, records, resumed = straight_and_resumed(_config(augment=augment), root)
    assert [r.test_loss for r in resumed] == [r.test_loss for r in records]
    assert resumed[-1].extra["test_acc_top5"] == records[-1].extra["test_acc_top5"]


def test_a_short_study_runs_and_reports(tmp_path):
    root = write_folder(tmp_path / "data")
    out = tmp_path / "runs"
    result = runner.invoke(app, [
        "run", "imagefolder", "--data-dir", str(root), "-o", "image_size=16",
        "-o", "model=resnet18", "--lr", "0.03,0.1", "--k", "5", "--alpha", "0.5",
        "--epochs", "2", "--batch-size", "8", "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    trials = pq.read_table(out / "imagefolder-sgd" / "trials").to_pandas()
    assert len(trials) == 4 and set(trials["state"]) == {"complete"}
    assert trials["final_test_acc_top5"].between(0, 1).all()
    curves = pq.read_table(out / "imagefolder-sgd" / "curves").to_pandas()
    assert "test_acc_top5" in curves
    report = runner.invoke(app, ["report", "--runs", str(out), "--out", str(tmp_path / "r")])
    assert report.exit_code == 0, report.stderr
    summary = json.loads((tmp_path / "r" / "imagefolder-sgd.json").read_text())
    assert summary["metric"] == "test_acc"


def test_imagenet_is_the_papers_protocol():
    task = tasks.get("imagenet")
    assert task.opts.model == "resnet50" and task.opts.image_size == 224
    assert (task.default_epochs, task.default_batch_size, task.default_schedule) == (
        90, 256, "thirds")
    grid = task.default_grid("sgd")
    assert grid["sgd"]["lr"] == [0.01, 0.02, 0.05, 0.1, 0.2, 0.3]  # Appendix C.2
    assert grid["lookahead"] == {"lr": [0.1], "momentum": [0.9], "weight_decay": [1e-4],
                                 "k": [5], "alpha": [0.5]}
    assert grid["sgd"]["weight_decay"] == [1e-4] and grid["sgd"]["momentum"] == [0.9]


def test_the_imagenet_study_file_is_appendix_c2():
    from lookbench.study.spec import load_spec, plan

    path = Path(__file__).resolve().parents[2] / "studies" / "imagenet-paper.toml"
    spec = load_spec(path)
    assert (spec.task, spec.epochs, spec.batch_size, spec.schedule) == (
        "imagenet", 90, 256, "thirds")
    assert spec.task_options == {"model": "resnet50", "image_size": 224}
    assert spec.grid == tasks.get("imagenet").default_grid("sgd")  # the paper's, as coded
    assert len(plan(spec)) == 7


def test_the_papers_imagenet_schedules():
    from lookbench.execution.trial import lr_factor

    thirds = [lr_factor("thirds", e, 90) for e in (0, 29, 30, 59, 60, 89)]
    assert thirds == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    fast = [lr_factor("aggressive", e, 60) for e in (29, 30, 47, 48, 57, 58)]
    assert fast == pytest.approx([1, 0.1, 0.1, 0.01, 0.01, 0.001])
