"""Shared test settings: deterministic seeds, and torch on few threads so runs stay quick."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same RNG state, so failures reproduce."""
    import torch

    torch.manual_seed(0)
    yield
