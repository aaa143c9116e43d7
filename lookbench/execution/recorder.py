"""A worker's finished trials, recorded many at a time (group commit).

A trial of a small task (the analytic quadratics, digits) finishes in milliseconds. Recorded
alone, each would cost two Parquet files written and fsynced, three journal appends fsynced
and a hold of the study lock: more than the trial. So a worker keeps its finished trials for
at most ``LOOKBENCH_RECORD_EVERY_S`` seconds (default 1; 0 records each at once), or
:data:`MAX_PENDING` of them, and records them together: one batch file per table
(``lookbench.results.store``), with every Optuna outcome committed before in one hold of the
study lock, one append on the study's own journal, and marked finished after in one more
(``TrialQueue.finish_many``: the outcome reaches the storage before the rows, so that no
machine runs a trial again whose rows another wrote). A trial that took longer than that is
recorded at once, with any kept before it.

Nothing is lost meanwhile: a kept trial stays RUNNING in Optuna, owned by this live worker, its
heartbeat kept up, and its checkpoint (if it had one) kept, so a kill costs only the time to
train it again; it goes back to the queue, runs again and gives the same result.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

from lookbench.coordination.queue import Claimed, Outcome, TrialQueue
from lookbench.results import StudyResults
from lookbench.timeline import mark

RECORD_EVERY_ENV = "LOOKBENCH_RECORD_EVERY_S"
RECORD_EVERY_S = 1.0
MAX_PENDING = 256  # (a batch file of a few hundred rows is written in a few milliseconds)


def record_interval_s() -> float:
    """How long finished trials may wait to be recorded: ``LOOKBENCH_RECORD_EVERY_S``, else
    :data:`RECORD_EVERY_S` (0: each at once)."""
    text = os.environ.get(RECORD_EVERY_ENV, "").strip()
    try:
        value = float(text) if text else RECORD_EVERY_S
    except ValueError:
        value = RECORD_EVERY_S
    return value if math.isfinite(value) and value >= 0 else RECORD_EVERY_S


class Recorder:
    """Finished trials of one worker, kept until :meth:`flush` records them together.

    ``recorded(outcome)`` runs for each trial once Optuna knows its outcome and its result is
    written; ``lost(outcome, why)`` for one whose result here is discarded (another worker took
    it over meanwhile, or another trial of its id is recorded); ``failed(outcomes, error)`` when
    recording them raised (the caller decides whether the machine is at fault), after which
    the error propagates.
    """

    def __init__(self, queue: TrialQueue, results: StudyResults, *,
                 recorded: Callable[[Outcome], None],
                 lost: Callable[[Outcome, str], None],
                 failed: Callable[[list[Outcome], BaseException], None]) -> None:
        self.queue, self.results = queue, results
        self._recorded, self._lost, self._failed = recorded, lost, failed
        self.every = record_interval_s()
        self._pending: list[Outcome] = []
        self._since: float | None = None  # when the oldest kept trial was added
        self._at_once = False  # a kept trial took so long that it is recorded now

    def add(self, outcome: Outcome, wall_s: float) -> None:
        """Keep ``outcome`` (``wall_s``: how long the trial took); see :meth:`flush_if_due`."""
        if self._since is None:
            self._since = time.monotonic()
        self._pending.append(outcome)
        self._at_once = self._at_once or wall_s >= self.every

    def claims(self) -> list[Claimed]:
        """The trials kept, not recorded yet (the heartbeat keeps them alive)."""
        return [o.claimed for o in self._pending]

    def due(self) -> bool:
        return bool(self._pending) and (
            self._at_once or len(self._pending) >= MAX_PENDING or self.every == 0
            or time.monotonic() - (self._since or 0.0) >= self.every)

    def flush_if_due(self) -> None:
        if self.due():
            self.flush()

    def flush(self) -> None:
        """Record every kept trial now: their outcomes in Optuna, their rows, and Optuna's
        final states (``TrialQueue.finish_many``)."""
        pending, self._pending = self._pending, []
        self._since, self._at_once = None, False
        if not pending:
            return
        try:
            why = self.queue.finish_many(
                pending, lambda mine: self.results.write_trials([(o.row, o.curves)
                                                                 for o in mine]),
                recorded=self.results.recorded_view())
        except BaseException as e:
            self._failed(pending, e)
            raise
        mark(f"recorded {len(pending)}")
        for outcome, reason in zip(pending, why):
            if reason is None:
                self._recorded(outcome)
            else:
                self._lost(outcome, reason)
