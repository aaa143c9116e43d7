"""Leftovers go away (issue 22, item 4): every `lookbench run` ends compacted, a re-run with
nothing to do included, and the temporary files of writes killed midway are removed by the
next run or compaction, never one a live writer is about to rename."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lookbench import _tempfiles
from lookbench.cli import app
from lookbench.results import StudyResults
from lookbench.results.store import COMPACTED_FILE, write_part
from tests.study.test_lost_curves import _curve, _row

runner = CliRunner()
TINY = ["digits", "--lr", "0.03,0.3", "--k", "5", "--alpha", "0.5", "--epochs", "2",
        "--devices", "cpu", "--workers", "1"]
NAME = "digits-sgd"
HOURS_AGO = time.time() - 3 * 3600


def invoke(*args: str):
    return runner.invoke(app, list(args))


def _old(path: Path, content: bytes = b"half a file") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (HOURS_AGO, HOURS_AGO))
    return path


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _tagged(final: Path, pid: int, start: str | None = None) -> Path:
    """A temporary file's name as a process ``pid`` of this machine writes it."""
    start = _tempfiles.process_start(pid) if start is None else start
    return final.with_name(f".{final.name}.w{pid}-{start or ''}-{_tempfiles._machine()}-"
                           f"0123456789ab.tmp")


@pytest.fixture
def study(tmp_path: Path) -> Path:
    first = invoke("run", *TINY, "--out", str(tmp_path))
    assert first.exit_code == 0, first.stderr
    return tmp_path / NAME


def _leave_parts(study: Path) -> str:
    """What a run killed between its last record and its compaction leaves: a trial's rows
    in part files beside the compacted ones (the same rows: it is the trial's record)."""
    trials = pq.read_table(study / "trials" / COMPACTED_FILE)
    curves = pq.read_table(study / "curves" / COMPACTED_FILE)
    trial = trials["trial"][0].as_py()
    for directory, table in (("trials", trials), ("curves", curves)):
        write_part(study / directory, trial, table.filter(pc.equal(table["trial"], trial)))
    return trial


def test_a_rerun_of_a_complete_study_compacts_and_removes_dead_temporary_files(study):
    before = StudyResults(study).trials().to_pandas().sort_values("trial").reset_index(drop=True)
    trial = _leave_parts(study)
    dead = [
        # killed writes of an earlier version's names (no writer in them): old
        _old(study / "trials" / f".batch-{'1' * 20}-abcd0123.parquet.{'0f' * 16}.tmp"),
        _old(study / "curves" / f".part-{trial}.parquet.{'1e' * 16}.tmp"),
        _old(study / "checkpoints" / f".{trial}.pt.{'2d' * 16}.tmp"),
        # a writer of this machine that has ended: however fresh
        _tagged(study / "curves" / f"batch-{'2' * 20}-abcd0123.parquet", _dead_pid()),
        _tagged(study / "checkpoints" / "0123456789abcdef.pt", _dead_pid()),
        # a pid now another process's (it started later than the writer)
        _tagged(study / "checkpoints" / "fedcba9876543210.pt", os.getpid(), start="1"),
    ]
    for path in dead[3:]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    live = [
        # a write in progress with an earlier version's name: fresh
        study / "trials" / f".part-{trial}.parquet.{'3c' * 16}.tmp",
        study / "checkpoints" / f".0123456789abcdef.pt.{'4b' * 16}.tmp",
        # a live writer of this machine (this process): however old
        _tagged(study / "curves" / f"batch-{'3' * 20}-abcd0123.parquet", os.getpid()),
        _tagged(study / "checkpoints" / "0123456789abcdef.pt", os.getpid()),
    ]
    for path in live:
        path.write_bytes(b"being written")
    for path in live[2:]:
        os.utime(path, (HOURS_AGO, HOURS_AGO))
    assert len(list((study / "trials").glob("*.parquet"))) == 2

    again = invoke("run", *TINY, "--out", str(study.parent))
    assert again.exit_code == 0, again.stderr
    assert "4 of 4 trials recorded" in again.output and "warning" not in again.stderr
    for table in ("trials", "curves"):  # compacted: one file per table
        assert sorted(p.name for p in (study / table).glob("*.parquet")) == [COMPACTED_FILE]
    assert not [p for p in dead if p.exists()]
    assert all(p.exists() for p in live)
    after = StudyResults(study).trials().to_pandas().sort_values("trial").reset_index(drop=True)
    assert after.equals(before)  # the same rows, each once


