"""Loading a user's own class from a reference: ``package.module:Class``, or
``path/to/file.py:Class`` (relative to the working directory).

Tasks and optimizers of one's own are named this way wherever a name is taken; the reference is
stored with the study's definition, so every worker process loads the same class from it.
Written here rather than with ``importlib`` calls at each use because a file must be imported
once per process under a stable module name (so its classes pickle) and every failure must be
one line naming the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from functools import lru_cache
from importlib import import_module
from pathlib import Path
from typing import Any

from lookbench._messages import describe


class BadReference(ValueError):
    """A reference names nothing loadable; the message is one line saying why."""


def is_reference(name: str) -> bool:
    """``module:Class`` or ``file.py:Class`` (as opposed to a registered name)."""
    where, _, attr = name.rpartition(":")
    return bool(where and attr)


def is_file_reference(name: str) -> bool:
    where = name.rpartition(":")[0]
    return where.endswith(".py") or "/" in where or "\\" in where


def load_file(path: str, what: str) -> Any:
    """Import a file as a module once per process (per absolute path, so the same relative
    name from another working directory is another file)."""
    return _load_absolute(str(Path(path).absolute()), path, what)


@lru_cache(maxsize=None)
def _load_absolute(absolute: str, path: str, what: str) -> Any:
    file = Path(absolute)
    if not file.is_file():
        raise BadReference(f"{what} file {path} does not exist")
    digest = hashlib.sha256(absolute.encode()).hexdigest()[:12]
    module_name = f"lookbench_user_{file.stem.replace('-', '_')}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise BadReference(f"{what} file {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # registered first: its classes pickle, dataclasses work
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a user's file: any error is one line naming it, not a traceback
        del sys.modules[module_name]
        raise BadReference(f"{what} file {path} failed to load: {describe(e)}") from None
    return module


def load(reference: str, what: str, label: str | None = None) -> Any:
    """The object ``reference`` names. ``what`` ("task", "optimizer") and ``label`` (how the
    user named it) go into the one-line error."""
    label = label or reference
    where, _, attr = reference.rpartition(":")
    if not where or not attr:
        raise BadReference(f"{what} {label!r}: write a reference as module:Class or "
                              "file.py:Class")
    if is_file_reference(reference):
        module = load_file(where, what)
    else:
        try:
            module = import_module(where)
        except Exception as e:
            raise BadReference(f"{what} {label!r}: cannot import {where}: {describe(e)}") \
                from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise BadReference(f"{what} {label!r}: {where} has no {attr}")
    return obj
