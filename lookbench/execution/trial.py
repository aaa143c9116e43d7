"""The trial runner every task shares: train, evaluate on the evaluation weights, record.

A :class:`Trial` turns a :class:`TrialConfig` and a device into per-epoch
:class:`EpochRecord`\\ s. It evaluates every optimizer on the weights it should be judged by
(slow weights for Lookahead, averages for Polyak/EMA/SWA, as the paper does), treats a
non-finite loss as an outcome (``diverged``) rather than an error, and can stop after any
epoch and continue bit-identically from its ``state_dict()``: each epoch's data order and
augmentation come from a generator seeded by (seed, epoch), and the global RNG is reseeded per
epoch, so nothing but the model, the optimizer and the records needs saving.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lookbench import tasks
from lookbench.optim import Lookahead, build, evaluation_weights, fast_weights
from lookbench.study.config import TrialConfig
from lookbench.tasks.base import MicroBatches

# Step schedule of the paper (Appendix C.1): ×0.2 at 60/120/160 of 200 epochs.
STEP_MILESTONES = (0.3, 0.6, 0.8)
STEP_GAMMA = 0.2
# The paper's ImageNet schedule (Appendix C.2): ×0.1 at epochs 30 and 60 of 90.
THIRDS_MILESTONES = (1 / 3, 2 / 3)
THIRDS_GAMMA = 0.1
# ... and its faster one (section 5.2): ×0.1 at epochs 30, 48 and 58 of 60.
AGGRESSIVE_MILESTONES = (30 / 60, 48 / 60, 58 / 60)
# How often (in steps) the running loss is checked for NaN/inf: each check is a device sync.
DIVERGENCE_CHECK_EVERY = 50
# A trial has diverged when its loss is NaN/inf, or when an epoch's mean training loss is this
# many times the loss of the very first step: a network with ReLUs rarely reaches NaN, it
# saturates at a huge finite loss it never recovers from, which is a divergence all the same.
BLOWUP_FACTOR = 100.0


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Multiplier of the base learning rate during 0-based ``epoch`` of ``epochs``."""
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        passed = sum(epoch >= round(m * epochs) for m in STEP_MILESTONES)
        return STEP_GAMMA**passed
    if schedule in ("thirds", "aggressive"):
        milestones = THIRDS_MILESTONES if schedule == "thirds" else AGGRESSIVE_MILESTONES
        passed = sum(epoch >= round(m * epochs) for m in milestones)
        return THIRDS_GAMMA**passed
    if schedule in ("plateau", "rsqrt"):  # (applied by the Trial: the metric, or each step)
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    raise ValueError(f"unknown schedule {schedule!r}")


def rsqrt_factor(step: int, warmup: int) -> float:
    """The ``rsqrt`` schedule at 1-based ``step``: ``step/warmup`` up to the warmup, then
    ``√(warmup/step)`` (1 at the end of the warmup: the base rate is the peak)."""
    warmup = max(1, warmup)
    return step / warmup if step < warmup else math.sqrt(warmup / step)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def setting(config: TrialConfig, device: str | torch.device
            ) -> tuple[torch.device, tasks.Task, int, str]:
    """The device, task, batch size and schedule ``config`` runs with (a trial's, or a
    population's that it shares); on CUDA, cuDNN set to the config's determinism."""
    where = resolve_device(device)
    task = tasks.get(config.task, **config.task_options)
    if where.type == "cuda":
        torch.backends.cudnn.deterministic = config.deterministic
        torch.backends.cudnn.benchmark = not config.deterministic
    return (where, task, config.batch_size or task.default_batch_size,
            config.schedule or task.default_schedule)


def _stream_seed(seed: int, epoch: int, stream: int) -> int:
    """A seed per (trial seed, epoch, stream): stable across processes, unlike ``hash()``."""
    return (seed * 1_000_003 + epoch * 7_919 + stream) % (2**63 - 1)


@dataclass
class EpochRecord:
    """What one epoch produced. Losses are on the evaluation weights except ``train_loss``."""

    epoch: int  # 1-based
    train_loss: float  # mean minibatch loss during the epoch (fast weights), NaN if diverged
    test_loss: float
    test_acc: float | None
    train_eval_loss: float | None  # a pass over the training set without updates, if asked
    lr: float  # the (first group's) learning rate during the epoch
    steps: int  # optimizer steps so far
    wall_s: float  # seconds of training and evaluation so far
    diverged: bool = False
    extra: dict[str, float] = field(default_factory=dict)  # the task's further metrics

    def metrics(self) -> dict[str, float | None]:
        """Every held-out metric of the epoch by name: ``test_loss``, ``test_acc`` and the
        task's own (``test_perplexity``, ...)."""
        return {"test_loss": self.test_loss, "test_acc": self.test_acc, **self.extra}


