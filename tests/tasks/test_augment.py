"""Device-side augmentation: every crop is a real window, the randomness is fair and seeded;
ImageNet's RandomResizedCrop is torchvision's, batched."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from lookbench.tasks.augment import (
    augmented_batches,
    normalize,
    plain_batches,
    random_crop_flip,
    random_resized_crop_flip,
    resized_crop_batches,
    resized_crop_boxes,
)

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def random_images(n: int, h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=gen(123))


def coordinate_images(n: int) -> torch.Tensor:
    """Channel 0 holds row + 1 and channel 1 column + 1, so a crop tells where it came from."""
    rows = torch.arange(1, 33, dtype=torch.uint8).view(32, 1).expand(32, 32)
    img = torch.stack([rows, rows.T, torch.full((32, 32), 7, dtype=torch.uint8)])
    return img.expand(n, 3, 32, 32).contiguous()


def decode(out: torch.Tensor, pad: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top offset, left offset and flip of crops of :func:`coordinate_images`.

    The centre pixel always comes from inside the image (offsets ≤ 2·pad), so it is never zero.
    """
    oy = out[:, 0, 16, 16].long() - 1 - 16 + pad
    flipped = out[:, 1, 16, 17] < out[:, 1, 16, 16]
    centre_col = out[:, 1, 16, 16].long() - 1  # source column of output column 16
    left = torch.where(flipped, centre_col - 15, centre_col - 16)
    return oy, left + pad, flipped


