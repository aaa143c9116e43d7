"""Where the workers of ``lookbench run --launcher`` run: a Slurm job array (``slurm``, through
submitit) or a Ray cluster's tasks (``ray_workers``). Each implements
``lookbench.execution.launch.Launcher``, which the engine drives; the workers are the local ones.

May import: every layer below it (``execution`` included); never ``report`` or the commands.
Their libraries (submitit, ray) are optional extras, imported only when a launcher is used.
"""

from __future__ import annotations

from lookbench._lazy import exports

# Each public name and its module, imported on first use (``lookbench._lazy.exports``).
_WHERE = {
    "RayLauncher": "ray_workers",
    "SlurmLauncher": "slurm",
    "cancel": "jobs",
    "summary": "jobs",
    "sbatch_options": "slurm",
}
__getattr__ = exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
