"""The study's work queue, kept in Optuna's storage: every planned trial runs exactly once.

Each lookbench study is one Optuna study per optimizer (``<study>.lookahead``,
``<study>.sgd``), so optuna-dashboard shows each with its own parameters. A planned
(configuration, seed) is an Optuna trial created WAITING with its parameters, its lookbench id
and its full config as user attributes. Workers claim a WAITING trial by moving it to RUNNING,
which Optuna's storages do atomically (the same step ``Study.ask`` uses for enqueued trials);
no sampler is involved, because ``GridSampler`` under parallel workers has produced duplicates
(optuna #2039, #4627, #5489, #6073).

Optuna's journal storage has no heartbeat (#6615) and its RDB heartbeat only works under
``study.optimize``, so ownership and liveness are kept here, as system attributes: the owner's
host, pid and process start time, and a heartbeat time. A RUNNING trial whose owner is gone (its
process on this host has exited, or its heartbeat on another host is older than the grace
period) is *stale*: it is marked FAIL (superseded) and its id planned again, under the study
lock, and whoever claims it continues from its checkpoint. The Parquet tables are the record
of what is done: an id with a part file is never run again, whatever Optuna says.

Exactly once, also across machines that write their rows into folders of their own: a finished
trial's outcome reaches the storage *before* its rows are written (``finish_many``), so no
trial is ever visible as done in a folder while the storage still offers it to others.
1. Under the study lock, for trials still this worker's (RUNNING, not superseded, no other
   trial of the id done): the outcome and the folder that is to hold the rows are written
   (``lookbench:outcome``, then ``lookbench:recorded_in``, the commit). From then on every
   machine counts the trial as done and none takes it over, alive or dead its worker.
2. The rows are written (outside the lock: a slow disk must not stall every machine).
3. The trial is marked finished (COMPLETE, PRUNED or FAIL), without the lock: nobody else
   touches a committed trial whose worker is alive.
A kill between 1 and 3 leaves the trial RUNNING and committed. Its own folder's next run (or
any worker of that folder once the worker is dead: ``replan``) finishes it from the committed
outcome when its row is there, or, when the kill came before the rows were written, runs it
again there (the row belongs there; other machines keep counting it done meanwhile, and it is
never lost silently: ``lookbench run`` there puts it right). A worker that cannot write the
rows (a full disk) takes its commit back. A trial the storage has no outcome for, whose row is
in this folder (a run of an earlier version, killed between its rows and its outcome), gets
its outcome from that row instead of running again (``replan``, ``is_duplicate``).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from lookbench._tempfiles import pid_alive, process_start
from lookbench.coordination.storage import study_lock
from lookbench.hparams import BY_NAME, HYPERPARAMETERS
from lookbench.study.config import TrialConfig
from lookbench.study.spec import distribution

ID_ATTR = "lookbench_id"
CONFIG_ATTR = "lookbench_config"
SUPERSEDED_ATTR = "lookbench_superseded"
POINT_ATTR = "lookbench_point"  # TPE: which proposed configuration a seed run belongs to
SEED_ATTR = "lookbench_seed"  # the seed: an attribute, not a parameter (it is not searched)
VOIDED_ATTR = "lookbench_voided"  # study attribute: numbers of finished trials to run again
OWNER_ATTR = "lookbench:owner"
HEARTBEAT_ATTR = "lookbench:heartbeat"
EPOCH_ATTR = "lookbench:epoch"
RECORDED_IN_ATTR = "lookbench:recorded_in"  # host and study folder that hold its rows
OUTCOME_ATTR = "lookbench:outcome"  # {"state", "value"}: written with the commit (see above)
# A population member's own time (its trials-table wall_s: its share of the population's time),
# a user attribute optuna-dashboard shows; its Optuna duration is made the same (``_finish_at``)
MEMBER_WALL_ATTR = "member_wall_s"

from lookbench.coordination.heartbeat import (  # noqa: E402,F401 (re-exported)
    GRACE_S,
    HEARTBEAT_S,
    MIN_GRACE_S,
    check_stale_after,
)


def _committed(t: FrozenTrial) -> bool:
    """Whether ``t``'s outcome reached the storage (its folder is the last thing written,
    after the outcome) and was not taken back since."""
    return RECORDED_IN_ATTR in t.system_attrs and SUPERSEDED_ATTR not in t.user_attrs


def _outcome_of(t: FrozenTrial) -> tuple[str, float | None]:
    """(complete, failed or diverged; the final metric) of a finished or committed trial."""
    if t.state.is_finished():
        state = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed"}.get(
            t.state, "diverged")
        return state, (t.values[0] if state == "complete" and t.values else None)
    o = t.system_attrs.get(OUTCOME_ATTR) or {}
    final, values = _final_state(str(o.get("state")), o.get("value"))
    return {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed"}.get(
        final, "diverged"), (values[0] if values else None)


def this_owner() -> dict[str, object]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start(pid)}


def owner_alive(owner: dict | None, heartbeat: float | None, started: float | None,
                grace_s: float) -> bool:
    """Whether the process that owns a RUNNING trial is still at work."""
    if not owner:  # claims set the owner under the study lock: its claimant died mid-claim
        return False
    if owner.get("host") == socket.gethostname():
        return pid_alive(int(owner["pid"]), owner.get("start"))  # type: ignore[arg-type]
    last = heartbeat if heartbeat is not None else started
    return last is not None and time.time() - last < grace_s


def distributions(configs: Iterable[TrialConfig]) -> dict[str, BaseDistribution]:
    """One distribution per hyperparameter over all planned configs, for optuna-dashboard
    (``lookbench.study.spec.distribution``: the table's scale and choices).

    Categorical choices are the table's full lists, so a study whose grid grows later stays
    compatible with the trials already stored. The seed is not a parameter: nothing searches
    it, and optuna-dashboard would count it in the parameters' importance; each trial carries
    it as the user attribute ``lookbench_seed``.
    """
    values: dict[str, list] = {}
    for c in configs:
        for field, v in c.hyperparameters().items():
            values.setdefault(field, []).append(v)
        if c.optimizer == "lookahead":  # its unset policy is a value too (recorded as such)
            for h in HYPERPARAMETERS:
                if h.unset is not None and getattr(c, h.name) is None:
                    values.setdefault(h.name, []).append(h.unset)
    out = {}
    for field, vals in values.items():
        dist = distribution(field, vals)
        if dist is not None:
            out[field] = dist
    return out


def _params(config: TrialConfig, dists: dict[str, BaseDistribution]) -> dict[str, object]:
    params: dict[str, object] = {}
    for field, dist in dists.items():
        v = getattr(config, field)
        if v is None and config.optimizer == "lookahead":
            v = BY_NAME[field].unset
        if isinstance(dist, CategoricalDistribution):
            if v in dist.choices:
                params[field] = v
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            params[field] = int(v) if isinstance(dist, IntDistribution) else float(v)
    return params


@dataclass
class Claimed:
    """A trial this worker owns: its Optuna trial, lookbench id and config."""

    study: optuna.Study
    storage_id: int  # Optuna's id of the trial in the storage (its number is per study)
    number: int
    lookbench_id: str
    config: TrialConfig
    started: datetime.datetime | None = None  # Optuna's datetime_start of the claim


@dataclass
class Outcome:
    """A finished trial on its way to the tables and to Optuna (see ``finish_many``)."""

    claimed: Claimed
    state: str  # "complete", "diverged" or "failed"
    value: float | None  # the ranking metric's final value
    epochs: int | None  # the epochs it did
    row: dict[str, Any]  # its trials-table row
    curves: list[dict[str, Any]]  # its curves-table rows
    error: str | None = None


_STATE = "state"  # (an op of ``_apply``: the trial's state and values [and completion time])
_USER_ATTR = "user attribute"  # (an op of ``_apply``: one user attribute, (key, value))


def _member_wall(row: dict[str, Any]) -> float | None:
    """A population member's own time (its trials-table row's ``wall_s``: its share of the
    population's), None for a trial run alone."""
    population, wall = row.get("population"), row.get("wall_s")
    if population is None or population <= 1 or wall is None or not math.isfinite(wall):
        return None
    return max(0.0, float(wall))


def _finish_at(started: datetime.datetime | None, wall_s: float) -> datetime.datetime | None:
    """When a population member's Optuna trial is to complete so that its duration (Optuna's
    ``datetime_complete - datetime_start``, which optuna-dashboard shows) is its own share of
    the population's time, not the whole population's: its start plus ``wall_s``, never later
    than now (a resumed member's time includes runs before this claim). Aware, in UTC."""
    if started is None:
        return None
    start = started.astimezone() if started.tzinfo is None else started  # (Optuna's: local)
    now = datetime.datetime.now(datetime.timezone.utc)
    return min(start + datetime.timedelta(seconds=wall_s), now).astimezone(
        datetime.timezone.utc)


def _set_completed_at(storage: optuna.storages.BaseStorage, trial_id: int,
                      when: datetime.datetime) -> None:
    """Set a finished trial's ``datetime_complete`` in an RDB storage, whose API always sets
    it to the time of the call: one UPDATE of Optuna's ``trials`` table (its schema, not its
    API; best effort, as the time is only shown)."""
    inner = getattr(storage, "inner", storage)
    engine = getattr(inner, "engine", None)
    if not isinstance(inner, optuna.storages.RDBStorage) or engine is None:
        return
    with contextlib.suppress(Exception):
        import sqlalchemy
        from optuna.storages._rdb import models

        table = models.TrialModel.__table__
        local = when.astimezone().replace(tzinfo=None)  # (as Optuna stores it: local, naive)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.update(table).where(table.c.trial_id == trial_id)
                         .values(datetime_complete=local))


