"""lookbench: how much less does Lookahead make you tune, and what does it cost?

The package is split by pipeline stage (see ``docs/architecture.md``): ``optim`` (Lookahead and
the baselines), ``tasks``, ``study``, ``results`` and ``report``. Heavy dependencies (torch,
optuna, plotly) are imported by those subpackages only, so ``import lookbench`` and
``lookbench --help`` stay instant.
"""

__all__ = ["MicroBatches", "StudyNotFound", "Task", "TaskSize", "Workload", "__version__",
           "load_results", "run_study"]

# Imported when first asked for: ``from lookbench import Task, Workload`` (a task of your own)
# and the scripting API (which needs torch, Optuna and pyarrow) must not make ``import
# lookbench`` (and so ``lookbench --help``) pay for them.
_LAZY = {"MicroBatches": "lookbench.tasks.base", "Task": "lookbench.tasks.base", "TaskSize": "lookbench.tasks.base",
         "Workload": "lookbench.tasks.base", "run_study": "lookbench.api",
         "load_results": "lookbench.api", "StudyNotFound": "lookbench.api"}


def __getattr__(name: str):
    if name == "__version__":
        from lookbench._version import version

        globals()["__version__"] = value = version()
        return value
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lookbench' has no attribute {name!r}")