def _further_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """A task's metrics beyond ``test_loss``/``test_acc``, as floats; a name that cannot be a
    column is an error of the task (one line, the trial fails)."""
    from lookbench.results.schema import FIXED_METRICS, check_metric_name

    if "test_loss" not in metrics:
        raise ValueError("the task's evaluate() must return test_loss (and may return more)")
    out = {}
    for name, value in metrics.items():
        if name in FIXED_METRICS:
            continue
        problem = check_metric_name(name)
        if problem is not None:
            raise ValueError(problem)
        out[name] = math.nan if value is None else float(value)
    return out


class Trial:
    """One configuration on one device, run epoch by epoch."""

    def __init__(self, config: TrialConfig, device: str | torch.device = "auto",
                 data_dir: Path | None = None, *, compile: bool = False) -> None:
        """``compile``: train through ``torch.compile`` of the model (``--compile``); the
        weights, their checkpoints and the evaluation stay the plain model's."""
        self.config = config
        self.device, self.task, self.batch_size, self.schedule = setting(config, device)
        # A task that can compute its results (the analytic NQM) is not trained at all.
        self.analytic = self.task.analytic_curve(config)
        if self.analytic is None:
            self.workload = self.task.workload(
                batch_size=self.batch_size, device=self.device, seed=config.seed,
                data_dir=data_dir,
            )
            if self.workload.channels_last and self.device.type == "cuda":
                self.workload.model.to(memory_format=torch.channels_last)
            self.optimizer = build(
                config.optimizer, self.workload.model.parameters(), **config.optimizer_hparams()
            )
            self._base_lrs = [g["lr"] for g in self.optimizer.param_groups]
            if config.trace_fast and isinstance(self.optimizer, Lookahead):
                self.optimizer.trace_fast = True  # keep each inner loop's end for evaluation
            self._train_model = (torch.compile(self.workload.model) if compile
                                 else self.workload.model)
        self.epoch = 0  # epochs completed
        self.steps = 0
        self.wall_s = 0.0
        self.initial_loss: float | None = None  # the first step's loss, for BLOWUP_FACTOR
        self.plateau = {"best": None, "waited": 0, "halvings": 0}  # the "plateau" schedule
        # Where the data stream stands, for tasks whose epochs are counted in steps: the pass
        # being read and how many of its batches were consumed (otherwise pass = epoch).
        self.data_pass = 0
        self.pass_offset = 0
        self.records: list[EpochRecord] = []

    @property
    def diverged(self) -> bool:
        return bool(self.records) and self.records[-1].diverged

    @property
    def finished(self) -> bool:
        return self.diverged or self.epoch >= self.config.epochs

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.workload.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run(self) -> Iterator[EpochRecord]:
        """Train the remaining epochs, yielding each epoch's record as it completes."""
        while not self.finished:
            yield self.run_epoch()

    def train_epoch(self) -> tuple[float, int, bool]:
        """The training part of the next epoch: (mean loss, steps taken, loss stayed finite).

        Sets the epoch's learning rate and RNG streams; does not evaluate or advance
        ``self.epoch`` (``run_epoch`` does both).
        """
        cfg, wl, opt = self.config, self.workload, self.optimizer
        epoch = self.epoch
        factor = lr_factor(self.schedule, epoch, cfg.epochs) * 0.5 ** self.plateau["halvings"]
        for group, base in zip(opt.param_groups, self._base_lrs):
            group["lr"] = base * factor
        torch.manual_seed(_stream_seed(cfg.seed, epoch, 0))  # dropout & co.
        wl.model.train()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        n_steps = 0
        finite = True
        batches = (wl.train_batches(epoch, self._pass_generator(epoch))
                   if wl.epoch_steps is None else self._stream(wl.epoch_steps))
        for batch in batches:
            loss = self.train_step(batch, self.steps + n_steps + 1)
            loss_sum += loss.detach().double()
            if self.initial_loss is None:
                self.initial_loss = float(loss.detach())
            n_steps += 1
            if n_steps % DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
                finite = False
                break
        self.steps += n_steps
        train_loss = float(loss_sum) / max(n_steps, 1)
        return train_loss, n_steps, finite and math.isfinite(train_loss)

    def train_step(self, batch: Any, step: int) -> torch.Tensor:
        """One optimizer step on ``batch`` as training takes it (the ``rsqrt`` rate of 1-based
        ``step``, autocast, clipping); returns the loss. Shared with the cost pass
        (``lookbench.execution.cost``), so what it times is exactly a trial's step."""
        wl, opt = self.workload, self.optimizer
        if self.schedule == "rsqrt":
            f = rsqrt_factor(step, wl.warmup_steps)
            for group, base in zip(opt.param_groups, self._base_lrs):
                group["lr"] = base * f
        opt.zero_grad(set_to_none=True)
        if isinstance(batch, MicroBatches):  # gradient accumulation: one part's graph at a time
            loss = torch.zeros((), device=self.device)
            for part, weight in zip(batch.parts, batch.weights):
                with self._autocast():
                    part_loss = wl.loss(self._train_model, part) * weight
                part_loss.backward()
                loss = loss + part_loss.detach().float()
        else:
            with self._autocast():
                loss = wl.loss(self._train_model, batch)
            loss.backward()
        if wl.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(wl.model.parameters(), wl.clip_grad_norm)
        scale = 1.0 if wl.step_scale is None else float(wl.step_scale(batch))
        if scale != 1.0:  # this step's size only (Merity et al.'s length scaling)
            lrs = [group["lr"] for group in opt.param_groups]
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr * scale
            opt.step()
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr
        else:
            opt.step()
        return loss

    def _pass_generator(self, data_pass: int) -> torch.Generator:
        """The generator of one pass over the training data: its order and augmentation."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(_stream_seed(self.config.seed, data_pass, 1))
        return generator

    def _stream(self, steps: int) -> Iterator[Any]:
        """``steps`` batches from the training data read as one stream of passes, for a task
        that measures training in steps (``Workload.epoch_steps``).

        Pass p is ordered by its own generator, as an epoch is otherwise, and the position in
        the stream (pass, batches of it consumed) is part of the checkpoint: a resumed trial
        rebuilds the pass it stopped in and skips what it had consumed, so it sees the same
        batches as a straight run.
        """
        taken = 0
        while taken < steps:
            batches = self.workload.train_batches(self.data_pass,
                                                  self._pass_generator(self.data_pass))
            for _ in itertools.islice(batches, self.pass_offset):
                pass
            yielded = False
            for batch in batches:
                yielded = True
                self.pass_offset += 1
                yield batch
                taken += 1
                if taken == steps:
                    return
            if not yielded and self.pass_offset == 0:
                raise ValueError("the task's train_batches yielded no batch")
            self.data_pass += 1
            self.pass_offset = 0

    def _analytic_epoch(self) -> EpochRecord:
        self.initial_loss = self.analytic[0]["test_loss"]  # type: ignore[index]
        self.epoch += 1
        metrics = self.analytic[self.epoch]  # type: ignore[index]
        loss = metrics["test_loss"]
        diverged = not math.isfinite(loss) or loss > BLOWUP_FACTOR * self.initial_loss
        record = EpochRecord(epoch=self.epoch, train_loss=loss, test_loss=loss,
                             test_acc=metrics.get("test_acc"), train_eval_loss=None,
                             lr=self.config.lr, steps=0, wall_s=0.0, diverged=diverged)
        self.records.append(record)
        return record

    def run_epoch(self) -> EpochRecord:
        """Train and evaluate one epoch."""
        if self.finished:
            raise RuntimeError("the trial has already finished")
        if self.analytic is not None:
            return self._analytic_epoch()
        wl, opt = self.workload, self.optimizer
        start = time.perf_counter()
        train_loss, _, finite = self.train_epoch()
        blown_up = (finite and self.initial_loss is not None and self.initial_loss > 0
                    and train_loss > BLOWUP_FACTOR * self.initial_loss)

        metrics: dict[str, float] = {"test_loss": math.nan}
        train_eval = None
        if finite:
            wl.model.eval()
            with torch.no_grad(), evaluation_weights(opt), self._autocast():
                metrics = dict(wl.evaluate(wl.model))
                if wl.train_eval is not None:
                    train_eval = wl.train_eval(wl.model)
                if wl.extra is not None:
                    metrics.update(wl.extra(wl.model))
        traced_s = 0.0
        if finite and self.config.trace_fast:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            traced = time.perf_counter()
            metrics.update(self._fast_metrics())
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            traced_s = time.perf_counter() - traced
        extra = _further_metrics(metrics)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        # (the trace is instrumentation: its time is not the optimizer's cost)
        self.wall_s += time.perf_counter() - start - traced_s
        self.epoch += 1
        diverged = blown_up or not (finite and math.isfinite(metrics["test_loss"]))
        record = EpochRecord(
            epoch=self.epoch,
            train_loss=train_loss if finite else math.nan,
            test_loss=metrics["test_loss"],
            test_acc=metrics.get("test_acc"),
            train_eval_loss=train_eval,
            lr=opt.param_groups[0]["lr"],
            steps=self.steps,
            wall_s=self.wall_s,
            diverged=diverged,
            extra=extra,
        )
        self.records.append(record)
        if self.schedule == "plateau" and not diverged:
            self._plateau_step(record)
        self._observe(record)
        return record

    def _observe(self, record: EpochRecord) -> None:
        """Tell an optimizer that watches validation (NT-ASGD's trigger) the epoch's ranking
        metric, as a value to minimise: ``optimizer.observe_validation(value)`` where it has
        that method. Its reaction is part of its ``state_dict``, so a resumed trial agrees."""
        observe = getattr(self.optimizer, "observe_validation", None)
        value = record.metrics().get(self.task.metric)
        if observe is None or record.diverged or value is None or not math.isfinite(value):
            return
        observe(-value if self.task.higher_is_better else value)

    def _fast_metrics(self) -> dict[str, float]:
        """The held-out metrics of the fast weights, as ``fast_<m>`` (the paper's Figure 10:
        Lookahead's inner loop degrades them, its slow step recovers); nothing for a plain
        optimizer, whose fast weights are the ones evaluated."""
        fast = fast_weights(self.optimizer)
        if fast is None:
            return {}
        with torch.no_grad(), fast, self._autocast():
            return {f"fast_{k}": v for k, v in self.workload.evaluate(self.workload.model).items()}

    def _plateau_step(self, record: EpochRecord) -> None:
        """Halve the learning rate when the task's metric has not improved for
        ``plateau_patience`` epochs (as ``ReduceLROnPlateau(factor=0.5)``, here so a resumed
        trial continues with the same state)."""
        value = record.metrics().get(self.task.metric)
        if value is None or not math.isfinite(value):
            return
        best = self.plateau["best"]
        better = best is None or (value > best if self.task.higher_is_better else value < best)
        if better:
            self.plateau.update(best=value, waited=0)
            return
        self.plateau["waited"] += 1
        if self.plateau["waited"] >= self.task.plateau_patience:
            self.plateau.update(waited=0, halvings=self.plateau["halvings"] + 1)

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue after the last completed epoch."""
        return {
            "config": self.config.model_dump(mode="json"),
            "epoch": self.epoch,
            "steps": self.steps,
            "wall_s": self.wall_s,
            "initial_loss": self.initial_loss,
            "plateau": dict(self.plateau),
            "data_pass": self.data_pass,
            "pass_offset": self.pass_offset,
            "records": [asdict(r) for r in self.records],
            "model": None if self.analytic is not None else self.workload.model.state_dict(),
            "optimizer": None if self.analytic is not None else self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (made by :meth:`state_dict` for the same configuration)."""
        saved = TrialConfig.model_validate(state["config"])
        if saved != self.config:
            raise ValueError("checkpoint belongs to a different trial configuration")
        if self.analytic is None:
            self.workload.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.steps = int(state["steps"])
        self.wall_s = float(state["wall_s"])
        self.initial_loss = state["initial_loss"]
        self.plateau = dict(state.get("plateau") or self.plateau)
        self.data_pass = int(state.get("data_pass", 0))
        self.pass_offset = int(state.get("pass_offset", 0))
        self.records = [EpochRecord(**r) for r in state["records"]]


def run_trial(config: TrialConfig, device: str | torch.device = "auto",
              data_dir: Path | None = None) -> list[EpochRecord]:
    """Run ``config`` to the end (or until it diverges) and return its per-epoch records."""
    trial = Trial(config, device, data_dir)
    return list(trial.run())
