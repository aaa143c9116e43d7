"""The CIFAR networks: the paper's ResNet-18 and the original ResNet-20.

* ``resnet18_cifar``: the ResNet-18 of kuangliu/pytorch-cifar, the "publicly available setup"
  the paper trains (Appendix C.1): a 3×3 stem without max-pool, four stages of two BasicBlocks
  (64/128/256/512 channels), 1×1 convolution shortcuts where the shape changes. It is wider than
  He et al.'s CIFAR networks (11.2M parameters), as a reviewer of the paper noted.
* ``resnet20``: He et al. (2016), section 4.2: three stages of three BasicBlocks with 16/32/64
  channels and parameter-free "option A" shortcuts (0.27M parameters), the architecture the
  paper says future work should follow, and ~10x cheaper on a CPU.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lookbench.choices import ModelName  # noqa: E402,F401 (re-exported)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class _PadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad the new channels (no parameters)."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))

    def population_copy(self, members: list[_PadShortcut], count: int) -> nn.Module:
        """The shortcut of a population of ``count`` networks (``lookbench.execution.population``):
        each member's block of channels padded on its own."""
        return _PopPadShortcut(self.extra_channels, self.stride, count)


class _PopPadShortcut(_PadShortcut):
    """Option A for M networks side by side in the channel dimension."""

    def __init__(self, extra_channels: int, stride: int, members: int) -> None:
        super().__init__(extra_channels, stride)
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra_channels // 2
        return pad_channels(x, self.members, half, self.extra_channels - half)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with BN and a residual connection."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 shortcut: Literal["conv", "pad"] = "conv") -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            if shortcut == "conv":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(channels),
                )
            else:
                self.shortcut = _PadShortcut(channels - in_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3×3 stem, stages of BasicBlocks (the first of each later stage strides 2), pool, linear."""

    def __init__(self, widths: list[int], depths: list[int], num_classes: int,
                 shortcut: Literal["conv", "pad"]) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks: list[nn.Module] = []
        in_channels = widths[0]
        for stage, (width, depth) in enumerate(zip(widths, depths)):
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_channels, width, stride, shortcut))
                in_channels = width
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(in_channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _init_weights(model: nn.Module) -> None:
    """He (kaiming) normal convolutions, BN at identity: the usual ResNet initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resnet18_cifar(num_classes: int = 10) -> CifarResNet:
    """The paper's ResNet-18 (kuangliu/pytorch-cifar): 11,173,962 parameters for 10 classes."""
    return CifarResNet([64, 128, 256, 512], [2, 2, 2, 2], num_classes, shortcut="conv")


def resnet20(num_classes: int = 10) -> CifarResNet:
    """He et al.'s CIFAR ResNet-20 with option-A shortcuts: 269,722 parameters for 10 classes."""
    return CifarResNet([16, 32, 64], [3, 3, 3], num_classes, shortcut="pad")


def build_model(name: ModelName, num_classes: int) -> nn.Module:
    """A CIFAR network by name."""
    builders = {"resnet18": resnet18_cifar, "resnet20": resnet20}
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(builders)}")
    return builders[name](num_classes)


def pad_channels(x: torch.Tensor, members: int, before: int, after: int) -> torch.Tensor:
    """Zero channels added around each member's block of ``(B, M·C, ...)``."""
    b, mc = x.shape[:2]
    x = x.reshape(b, members, mc // members, *x.shape[2:])
    pad = [0, 0] * (x.dim() - 3) + [before, after]
    return F.pad(x, pad).reshape(b, -1, *x.shape[3:])
