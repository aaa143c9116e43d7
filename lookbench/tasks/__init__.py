"""The benchmark tasks, by name: the paper's workloads, a small real one, and yours.

A task is named in one of four ways, everywhere a task is taken (``lookbench run TASK``,
``task = "..."`` in a study file, the trials table):

- a built-in name (``digits``, ``cifar100``, ...);
- the name of an installed package's entry point in the group ``lookbench.tasks``;
- ``package.module:ClassName``, importable from the current environment;
- ``path/to/file.py:ClassName``, a file of your own (relative to the working directory).

The reference is stored with the study's definition, so every worker process, and every machine
sharing the study's database, loads the same class from it. Task modules are imported on first
use (CIFAR pulls in torchvision), so listing the built-in names costs nothing.

May import: the base modules and ``optim``; never ``results``, ``study`` or above.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from lookbench._references import BadReference, load
from lookbench.tasks.base import DataUnavailable, MicroBatches, Task, TaskSize, Workload

ENTRY_POINT_GROUP = "lookbench.tasks"
# name -> "module:Class"; the order is the order ``lookbench tasks`` lists them in.
_REGISTRY: dict[str, str] = {
    "nqm": "lookbench.tasks.nqm:NoisyQuadratic",
    "quadratic": "lookbench.tasks.quadratic:DeterministicQuadratic",
    "digits": "lookbench.tasks.digits:Digits",
    "cifar10": "lookbench.tasks.cifar:Cifar10",
    "cifar100": "lookbench.tasks.cifar:Cifar100",
    "imagefolder": "lookbench.tasks.imagefolder:ImageFolder",
    "imagenet": "lookbench.tasks.imagefolder:ImageNet",
    "ptb": "lookbench.tasks.ptb:PennTreebank",
    "wikitext2": "lookbench.tasks.ptb:WikiText2",
    "wmt14": "lookbench.tasks.wmt:WMT14",
}


# What the built-in tasks rank by (metric, higher is better), as their classes declare it
# (tests/report/test_startup.py checks the two agree): reading a study's results imports no
# task module for them.
BUILTIN_RANKING: dict[str, tuple[str, bool]] = {
    "nqm": ("test_loss", False), "quadratic": ("test_loss", False),
    "digits": ("test_acc", True), "cifar10": ("test_acc", True), "cifar100": ("test_acc", True),
    "imagefolder": ("test_acc", True), "imagenet": ("test_acc", True),
    "ptb": ("valid_perplexity", False), "wikitext2": ("valid_perplexity", False),
    "wmt14": ("valid_perplexity", False),
}




def declared_ranking(name: str) -> tuple[str, bool] | None:
    """What a study of task ``name`` ranks by, as the task declares it: (metric, higher is
    better); None for a task this version cannot load (its results are then read by their
    rows). The results layer takes this from its callers rather than importing tasks."""
    if name in BUILTIN_RANKING:
        return BUILTIN_RANKING[name]
    try:
        cls = task_class(name)
    except ValueError:
        return None
    return str(cls.metric), bool(cls.higher_is_better)


class TaskNotFound(ValueError):
    """A task reference names nothing loadable; the message is one line saying why."""


def _installed() -> dict[str, str]:
    """Tasks that installed packages declare under the ``lookbench.tasks`` entry points."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Names of every built-in and installed task, in listing order."""
    return list(_REGISTRY) + [n for n in _installed() if n not in _REGISTRY]


def _resolve(reference: str, name: str) -> type[Task]:
    try:
        cls = load(reference, "task", name)
    except BadReference as e:
        raise TaskNotFound(str(e)) from None
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TaskNotFound(f"task {name!r}: {reference.rpartition(':')[2]} is not a "
                           "lookbench.Task subclass")
    return cls


def task_class(name: str) -> type[Task]:
    """The class of task ``name`` (a built-in or installed name, ``module:Class`` or
    ``file.py:Class``); :class:`TaskNotFound` (a ``ValueError``) says why in one line."""
    if name in _REGISTRY:
        module, cls = _REGISTRY[name].split(":")
        return getattr(import_module(module), cls)
    installed = _installed()
    if name in installed:
        return _resolve(installed[name], name)
    if ":" in name:
        return _resolve(name, name)
    from lookbench._suggest import did_you_mean

    raise TaskNotFound(f"unknown task {name!r}{did_you_mean(name, available())}; choose one "
                       f"of {', '.join(available())}, or "
                       "name your own as path/to/file.py:ClassName or package.module:ClassName")


def get(name: str, **options: Any) -> Task:
    """Task ``name`` with validated options (``pydantic.ValidationError`` on bad ones)."""
    return task_class(name).with_options(**options)


__all__ = ["DataUnavailable", "MicroBatches", "Task", "TaskNotFound", "TaskSize", "Workload", "available",
           "BUILTIN_RANKING", "declared_ranking", "get", "task_class"]
