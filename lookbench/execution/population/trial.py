"""Configurations of one study trained together: the population counterpart of
``lookbench.execution.trial.Trial``.

A :class:`PopulationTrial` holds M trial configurations that share task, model, batch size,
epochs and schedule. Each member starts from the weights its own seed gives and reads the data
in the order its own seed gives, exactly as the single trial would (the task's workload is
built once per distinct seed and its batches are shared by the members of that seed); the
networks run side by side as one (``lookbench.execution.population.layers``) and one
``PopulationOptimizer`` steps them, each with its own hyperparameters. Every member ends with
the :class:`EpochRecord` list its single trial would produce (equal to float tolerance), and
its checkpoint state *is* a single trial's ``state_dict``: a member cut off in a population
resumes alone or in another population, and the other way round.

What a single trial does per step that would mix the members is done per member here: the loss
(one call of the task's ``criterion`` over all members' outputs, then a mean per member),
gradient clipping (each member's own global norm), the divergence checks, and the evaluation
(each member's weights put into its seed's own network and the task's ``evaluate`` run on
that, so every metric of the task is computed by the task's own code).

An error that is one member's own (its seed's ``workload`` raising, or ``evaluate``,
``train_eval`` or ``extra`` raising on its network) fails that member only: it is kept in
:attr:`PopulationTrial.errors`, and the member is frozen exactly as a diverged one, so the
others go on computing the same bits. An error that is no one member's (the shared data
missing, the machine's disk, memory) is raised as before.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lookbench._messages import environmental
from lookbench.execution.population import layers
from lookbench.execution.population.optim import PopulationOptimizer
from lookbench.execution.population.optim import why_not as optimizer_why_not
from lookbench.execution.trial import (
    BLOWUP_FACTOR,
    DIVERGENCE_CHECK_EVERY,
    EpochRecord,
    _further_metrics,
    _stream_seed,
    lr_factor,
    rsqrt_factor,
    setting,
)
from lookbench.study.config import TrialConfig
from lookbench.tasks import DataUnavailable
from lookbench.tasks.base import Workload

# Per-member schedules a population cannot share: "plateau" halves each member's rate on its
# own metric.
SHARED_SCHEDULES_ONLY = ("plateau",)


def shared_key(config: TrialConfig) -> str:
    """What members of one population must have in common: everything but the optimizer, its
    hyperparameters and the seed."""
    fixed = config.model_dump(include={"task", "task_options", "epochs", "batch_size",
                                       "schedule", "deterministic"}, mode="json")
    return repr(sorted(fixed.items()))


def members_own(error: Exception) -> bool:
    """Whether ``error``, raised by the task's code for one member (its seed's workload, its
    evaluation), is that member's own, to fail it alone: not when the data are missing, the
    machine is at fault (a full disk, see ``lookbench._messages.environmental``) or memory
    ran out (the population's, not the member's, doing)."""
    return not (isinstance(error, (DataUnavailable, MemoryError, torch.OutOfMemoryError))
                or environmental(error) is not None)


class MembersFailed(Exception):
    """Every member failed on its own before training (each seed's workload raised):
    ``errors`` holds each member's error, by position."""

    def __init__(self, errors: dict[int, Exception]) -> None:
        super().__init__(str(errors[min(errors)]))
        self.errors = errors


def why_not(config: TrialConfig) -> str | None:
    """``None`` if ``config`` can be a member of a population, else why not (one line) as far
    as the configuration alone says; the task and model are checked when one is built."""
    if config.schedule in SHARED_SCHEDULES_ONLY:
        return f"the {config.schedule} schedule is per configuration"
    if config.trace_fast:
        return "tracing the fast weights runs a trial alone"
    return optimizer_why_not(config.optimizer, config.optimizer_hparams())


class PopulationTrial:
    """M configurations on one device, run epoch by epoch as one vectorised model."""

    def __init__(self, configs: list[TrialConfig], device: str | torch.device = "auto",
                 data_dir: Path | None = None, *, only_if_faster: bool = False,
                 compile: bool = False) -> None:
        """``only_if_faster``: refuse (:class:`NotPopulable`) where a population is known to
        be slower than one trial at a time (convolutional networks on the CPU). ``compile``:
        train through ``torch.compile`` of the population's network."""
        if not configs:
            raise ValueError("a population needs at least one configuration")
        keys = {shared_key(c) for c in configs}
        if len(keys) > 1:
            raise ValueError("the members of a population must share task, model, batch size, "
                             "epochs and schedule")
        for c in configs:
            problem = why_not(c)
            if problem is not None:
                raise layers.NotPopulable(problem)
        first = configs[0]
        self.configs = list(configs)
        self.size = len(configs)
        self.device, self.task, self.batch_size, self.schedule = setting(first, device)
        if self.schedule in SHARED_SCHEDULES_ONLY:
            raise layers.NotPopulable(f"the {self.schedule} schedule is per configuration")
        if self.task.analytic_curve(first) is not None:
            raise layers.NotPopulable("the task computes its results without training")
        # One workload per seed: its network is the seed's initial weights, its data the
        # seed's order. Members of one seed share them. A seed whose workload raises fails its
        # members (see members_own); they stay in the layout as frozen placeholders.
        self.workloads: dict[int, Workload] = {}
        failures: dict[int, Exception] = {}
        for s in sorted({c.seed for c in configs}):
            try:
                self.workloads[s] = self.task.workload(
                    batch_size=self.batch_size, device=self.device, seed=s, data_dir=data_dir)
            except Exception as e:
                if not members_own(e):
                    raise
                failures[s] = e
        # Members that failed on their own (never trained again): their errors
        self.errors: dict[int, Exception] = {m: failures[c.seed] for m, c in enumerate(configs)
                                             if c.seed in failures}
        if not self.workloads:
            raise MembersFailed(self.errors)
        self.seeds = sorted(self.workloads)  # the seeds whose members train
        self._one_seed = len({c.seed for c in configs}) == 1
        wl = self.workloads[self.seeds[0]]
        self._check_workload(wl)
        if only_if_faster and self.device.type == "cpu" and any(
                isinstance(m, nn.Conv2d) for m in wl.model.modules()):
            # Measured (benchmarks/sweep_throughput.py, 2 cores): 12 ResNet-20s as one
            # population 0.75x the speed of one at a time; grouped convolutions are slow here.
            raise layers.NotPopulable("a population of convolutional networks is slower than "
                                      "one at a time on the CPU")
        # (a failed member reads the first seed's data and starts from its weights: frozen, it
        # takes no part)
        self.member_seed = torch.tensor(
            [self.seeds.index(c.seed) if c.seed in self.workloads else 0 for c in configs],
            device=self.device)
        members = [copy.deepcopy(self.workloads.get(c.seed, wl).model) for c in configs]
        self.model = layers.stack(members).to(self.device)
        if wl.channels_last and self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        batch = next(iter(wl.train_batches(0, self._generator(self.seeds[0], 0))))
        sample = batch[0]
        layers.check_outputs(self.model, members[: min(3, self.size)], sample)
        self._check_criterion(wl, batch)
        self._train_model = torch.compile(self.model) if compile else self.model
        shapes = [p.shape for p in wl.model.parameters()]
        self.optimizer = PopulationOptimizer(
            list(self.model.parameters()), shapes,
            [(c.optimizer, c.optimizer_hparams()) for c in configs])
        self.epoch = 0
        self.steps = [0] * self.size  # per member: a diverged member stops counting
        self.wall_s = [0.0] * self.size
        self.initial_loss: list[float | None] = [None] * self.size
        self.records: list[list[EpochRecord]] = [[] for _ in configs]
        self.active = [True] * self.size  # not diverged
        self._left_out: set[int] = set()  # placeholders (see leave_out)
        # Members whose checkpoint is ahead of the others': state, until they are reached
        self._waiting: dict[int, dict[str, Any]] = {}
        for m in self.errors:  # (placeholders: they take no checkpoint either)
            self.leave_out(m)

    @staticmethod
    def _check_workload(wl: Workload) -> None:
        if wl.criterion is None:
            raise layers.NotPopulable("the task gives no per-example criterion")
        if wl.epoch_steps is not None:
            raise layers.NotPopulable("the task counts epochs in steps")
        if wl.clip_grad_norm is not None and not math.isfinite(wl.clip_grad_norm):
            raise layers.NotPopulable("gradient clipping to a non-finite norm")

    @staticmethod
    def _check_criterion(wl: Workload, batch: Any) -> None:
        """The task's ``loss`` must be its ``criterion``'s mean, or the population would
        train another objective."""
        model = copy.deepcopy(wl.model)
        with torch.no_grad():
            want = float(wl.loss(model, batch))
            got = float(wl.criterion(model(batch[0]), batch[1]).mean())  # type: ignore[misc]
        if not math.isclose(want, got, rel_tol=1e-4, abs_tol=1e-6):
            raise layers.NotPopulable("the task's loss is not the mean of its criterion")

    def _generator(self, seed: int, epoch: int) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(_stream_seed(seed, epoch, 1))
        return generator

    # -- state ----------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return (not any(self.active) and not self._waiting) \
            or self.epoch >= self.configs[0].epochs

    def member_finished(self, m: int) -> bool:
        """Member ``m`` trains no more (done, diverged or a placeholder; not if waiting)."""
        if m in self._waiting:
            return False
        return not self.active[m] or self.epoch >= self.configs[m].epochs

    def run(self) -> Iterator[list[int]]:
        """Train the remaining epochs; after each, yield the members that got a record."""
        while not self.finished:
            yield self.run_epoch()

    # -- training -------------------------------------------------------------------------

    def _batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each step's population input ``(B, M·C, ...)`` and targets ``(M·B, ...)``."""
        streams = [iter(self.workloads[s].train_batches(epoch, self._generator(s, epoch)))
                   for s in self.seeds]
        for per_seed in zip(*streams):
            xs = torch.stack([b[0] for b in per_seed])  # (S, B, ...)
            ys = torch.stack([b[1] for b in per_seed])
            if self._one_seed:
                x = xs.expand(self.size, *xs.shape[1:])
                y = ys.expand(self.size, *ys.shape[1:])
            else:
                x, y = xs[self.member_seed], ys[self.member_seed]
            yield layers.to_population(x), y.reshape(-1, *y.shape[2:])

    def _autocast(self, wl: Workload) -> contextlib.AbstractContextManager[Any]:
        if wl.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _clip(self, max_norm: float) -> None:
        """Clip each member's gradient to its own global norm (as ``clip_grad_norm_`` does
        for a single network)."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return
        squares = torch.stack([g.detach().reshape(self.size, -1).float().pow(2).sum(1)
                               for g in grads]).sum(0)
        scale = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.view(self.size, -1).mul_(scale.to(g.dtype)[:, None])

    def train_epoch(self) -> tuple[list[float], list[bool]]:
        """The next epoch's training: per member (mean loss, stayed finite)."""
        epoch, n = self.epoch, self.size
        wl = self.workloads[self.seeds[0]]
        criterion = wl.criterion
        assert criterion is not None
        self.optimizer.set_lr_factor(lr_factor(self.schedule, epoch, self.configs[0].epochs))
        torch.manual_seed(_stream_seed(self.configs[0].seed, epoch, 0))
        self.model.train()
        active = torch.tensor(self.active, device=self.device)
        loss_sum = torch.zeros(n, device=self.device, dtype=torch.float64)
        finite = list(self.active)
        n_steps = 0
        per_step = self.schedule == "rsqrt"
        start_steps = list(self.steps)
        for x, y in self._batches(epoch):
            if per_step:
                self.optimizer.set_lr_factor(rsqrt_factor(max(self.steps) + n_steps + 1,
                                                          wl.warmup_steps))
            for p in self.model.parameters():
                p.grad = None
            with self._autocast(wl):
                out = layers.from_population(self._train_model(x), n)  # (M, B, K)
                per_example = criterion(out.reshape(-1, *out.shape[2:]), y)
            losses = per_example.reshape(n, -1).mean(1)
            torch.where(active, losses, 0.0).sum().backward()
            if wl.clip_grad_norm is not None:
                self._clip(wl.clip_grad_norm)
            self.optimizer.step()
            detached = losses.detach()
            loss_sum += torch.where(active, detached.double(), 0.0)
            if n_steps == 0 and any(v is None for v in self.initial_loss):
                first = detached.tolist()
                self.initial_loss = [first[m] if v is None else v
                                     for m, v in enumerate(self.initial_loss)]
            n_steps += 1
            if n_steps % DIVERGENCE_CHECK_EVERY == 0:
                bad = (~torch.isfinite(loss_sum) & active).nonzero().flatten().tolist()
                for m in bad:  # as a single trial: the epoch ends there for that member
                    finite[m] = False
                    self.steps[m] = start_steps[m] + n_steps
                    self._stop(m)
                    active[m] = False
                if not active.any():
                    break
        means = (loss_sum / max(n_steps, 1)).tolist()
        for m in range(n):
            if finite[m]:
                self.steps[m] = start_steps[m] + n_steps
                finite[m] = math.isfinite(means[m])
        return means, finite

    def _stop(self, m: int) -> None:
        """Member ``m`` diverged: the optimizer stops moving it (the others are untouched)."""
        self.optimizer.freeze(m)

    def _fail(self, m: int, error: Exception) -> None:
        """Member ``m`` failed on its own (see :func:`members_own`): frozen as if diverged,
        with no record of the epoch it failed in (as a trial alone would have none)."""
        self.errors[m] = error
        self.active[m] = False
        self._stop(m)

    # -- one epoch ------------------------------------------------------------------------

    def _member_network(self, m: int) -> nn.Module:
        """Member ``m``'s current weights in its seed's own network (for the task's own
        evaluation code)."""
        net = self.workloads[self.configs[m].seed].model
        net.load_state_dict(layers.member_state_dict(self.model, net, m, self.size))
        return net

    def run_epoch(self) -> list[int]:
        """Train and evaluate one epoch; return the members that got a record (not those that
        failed in it: see :attr:`errors`)."""
        if self.finished:
            raise RuntimeError("the population has already finished")
        self._release_waiting()
        start = time.perf_counter()
        training = [m for m in range(self.size)
                    if not self.member_finished(m) and m not in self._waiting]
        means, finite = self.train_epoch()
        results: dict[int, tuple[dict[str, float], float | None]] = {}
        failed: dict[int, Exception] = {}
        with (torch.no_grad(), self.optimizer.evaluation_weights(),
              self._autocast(self.workloads[self.seeds[0]])):
            for m in training:
                if not finite[m]:
                    continue
                wl = self.workloads[self.configs[m].seed]
                try:
                    net = self._member_network(m)
                    net.eval()
                    metrics = dict(wl.evaluate(net))
                    train_eval = wl.train_eval(net) if wl.train_eval is not None else None
                    if wl.extra is not None:
                        metrics.update(wl.extra(net))
                    _further_metrics(metrics)  # (what it refuses fails the member)
                except Exception as e:
                    if not members_own(e):
                        raise
                    failed[m] = e
                    continue
                results[m] = metrics, train_eval
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = (time.perf_counter() - start) / max(len(training), 1)  # each member's share
        self.epoch += 1
        for m, error in failed.items():
            self._fail(m, error)
        training = [m for m in training if m not in failed]
        for m in training:
            metrics, train_eval = results.get(m, ({"test_loss": math.nan}, None))
            extra = _further_metrics(metrics)
            first = self.initial_loss[m]
            blown_up = (finite[m] and first is not None and first > 0
                        and means[m] > BLOWUP_FACTOR * first)
            diverged = blown_up or not (finite[m] and math.isfinite(metrics["test_loss"]))
            self.wall_s[m] += elapsed
            self.records[m].append(EpochRecord(
                epoch=self.epoch, train_loss=means[m] if finite[m] else math.nan,
                test_loss=metrics["test_loss"], test_acc=metrics.get("test_acc"),
                train_eval_loss=train_eval, lr=self.optimizer.lr(m), steps=self.steps[m],
                wall_s=self.wall_s[m], diverged=diverged, extra=extra))
            if diverged and self.active[m]:
                self._stop(m)
            self.active[m] = self.active[m] and not diverged
        self._release_waiting()
        return training

    # -- checkpoints: each member's is a single trial's -------------------------------------

    def member_state_dict(self, m: int) -> dict[str, Any]:
        """Member ``m``'s state as ``Trial.state_dict()`` would give it (a waiting member's:
        the checkpoint it waits with)."""
        if m in self._waiting:
            return self._waiting[m]
        net = self.workloads[self.configs[m].seed].model
        model = {k: v.clone() for k, v in
                 layers.member_state_dict(self.model, net, m, self.size).items()}
        return {
            "config": self.configs[m].model_dump(mode="json"),
            "epoch": self.epoch,
            "steps": self.steps[m],
            "wall_s": self.wall_s[m],
            "initial_loss": self.initial_loss[m],
            "plateau": {"best": None, "waited": 0, "halvings": 0},
            "data_pass": self.epoch,
            "pass_offset": 0,
            "records": [asdict(r) for r in self.records[m]],
            "model": model,
            "optimizer": self.optimizer.member_state_dict(m),
        }

    def leave_out(self, m: int) -> None:
        """Member ``m`` is only a placeholder (its trial finished, or runs elsewhere): it takes
        no part, with weights and state at zero, exactly as a diverged member is frozen.

        A population resumed after a kill is rebuilt in its original layout, finished members
        included as placeholders, so every live member is computed in the same position of
        the same batched operations as before: the resumed results are bit-identical.
        """
        self.active[m] = False
        self._left_out.add(m)
        self._stop(m)

    def load_state_dicts(self, states: list[dict[str, Any] | None]) -> None:
        """Continue from each member's ``Trial.state_dict()`` (or :meth:`member_state_dict`),
        in the members' order: every member not left out, or ``None`` for all (a fresh
        start); ``ValueError`` saying why otherwise.

        The checkpoints may be at different epochs (a kill while a population's checkpoints
        were being written leaves some members one save ahead): the population resumes at
        the earliest, and a member ahead *waits*, a placeholder exactly as in
        :meth:`leave_out`, until the others reach its epoch, and then continues from its own
        checkpoint. Every member is thus computed in the same layout, at every step, as in an
        uninterrupted run: the results are bit-identical.
        """
        if len(states) != self.size:
            raise ValueError("a population resumes with one entry per member")
        present = [(m, s) for m, s in enumerate(states) if m not in self._left_out]
        if all(s is None for _, s in present):
            return
        if any(s is None for _, s in present):
            raise ValueError("a population resumes with a checkpoint for every member or none")
        for m, state in present:
            assert state is not None
            saved = TrialConfig.model_validate(state["config"])
            if saved != self.configs[m]:
                raise ValueError("checkpoint belongs to a different trial configuration")
            records = state["records"]
            if records and records[-1]["diverged"]:
                raise ValueError("checkpoint of a trial that has already finished")
        self.epoch = min(int(s["epoch"]) for _, s in present)  # type: ignore[index]
        for m, state in present:
            assert state is not None
            if int(state["epoch"]) == self.epoch:
                self._load_member(m, state)
            else:
                self._waiting[m] = state
                self.records[m] = [EpochRecord(**r) for r in state["records"]]  # (if it fails)
                self.active[m] = False
                self._stop(m)

    def _load_member(self, m: int, state: dict[str, Any]) -> None:
        layers.load_member(self.model, m, self.size, state["model"])
        self.optimizer.load_member_state_dict(m, state["optimizer"])
        self.steps[m] = int(state["steps"])
        self.wall_s[m] = float(state["wall_s"])
        self.initial_loss[m] = state["initial_loss"]
        self.records[m] = [EpochRecord(**r) for r in state["records"]]
        self.active[m] = True

    def _release_waiting(self) -> None:
        """Members whose checkpoint is at the population's epoch join it (see
        :meth:`load_state_dicts`). If no member trains until then, the population skips
        ahead to the next waiting one."""
        if not self._waiting:
            return
        if not any(self.active):
            self.epoch = min(int(s["epoch"]) for s in self._waiting.values())
        for m in [m for m, s in self._waiting.items() if int(s["epoch"]) == self.epoch]:
            self._load_member(m, self._waiting.pop(m))

    def waiting(self, m: int) -> bool:
        """Member ``m`` resumed ahead of the others and waits for them."""
        return m in self._waiting