def test_a_live_writers_temporary_file_survives_a_compaction_and_is_renamed(tmp_path):
    """A compaction (``lookbench compact``, or another run's) beside a write in progress: the
    write's temporary file stays, however old, and its rename succeeds."""
    results = StudyResults(tmp_path)
    results.write_trial(_row("a", 2), _curve("a", 2))
    table = pq.read_table(tmp_path / "trials" / "part-a.parquet")
    final = tmp_path / "trials" / "part-b.parquet"
    tmp = _tempfiles.temp_path(final)  # this process: a live writer
    pq.write_table(table, tmp)
    os.utime(tmp, (HOURS_AGO, HOURS_AGO))
    dead = _old(tmp_path / "trials" / f".part-c.parquet.{'5a' * 16}.tmp")
    result = invoke("compact", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert tmp.exists() and not dead.exists()
    os.replace(tmp, final)  # (what the writer does next)
    assert final.exists()


WRITER = """
import sys, time
from pathlib import Path
from tests.study.test_lost_curves import _curve, _row
from lookbench.results import StudyResults

results = StudyResults(Path(sys.argv[1]))
n = 0
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    results.write_trials([(_row(f"t{n}", 2), _curve(f"t{n}", 2)),
                          (_row(f"t{n + 1}", 2), _curve(f"t{n + 1}", 2))])
    n += 2
print(n)
"""


def test_compactions_beside_another_process_writing_never_break_its_writes(tmp_path):
    """Two processes on one folder: one writes batches as fast as it can, the other compacts
    over and over (each compaction removing dead temporary files): every write lands, and
    every trial is read once."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]))
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(tmp_path),
                               "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env)
    results = StudyResults(tmp_path)
    compactions = 0
    while writer.poll() is None:
        results.compact()
        compactions += 1
    out, err = writer.communicate()
    assert writer.returncode == 0, err
    written = int(out.strip())
    results.compact()
    trials = results.trials()["trial"].to_pylist()
    assert written > 0 and compactions > 1
    assert len(trials) == written and len(set(trials)) == written
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == [COMPACTED_FILE]


def test_a_failed_compaction_is_one_warning_naming_the_file(study, monkeypatch):
    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device",
                      str(study / "trials" / COMPACTED_FILE))

    monkeypatch.setattr(StudyResults, "compact", full)
    again = invoke("run", *TINY, "--out", str(study.parent))
    assert again.exit_code == 0, again.stderr
    warnings = [line for line in again.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: the results were not compacted ({study / 'trials'}/"
                        f"{COMPACTED_FILE}: No space left on device); `lookbench compact` "
                        f"does it later"]


def test_temporary_file_names_say_who_writes_them(tmp_path):
    final = tmp_path / "part-x.parquet"
    tmp = _tempfiles.temp_path(final)
    assert tmp.parent == tmp_path and tmp.name.startswith(".part-x.parquet.w")
    assert _tempfiles.final_name(tmp.name) == final.name
    assert _tempfiles.final_name(f".part-x.parquet.{'ab' * 16}.tmp") == final.name
    assert _tempfiles.final_name(".study.json.tmp") is None  # (not a write of these)
    assert _tempfiles.held_by_live_writer(tmp.name)
    tmp.write_bytes(b"")
    assert not _tempfiles.is_dead(tmp)
    os.utime(tmp, (HOURS_AGO, HOURS_AGO))
    assert not _tempfiles.is_dead(tmp)  # alive however old
    other = tmp_path / tmp.name.replace(f"-{_tempfiles._machine()}-", "-00000000-")
    other.write_bytes(b"")  # another machine's: only age tells
    assert not _tempfiles.is_dead(other)
    os.utime(other, (HOURS_AGO, HOURS_AGO))
    assert _tempfiles.is_dead(other)
