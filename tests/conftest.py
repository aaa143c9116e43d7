"""Shared test settings: deterministic seeds, and torch on one thread.

The tests' tensors are small; on a busy two-core machine OpenMP's spin-waits made them up to
fifteen times slower with two threads than with one, so every test runs single-threaded.
"""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Checkpoint after every epoch (default: every 10 s of training), so the tests that kill a
# study mid-way find trials to resume; tests/study/test_checkpoints.py checks the default.
os.environ.setdefault("LOOKBENCH_CHECKPOINT_EVERY_S", "0")
# No timing pass at the end of every study a test runs (3-10 s each); the tests of the pass
# (tests/study/test_cost.py) and of the answer it feeds set their own budgets.
os.environ.setdefault("LOOKBENCH_COST_SECONDS", "0")


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same RNG state, so failures reproduce."""
    import torch

    torch.manual_seed(0)
    yield
