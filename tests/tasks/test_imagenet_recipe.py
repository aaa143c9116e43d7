"""``imagenet`` trains and evaluates with its paper's recipe whatever the machine: torchvision's
RandomResizedCrop(scale 0.08-1, ratio 3/4-4/3) + flip for training, Resize(size·256/224) +
CenterCrop(size) for evaluation, with the ``memory`` pipeline, the ``stream`` one and ``auto``
either side of its memory budget. Checked on the inputs the model is actually fed, from folders
in the real layout (PNG images whose pixels encode their coordinates, so a crop tells where it
came from; and write_folder's JPEG/PNG ones)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T
from torchvision.io import encode_png
from torchvision.transforms import v2

from lookbench import tasks
from lookbench.study.config import TrialConfig
from lookbench.tasks import image_stream
from lookbench.tasks.imagefolder import IMAGENET_MEAN, IMAGENET_STD
from lookbench.tasks.imagefolder_data import (
    centre_view,
    clear_cache,
    eval_resize,
    list_split,
    read_rgb,
)
from tests.tasks.resume import straight_and_resumed
from tests.tasks.test_imagefolder import write_folder

H, W = 60, 80  # a 4:3 photo
SIZE = 32  # kept as the central 36² square of the photo resized to 36×48 in memory
PIPELINES = ["memory", "stream", "auto", "auto past the budget"]


@pytest.fixture(autouse=True)
def _fresh_caches():
    clear_cache()
    yield
    clear_cache()


def coordinate_photo() -> torch.Tensor:
    """Channel 0 is 4·row, channel 1 is 3·column: linear ramps, which bilinear resampling
    keeps linear, so a crop's pixels give back its rows and columns in the photo."""
    rows = torch.arange(H, dtype=torch.float32).view(H, 1).expand(H, W) * 4
    cols = torch.arange(W, dtype=torch.float32).view(1, W).expand(H, W) * 3
    return torch.stack([rows, cols, torch.full((H, W), 128.0)]).round().to(torch.uint8)


def write_coordinate_folder(root, train: int = 8, val: int = 2):
    data = encode_png(coordinate_photo()).numpy().tobytes()
    for split, n in (("train", train), ("val", val)):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                (root / split / name / f"{i:03d}.png").write_bytes(data)
    return root


def imagenet(pipeline: str, monkeypatch, **options) -> tasks.Task:
    """The imagenet task with ``pipeline`` (``auto past the budget``: auto with no memory)."""
    if pipeline == "auto past the budget":
        monkeypatch.setattr(image_stream, "memory_budget", lambda: 0)
        pipeline = "auto"
    return tasks.get("imagenet", image_size=options.pop("image_size", SIZE), model="resnet18",
                     pipeline=pipeline, **options)


def resolved(pipeline: str) -> str:
    return {"auto": "memory", "auto past the budget": "stream"}.get(pipeline, pipeline)


