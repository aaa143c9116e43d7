"""A module imported on first use of one of its attributes.

Why: torch takes 1-6 s to import, and lookbench checks a command line and a study file (task
names, options, hyperparameters' bounds) in modules that only *build* models and optimizers
with torch later; with ``torch = lazy("torch")`` those modules import at once, and a bad input
is answered before torch loads. Written here because ``importlib.util.LazyLoader`` (and
``lazy_loader``, built on it) import a submodule's parent when the submodule is declared, so a
lazy ``torch.nn`` would load torch at once.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule:
    """Stands for module ``name``; the first attribute read imports it."""

    def __init__(self, name: str) -> None:
        self._lazy_name = name
        self._lazy_module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:  # (only for names the proxy itself lacks)
        if self._lazy_module is None:
            self._lazy_module = importlib.import_module(self._lazy_name)
        value = getattr(self._lazy_module, attr)
        setattr(self, attr, value)  # (read at the speed of a module attribute from now on)
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self._lazy_name!r}>"


def lazy(name: str) -> Any:
    """Module ``name``, imported when one of its attributes is first read (at once if it is
    imported already)."""
    import sys

    return sys.modules.get(name) or _LazyModule(name)


def exports(package: str, where: dict[str, str]) -> Any:
    """A package face's ``__getattr__`` (PEP 562): each public name in ``where`` (name →
    module of the package) imported from its module on first use, so that importing one
    module of a package, or its face, does not import the rest (or torch, Optuna, pyarrow)."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return __getattr__
