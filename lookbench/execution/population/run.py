"""A worker's side of population training: claim the members, train them as one, record each.

After the worker claims a trial, it claims the rest of that trial's population: the chunk of
the study's plan it belongs to (see :func:`gather`), and runs it as a :class:`PopulationTrial`.
Each member is then an ordinary trial everywhere else: its own Optuna trial with its own
heartbeat and outcome, its own Parquet rows (written the moment it finishes or diverges, so
one member's divergence is recorded at once and costs the others nothing), and its own
checkpoint file in a single trial's format (plus the population's layout), so a population cut
off by a kill resumes as the same population, to the same bits; or, with ``--population 1``,
member by member, to float tolerance. A member's own error (its seed's workload, its
evaluation raising) is recorded as that member's failure the moment it happens, as its trial
alone would record it, and the others go on.
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch

from lookbench._messages import describe
from lookbench.coordination.queue import Claimed, TrialQueue
from lookbench.execution.checkpoints import (
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
)
from lookbench.execution.population.layers import NotPopulable
from lookbench.execution.population.optim import family
from lookbench.execution.population.trial import (
    MembersFailed,
    PopulationTrial,
    shared_key,
    why_not,
)
from lookbench.execution.runner import (
    RunAlone,
    Runner,
    TrialRunner,
    WorkerContext,
    WorkerOptions,
)
from lookbench.execution.trial import EpochRecord
from lookbench.study.config import TrialConfig
from lookbench.tasks import get

# ``--population`` unset: as many members as wait, up to this many (more rarely pays: the
# per-step overhead a population saves is already small next to M members' arithmetic) ...
AUTO_MAX_MEMBERS = {"cpu": 32, "cuda": 128}
# ... and as many as fit in this share of the device's free memory, counting per member its
# weights, gradients, two optimizer states and slow weights (4 bytes each) and the
# activations (``ACTIVATION_BYTES_PER_PARAMETER`` × the parameters, a rule of thumb for
# convolutional networks at their usual batch sizes).
MEMORY_SHARE = 0.5
BYTES_PER_PARAMETER = 4 * 5
ACTIVATION_BYTES_PER_PARAMETER = 16


def free_memory(device: str) -> int:
    """Bytes free on ``device`` (CUDA: as the driver says; the CPU: MemAvailable)."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def member_limit(claimed: Claimed, opts: WorkerOptions) -> int:
    """How many members a population around ``claimed`` may have: ``--population`` if given,
    else what the device's memory holds, capped at :data:`AUTO_MAX_MEMBERS`."""
    if opts.population is not None:
        return opts.population
    kind = "cuda" if opts.device.startswith("cuda") else "cpu"
    try:
        parameters = get(claimed.config.task, **claimed.config.task_options).size().parameters
    except Exception:  # a task that cannot count its parameters: no population by default
        return 1
    if not parameters:
        return 1
    per_member = parameters * (BYTES_PER_PARAMETER + ACTIVATION_BYTES_PER_PARAMETER)
    fits = int(free_memory(opts.device) * MEMORY_SHARE // per_member)
    # A power of two: the limit sets the populations' layout, and with it the last bits of
    # every result, so it must not follow the free memory's every wobble between runs.
    fits = 1 << max(0, fits.bit_length() - 1) if fits > 0 else 1
    return max(1, min(AUTO_MAX_MEMBERS[kind], fits))


# Shared keys whose task or model turned out not to be populable in this process.
_REFUSED: set[str] = set()
# The key under which a member's checkpoint lists its population: (id, config) in order.
LAYOUT_KEY = "population"

Layout = list[tuple[str, TrialConfig]]


class Gathered(NamedTuple):
    """What :func:`gather` claimed: the trials, the population's layout (every member's (id,
    config) in order; one entry: run the trial alone), and the checkpoint it read to find the
    layout (by path, so :class:`PopulationRunner` does not read it again)."""

    members: list[Claimed]
    layout: Layout
    loaded: dict[Path, dict[str, Any]]


def _layout_of(state: dict[str, Any]) -> Layout | None:
    """The population layout a member's checkpoint records, if it is a member's."""
    entries = state.get(LAYOUT_KEY)
    if not entries:
        return None
    return [(tid, TrialConfig.model_validate(config)) for tid, config in entries]


def gather(queue: TrialQueue, first: Claimed, opts: WorkerOptions,
           planned: dict[str, TrialConfig], stages: list[int] | None = None) -> Gathered:
    """The trials claimed to train with ``first`` (``first`` included), and the population's
    layout (see :class:`Gathered`).

    Populations are a fixed partition of the study's plan (the planned configurations that
    can share ``first``'s network, in plan order, cut into as few equal chunks as the member
    limit allows), never "whatever was waiting", and never dependent on the number of
    workers: a member's float results depend, in the last bits, on the layout it is computed
    in, so every run of the study, with any number of workers, and every resumption, must
    compute it in the same one.
    Peers that are recorded already, or held by another worker, take part as placeholders.
    A trial cut off in a population brings its population back in the layout its checkpoint
    records. ``stages``: the seed counts at which a study that adds seeds grows its plan
    (``lookbench.study.seeds.boundaries``); each stage is partitioned on its own, so a stage
    added later never changes the populations of the ones before it.
    """
    alone = Gathered([first], [(first.lookbench_id, first.config)], {})
    if not _trains(first.config) or why_not(first.config) is not None \
            or shared_key(first.config) in _REFUSED:
        return alone
    path = checkpoint_path(opts.study_dir, first.lookbench_id)
    checkpoints = path.parent
    if path.exists():
        try:
            state = load_checkpoint(path)
        except CheckpointError:
            return alone  # (the single-trial path reports it in one line)
        layout = _layout_of(state)
        if layout is None or first.lookbench_id not in dict(layout):
            return alone  # a single trial's checkpoint: it resumes alone
        peers = {tid for tid, _ in layout} - {first.lookbench_id}
        claimed = queue.claim_matching(
            lambda config, tid: tid in peers and (checkpoints / f"{tid}.pt").exists(),
            len(peers))
        return Gathered([first, *claimed], layout, {path: state})
    layout = _chunk(first, planned, member_limit(first, opts), stages)
    if len(layout) <= 1:
        return alone
    peers = {tid for tid, _ in layout} - {first.lookbench_id}
    claimed = queue.claim_matching(
        lambda config, tid: tid in peers and not (checkpoints / f"{tid}.pt").exists(),
        len(peers))
    return Gathered([first, *claimed], layout, {})


def _trains(config: TrialConfig) -> bool:
    """Whether ``config``'s task trains a network (not one that computes its results, as the
    analytic noisy quadratic does: nothing to put in a population). Asked once per setting."""
    key = shared_key(config)
    if key not in _TRAINS:
        try:
            _TRAINS[key] = get(config.task, **config.task_options).analytic_curve(config) is None
        except Exception:  # (the trial itself reports what is wrong with it)
            _TRAINS[key] = False
    return _TRAINS[key]


_TRAINS: dict[str, bool] = {}


def _chunk(first: Claimed, planned: dict[str, TrialConfig], limit: int,
           stages: list[int] | None = None) -> Layout:
    """The chunk of the plan that ``first`` belongs to (see :func:`gather`), its members
    ordered by update rule (the optimizer steps each rule's members as one slice)."""
    key = shared_key(first.config)

    def stage(config: TrialConfig) -> int:
        return bisect.bisect_right(stages, config.seed) if stages else 0

    mine = stage(first.config)
    group = [(tid, c) for tid, c in planned.items()
             if shared_key(c) == key and stage(c) == mine and why_not(c) is None]
    ids = [tid for tid, _ in group]
    if first.lookbench_id not in ids or limit <= 1:
        return [(first.lookbench_id, first.config)]
    chunks = -(-len(group) // limit)  # as few as the limit allows, of equal sizes
    size = -(-len(group) // chunks)
    start = ids.index(first.lookbench_id) // size * size
    chunk = group[start:start + size]
    chunk.sort(key=lambda e: family(e[1].optimizer, e[1].optimizer_hparams()))
    return chunk


def runner_for(ctx: WorkerContext, first: Claimed, planned: dict[str, TrialConfig],
               stages: list[int] | None = None) -> Runner:
    """The runner of ``first``: its population (its peers claimed, see :func:`gather`), or
    ``first`` alone where it has none."""
    gathered = gather(ctx.queue, first, ctx.opts, planned, stages)
    if len(gathered.layout) <= 1:
        return TrialRunner(first)
    return PopulationRunner(gathered)


class PopulationRunner(Runner):
    """The gathered trials trained as their population's layout, each recorded the moment it
    finishes; members of the layout this worker does not hold take part as placeholders. If
    the task or model cannot be a population, or the checkpoints do not fit one, the trials
    run one at a time (:class:`RunAlone`)."""

    name = "population"

    def __init__(self, gathered: Gathered) -> None:
        self.gathered = gathered
        self.layout = gathered.layout
        self.members: list[Claimed | None] = []
        self.live: list[int] = []
        self.waiting: set[int] = set()  # members not recorded yet
        self.paths = [Path()] * len(self.layout)
        self.entries = [[tid, config.model_dump(mode="json")] for tid, config in self.layout]
        self.pop: PopulationTrial | None = None
        self.resumes = [0] * len(self.layout)
        self.trained: list[int] = []  # the members that got a record in the last epoch

    def start(self, ctx: WorkerContext) -> bool:
        recorded_ids = ctx.results.recorded()
        by_id = {}
        for c in self.gathered.members:
            why = ctx.queue.is_duplicate(c, recorded_ids)
            if why is not None:
                ctx.queue.abandon(c, why)
            else:
                by_id[c.lookbench_id] = c
        self.members = [by_id.get(tid) for tid, _ in self.layout]
        self.live = [m for m, c in enumerate(self.members) if c is not None]
        self.waiting = set(self.live)
        self.paths = [checkpoint_path(ctx.opts.study_dir, tid) for tid, _ in self.layout]
        return bool(self.live)

    @property
    def held(self) -> list[Claimed]:
        return [self.members[m] for m in self.live]  # type: ignore[misc]

    @property
    def pending(self) -> list[Claimed]:
        return [self.members[m] for m in sorted(self.waiting)]  # type: ignore[misc]

    @property
    def done(self) -> bool:
        return self.pop is not None and self.pop.finished

    @property
    def epoch(self) -> int:
        return self.pop.epoch if self.pop is not None else 0

    def build(self, ctx: WorkerContext) -> None:
        opts, paths, loaded = ctx.opts, self.paths, self.gathered.loaded
        try:
            self.pop = pop = PopulationTrial(
                [config for _, config in self.layout], opts.device, opts.data_dir,
                only_if_faster=opts.population is None, compile=opts.compile)
        except NotPopulable:  # the model or task, found out once built
            _REFUSED.add(shared_key(self.layout[0][1]))
            raise RunAlone from None
        for m, c in enumerate(self.members):
            if c is None:
                pop.leave_out(m)
        # (a member whose seed's workload failed fails as its trial alone would: before its
        # checkpoint is read)
        states = [loaded.get(paths[m]) or load_checkpoint(paths[m])
                  if m in self.waiting and m not in pop.errors and paths[m].exists() else None
                  for m in range(len(self.layout))]
        try:
            pop.load_state_dicts([s["trial"] if s else None for s in states])
        except ValueError:  # each resumes from its own checkpoint instead
            raise RunAlone("checkpoints that do not make one population") from None
        self.resumes = [int(s.get("resumes", 0)) + 1 if s else 0 for s in states]

    def epochs(self) -> Iterator[list[tuple[Claimed, EpochRecord]]]:
        assert self.pop is not None
        pop = self.pop
        try:
            for trained in pop.run():
                self.trained = trained
                yield [(self.members[m], pop.records[m][-1])  # type: ignore[misc]
                       for m in trained]
        except NotPopulable:  # (found out while training)
            _REFUSED.add(shared_key(self.layout[0][1]))
            raise RunAlone from None

    def checkpoints(self) -> list[tuple[Path, dict[str, Any]]]:
        assert self.pop is not None
        return [(self.paths[m], {"trial": self.pop.member_state_dict(m),
                                 "resumes": self.resumes[m], LAYOUT_KEY: self.entries})
                for m in sorted(self.waiting)]

    def record_finished(self, ctx: WorkerContext, ended: bool = False) -> None:
        """The members that finished in the last epoch, and those that failed on their own
        (a population records nothing more when it ends: every member finishes inside)."""
        pop = self.pop
        assert pop is not None
        for m in sorted(self.waiting):
            error = pop.errors.get(m)
            if error is None and not (m in self.trained and pop.member_finished(m)):
                continue
            self._record(ctx, m, pop, None if error is None else describe(error),
                         self.resumes[m])

    def fail(self, ctx: WorkerContext, error: Exception) -> None:
        if isinstance(error, MembersFailed):  # every seed's workload raised: each its own
            for m in sorted(self.waiting):
                self._record(ctx, m, None, describe(error.errors[m]), 0,
                             population=len(self.layout))
            return
        for m in sorted(self.waiting):
            self._record(ctx, m, self.pop, describe(error), 0)

    def _record(self, ctx: WorkerContext, m: int, pop: PopulationTrial | None,
                error: str | None, resumes: int, population: int = 1) -> None:
        claimed = self.members[m]
        assert claimed is not None
        config = claimed.config
        with ctx.interrupts.deferred():  # (kept, and no longer pending: both or neither)
            ctx.record(claimed, pop.records[m] if pop is not None else [], error,
                       resumes=resumes,
                       batch_size=pop.batch_size if pop is not None else (config.batch_size or 0),
                       schedule=pop.schedule if pop is not None
                       else (config.schedule or "constant"),
                       device=str(pop.device if pop is not None else ctx.opts.device),
                       population=pop.size if pop is not None else population)
            self.waiting.discard(m)