def name_metric(study: optuna.Study, metric: str) -> None:
    """Name the study's objective after the task's ranking metric (optuna-dashboard and
    ``trials_dataframe`` show it instead of "Objective 0"); written only where it differs."""
    if study.metric_names == [metric]:
        return
    with warnings.catch_warnings():  # (experimental since Optuna 3.2, still the API)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric])


def _final_state(state: str, value: float | None) -> tuple[TrialState, list[float] | None]:
    """Optuna's state for a lookbench outcome: COMPLETE with the metric, FAIL, or PRUNED
    (diverged, or no finite metric: stopped early, not an error)."""
    if state == "complete" and value is not None:
        return TrialState.COMPLETE, [value]
    if state == "failed":
        return TrialState.FAIL, None
    return TrialState.PRUNED, None


def _row_outcome(row: dict[str, Any]) -> tuple[str, float | None, int | None]:
    """(state, final ranking metric, epochs done) of a trials-table row."""
    metric = row.get("metric")
    value = row.get(f"final_{metric}") if metric else None
    if value is not None and not math.isfinite(value):
        value = None
    return str(row.get("state")), value, row.get("epochs_done")


def _apply(storage: optuna.storages.BaseStorage, ops: list[tuple[int, str, Any]]) -> None:
    """Write ``(trial id, system attribute or _STATE or _USER_ATTR, value)`` updates: on the
    study's own journal file as one append (Optuna's API appends, and fsyncs, once per update;
    its journal records are its documented file format, written here as its ``_write_log``
    writes them), elsewhere one call each. A final ``_STATE``'s optional third item is the
    time it completed (see :func:`_finish_at`), else now."""
    from lookbench.coordination.journal import LockedJournalFile

    backend = getattr(storage, "_backend", None)
    replay = getattr(storage, "_replay_result", None)
    lock = getattr(storage, "_thread_lock", None)
    if isinstance(backend, LockedJournalFile) and replay is not None and lock is not None:
        from optuna.storages.journal._storage import JournalOperation

        now = datetime.datetime.now(tz=datetime.timezone.utc).isoformat(timespec="microseconds")
        with lock:
            worker = replay.worker_id
            logs: list[dict[str, Any]] = []
            for trial_id, key, value in ops:
                if key == _STATE:
                    state, values, *at = value
                    when = at[0].isoformat(timespec="microseconds") if at and at[0] else now
                    logs.append({"op_code": JournalOperation.SET_TRIAL_STATE_VALUES,
                                 "worker_id": worker, "trial_id": trial_id, "state": state,
                                 "values": values,
                                 "datetime_start" if state == TrialState.RUNNING
                                 else "datetime_complete": when})
                elif key == _USER_ATTR:
                    logs.append({"op_code": JournalOperation.SET_TRIAL_USER_ATTR,
                                 "worker_id": worker, "trial_id": trial_id,
                                 "user_attr": {value[0]: value[1]}})
                else:
                    logs.append({"op_code": JournalOperation.SET_TRIAL_SYSTEM_ATTR,
                                 "worker_id": worker, "trial_id": trial_id,
                                 "system_attr": {key: value}})
            backend.append_logs(logs)
            storage._sync_with_backend()  # type: ignore[attr-defined]
        return
    for trial_id, key, value in ops:
        if key == _STATE:
            state, values, *at = value
            storage.set_trial_state_values(trial_id, state, values)
            if at and at[0] is not None and state.is_finished():
                _set_completed_at(storage, trial_id, at[0])
        elif key == _USER_ATTR:
            storage.set_trial_user_attr(trial_id, *value)
        else:
            storage.set_trial_system_attr(trial_id, key, value)


