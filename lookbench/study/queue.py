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
"""

from __future__ import annotations

import datetime
import functools
import os
import socket
import threading
import time
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

from lookbench.hparams import BY_NAME, HYPERPARAMETERS
from lookbench.study.config import TrialConfig
from lookbench.study.spec import distribution
from lookbench.study.storage import study_lock

ID_ATTR = "lookbench_id"
CONFIG_ATTR = "lookbench_config"
SUPERSEDED_ATTR = "lookbench_superseded"
POINT_ATTR = "lookbench_point"  # TPE: which proposed configuration a seed run belongs to
SEED_ATTR = "lookbench_seed"  # the seed: an attribute, not a parameter (it is not searched)
VOIDED_ATTR = "lookbench_voided"  # study attribute: numbers of finished trials to run again
OWNER_ATTR = "lookbench:owner"
HEARTBEAT_ATTR = "lookbench:heartbeat"
EPOCH_ATTR = "lookbench:epoch"
RECORDED_IN_ATTR = "lookbench:recorded_in"  # host and study folder that hold its part files

HEARTBEAT_S = 15.0
GRACE_S = 120.0


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited. A process that exited but that its
    parent has not reaped yet (a zombie: a worker killed while ``lookbench run`` trains) still
    answers ``kill(pid, 0)``; it is dead all the same, and its trials are to be taken over."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # (someone else's process: it exists)
    return not _exited(pid)


def _exited(pid: int) -> bool:
    """Whether ``pid`` is a zombie (state Z, or X while it goes), on Linux; elsewhere, or when
    ``/proc`` cannot be read, False (``kill(pid, 0)`` decides alone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X", "x")


def this_owner() -> dict[str, object]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def owner_alive(owner: dict | None, heartbeat: float | None, started: float | None,
                grace_s: float) -> bool:
    """Whether the process that owns a RUNNING trial is still at work."""
    if not owner:  # claims set the owner under the study lock: its claimant died mid-claim
        return False
    if owner.get("host") == socket.gethostname():
        pid = int(owner["pid"])  # type: ignore[arg-type]
        if not _pid_alive(pid):
            return False
        start = owner.get("start")
        return start is None or _process_start(pid) == start
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


_STATE = "state"  # (an op of ``_apply``: the trial's final state and values)


def _final_state(state: str, value: float | None) -> tuple[TrialState, list[float] | None]:
    """Optuna's state for a lookbench outcome: COMPLETE with the metric, FAIL, or PRUNED
    (diverged, or no finite metric: stopped early, not an error)."""
    if state == "complete" and value is not None:
        return TrialState.COMPLETE, [value]
    if state == "failed":
        return TrialState.FAIL, None
    return TrialState.PRUNED, None


def _apply(storage: optuna.storages.BaseStorage, ops: list[tuple[int, str, Any]]) -> None:
    """Write ``(trial id, system attribute or _STATE, value)`` updates: on the study's own
    journal file as one append (Optuna's API appends, and fsyncs, once per update; its journal
    records are its documented file format, written here as its ``_write_log`` writes them),
    elsewhere one call each."""
    from lookbench.study.journal import LockedJournalFile

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
                    state, values = value
                    logs.append({"op_code": JournalOperation.SET_TRIAL_STATE_VALUES,
                                 "worker_id": worker, "trial_id": trial_id, "state": state,
                                 "values": values,
                                 "datetime_start" if state == TrialState.RUNNING
                                 else "datetime_complete": now})
                else:
                    logs.append({"op_code": JournalOperation.SET_TRIAL_SYSTEM_ATTR,
                                 "worker_id": worker, "trial_id": trial_id,
                                 "system_attr": {key: value}})
            backend.append_logs(logs)
            storage._sync_with_backend()  # type: ignore[attr-defined]
        return
    for trial_id, key, value in ops:
        if key == _STATE:
            storage.set_trial_state_values(trial_id, *value)
        else:
            storage.set_trial_system_attr(trial_id, key, value)


class TrialQueue:
    """The planned trials of one lookbench study, on one Optuna storage."""

    def __init__(self, storage: optuna.storages.BaseStorage, name: str, optimizers: Iterable[str],
                 direction: str, study_dir: Path, *, grace_s: float = GRACE_S,
                 local: bool = False) -> None:
        """``local``: the storage is this study folder's own journal, so every finished trial
        wrote its part file here, and one that has none (deleted) runs again. On a shared
        database a trial finished by another machine has its part file there."""
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
        """Whether finished trial ``t`` counts as done: not superseded nor voided, and its
        result is here, or (on a shared database) recorded by the machine that ran it."""
        if not t.state.is_finished() or SUPERSEDED_ATTR in t.user_attrs or t.number in voided:
            return False
        tid = t.user_attrs.get(ID_ATTR)
        if tid in recorded:
            return True
        # Recorded in this very folder, yet no part file: lost (deleted), so it runs again.
        # (On the study's own journal every trial is recorded here; on a shared database,
        # trials of other machines, or of other folders of this one, are theirs to keep.)
        return not (self.local or t.system_attrs.get(RECORDED_IN_ATTR) == self._here)

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

    def _supersede(self, t: FrozenTrial, reason: str) -> None:
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
            for opt, study in self.studies.items():
                covered: set[str] = set()
                orphans: dict[str, FrozenTrial] = {}
                voided = self._voided(study)
                for t in self._trials(study):
                    tid = t.user_attrs.get(ID_ATTR)
                    if t.state.is_finished():
                        if tid is not None and self._done(t, recorded, voided):
                            covered.add(tid)  # done (recorded by whichever machine ran it)
                        continue
                    if t.state == TrialState.RUNNING and not self._alive(t):
                        self._supersede(t, "stale: its worker stopped")
                        if tid is not None:
                            orphans[tid] = t
                    elif tid is not None:
                        covered.add(tid)
                items = [(tid, c) for tid, c in planned.items() if c.optimizer == opt]
                dists = distributions(c for _, c in items)
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
        self._waiting.clear()
        return added

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
        return Claimed(study, storage_id, frozen.number, frozen.user_attrs[ID_ATTR], config)

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
        return Claimed(study, trial._trial_id, trial.number, tid, config)

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
        machine, or an earlier trial with the same id is running live."""
        if claimed.lookbench_id in recorded:
            return "already recorded"
        same = self._same_id(claimed)
        voided = self._voided(claimed.study) if same else set()
        for t in same:
            if self._done(t, recorded, voided):
                return f"already finished as trial {t.number}"
            if t.state == TrialState.RUNNING and t.number < claimed.number and self._alive(t):
                return f"already running as trial {t.number}"
        return None

    def previous_attempts(self, claimed: Claimed) -> list[tuple[str, int]]:
        """(host, epochs reached) of earlier attempts at this id that were cut off."""
        out = []
        for t in self._same_id(claimed):
            if t.state == TrialState.FAIL and SUPERSEDED_ATTR in t.user_attrs:
                owner = t.system_attrs.get(OWNER_ATTR) or {}
                out.append((str(owner.get("host", "?")), int(t.system_attrs.get(EPOCH_ATTR, 0))))
        return out

    # -- while running ----------------------------------------------------------------------

    def heartbeat(self, claimed: Claimed) -> None:
        self.storage.set_trial_system_attr(claimed.storage_id, HEARTBEAT_ATTR, time.time())

    def progress(self, claimed: Claimed, epoch: int) -> None:
        self.storage.set_trial_system_attr(claimed.storage_id, EPOCH_ATTR, epoch)

    def finish_many(self, outcomes: list[Outcome], record: Callable[[list[Outcome]], None]
                    ) -> list[bool]:
        """Record finished trials (``lookbench.study.recorder``) and tell Optuna each outcome:
        COMPLETE (with the metric), PRUNED (diverged) or FAIL, and the epochs it did (during
        training that attribute is written at most once a second; a short trial may finish
        before it ever was). Returns, per outcome, whether it was still ours.

        Only trials still ours count: one superseded while it ran (this worker was presumed
        dead and another took it over) is discarded. ``record`` writes the Parquet rows of the
        rest *outside* the study lock (a slow disk must not stall every machine); then, under
        the lock and only for those still ours, the outcomes go to Optuna, on the study's own
        journal as one append (one fsync instead of three per trial). A trial taken over in
        between is read from one file only (the store's precedence), so it is recorded once.
        """
        if not outcomes:
            return []
        ours = self._still_ours_many([o.claimed for o in outcomes])
        mine = [o for o, ok in zip(outcomes, ours) if ok]
        if not mine:
            return ours
        record(mine)
        with study_lock(self.storage, self.study_dir, self.name):
            again = self._still_ours_many([o.claimed for o in mine])
            lost = {id(o) for o, ok in zip(mine, again) if not ok}
            mine = [o for o in mine if id(o) not in lost]
            ops: list[tuple[int, str, Any]] = []
            for o in mine:
                sid = o.claimed.storage_id
                ops.append((sid, RECORDED_IN_ATTR, self._here))
                if o.epochs is not None:
                    ops.append((sid, EPOCH_ATTR, o.epochs))
                ops.append((sid, _STATE, _final_state(o.state, o.value)))
            _apply(self.storage, ops)
        return [ok and id(o) not in lost for o, ok in zip(outcomes, ours)]

    def _still_ours_many(self, claimed: list[Claimed]) -> list[bool]:
        """Whether each trial is RUNNING and not superseded, from one read of each study's
        trials."""
        current: dict[int, FrozenTrial] = {}
        for study in {id(c.study): c.study for c in claimed}.values():
            current.update((t._trial_id, t) for t in self._trials(study))
        return [(t := current.get(c.storage_id)) is not None and t.state == TrialState.RUNNING
                and SUPERSEDED_ATTR not in t.user_attrs for c in claimed]

    def release(self, claimed: Claimed, reason: str) -> None:
        """Give a claimed trial back (interrupted, bad checkpoint): superseded, planned again."""
        with study_lock(self.storage, self.study_dir, self.name):
            frozen = self.storage.get_trial(claimed.storage_id)
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
                state = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed"}.get(
                    t.state, "diverged")
                value = t.values[0] if state == "complete" and t.values else None
                out[tid] = (TrialConfig.model_validate(t.user_attrs[CONFIG_ATTR]), state, value)
        return list(out.values())

    def running(self) -> list[tuple[TrialConfig, int | None]]:
        """Configs of the trials running live now, with the epoch each has reached."""
        out = []
        for study in self.studies.values():
            for t in self._trials(study, (TrialState.RUNNING,)):
                if CONFIG_ATTR in t.user_attrs and self._alive(t):
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