def pixels(x: torch.Tensor) -> torch.Tensor:
    """Normalised model inputs back in 0..255."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.float() * std + mean) * 255


def training_crops(task: tasks.Task, root, seed: int, epochs: int = 4) -> torch.Tensor:
    wl = task.workload(batch_size=8, device=torch.device("cpu"), seed=0, data_dir=root)
    return torch.cat([pixels(x) for e in range(epochs)
                      for x, _ in wl.train_batches(e, torch.Generator().manual_seed(seed + e))])


def crop_geometry(crop: torch.Tensor) -> tuple[float, float, float, float, bool]:
    """``(top, left, height, width, flipped)`` in the photo's pixels of a training crop of
    :func:`coordinate_photo`, from least-squares lines through the middle half of its rows and
    columns (away from the edges, where the antialiasing window is clamped)."""
    mid = torch.arange(SIZE // 4, 3 * SIZE // 4, dtype=torch.float64)
    out = {}
    for axis, (channel, step) in enumerate(((0, 4), (1, 3))):
        profile = crop[channel].double().mean(dim=1 - axis)[SIZE // 4: 3 * SIZE // 4] / step
        slope, intercept = np.polyfit((mid + 0.5).numpy(), profile.numpy(), 1)
        # the photo's coordinate of output pixel i is start + (i + 0.5)·extent/SIZE - 0.5
        extent = abs(slope) * SIZE
        start = intercept + 0.5 if slope > 0 else intercept + slope * SIZE + 0.5
        out[axis] = (start, extent, slope < 0)
    (top, height, _), (left, width, flipped) = out[0], out[1]
    return top, left, height, width, flipped


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_training_is_random_resized_crop_and_flip_in_every_pipeline(tmp_path, monkeypatch,
                                                                    pipeline):
    root = write_coordinate_folder(tmp_path / "data")
    task = imagenet(pipeline, monkeypatch)
    assert task.opts.augment == "resized_crop"
    assert task.pipeline(root) == resolved(pipeline)
    crops = training_crops(task, root, seed=11)
    assert crops.shape == (64, 3, SIZE, SIZE)
    # What the crops are cut from: in memory the photo's central square (columns 10-70), the
    # documented deviation; streamed the whole photo, as torchvision does.
    memory = resolved(pipeline) == "memory"
    region_left, region_w, region_h = (10, H, H) if memory else (0, W, H)
    shares, flips, outer = [], 0, 0
    for crop in crops:
        top, left, h, w, flipped = crop_geometry(crop)
        assert -0.6 <= top and top + h <= region_h + 0.6, (top, h)
        assert region_left - 0.6 <= left and left + w <= region_left + region_w + 0.6, (left, w)
        share = h * w / (region_h * region_w)
        shares.append(share)
        assert 0.08 * 0.93 <= share <= 1.02, share  # torchvision's scale, up to rounding
        assert 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05, w / h  # and ratio
        flips += flipped
        outer += left < 9 or left + w > 71
    assert min(shares) < 0.3 and max(shares) > 0.7  # the range is used
    assert 16 <= flips <= 48  # a fair coin: 32 ± 2 sd
    assert (outer == 0) if memory else (outer > 0)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_same_generator_gives_the_same_batches(tmp_path, monkeypatch, pipeline):
    root = write_folder(tmp_path / "data")
    wl = imagenet(pipeline, monkeypatch, image_size=16).workload(
        batch_size=8, device=torch.device("cpu"), seed=0, data_dir=root)

    def epoch(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(wl.train_batches(0, torch.Generator().manual_seed(seed)))

    one, two, other = epoch(7), epoch(7), epoch(8)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two))
    assert not torch.equal(torch.cat([x for x, _ in one]), torch.cat([x for x, _ in other]))
    # Population training needs the loss to be the criterion's mean.
    x, y = one[0]
    torch.testing.assert_close(wl.loss(wl.model, (x, y)), wl.criterion(wl.model(x), y).mean())


class Recorder(nn.Module):
    """A 'model' that keeps the inputs it is fed and predicts nothing."""

    def __init__(self, classes: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(classes))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.bias.expand(len(x), -1)


def fed(run, classes: int = 3) -> torch.Tensor:
    """The inputs ``run(model)`` feeds a model, back in 0..255."""
    model = Recorder(classes)
    run(model)
    return pixels(torch.cat(model.seen))


def reference_eval(path, size: int) -> torch.Tensor:
    """torchvision's evaluation transform of the ImageNet reference, on uint8 tensors."""
    transform = v2.Compose([v2.Resize(int(size * 256 / 224), antialias=True),
                            v2.CenterCrop(size)])
    return transform(read_rgb(path)).float()


@pytest.mark.parametrize("size", [16, 24])
def test_evaluation_is_resize_then_centre_crop_in_every_pipeline(tmp_path, monkeypatch, size):
    root = write_folder(tmp_path / "data")  # 40×52 photos: JPEG training, PNG validation
    _, splits = list_split(root)
    expected_val = torch.stack([reference_eval(p, size) for p in splits["val"].files])
    expected_train = torch.stack([reference_eval(p, size) for p in splits["train"].files])
    seen = {}
    for pipeline in PIPELINES:
        clear_cache()
        with monkeypatch.context() as patch:
            task = imagenet(pipeline, patch, image_size=size, train_eval=True)
            assert task.pipeline(root) == resolved(pipeline)
            wl = task.workload(batch_size=8, device=torch.device("cpu"), seed=0, data_dir=root)
            val, train = fed(wl.evaluate), fed(wl.train_eval)
        # Exactly torchvision's Resize + CenterCrop (the float round trip of normalising
        # aside), in memory and streamed; train_eval sees the training images the same way.
        torch.testing.assert_close(val, expected_val, atol=2e-3, rtol=0)
        torch.testing.assert_close(train, expected_train, atol=2e-3, rtol=0)
        seen[pipeline] = val
    assert all(torch.equal(seen["memory"], v) for v in seen.values())  # pipelines agree
    # ... and the paper's reference (pytorch/examples, on PIL images) within a level.
    pil = T.Compose([T.Resize(eval_resize(size)), T.CenterCrop(size)])
    for i, path in enumerate(splits["val"].files):
        with Image.open(path) as image:
            ref = torch.from_numpy(np.array(pil(image.convert("RGB")))).permute(2, 0, 1)
        assert (seen["memory"][i] - ref.float()).abs().max() <= 1 + 2e-3


def test_the_eval_resize_is_size_times_256_over_224_rounded_down():
    assert [eval_resize(s) for s in (224, 128, 96, 160, 32, 16)] == [
        256, 146, 109, 182, 36, 18]
    assert all(eval_resize(s) == int(s * 256 / 224) for s in range(8, 1025))