def windows(padded: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every 32×32 window of one padded image, as is and mirrored."""
    crops = [padded[:, oy : oy + 32, ox : ox + 32]
             for oy in range(2 * pad + 1) for ox in range(2 * pad + 1)]
    return crops + [c.flip(-1) for c in crops]


@pytest.mark.parametrize("pad", [4, 2])
def test_every_output_is_a_window_of_its_own_padded_image(pad: int) -> None:
    images = random_images(24)
    out = random_crop_flip(images, gen(0), pad=pad)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = F.pad(images, (pad, pad, pad, pad))
    for b in range(len(images)):
        assert any(torch.equal(out[b], w) for w in windows(padded[b], pad)), f"image {b}"


def test_flips_are_fair_and_offsets_cover_the_range() -> None:
    n, pad = 2000, 4
    out = random_crop_flip(coordinate_images(n), gen(1), pad=pad)
    oy, ox, flipped = decode(out, pad)
    # Decoding is right only if the output is exactly that crop: rebuild it and compare.
    padded = F.pad(coordinate_images(1), (pad,) * 4)[0]
    for b in range(0, n, 97):
        window = padded[:, oy[b] : oy[b] + 32, ox[b] : ox[b] + 32]
        assert torch.equal(out[b], window.flip(-1) if flipped[b] else window)
    # Binomial(2000, ½): sd ≈ 22; ±5 sd.
    assert 888 <= int(flipped.sum()) <= 1112
    for offsets in (oy, ox):
        counts = torch.bincount(offsets, minlength=2 * pad + 1)
        assert len(counts) == 2 * pad + 1  # nothing outside [0, 2·pad]
        assert counts.min() >= 150 and counts.max() <= 300  # uniform: 222 ± 14 each


def test_seeded_and_uses_only_the_generator() -> None:
    images = random_images(64)
    state = torch.get_rng_state()
    a = random_crop_flip(images, gen(5))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(a, random_crop_flip(images, gen(5)))
    assert not torch.equal(a, random_crop_flip(images, gen(6)))


def test_rejects_non_batched_input() -> None:
    with pytest.raises(ValueError, match="B, C, H, W"):
        random_crop_flip(random_images(1)[0], gen(0))


@pytest.mark.parametrize("channels_last", [False, True])
def test_normalize(channels_last: bool) -> None:
    images = random_images(5)
    x = normalize(images, MEAN, STD, channels_last=channels_last)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    expected = (images.float() / 255 - mean) / std
    assert x.dtype == torch.float32 and x.shape == images.shape
    torch.testing.assert_close(x, expected)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert x.is_contiguous(memory_format=fmt)


def labelled_constant_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with a value derived from i, so a batch's x and y can be matched up."""
    labels = torch.arange(n)
    values = (labels % 250 + 1).to(torch.uint8)
    return values.view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous(), labels


def unnormalize_max(x: torch.Tensor) -> torch.Tensor:
    """Per image, the largest pixel value of channel 0 back in 0..255 units."""
    return (x[:, 0] * STD[0] + MEAN[0]).mul(255).round().amax(dim=(1, 2)).long()


def test_epoch_covers_each_example_once_and_keeps_the_last_batch() -> None:
    images, labels = labelled_constant_images(1000)
    batches = list(augmented_batches(images, labels, 128, gen(2), MEAN, STD))
    assert [len(y) for _, y in batches] == [128] * 7 + [104]
    seen = torch.cat([y for _, y in batches])
    assert torch.equal(seen.sort().values, labels)
    assert not torch.equal(seen, labels)  # shuffled
    for x, y in batches:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (3, 32, 32)
        assert torch.equal(unnormalize_max(x), y % 250 + 1)  # each x is its own label's image


def test_epoch_replays_from_the_seed() -> None:
    images, labels = random_images(300), torch.arange(300)

    def epoch(seed: int) -> list[torch.Tensor]:
        return [x for x, _ in augmented_batches(images, labels, 64, gen(seed), MEAN, STD)]

    assert all(torch.equal(a, b) for a, b in zip(epoch(9), epoch(9)))
    assert not torch.equal(epoch(9)[0], epoch(10)[0])
    with pytest.raises(ValueError, match="batch_size"):
        next(augmented_batches(images, labels, 0, gen(0), MEAN, STD))


def test_plain_batches_are_in_order_and_unaugmented() -> None:
    images, labels = random_images(10), torch.arange(10)
    batches = list(plain_batches(images, labels, 4, MEAN, STD))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    torch.testing.assert_close(torch.cat([x for x, _ in batches]), normalize(images, MEAN, STD))
    assert torch.equal(torch.cat([y for _, y in batches]), labels)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_the_cpu_contract() -> None:
    images = random_images(256).cuda()
    g = torch.Generator(device="cuda")
    g.manual_seed(0)
    out = random_crop_flip(images, g)
    assert out.device.type == "cuda" and out.shape == images.shape
    x, y = next(augmented_batches(images, torch.arange(256, device="cuda"), 64, g, MEAN, STD,
                                  channels_last=True))
    assert x.is_contiguous(memory_format=torch.channels_last) and y.device.type == "cuda"


# ImageNet's recipe: RandomResizedCrop + flip, batched.


def torchvision_boxes(n: int, height: int, width: int, seed: int) -> list[tuple[int, ...]]:
    """torchvision's ``RandomResizedCrop.make_params``, line for line, fed the uniforms that
    :func:`resized_crop_boxes` draws from ``gen(seed)`` (shares and ratios of ten tries per
    image, then positions)."""
    g = gen(seed)
    u = torch.rand((2, n, 10), generator=g, dtype=torch.float64)
    pos = torch.rand((2, n), generator=g, dtype=torch.float64)
    area, (lo, hi) = height * width, (math.log(3 / 4), math.log(4 / 3))
    boxes = []
    for b in range(n):
        for t in range(10):
            target = area * (0.08 + 0.92 * u[0, b, t].item())
            aspect = math.exp(lo + (hi - lo) * u[1, b, t].item())
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                i = int(pos[0, b].item() * (height - h + 1))  # randint(0, height - h + 1)
                j = int(pos[1, b].item() * (width - w + 1))
                break
        else:
            in_ratio = width / height
            if in_ratio < 3 / 4:
                w, h = width, int(round(width / (3 / 4)))
            elif in_ratio > 4 / 3:
                w, h = int(round(height * 4 / 3)), height
            else:
                w, h = width, height
            i, j = (height - h) // 2, (width - w) // 2
        boxes.append((i, j, h, w))
    return boxes


@pytest.mark.parametrize(("height", "width"), [(146, 146), (60, 80), (4, 400), (400, 4)])
def test_resized_crop_boxes_are_torchvisions(height: int, width: int) -> None:
    n = 500
    boxes = resized_crop_boxes(n, height, width, gen(3))
    assert boxes.dtype == torch.int64 and boxes.shape == (n, 4)
    assert [tuple(b) for b in boxes.tolist()] == torchvision_boxes(n, height, width, 3)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    if height == width:
        share = (h * w).double() / (height * width)
        assert share.min() > 0.075 and share.max() <= 1  # 0.08-1, up to rounding to pixels
        assert share.min() < 0.15 and share.max() > 0.85  # and the range is used
        aspect = w.double() / h
        assert aspect.min() >= 3 / 4 - 0.02 and aspect.max() <= 4 / 3 + 0.02
    if (height, width) == (4, 400):  # no crop of ratio 3/4-4/3 and 8 % of the area fits
        assert boxes.unique(dim=0).tolist() == [[0, 197, 4, 5]]  # torchvision's fallback


def test_random_resized_crop_flip_is_torchvisions_resized_crop_and_a_flip() -> None:
    images = random_images(48, 70, 70)
    out = random_resized_crop_flip(images, gen(4), 32)
    assert out.dtype == torch.float32 and out.shape == (48, 3, 32, 32)
    g = gen(4)
    boxes = resized_crop_boxes(48, 70, 70, g)
    flips = torch.rand(48, generator=g) < 0.5
    assert 10 < int(flips.sum()) < 38
    for b, (top, left, h, w) in enumerate(boxes.tolist()):
        crop = images[b : b + 1, :, top : top + h, left : left + w].float()
        exact = F.interpolate(crop, size=(32, 32), mode="bilinear", antialias=True)[0]
        uint8 = TF.resized_crop(images[b], top, left, h, w, [32, 32], antialias=True)
        if flips[b]:
            exact, uint8 = exact.flip(-1), uint8.flip(-1)
        torch.testing.assert_close(out[b], exact, atol=1e-3, rtol=0)  # the same filter
        assert (out[b] - uint8.float()).abs().max() <= 1  # torchvision's uint8 rounding


def test_random_resized_crop_flip_is_seeded_and_uses_only_the_generator() -> None:
    images = random_images(16, 40, 40)
    state = torch.get_rng_state()
    a = random_resized_crop_flip(images, gen(5), 24)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, random_resized_crop_flip(images, gen(5), 24))
    assert not torch.equal(a, random_resized_crop_flip(images, gen(6), 24))
    with pytest.raises(ValueError, match="B, C, H, W"):
        random_resized_crop_flip(images[0], gen(0), 24)


