"""A worker process that stops outside a trial says why in one line of its log, never a
traceback, with the README's exit code (1: failed, the machine's fault included; 2: bad
input): ``lookbench run`` reads that line (issue 22, item 5)."""

from __future__ import annotations

import errno

import pytest

from lookbench.execution import worker
from lookbench.tasks import TaskNotFound


@pytest.mark.parametrize("error, code", [
    (OSError(errno.ENOSPC, "No space left on device", "/full/optuna.journal"), 1),
    (TaskNotFound("task 'mine.py:Task': no file mine.py"), 2),
])
def test_a_worker_process_stopped_outside_a_trial_says_why_in_one_line(tmp_path, monkeypatch,
                                                                        capsys, error, code):
    def stopped(opts):
        raise error

    monkeypatch.setattr(worker, "run_worker", stopped)
    monkeypatch.setattr(worker, "_exit_with_parent", lambda: None)
    monkeypatch.setattr(worker.signal, "signal", lambda *args: None)
    assert worker.main(["--study-dir", str(tmp_path), "--name", "s"]) == code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert ("/full/optuna.journal: No space left on device" in lines[0]) == (code == 1)