@pytest.mark.parametrize(("h", "w"), [(40, 52), (52, 40), (37, 50), (61, 61), (33, 97)])
@pytest.mark.parametrize("size", [16, 24, 31])
def test_the_kept_square_centres_on_torchvisions_crop(h, w, size):
    """The memory pipeline keeps each training image as a square of side size·256/224 whose
    central size² is exactly Resize + CenterCrop's, whatever the rounding of both centrings."""
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(h * w))
    side = eval_resize(size)
    square = centre_view(image, side, side, inner=size)
    assert square.shape == (3, side, side)
    assert torch.equal(v2.functional.center_crop(square, [size, size]),
                       centre_view(image, side, size))
    resized = v2.functional.resize(image, side, antialias=True)
    plain = v2.functional.center_crop(resized, [side, side])  # at most a pixel from it
    found = [(t, l) for t in range(resized.shape[1] - side + 1)
             for l in range(resized.shape[2] - side + 1)
             if torch.equal(resized[:, t:t + side, l:l + side], square)]
    centre = ((resized.shape[1] - side + 1) // 2, (resized.shape[2] - side + 1) // 2)
    assert found and all(abs(a - b) <= 1 for a, b in zip(found[0], centre))
    assert plain.shape == square.shape


def test_imagenet_refuses_another_recipe_in_one_line(tmp_path):
    from pydantic import ValidationError
    from typer.testing import CliRunner

    from lookbench.cli import app

    with pytest.raises(ValidationError, match="always trains with the paper's recipe"):
        tasks.get("imagenet", augment="padded_crop")
    result = CliRunner().invoke(app, ["run", "imagenet", "-o", "augment=padded_crop",
                                      "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code != 0
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "augment" in lines[0] and "resized_crop" in lines[0], lines
    assert tasks.get("imagefolder").opts.augment == "resized_crop"  # the default recipe
    assert tasks.get("imagefolder", augment="padded_crop").opts.augment == "padded_crop"


def test_auto_counts_the_recipes_memory(tmp_path, monkeypatch):
    """``resized_crop`` keeps training images at size·256/224: ``auto`` budgets for that."""
    root = write_folder(tmp_path / "data")
    need_padded = image_stream.decoded_bytes(48, 16)
    monkeypatch.setattr(image_stream, "memory_budget", lambda: need_padded)
    assert tasks.get("imagefolder", image_size=16, augment="padded_crop").pipeline(root) == (
        "memory")
    assert tasks.get("imagefolder", image_size=16).pipeline(root) == "stream"
    need = image_stream.decoded_bytes(36, eval_resize(16)) + image_stream.decoded_bytes(12, 16)
    monkeypatch.setattr(image_stream, "memory_budget", lambda: need)
    assert tasks.get("imagefolder", image_size=16).pipeline(root) == "memory"


@pytest.mark.parametrize("pipeline", ["memory", "stream"])
def test_the_padded_crop_recipe_is_the_same_in_both_pipelines(tmp_path, pipeline):
    """imagefolder's other recipe: the image resized to size and centre-cropped, a padded crop
    + flip of it for training, the resized image itself for evaluation, in either pipeline."""
    root = write_folder(tmp_path / "data")
    size, pad = 16, 2
    task = tasks.get("imagefolder", image_size=size, model="resnet18", augment="padded_crop",
                     pipeline=pipeline, train_eval=True)
    wl = task.workload(batch_size=8, device=torch.device("cpu"), seed=0, data_dir=root)
    _, splits = list_split(root)
    plain = {s: torch.stack([centre_view(read_rgb(p), size, size) for p in splits[s].files])
             for s in ("train", "val")}
    torch.testing.assert_close(fed(wl.evaluate), plain["val"].float(), atol=2e-3, rtol=0)
    torch.testing.assert_close(fed(wl.train_eval), plain["train"].float(), atol=2e-3, rtol=0)
    batches = list(wl.train_batches(0, torch.Generator().manual_seed(3)))
    labels = torch.tensor(splits["train"].labels)
    padded = torch.nn.functional.pad(plain["train"].float(), (pad,) * 4)
    for x, y in batches:
        for crop, label in zip(pixels(x).round(), y):
            # a window of one of its class's padded images, as is or mirrored
            candidates = padded[labels == label]
            assert any(torch.equal(crop, c[:, t:t + size, l:l + size].flip(-1) if f else
                                   c[:, t:t + size, l:l + size])
                       for c in candidates for t in range(2 * pad + 1)
                       for l in range(2 * pad + 1) for f in (False, True))


def test_a_streamed_padded_crop_trial_resumes_exactly(tmp_path):
    root = write_folder(tmp_path / "data")
    config = TrialConfig(task="imagefolder", optimizer="lookahead", inner="sgd", lr=0.05,
                         momentum=0.9, k=2, alpha=0.5, epochs=2, batch_size=8,
                         task_options={"image_size": 16, "model": "resnet18",
                                       "pipeline": "stream", "augment": "padded_crop"})
    _, records, resumed = straight_and_resumed(config, root)
    assert [r.test_loss for r in resumed] == [r.test_loss for r in records]
    assert [r.train_loss for r in resumed] == [r.train_loss for r in records]
