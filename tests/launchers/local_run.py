"""What a launched study is checked against: the same study run locally by one worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

LOOKBENCH = Path(sys.executable).with_name("lookbench")
# Result columns: everything but when, where and how long (and how often resumed).
NOT_RESULTS = {"wall_s", "finished_at", "device", "lookbench_version", "torch_version",
               "resumes"}


def assert_equals_a_local_run(study: list[str], launched: Path, tmp_path: Path,
                              env: dict[str, str], trials: int) -> pd.DataFrame:
    """Run ``study`` locally (one CPU worker) and check the launched study's trials table
    (under ``launched``, the study's folder) equals it in every result column, each trial
    once; returns the launched table."""
    local = subprocess.run([str(LOOKBENCH), "run", *study, "--devices", "cpu", "--workers", "1",
                            "--runs", str(tmp_path / "local")],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr
    a = pd.read_parquet(launched / "trials").sort_values("trial").reset_index(drop=True)
    b = pd.read_parquet(tmp_path / "local" / launched.name / "trials").sort_values(
        "trial").reset_index(drop=True)
    assert len(a) == len(b) == trials and a["trial"].is_unique
    columns = [c for c in a.columns if c not in NOT_RESULTS]
    pd.testing.assert_frame_equal(a[columns], b[columns])
    return a
