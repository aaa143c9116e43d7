"""Population training: many trials of one study trained together as one vectorised model
(``layers``: M networks as one in HFTA's channel layout; ``optim``: their optimizers as one;
``trial``: ``PopulationTrial``), and the shape of ``lookbench.execution.runner`` that runs them
(``run``: which trials train together, and ``PopulationRunner``).

May import: what ``lookbench.execution`` may, and ``execution``'s own modules below the worker
(``runner``, ``trial``, ``checkpoints``).
"""

from __future__ import annotations

from lookbench._lazy import exports

# Each public name and its module, imported on first use (``lookbench._lazy.exports``).
_WHERE = {
    "PopulationRunner": "run",
    "runner_for": "run",
    "PopulationTrial": "trial",
}
__getattr__ = exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
