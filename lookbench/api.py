"""The public API for scripts: run (or resume) a study and read its results, as the
``lookbench run`` command and any Parquet reader would.

    import lookbench

    result = lookbench.run_study("studies/digits.toml", workers=2)
    trials, curves = lookbench.load_results("runs/digits")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from lookbench.study.engine import RunResult
from lookbench.study.spec import SWEEPABLE, StudySpec, load_spec


def run_study(spec: StudySpec | str | os.PathLike | None = None, *, out: str | os.PathLike = "runs",
              devices: str = "auto", workers: int | None = None, storage: str | None = None,
              data_dir: str | os.PathLike | None = None, progress: bool = False,
              **options: Any) -> RunResult:
    """Run a study to its end, or resume it: exactly what ``lookbench run`` does.

    ``spec``: a study file, a :class:`~lookbench.study.spec.StudySpec`, or ``None`` with the
    study given by ``options`` (``task="digits"``, ``inner="adam"``, ``seeds=3``, ...). Options
    that name a sweepable hyperparameter (``lr=[0.01, 0.1]``, ``k=[5, 10]``) replace that list
    in every grid table, like ``--lr 0.01,0.1``. Raises ``lookbench.study.spec.SpecError`` for
    a bad definition; ``progress=True`` shows the command's progress display.
    """
    from rich.console import Console

    from lookbench.study.engine import run_study as engine_run

    if not isinstance(spec, StudySpec):
        grid = {k: list(v) for k, v in options.items() if k in SWEEPABLE}
        rest = {k: v for k, v in options.items() if k not in SWEEPABLE}
        spec = load_spec(Path(spec) if spec is not None else None, grid_overrides=grid, **rest)
    elif options:
        raise TypeError("give options or a StudySpec, not both")
    console = Console() if progress else Console(file=open(os.devnull, "w"))  # noqa: SIM115
    return engine_run(spec, out=Path(out), storage_url=storage, devices=devices,
                      workers=workers, data_dir=Path(data_dir) if data_dir else None,
                      console=console)


def load_results(study_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A study's two tables as pandas frames: one row per trial, and one per trial and epoch
    (the same Parquet part files any reader takes; see the README for the columns)."""
    from lookbench.results import StudyResults

    results = StudyResults(Path(study_dir))
    return results.trials().to_pandas(), results.curves().to_pandas()
