"""The run's timeline (``lookbench.timeline``): with LOOKBENCH_TIMELINE set, every process of a
run notes its stages in order; unset, nothing is written anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookbench import timeline
from lookbench.cli import app

TINY = ["digits", "--lr", "0.1,0.3", "--k", "5", "--alpha", "0.5", "--epochs", "2",
        "--seeds", "2", "--devices", "cpu", "--workers", "1"]
ROOT = Path(__file__).resolve().parents[1]


def events(path: Path) -> list[str]:
    return [e.split(" ")[0] if e.startswith("recorded") else e
            for _, _, e in timeline.read(path)]


def test_a_run_notes_its_stages_in_order(tmp_path, monkeypatch):
    path = tmp_path / "timeline.txt"
    monkeypatch.setattr(timeline, "_path", str(path))
    result = CliRunner().invoke(app, ["run", *TINY, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    seen = events(path)
    order = ["study checked", "engine imported", "prepare", "definition stored", "plan queued", "worker ready",
             "claimed", "population built", "epoch", "recorded", "compacted", "cost measured",
             "status printed"]
    assert sorted(set(seen) & set(order), key=seen.index) == order  # all, first ones in order
    assert seen.count("epoch") == 2  # one population of the 8 trials, 2 epochs
    stamps = [t for t, _, _ in timeline.read(path)]
    assert stamps == sorted(stamps)


def test_one_trial_at_a_time_notes_each_trial_built(tmp_path, monkeypatch):
    path = tmp_path / "timeline.txt"
    monkeypatch.setattr(timeline, "_path", str(path))
    result = CliRunner().invoke(app, ["run", *TINY, "--population", "1", "--out",
                                      str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    seen = events(path)
    assert seen.count("trial built") == 8 and seen.count("epoch") == 16
    assert "population built" not in seen


@pytest.mark.slow
def test_every_process_of_a_run_writes_to_the_file_named_in_the_environment(tmp_path):
    path = tmp_path / "timeline.txt"
    env = {**os.environ, timeline.ENV: str(path), "LOOKBENCH_COST_SECONDS": "0"}
    subprocess.run([sys.executable, "-m", "lookbench", "run", *TINY[:-1], "2",
                    "--population", "1", "--out", str(tmp_path / "runs")],
                   check=True, capture_output=True, env=env, cwd=ROOT, timeout=300)
    marks = timeline.read(path)
    assert marks[0][2] == "cli imported"
    ready = {pid for _, pid, e in marks if e == "worker ready"}
    assert len(ready) == 2  # the command (a worker itself) and the second worker process


def test_unset_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(timeline, "_path", None)
    monkeypatch.chdir(tmp_path)
    timeline.mark("anything")
    assert not timeline.enabled() and not any(tmp_path.iterdir())


def test_a_timeline_that_cannot_be_written_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setattr(timeline, "_path", str(tmp_path / "no" / "such" / "folder" / "t.txt"))
    timeline.mark("anything")  # (no error: a measurement never fails a run)
