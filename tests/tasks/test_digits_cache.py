"""The digits split is cached per machine (importing scikit-learn costs each process about a
second): the cached split is the computed one, bit for bit; a damaged, foreign or unwritable
cache only costs the computation, never a wrong split or an error."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from lookbench.tasks import digits


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKBENCH_CACHE", str(tmp_path / "cache"))
    digits._split.cache_clear()
    yield tmp_path / "cache"
    digits._split.cache_clear()


def same(a, b) -> bool:
    return all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_cached_split_is_the_computed_one(cache):
    computed = digits._compute_split()
    first = digits._split()  # computes, writes the cache
    path = digits.cache_path()
    assert path is not None and path.parent == cache and path.is_file()
    assert [p.name for p in cache.iterdir()] == [path.name]  # (no temporary file left)
    digits._split.cache_clear()
    assert digits._read_cache() is not None
    second = digits._split()  # from the cache
    assert same(computed, first) and same(computed, second)


def test_a_later_process_does_not_import_scikit_learn(cache):
    digits._split()
    code = ("import sys; from lookbench.tasks import digits; digits._split(); "
            "print('sklearn' in sys.modules)")
    env = {**os.environ, "LOOKBENCH_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.strip()
    assert out == "False"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong shape"])
def test_a_damaged_cache_is_computed_again(cache, damage):
    digits._split()
    path = digits.cache_path()
    if damage == "garbage":
        path.write_bytes(b"not an npz")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        x = np.zeros((10, 64), np.float32)
        y = np.zeros(10, np.int64)
        np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    digits._split.cache_clear()
    assert same(digits._split(), digits._compute_split())


def test_an_unwritable_cache_only_costs_the_computation(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("in the way")
    monkeypatch.setenv("LOOKBENCH_CACHE", str(blocked / "cache"))  # (under a file)
    digits._split.cache_clear()
    try:
        assert same(digits._split(), digits._compute_split())
    finally:
        digits._split.cache_clear()


def test_an_empty_setting_turns_the_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKBENCH_CACHE", "")
    assert digits.cache_path() is None
