"""lookbench: how much less does Lookahead make you tune, and what does it cost?

The package is split by pipeline stage (see ``docs/architecture.md``): ``optim`` (Lookahead and
the baselines), ``tasks``, ``study``, ``results`` and ``report``. Heavy dependencies (torch,
optuna, plotly) are imported by those subpackages only, so ``import lookbench`` and
``lookbench --help`` stay instant.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lookbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["Task", "TaskSize", "Workload", "__version__"]

_LAZY = {"Task", "TaskSize", "Workload"}  # need torch: imported when first asked for


def __getattr__(name: str):
    """``from lookbench import Task, Workload`` for writing a task of your own, without making
    ``import lookbench`` (and so ``lookbench --help``) pay for importing torch."""
    if name in _LAZY:
        from lookbench.tasks import base

        return getattr(base, name)
    raise AttributeError(f"module 'lookbench' has no attribute {name!r}")