class TrialQueue:
    """The planned trials of one lookbench study, on one Optuna storage."""

    def __init__(self, storage: optuna.storages.BaseStorage, name: str, optimizers: Iterable[str],
                 direction: str, study_dir: Path, *, grace_s: float = GRACE_S,
                 local: bool = False, metric: str | None = None) -> None:
        """``local``: the storage is this study folder's own journal, so every finished trial
        wrote its part file here, and one that has none (deleted) runs again. On a shared
        database a trial finished by another machine has its part file there. ``metric``:
        the task's ranking metric, the name of every study's objective (:func:`name_metric`)."""
        self.storage = storage
        self.name = name
        self.study_dir = study_dir
        self.grace_s = grace_s
        self.local = local
        self.studies = {
            opt: optuna.create_study(storage=storage, study_name=f"{name}.{opt}",
                                     direction=direction, load_if_exists=True)
            for opt in optimizers
        }
        if metric is not None:
            for study in self.studies.values():
                name_metric(study, metric)
        self._waiting: dict[str, list[int]] = {}
        self._ahead: list[Claimed] = []  # taken by claim(ahead=...), not handed out yet
        self._turn = 0
        # Per study: how many of its trials are indexed, lookbench id -> their numbers, and
        # the numbers of trials that had no id yet (a TPE proposal gets it after creation).
        self._index: dict[int, tuple[int, dict[str, list[int]], set[int]]] = {}

    # -- planning -------------------------------------------------------------------------

    def _trials(self, study: optuna.Study, states: tuple[TrialState, ...] | None = None
                ) -> list[FrozenTrial]:
        return self.storage.get_all_trials(study._study_id, deepcopy=False, states=states)

    def _alive(self, t: FrozenTrial) -> bool:
        started = t.datetime_start.timestamp() if t.datetime_start else None
        return owner_alive(t.system_attrs.get(OWNER_ATTR), t.system_attrs.get(HEARTBEAT_ATTR),
                           started, self.grace_s)

    def _voided(self, study: optuna.Study) -> set[int]:
        """Numbers of finished trials whose result the user asked to run again."""
        attrs = self.storage.get_study_user_attrs(study._study_id)
        return set(attrs.get(VOIDED_ATTR, []))

    def _done(self, t: FrozenTrial, recorded: Container[str], voided: set[int]) -> bool:
        """Whether trial ``t`` counts as done: finished, or committed (its outcome in the
        storage, its rows on their way: see the module's docstring); not superseded nor
        voided; and its rows are here, or belong in another folder (on a shared database, the
        folder of the machine that ran it, which keeps them), or are being written here by
        its live worker."""
        if SUPERSEDED_ATTR in t.user_attrs or t.number in voided:
            return False
        finished = t.state.is_finished()
        if not finished and not (t.state == TrialState.RUNNING and _committed(t)):
            return False
        tid = t.user_attrs.get(ID_ATTR)
        if tid in recorded:
            return True
        # Its rows belong in this very folder and are not here: being written by its live
        # worker (committed, not finished yet); else lost (deleted, or a kill came between
        # the commit and the rows), so it runs again here. (On the study's own journal every
        # trial is recorded here; on a shared database, trials of other machines, or of
        # other folders of this one, are theirs to keep.)
        if self.local or t.system_attrs.get(RECORDED_IN_ATTR) == self._here:
            return not finished and self._alive(t)
        return True

    @functools.cached_property
    def _here(self) -> str:
        return f"{socket.gethostname()}:{self.study_dir.resolve()}"

    def finished_ids(self, recorded: set[str]) -> set[str]:
        """Ids of the trials done by any machine (see :meth:`_done`)."""
        out = set()
        for study in self.studies.values():
            voided = self._voided(study)
            out |= {t.user_attrs[ID_ATTR] for t in self._trials(study)
                    if ID_ATTR in t.user_attrs and self._done(t, recorded, voided)}
        return out

    def void(self, ids: set[str]) -> int:
        """Mark the finished trials with these ids to be run again (``--retry-failed``): their
        numbers join the study attribute every worker and machine reads. Returns how many."""
        count = 0
        with study_lock(self.storage, self.study_dir, self.name):
            for study in self.studies.values():
                voided = self._voided(study)
                new = {t.number for t in self._trials(study)
                       if t.state.is_finished() and t.user_attrs.get(ID_ATTR) in ids}
                if new - voided:
                    study.set_user_attr(VOIDED_ATTR, sorted(voided | new))
                    count += len(new - voided)
        return count

    def _supersede(self, t: FrozenTrial, reason: str, force: bool = False) -> None:
        """Mark ``t`` (as just read) FAIL and superseded, unless it is finished, or committed
        (``force``: taking back a commit whose rows are known not to be written)."""
        if t.state.is_finished() or (_committed(t) and not force):
            return
        try:
            self.storage.set_trial_user_attr(t._trial_id, SUPERSEDED_ATTR, reason)
            self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            pass  # finished meanwhile by its owner: nothing to supersede

    def replan(self, planned: dict[str, TrialConfig], recorded: set[str]) -> int:
        """Plan again what is missing: stale RUNNING trials are superseded and their configs
        queued again, then every planned id that is neither recorded (here, or finished in the
        storage by any machine), waiting, nor running live is queued. Returns how many trials
        were added."""
        added = 0
        with study_lock(self.storage, self.study_dir, self.name):
            missing: list[tuple[optuna.Study, str, TrialConfig, dict, FrozenTrial | None]] = []
            for opt, study in self.studies.items():
                covered: set[str] = set()
                done: set[str] = set()
                orphans: dict[str, FrozenTrial] = {}
                voided = self._voided(study)
                trials = self._trials(study)
                for t in trials:
                    tid = t.user_attrs.get(ID_ATTR)
                    if t.state == TrialState.RUNNING and _committed(t):
                        # Its outcome is in the storage; its rows are being written, or a kill
                        # came before its worker marked it finished.
                        if self._done(t, recorded, voided):
                            covered.add(tid)
                            done.add(tid)
                            if tid in recorded and not self._alive(t):
                                self._finish_committed(t)  # (its rows are here: finish it)
                        else:  # its rows were to be written here, and never were: run again
                            self._supersede(t, "its worker stopped before writing its rows",
                                            force=True)
                            orphans[tid] = t
                        continue
                    if t.state.is_finished():
                        if tid is not None and self._done(t, recorded, voided):
                            covered.add(tid)  # done (recorded by whichever machine ran it)
                            done.add(tid)
                        continue
                    if t.state == TrialState.RUNNING and not self._alive(t):
                        self._supersede(t, "stale: its worker stopped")
                        if tid is not None:
                            orphans[tid] = t
                    elif tid is not None:
                        covered.add(tid)
                items = [(tid, c) for tid, c in planned.items() if c.optimizer == opt]
                dists = distributions(c for _, c in items)
                # A row here whose trial has no outcome in the storage (a run of an earlier
                # version killed between the two; a journal whose torn last record was set
                # aside): its outcome is recorded from the row, rather than other machines
                # running it again.
                known = {t.user_attrs[ID_ATTR]: t for t in trials
                         if ID_ATTR in t.user_attrs and CONFIG_ATTR in t.user_attrs}
                for tid in {*(tid for tid, _ in items), *known} - done:
                    if tid in recorded:
                        t = known.get(tid)
                        config = planned.get(tid) or TrialConfig.model_validate(
                            t.user_attrs[CONFIG_ATTR])  # type: ignore[union-attr]
                        missing.append((study, tid, config,
                                        dists if tid in planned else dict(t.distributions),
                                        t))  # type: ignore[union-attr]
                for tid, t in orphans.items():  # e.g. TPE's proposals, which no plan lists
                    if tid not in recorded and tid not in covered and tid not in planned:
                        config = TrialConfig.model_validate(t.user_attrs[CONFIG_ATTR])
                        self._enqueue(study, tid, config, dict(t.distributions),
                                      point=t.user_attrs.get(POINT_ATTR))
                        covered.add(tid)
                        added += 1
                for tid, cfg in items:
                    if tid in recorded or tid in covered:
                        continue
                    self._enqueue(study, tid, cfg, dists)
                    added += 1
            if missing:
                self._record_from_rows(missing)
        self._waiting.clear()
        return added

    def _finish_committed(self, t: FrozenTrial) -> None:
        """Mark committed trial ``t``, whose rows are written, finished with the outcome its
        commit holds (its worker died before it did)."""
        o = t.system_attrs.get(OUTCOME_ATTR)
        if o is None:
            return
        with contextlib.suppress(RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            self.storage.set_trial_state_values(t._trial_id,
                                                *_final_state(o.get("state"), o.get("value")))

    def _rows(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The trials-table rows of ``ids`` in this study folder (read only for the rare trial
        whose row is here and whose outcome the storage lacks)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from lookbench.results import StudyResults

        table = StudyResults(self.study_dir).trials()
        wanted = pa.array(sorted(set(ids)), pa.string())
        return {r["trial"]: r for r in
                table.filter(pc.is_in(table["trial"], value_set=wanted)).to_pylist()}

    @staticmethod
    def _commit_ops(storage_id: int, state: str, value: float | None, epochs: int | None,
                    here: str) -> list[tuple[int, str, Any]]:
        """The commit of an outcome: the outcome, its epochs, then the folder of its rows,
        which marks it committed (written last: a kill in between leaves no commit)."""
        ops: list[tuple[int, str, Any]] = [
            (storage_id, OUTCOME_ATTR, {"state": state, "value": value})]
        if epochs is not None:
            ops.append((storage_id, EPOCH_ATTR, epochs))
        ops.append((storage_id, RECORDED_IN_ATTR, here))
        return ops

    def _record_from_rows(self, missing: list[tuple[optuna.Study, str, TrialConfig, dict,
                                                    FrozenTrial | None]]) -> None:
        """Give the storage the outcomes of trials whose rows are in this folder and that it
        has no outcome for (see :meth:`replan`), as finished trials recorded here; under the
        study lock the caller holds. A row that cannot be read is left for the next look."""
        try:
            rows = self._rows(tid for _, tid, _, _, _ in missing)
        except Exception:  # (a damaged file: the run reports it where it reads the tables)
            return
        now = datetime.datetime.now(tz=datetime.timezone.utc)
        for study, tid, config, dists, t in missing:
            row = rows.get(tid)
            if row is None:
                continue
            state, value, epochs = _row_outcome(row)
            final, values = _final_state(state, value)
            params = _params(config, dists)
            user_attrs: dict[str, Any] = {ID_ATTR: tid,
                                          CONFIG_ATTR: config.model_dump(mode="json"),
                                          SEED_ATTR: config.seed}
            if t is not None and t.user_attrs.get(POINT_ATTR) is not None:
                user_attrs[POINT_ATTR] = t.user_attrs[POINT_ATTR]
            wall = _member_wall(row)
            if wall is not None:  # (its duration its own time, as _mark_finished makes it)
                user_attrs[MEMBER_WALL_ATTR] = wall
            system_attrs = {OWNER_ATTR: this_owner(), EPOCH_ATTR: epochs,
                            OUTCOME_ATTR: {"state": state, "value": value},
                            RECORDED_IN_ATTR: self._here}
            self.storage.create_new_trial(study._study_id, template_trial=FrozenTrial(
                number=-1, state=final, value=None, values=values,
                datetime_start=now - datetime.timedelta(seconds=wall or 0.0),
                datetime_complete=now, params=params,
                distributions={k: dists[k] for k in params}, user_attrs=user_attrs,
                system_attrs=system_attrs, intermediate_values={}, trial_id=-1))

    def _enqueue(self, study: optuna.Study, tid: str, config: TrialConfig,
                 dists: dict[str, BaseDistribution], point: str | None = None) -> None:
        params = _params(config, dists)
        user_attrs: dict[str, Any] = {ID_ATTR: tid, CONFIG_ATTR: config.model_dump(mode="json"),
                                      SEED_ATTR: config.seed}
        if point is not None:
            user_attrs[POINT_ATTR] = point
        template = FrozenTrial(
            number=-1, state=TrialState.WAITING, value=None, datetime_start=None,
            datetime_complete=None, params=params,
            distributions={k: dists[k] for k in params}, user_attrs=user_attrs,
            system_attrs={}, intermediate_values={}, trial_id=-1,
        )
        self.storage.create_new_trial(study._study_id, template_trial=template)

    # -- claiming ---------------------------------------------------------------------------

    def claim(self, ahead: int = 1) -> Claimed | None:
        """Take a WAITING trial (alternating between the optimizers), or None if none is left.

        ``ahead`` > 1: take up to that many of one optimizer in one go (one hold of the lock,
        one journal append) and hand out the others on the next calls; for trials so short
        that claiming them one by one would cost more than running them. The ones taken ahead
        are RUNNING and this worker's (:meth:`claimed_ahead`: keep them alive; on a stop
        :meth:`release_ahead`)."""
        if self._ahead:
            return self._ahead.pop(0)
        opts = list(self.studies)
        for i in range(len(opts)):
            opt = opts[(self._turn + i) % len(opts)]
            claimed = self._claim_from(opt, max(1, ahead))
            if claimed:
                self._turn = (self._turn + i + 1) % len(opts)
                self._ahead = claimed[1:]
                return claimed[0]
        return None

    def claimed_ahead(self) -> list[Claimed]:
        return list(self._ahead)

    def release_ahead(self, reason: str) -> None:
        """Give back the trials taken ahead and not started (see :meth:`claim`)."""
        ahead, self._ahead = self._ahead, []
        for c in ahead:
            self.release(c, reason)

    def _claim_from(self, opt: str, n: int) -> list[Claimed]:
        study = self.studies[opt]
        for refresh in (False, True):
            if refresh or opt not in self._waiting:
                waiting = self._trials(study, (TrialState.WAITING,))
                self._waiting[opt] = [t._trial_id for t in waiting]
            queue = self._waiting[opt]
            while queue:
                ids, queue[:n] = queue[:n], []
                with study_lock(self.storage, self.study_dir, self.name):
                    taken = [sid for sid in ids if self._take(sid)] if len(ids) == 1 \
                        else self._take_many(study, ids)
                if taken:
                    return [self._claimed(study, sid) for sid in taken]
        return []

    def _take_many(self, study: optuna.Study, ids: list[int]) -> list[int]:
        """:meth:`_take` for several trials: those still WAITING, under the lock the caller
        holds, become RUNNING and this process's in one storage write (see ``_apply``)."""
        waiting = {t._trial_id for t in self._trials(study, (TrialState.WAITING,))}
        ids = [sid for sid in ids if sid in waiting]
        owner = this_owner()
        _apply(self.storage, [op for sid in ids for op in (
            (sid, _STATE, (TrialState.RUNNING, None)), (sid, OWNER_ATTR, owner))])
        running = {t._trial_id for t in self._trials(study, (TrialState.RUNNING,))}
        return [sid for sid in ids if sid in running]

    def _take(self, storage_id: int) -> bool:
        """WAITING → RUNNING with this process as owner, under the study lock held by the
        caller: RUNNING and its owner in one locked step, so a RUNNING trial without an owner
        is a claim cut off by a kill, which ``replan`` (also under the lock) takes back."""
        try:
            if not self.storage.set_trial_state_values(storage_id, TrialState.RUNNING):
                return False  # another worker was faster
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            return False
        self.storage.set_trial_system_attr(storage_id, OWNER_ATTR, this_owner())
        return True

    def _claimed(self, study: optuna.Study, storage_id: int) -> Claimed:
        frozen = self.storage.get_trial(storage_id)
        config = TrialConfig.model_validate(frozen.user_attrs[CONFIG_ATTR])
        return Claimed(study, storage_id, frozen.number, frozen.user_attrs[ID_ATTR], config,
                       frozen.datetime_start)

    def claim_matching(self, match: Callable[[TrialConfig, str], bool], limit: int
                       ) -> list[Claimed]:
        """Up to ``limit`` more WAITING trials, of any optimizer, whose (config, lookbench id)
        pass ``match``: the further members of a population. One lock for all of them."""
        if limit < 1:
            return []
        candidates = []
        for study in self.studies.values():
            for t in self._trials(study, (TrialState.WAITING,)):
                if CONFIG_ATTR not in t.user_attrs:
                    continue
                config = TrialConfig.model_validate(t.user_attrs[CONFIG_ATTR])
                if match(config, t.user_attrs[ID_ATTR]):
                    candidates.append((study, t._trial_id))
        taken: list[tuple[optuna.Study, int]] = []
        with study_lock(self.storage, self.study_dir, self.name):
            for study, storage_id in candidates:
                if len(taken) == limit:
                    break
                if self._take(storage_id):
                    taken.append((study, storage_id))
        return [self._claimed(study, storage_id) for study, storage_id in taken]

    def propose(self, opt: str, space: dict[str, BaseDistribution], seeds: int, budget: int,
                make_config: Callable[[dict[str, Any], int], TrialConfig],
                make_id: Callable[[TrialConfig], str]) -> Claimed | None:
        """TPE: let the study's sampler propose a new configuration (if fewer than ``budget``
        have been proposed) and claim its seed-0 run; its other seeds are queued WAITING.

        Under the study lock, so concurrent workers neither exceed the budget nor propose
        while seed runs are still waiting.
        """
        study = self.studies[opt]
        with study_lock(self.storage, self.study_dir, self.name):
            trials = self._trials(study)
            if any(t.state == TrialState.WAITING for t in trials):
                return None
            proposed = {t.user_attrs.get(POINT_ATTR) for t in trials
                        if t.user_attrs.get(POINT_ATTR) is not None}
            if len(proposed) >= budget:
                return None
            trial = study.ask(space)  # the study's sampler (TPE) proposes the point
            config = make_config(dict(trial.params), 0)
            tid = make_id(config)
            point = f"{len(proposed)}"
            for key, value in ((ID_ATTR, tid), (CONFIG_ATTR, config.model_dump(mode="json")),
                               (SEED_ATTR, config.seed), (POINT_ATTR, point)):
                self.storage.set_trial_user_attr(trial._trial_id, key, value)
            self.storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, this_owner())
            frozen = self.storage.get_trial(trial._trial_id)
            for seed in range(1, seeds):
                other = make_config(dict(trial.params), seed)
                self._enqueue(study, make_id(other), other, dict(frozen.distributions),
                              point=point)
        return Claimed(study, trial._trial_id, trial.number, tid, config,
                       frozen.datetime_start)

    def _same_id(self, claimed: Claimed) -> list[FrozenTrial]:
        """The other trials of ``claimed``'s study with its lookbench id, as they are now.

        Trials are only ever added, numbered in order, and a trial's id never changes, so an
        index of ids to numbers is extended with the new trials only: the check costs the same
        in a study of 10 trials or of 10,000 (every claim makes it)."""
        trials = self._trials(claimed.study)
        key = claimed.study._study_id
        n, by_id, unnamed = self._index.get(key, (0, {}, set()))
        if len(trials) < n or any(trials[k].number != k for k in (0, len(trials) - 1)
                                  if 0 <= k < len(trials)):
            n, by_id, unnamed = 0, {}, set()  # (not the numbering expected: index afresh)
        for k in [*sorted(unnamed), *range(n, len(trials))]:
            tid = trials[k].user_attrs.get(ID_ATTR)
            if tid is None:
                unnamed.add(k)
            else:
                unnamed.discard(k)
                by_id.setdefault(tid, []).append(k)
        self._index[key] = (len(trials), by_id, unnamed)
        return [trials[k] for k in by_id.get(claimed.lookbench_id, [])
                if trials[k]._trial_id != claimed.storage_id]

    def is_duplicate(self, claimed: Claimed, recorded: Container[str]) -> str | None:
        """Why ``claimed`` must not run: its result is recorded here, it finished on some
        machine, or an earlier trial with the same id is running live.

        Its row here with no outcome in the storage (see the module's docstring): ``claimed``
        takes its outcome from the row now, instead of running, and is reported recorded."""
        same = self._same_id(claimed)
        voided = self._voided(claimed.study) if same else set()
        if claimed.lookbench_id in recorded:
            if not any(self._done(t, recorded, voided) for t in same):
                self._record_claimed_from_row(claimed, recorded)
            return "already recorded"
        for t in same:
            if self._done(t, recorded, voided):
                return f"already finished as trial {t.number}"
            if t.state == TrialState.RUNNING and t.number < claimed.number and self._alive(t):
                return f"already running as trial {t.number}"
        return None

    def _record_claimed_from_row(self, claimed: Claimed, recorded: Container[str]) -> None:
        """Finish ``claimed`` with the outcome of its row in this folder (see
        :meth:`is_duplicate`), if it is still this worker's and no other trial of its id is
        done."""
        try:
            row = self._rows([claimed.lookbench_id]).get(claimed.lookbench_id)
        except Exception:  # (a damaged file: left to the next look)
            return
        if row is None:
            return
        state, value, epochs = _row_outcome(row)
        with study_lock(self.storage, self.study_dir, self.name):
            if self._refusal([claimed], recorded)[0] is not None:
                return
            _apply(self.storage, [
                *self._commit_ops(claimed.storage_id, state, value, epochs, self._here),
                (claimed.storage_id, _STATE, _final_state(state, value))])

    def previous_attempts(self, claimed: Claimed) -> list[tuple[str, int]]:
        """(host, epochs reached) of earlier attempts at this id that were cut off (not those
        that finished and whose rows were then lost)."""
        out = []
        for t in self._same_id(claimed):
            if t.state == TrialState.FAIL and SUPERSEDED_ATTR in t.user_attrs \
                    and RECORDED_IN_ATTR not in t.system_attrs:
                owner = t.system_attrs.get(OWNER_ATTR) or {}
                out.append((str(owner.get("host", "?")), int(t.system_attrs.get(EPOCH_ATTR, 0))))
        return out

    # -- while running ----------------------------------------------------------------------

    def heartbeat(self, claimed: Claimed) -> None:
        self.storage.set_trial_system_attr(claimed.storage_id, HEARTBEAT_ATTR, time.time())

    def progress(self, claimed: Claimed, epoch: int) -> None:
        self.storage.set_trial_system_attr(claimed.storage_id, EPOCH_ATTR, epoch)

    def finish_many(self, outcomes: list[Outcome], record: Callable[[list[Outcome]], None],
                    recorded: Container[str] = ()) -> list[str | None]:
        """Record finished trials: tell the storage each outcome, then write their rows
        (``record``: ``lookbench.execution.recorder``), then mark them finished in Optuna:
        COMPLETE (with the metric), PRUNED (diverged) or FAIL, with the epochs each did
        (during training that attribute is written at most once a second; a short trial may
        finish before it ever was). See the module's docstring for why in this order.

        Returns, per outcome, None if it was recorded, or why it was discarded: superseded
        while it ran (this worker was presumed dead and another took it over), or another
        trial of its id is done (``recorded``: the ids with rows in this folder). Under the
        study lock, the commit of every outcome still this worker's is one storage write (one
        append on the study's own journal); ``record`` writes their rows outside the lock (a
        slow disk must not stall every machine); if it raises, the outcomes whose rows are
        not written are taken back (superseded: they run again) before the error goes on.
        """
        if not outcomes:
            return []
        with study_lock(self.storage, self.study_dir, self.name):
            why = self._refusal([o.claimed for o in outcomes], recorded)
            _apply(self.storage, [op for o, w in zip(outcomes, why) if w is None
                                  for op in self._commit_ops(o.claimed.storage_id, o.state,
                                                             o.value, o.epochs, self._here)])
        mine = [o for o, w in zip(outcomes, why) if w is None]
        if not mine:
            return why
        try:
            record(mine)
        except BaseException:
            self._take_back(mine)
            raise
        self._mark_finished(mine)
        return why

    def _refusal(self, claimed: list[Claimed], recorded: Container[str]) -> list[str | None]:
        """Per trial, None if this worker may commit its outcome (it is RUNNING, not
        superseded nor committed, and no other trial of its id is done), else why not, from
        one read of each study's trials; a trial refused for a duplicate is superseded. Under
        the study lock, which the caller holds."""
        current: dict[int, FrozenTrial] = {}
        by_id: dict[tuple[int, str], list[FrozenTrial]] = {}
        voided: dict[int, set[int]] = {}
        ids = {c.lookbench_id for c in claimed}
        for study in {id(c.study): c.study for c in claimed}.values():
            voided[study._study_id] = self._voided(study)
            for t in self._trials(study):
                current[t._trial_id] = t
                tid = t.user_attrs.get(ID_ATTR)
                if tid in ids:
                    by_id.setdefault((study._study_id, tid), []).append(t)
        out: list[str | None] = []
        for c in claimed:
            t = current.get(c.storage_id)
            if t is None or t.state != TrialState.RUNNING or SUPERSEDED_ATTR in t.user_attrs \
                    or RECORDED_IN_ATTR in t.system_attrs:
                out.append("taken over by another worker while this one was presumed dead")
                continue
            key = (c.study._study_id, c.lookbench_id)
            other = next((u for u in by_id.get(key, []) if u._trial_id != c.storage_id
                          and self._done(u, recorded, voided[c.study._study_id])), None)
            if other is not None:
                out.append(f"already recorded as trial {other.number}")
                self._supersede(t, f"already recorded as trial {other.number}")
                continue
            out.append(None)
        return out

    def _mark_finished(self, outcomes: list[Outcome]) -> None:
        """Step 3: committed outcomes whose rows are written become Optuna's final states (one
        append on the study's own journal). A failure here loses nothing (the commit and the
        rows stand; the trials are finished from the commit once this process has ended, see
        :meth:`replan`), so it is left to the next storage call to report."""
        ops: list[tuple[int, str, Any]] = []
        for o in outcomes:
            sid, wall = o.claimed.storage_id, _member_wall(o.row)
            if wall is None:
                ops.append((sid, _STATE, _final_state(o.state, o.value)))
            else:  # (a user attribute before the state: a finished trial takes none)
                ops.append((sid, _USER_ATTR, (MEMBER_WALL_ATTR, wall)))
                ops.append((sid, _STATE, (*_final_state(o.state, o.value),
                                          _finish_at(o.claimed.started, wall))))
        try:
            _apply(self.storage, ops)
        except Exception:  # (e.g. a database call retried after it took effect): one by one
            for op in ops:
                with contextlib.suppress(Exception):
                    _apply(self.storage, [op])

    def _take_back(self, outcomes: list[Outcome]) -> None:
        """The rows of committed ``outcomes`` could not all be written (a full disk): those
        whose rows are here are finished; the others' commits are taken back (superseded), so
        that they are planned again, by any machine. If even that fails, they stay committed
        with this process as their worker: this folder's next run puts them right."""
        from lookbench.results import StudyResults

        with contextlib.suppress(Exception):
            results = StudyResults(self.study_dir)
            written = {id(o) for o in outcomes if results.has(o.claimed.lookbench_id)}
            self._mark_finished([o for o in outcomes if id(o) in written])
            lost = [o for o in outcomes if id(o) not in written]
            if lost:
                with study_lock(self.storage, self.study_dir, self.name):
                    for o in lost:
                        self._supersede(self.storage.get_trial(o.claimed.storage_id),
                                        "its rows could not be written", force=True)

    def release(self, claimed: Claimed, reason: str) -> None:
        """Give a claimed trial back (interrupted, bad checkpoint): superseded, planned again."""
        with study_lock(self.storage, self.study_dir, self.name):
            frozen = self.storage.get_trial(claimed.storage_id)
            if _committed(frozen):  # its outcome is in the storage: nothing to give back
                return
            self._supersede(frozen, reason)
            self._enqueue(claimed.study, claimed.lookbench_id, claimed.config,
                          dict(frozen.distributions), point=frozen.user_attrs.get(POINT_ATTR))

    def abandon(self, claimed: Claimed, reason: str) -> None:
        """Drop a claimed duplicate without planning it again."""
        self._supersede(self.storage.get_trial(claimed.storage_id), reason)

    # -- reading ------------------------------------------------------------------------------

    def outcomes(self, recorded: Container[str]) -> list[tuple[TrialConfig, str, float | None]]:
        """Every trial done by any machine (see :meth:`_done`), once, as (config, state,
        final ranking metric): what a study that adds seeds decides from, the same on every
        machine sharing the storage. ``state``: complete, failed, or diverged (Optuna's PRUNED:
        diverged, or no finite metric)."""
        out: dict[str, tuple[TrialConfig, str, float | None]] = {}
        for study in self.studies.values():
            voided = self._voided(study)
            for t in self._trials(study):
                tid = t.user_attrs.get(ID_ATTR)
                if tid is None or CONFIG_ATTR not in t.user_attrs or tid in out \
                        or not self._done(t, recorded, voided):
                    continue
                state, value = _outcome_of(t)
                out[tid] = (TrialConfig.model_validate(t.user_attrs[CONFIG_ATTR]), state, value)
        return list(out.values())

    def running(self) -> list[tuple[TrialConfig, int | None]]:
        """Configs of the trials running live now, with the epoch each has reached."""
        out = []
        for study in self.studies.values():
            for t in self._trials(study, (TrialState.RUNNING,)):
                if CONFIG_ATTR in t.user_attrs and not _committed(t) and self._alive(t):
                    out.append((TrialConfig.model_validate(t.user_attrs[CONFIG_ATTR]),
                                t.system_attrs.get(EPOCH_ATTR)))
        return out


class Heartbeat:
    """A daemon thread that marks claimed trials (one, or a population's) alive every
    ``interval`` seconds."""

    def __init__(self, queue: TrialQueue, claimed: Claimed | list[Claimed],
                 interval: float = HEARTBEAT_S) -> None:
        self._stop = threading.Event()
        trials = claimed if isinstance(claimed, list) else [claimed]
        self._thread = threading.Thread(target=self._beat, args=(queue, trials, interval),
                                        daemon=True, name="lookbench-heartbeat")

    def _beat(self, queue: TrialQueue, trials: list[Claimed], interval: float) -> None:
        while not self._stop.wait(interval):
            for claimed in list(trials):
                try:
                    queue.heartbeat(claimed)
                except Exception:  # a storage hiccup must not kill the trial; the next beat
                    pass  # retries

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