def test_a_resized_crop_epoch_covers_each_example_once_and_replays() -> None:
    images, labels = labelled_constant_images(300)
    batches = list(resized_crop_batches(images, labels, 64, gen(2), MEAN, STD, size=24))
    assert [len(y) for _, y in batches] == [64] * 4 + [44]
    seen = torch.cat([y for _, y in batches])
    assert torch.equal(seen.sort().values, labels) and not torch.equal(seen, labels)
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 24, 24)
        assert torch.equal(unnormalize_max(x), y % 250 + 1)  # a constant image stays itself
    again = list(resized_crop_batches(images, labels, 64, gen(2), MEAN, STD, size=24))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    x, _ = next(resized_crop_batches(images, labels, 64, gen(2), MEAN, STD, size=24,
                                     channels_last=True))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="batch_size"):
        next(resized_crop_batches(images, labels, 0, gen(0), MEAN, STD, size=24))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resized_crops_on_cuda_are_torchvisions() -> None:
    images = random_images(64, 80, 80).cuda()
    g = torch.Generator(device="cuda")
    g.manual_seed(0)
    out = random_resized_crop_flip(images, g, 32)
    g.manual_seed(0)
    boxes, flips = resized_crop_boxes(64, 80, 80, g), torch.rand(64, generator=g, device="cuda")
    assert out.device.type == "cuda" and boxes.device.type == "cuda"
    for b, (top, left, h, w) in enumerate(boxes.tolist()):
        crop = images[b : b + 1, :, top : top + h, left : left + w].float()
        exact = F.interpolate(crop, size=(32, 32), mode="bilinear", antialias=True)[0]
        exact = exact.flip(-1) if flips[b] < 0.5 else exact
        torch.testing.assert_close(out[b], exact, atol=1e-2, rtol=0)
