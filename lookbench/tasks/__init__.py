"""The benchmark tasks, by name: the paper's workloads and a small real one.

Task modules are imported on first use (CIFAR pulls in torchvision), so listing the names costs
nothing.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from lookbench.tasks.base import DataUnavailable, Task, TaskSize, Workload

# name -> "module:Class"; the order is the order ``lookbench tasks`` lists them in.
_REGISTRY: dict[str, str] = {
    "nqm": "lookbench.tasks.nqm:NoisyQuadratic",
    "quadratic": "lookbench.tasks.quadratic:DeterministicQuadratic",
    "digits": "lookbench.tasks.digits:Digits",
    "cifar10": "lookbench.tasks.cifar:Cifar10",
    "cifar100": "lookbench.tasks.cifar:Cifar100",
}


def available() -> list[str]:
    """Names of every task, in listing order."""
    return list(_REGISTRY)


def task_class(name: str) -> type[Task]:
    """The class of task ``name``; ``ValueError`` names the known tasks if it is unknown."""
    try:
        module, cls = _REGISTRY[name].split(":")
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(_REGISTRY)}") from None
    return getattr(import_module(module), cls)


def get(name: str, **options: Any) -> Task:
    """Task ``name`` with validated options (``pydantic.ValidationError`` on bad ones)."""
    return task_class(name).with_options(**options)


__all__ = ["DataUnavailable", "Task", "TaskSize", "Workload", "available", "get", "task_class"]
