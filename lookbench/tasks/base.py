"""What a task is: data, model, loss, metrics, default budget and search ranges.

A task knows nothing of Optuna, Parquet or the optimizers: it turns its options, a batch size,
a device and a seed into a :class:`Workload` (a model plus functions that yield training
batches and evaluate), which the shared trial runner (``lookbench.execution.trial``) drives the same
way for the noisy quadratic and for CIFAR-100.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # (a task's class is read, to check a study, before torch is imported)
    import torch
    from torch import nn

Batch = Any


class NoOptions(BaseModel):
    """Options of a task that has none."""

    model_config = ConfigDict(extra="forbid")


class DataUnavailable(Exception):
    """A task's data cannot be found or read; the message says what to do, in one line."""


@dataclass
class Workload:
    """Everything the trial runner needs to train and evaluate one configuration.

    Attributes:
        model: the module whose parameters the optimizer updates.
        steps_per_epoch: optimizer steps in one epoch.
        train_batches: ``(epoch, generator)`` → the epoch's batches, already on the device; the
            order and augmentation must depend only on the generator, so an epoch can be
            replayed exactly when a trial resumes.
        loss: ``(model, batch)`` → scalar training loss (runs the forward pass).
        evaluate: ``model`` → metrics on the held-out data (``test_loss``, and ``test_acc`` for
            classifiers), computed in eval mode without gradients.
        train_eval: optional ``model`` → training loss from a pass without updates (the
            paper's protocol, Appendix C.1), for tasks where that differs from the running mean.
        extra: optional ``model`` → further per-epoch metrics (e.g. analytic values).
        clip_grad_norm: clip the gradient's global norm to this before every step (the
            paper's language model: 0.25), for every optimizer alike.
        warmup_steps: the warmup of the per-step ``rsqrt`` schedule (the Transformer's).
        epoch_steps: where the task measures training in steps rather than passes over its
            data (the paper's 250k Transformer steps), the optimizer steps between two evaluations;
            the runner then reads the data as one stream of passes, each ordered by its own
            generator, that an "epoch" may start or end in the middle of. ``None``: an epoch
            is one pass.
        criterion: ``(outputs, targets)`` → per-example losses, for a task whose batches are
            ``(inputs, targets)`` and whose ``loss`` is ``criterion(model(inputs),
            targets).mean()`` (a classifier's cross-entropy). Setting it lets configurations
            of the task train together as a population (``lookbench.execution.population``), which
            computes every member's loss in one call.
        channels_last: whether image batches and the model use channels-last memory on CUDA.
        amp: whether the forward pass may run under bf16 autocast on CUDA (image models; not
            the quadratics, whose comparison with the analysis needs full precision).
        step_scale: optional ``batch`` → factor of the learning rate for the step on that batch
            only (Merity et al. scale it by the window's length / bptt); applied to the step
            size itself, so clipping and Adam's normalisation do not undo it.

    A batch may be a :class:`MicroBatches`: one optimizer step accumulated over its parts
    (gradient accumulation, for a step larger than fits the device at once).
    """

    model: nn.Module
    steps_per_epoch: int
    train_batches: Callable[[int, torch.Generator], Iterator[Batch]]
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    evaluate: Callable[[nn.Module], dict[str, float]]
    train_eval: Callable[[nn.Module], float] | None = None
    extra: Callable[[nn.Module], dict[str, float]] | None = None
    clip_grad_norm: float | None = None
    warmup_steps: int = 4000  # the "rsqrt" schedule's warmup
    epoch_steps: int | None = None
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    channels_last: bool = False
    amp: bool = False
    step_scale: Callable[[Batch], float] | None = None


@dataclass
class MicroBatches:
    """The parts of one optimizer step's batch, trained by gradient accumulation: the runner
    runs forward and backward on each part in turn (so only one part's activations are held at
    a time), its loss multiplied by its weight, then takes one step. Weights summing to 1 (each
    part's share of the step's tokens or examples) make the step's gradient that of the whole
    batch's mean loss."""

    parts: list[Batch]
    weights: list[float]

    def __post_init__(self) -> None:
        if not self.parts or len(self.parts) != len(self.weights):
            raise ValueError("MicroBatches needs one weight per part, and at least one part")


