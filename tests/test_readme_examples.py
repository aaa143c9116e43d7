"""The README's Python examples run as written (in a fresh folder holding the study files),
and what they say they return, they return."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_block(heading: str) -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(heading):]
    return re.search(r"```python\n(.*?)\n```", section, re.S).group(1)


@pytest.mark.slow
def test_the_from_python_block_runs_as_written(tmp_path):
    shutil.copytree(ROOT / "studies", tmp_path / "studies")
    code = python_block("### From Python") + """
import pandas as pd
assert str(lookbench.load_results("digits")[0]["study"].iloc[0]) == "digits"
assert set(trials["study"]) == {"digits-sgd"} and set(trials["lr"]) == {0.01, 0.1}
assert set(trials["seed"]) == {0, 1, 2} and set(trials["optimizer"]) == {"lookahead", "sgd"}
# the seeds of each configuration grouped, the baseline's too (k and alpha are null for it)
assert per_config.index.is_unique and len(per_config) * 3 == len(trials)
assert (tmp := lookbench.load_results("digits-auto")[0])["seed"].max() < 6
try:
    lookbench.load_results("runs/digit")
except lookbench.StudyNotFound as e:
    assert "did you mean" in str(e) and "runs/digits" in str(e), e
else:
    raise AssertionError("a path without a study must raise")
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
