"""The CIFAR networks: the parameter counts of the published architectures, shapes, layouts."""

import pytest
import torch
from torch import nn

from lookbench.tasks.models import build_model, resnet18_cifar, resnet20


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "classes", "expected"),
    [
        ("resnet18", 10, 11_173_962),  # kuangliu/pytorch-cifar's ResNet18(), as the paper used
        ("resnet18", 100, 11_220_132),  # + 90 × (512 + 1)
        ("resnet20", 10, 269_722),  # He et al. 2016: "0.27M"
        ("resnet20", 100, 275_572),  # + 90 × (64 + 1)
    ],
)
def test_parameter_counts(name: str, classes: int, expected: int) -> None:
    assert n_params(build_model(name, classes)) == expected


def test_weighted_layer_counts_match_the_names() -> None:
    """ResNet-20: 19 convolutions + 1 linear and no projection convs (option A shortcuts)."""
    def layers(model: nn.Module, kernel: int) -> int:
        return sum(isinstance(m, nn.Conv2d) and m.kernel_size == (kernel, kernel)
                   for m in model.modules())

    r20, r18 = resnet20(10), resnet18_cifar(10)
    assert (layers(r20, 3), layers(r20, 1)) == (19, 0)
    assert (layers(r18, 3), layers(r18, 1)) == (17, 3)  # 3 projection shortcuts
    assert not any(isinstance(m, nn.MaxPool2d) for m in r18.modules())


@pytest.mark.parametrize("name", ["resnet18", "resnet20"])
def test_output_shape_and_channels_last(name: str) -> None:
    model = build_model(name, 100).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.to(memory_format=torch.channels_last))
    assert out.shape == (3, 100)
    torch.testing.assert_close(out_cl, out, rtol=1e-4, atol=1e-4)


def test_resnet20_shortcut_pads_channels_and_subsamples() -> None:
    block = resnet20(10).blocks[3]  # first block of stage 2: 16 → 32 channels, stride 2
    x = torch.randn(2, 16, 32, 32)
    y = block.shortcut(x)
    assert y.shape == (2, 32, 16, 16)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_seeded_builds_are_identical_and_init_is_he_normal() -> None:
    torch.manual_seed(3)
    a = resnet20(10)
    torch.manual_seed(3)
    b = resnet20(10)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    conv = a.blocks[8].conv2  # 64 → 64, 3×3: fan_out 576, He std sqrt(2/576) ≈ 0.059
    assert conv.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.05)


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="resnet20"):
        build_model("vgg16", 10)  # type: ignore[arg-type]