@dataclass(frozen=True)
class TaskSize:
    """How big a task is, for ``lookbench tasks``."""

    train_examples: int | None
    test_examples: int | None
    parameters: int | None


@dataclass
class Task(ABC):
    """A benchmark workload: subclasses set the class attributes and build a :class:`Workload`.

    Every metric has a direction (:meth:`higher_is_better_for`), which the trials table's
    ``best_<m>`` follows: the ranking ``metric``'s is ``higher_is_better``; names lookbench
    knows (``test_acc``, ``*_loss``, ``*_perplexity``, ``test_bleu``, ...; see
    ``lookbench.directions``) need no declaration; a metric of your own that the name does not
    tell (``grad_norm``) is declared in ``directions``, else it gets no ``best_<m>`` (null),
    while its final value and its value at the best epoch (``<m>_at_best``) are still recorded.
    """

    # A task of your own needs only ``workload``; everything else has a default.
    name: ClassVar[str] = ""  # built-in tasks; yours is named by its reference (file.py:Class)
    summary: ClassVar[str] = "a task of your own"
    data: ClassVar[str] = "your own"  # what data it needs, in words
    metric: ClassVar[str] = "test_acc"  # the number a study ranks configurations by
    higher_is_better: ClassVar[bool] = True
    # Your further metrics' directions by name (True: higher is better), where not the name's.
    directions: ClassVar[dict[str, bool]] = {}
    default_epochs: ClassVar[int] = 10
    default_batch_size: ClassVar[int] = 64
    default_schedule: ClassVar[str] = "constant"  # one of lookbench.choices.Schedule
    # The optimizer Lookahead wraps when a study names none (``--inner``), as the task's
    # reference trains it (the Transformer: Adam), and that optimizer's settings the reference
    # fixes (β2 = 0.98, ε = 1e-9), which a study's default grid then holds (study_grid).
    default_inner: ClassVar[str] = "sgd"
    inner_defaults: ClassVar[dict[str, Any]] = {}
    plateau_patience: ClassVar[int] = 15  # "plateau": epochs without a better metric, then ×½
    # The paper's grids per inner optimizer, where it gives them (see ``default_grid``).
    paper_grids: ClassVar[dict[str, dict[str, dict[str, list[Any]]]]] = {}
    Options: ClassVar[type[BaseModel]] = NoOptions
    options: BaseModel = field(default_factory=NoOptions)

    @classmethod
    def higher_is_better_for(cls, name: str) -> bool | None:
        """Whether a higher value of metric ``name`` is better (``None``: the task does not
        say and the name does not tell): the ranking metric's ``higher_is_better``, then
        ``directions``, then the names and words ``lookbench.directions`` knows."""
        from lookbench.directions import resolve

        return resolve(name, cls.directions, metric=cls.metric,
                       higher_is_better=cls.higher_is_better)

    @classmethod
    def declared_directions(cls) -> dict[str, bool]:
        """The directions the task declares (``directions`` and the ranking metric's), as a
        study stores them in study.json."""
        return {**{str(k): bool(v) for k, v in cls.directions.items()},
                str(cls.metric): bool(cls.higher_is_better)}

    @property
    def opts(self) -> Any:
        """The options as this task's ``Options`` model, defaults filled in (also for a task
        built without ``with_options``)."""
        if isinstance(self.options, self.Options):
            return self.options
        return self.Options(**self.options.model_dump())

    @classmethod
    def with_options(cls, **options: Any) -> Task:
        """The task with validated options (pydantic: unknown or bad values raise)."""
        return cls(options=cls.Options(**options))

    @abstractmethod
    def workload(self, *, batch_size: int, device: torch.device, seed: int,
                 data_dir: Path | None = None) -> Workload:
        """Build data (on ``device``), model (initialised from ``seed``) and functions."""

    def find_data(self, data_dir: Path | None) -> None:
        """Raise :class:`DataUnavailable` if the files the task reads are not where they must
        be, quickly and without torch: ``lookbench run`` asks before it imports anything heavy
        (a task that downloads its data, or needs none, has nothing to find here)."""

    def check_data(self, data_dir: Path | None) -> None:
        """Raise :class:`DataUnavailable` now if the task's data cannot be had (before a study
        creates anything); tasks that need no files have nothing to check."""

    def check_config(self, config: Any) -> None:
        """Raise ``ValueError`` (saying why) if this task cannot run ``config``; a study checks
        every grid point before it starts, so no trial fails for it later. Most tasks run any."""

    def analytic_curve(self, config: Any) -> list[dict[str, float]] | None:
        """Metrics computed without training, for a task that can (the noisy quadratic's
        expected dynamics): element 0 at the start, element e after epoch e. ``None`` means the
        configuration must be trained. ``config`` is a ``lookbench.study.config.TrialConfig``."""
        return None

    def loss_floor(self) -> float | None:
        """The lowest expected value the task's ranking loss (``test_loss``) can reach, or
        ``None`` where it is not known (real data: default).

        A loss has an offset that no optimizer can remove (the noisy quadratic's noise), so
        "within 1% of the best loss" or a ratio of two losses means little on its own; measured
        from the floor, a score says how much of the reachable progress a configuration made.
        """
        return None

    def initial_loss(self) -> float | None:
        """The ranking loss at initialisation where the task knows it without training (a
        fixed start point), else ``None`` (default: models initialised from the seed).

        With :meth:`loss_floor` it spans the scale of progress: a configuration that ends at or
        above it did not train, whatever its rank among the others.
        """
        return None

    def chance_level(self) -> float | None:
        """The ranking metric of a model that learned nothing (a classifier's best constant
        guess: the largest class's share of the test set), where the task knows it; ``None``
        otherwise (default, and for metrics where lower is better).

        The report scores a diverged run at this level (a blow-up is no worse than not
        training, and no better) and calls a run that ends no better than it "did not train".
        """
        return None

    def deterministic(self) -> bool:
        """Whether every seed gives the same result (an analytic task): its report then shows
        exact values and no intervals. Default: ``False``."""
        return False

    def size(self) -> TaskSize:
        """Examples and parameter count, without loading the data (unknown by default)."""
        return TaskSize(None, None, None)

    def default_grid(self, inner: str) -> dict[str, dict[str, list[Any]]]:
        """The search grid per optimizer name for a study of Lookahead around ``inner``.

        Returns ``{"lookahead": {...}, inner: {...}}``, each mapping hyperparameter names (as
        ``lookbench.optim.build`` takes them) to the values to sweep: the paper's grids where
        it gives them (Appendix C; ``paper_grids``). By default, the paper's section 5.5
        design: Lookahead at
        k = 5, α = 0.5 and the inner optimizer alone over the same learning rates (a decade
        either side of the optimizer's default) at its default momentum, where it takes one.
        """
        if inner in self.paper_grids:
            return copy.deepcopy(self.paper_grids[inner])
        from lookbench.optim import hyperparameters

        takes = hyperparameters(inner)
        centre = takes.get("lr") if isinstance(takes.get("lr"), float) else 1e-3
        lrs = [float(f"{centre * f:.3g}") for f in (0.1, 0.3, 1.0, 3.0, 10.0)]
        own = {"lr": lrs, **({"momentum": [takes["momentum"]]} if "momentum" in takes else {})}
        return {"lookahead": {**own, "k": [5], "alpha": [0.5]}, inner: own}

    def study_grid(self, inner: str) -> dict[str, dict[str, list[Any]]]:
        """:meth:`default_grid` as a study takes it: around the task's ``default_inner``, both
        tables hold its ``inner_defaults`` (the settings the reference fixes) where they name
        no values of their own, whichever task overrides ``default_grid``."""
        grid = self.default_grid(inner)
        if inner == self.default_inner:
            for table in (grid.get("lookahead"), grid.get(inner)):
                for name, value in self.inner_defaults.items():
                    if table is not None:
                        table.setdefault(name, [value])
        return grid


def parameter_count(build: Callable[[], nn.Module]) -> int:
    """Parameters of the model ``build`` makes, counted on the meta device (nothing is
    allocated or initialised), for ``Task.size``."""
    import torch

    with torch.device("meta"):
        model = build()
    return sum(p.numel() for p in model.parameters())


def perplexity(cross_entropy: float) -> float:
    """``exp`` of a mean cross-entropy in nats, capped so that a diverged model's perplexity
    stays a finite number (language and translation tasks)."""
    return math.exp(min(cross_entropy, 700.0))
