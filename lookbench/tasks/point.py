"""The quadratics' model: nothing but its weights (a module of its own, so that the tasks'
classes are read without torch; ``lookbench._lazy`` says why)."""

from __future__ import annotations

import torch
from torch import nn


class Point(nn.Module):
    """A model that is nothing but its weights ``x`` (the quadratics' iterate)."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = nn.Parameter(x)

    def forward(self) -> torch.Tensor:
        return self.x
