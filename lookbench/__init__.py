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

__all__ = ["__version__"]
