"""Signals in a worker: training stops at once, storage updates are never cut in half."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from lookbench.coordination import interrupts as interrupts_mod
from lookbench.coordination.interrupts import Interrupts
from lookbench.coordination.queue import TrialQueue
from lookbench.execution import runner, worker
from lookbench.results import StudyResults
from tests.study.test_engine import TINY, invoke, optuna_trials


def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # the handler runs here, in the main thread


def test_a_signal_outside_training_is_held_until_a_safe_point() -> None:
    with Interrupts() as interrupts:
        _signal_self(signal.SIGINT)  # no KeyboardInterrupt here
        assert interrupts.pending
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()


def test_a_signal_during_training_interrupts_at_once() -> None:
    reached = []
    with Interrupts() as interrupts, pytest.raises(KeyboardInterrupt), interrupts.allowed():
        _signal_self(signal.SIGTERM)
        reached.append("after")
    assert not reached


def test_a_storage_write_inside_training_finishes_first() -> None:
    done = []
    with Interrupts() as interrupts, pytest.raises(KeyboardInterrupt), interrupts.allowed():
        with interrupts.deferred():
            _signal_self(signal.SIGINT)
            done.append("write")
        done.append("never")
    assert done == ["write"]


def test_entering_training_with_a_pending_signal_raises() -> None:
    with Interrupts() as interrupts:
        _signal_self(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt), interrupts.allowed():
            pytest.fail("training must not start")


def test_handlers_are_restored_and_other_threads_leave_them_alone() -> None:
    before = {s: signal.getsignal(s) for s in interrupts_mod.SIGNALS}
    with Interrupts():
        assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]
    assert {s: signal.getsignal(s) for s in interrupts_mod.SIGNALS} == before

    seen = []

    def in_thread() -> None:
        with Interrupts() as inert:
            seen.append(inert.pending)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert seen == [False]
    assert {s: signal.getsignal(s) for s in interrupts_mod.SIGNALS} == before


def test_a_retry_wait_ends_when_interrupted() -> None:
    with Interrupts() as interrupts:
        interrupts.pending = True
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            interrupts_mod.sleep(30)
        assert time.monotonic() - start < 1
    interrupts_mod.sleep(0.01)  # not installed: a plain sleep


def test_a_second_interrupt_during_the_hand_back_leaves_nothing_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in a terminal, then `lookbench run`'s SIGTERM while the trial is handed back."""
    real_release = TrialQueue.release
    released = []

    def release(self, claimed, reason):  # noqa: ANN001, ANN202
        _signal_self(signal.SIGTERM)  # arrives in the middle of the hand-back
        real_release(self, claimed, reason)
        released.append(reason)

    class InterruptedTrial(runner.Trial):
        def run_epoch(self):  # noqa: ANN202
            record = super().run_epoch()
            _signal_self(signal.SIGINT)  # Ctrl-C during training
            return record

    monkeypatch.setattr(TrialQueue, "release", release)
    monkeypatch.setattr(runner, "Trial", InterruptedTrial)
    previous = signal.signal(signal.SIGTERM, worker._raise_interrupt)  # as a worker process has
    try:
        # (one trial at a time: the hand-back of a single trial; populations:
        # tests/population/test_population_study.py)
        result = invoke("run", *TINY, "--out", str(tmp_path), "--population", "1")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 130, result.output
    assert released == ["interrupted"]
    frozen = optuna_trials(tmp_path, "digits-sgd")
    assert not [t for t in frozen if t.state == TrialState.RUNNING]
    assert [t for t in frozen if t.state == TrialState.WAITING]  # planned again

    monkeypatch.undo()
    result = invoke("run", *TINY, "--out", str(tmp_path), "--population", "1")  # (as created)
    assert result.exit_code == 0, result.output
    assert len(StudyResults(tmp_path / "digits-sgd").recorded()) == 8
