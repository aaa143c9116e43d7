"""The public API for scripts: run (or resume) a study and read its results, as the
``lookbench run`` command and any Parquet reader would.

    import lookbench

    result = lookbench.run_study("studies/digits.toml", workers=2)  # the study "digits"
    trials, curves = lookbench.load_results(result.study_dir)      # runs/digits
    trials, curves = lookbench.load_results("digits")             # a name: under ./runs
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import pandas as pd

from lookbench.execution.engine import RunResult
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

    from lookbench.execution.engine import run_study as engine_run

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


class StudyNotFound(FileNotFoundError, ValueError):
    """:func:`load_results` found no study where it was told to look: the message names the
    path and, where a study folder of a close name exists, that folder. Both a
    ``FileNotFoundError`` and a ``ValueError``, so either ``except`` catches it."""


def load_results(study: str | os.PathLike, *, out: str | os.PathLike = "runs"
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A study's two tables as pandas frames: one row per trial, and one per trial and epoch
    (the same Parquet files any reader takes; see the README for the columns). Group a
    configuration's seeds by the trials table's ``config`` column.

    ``study``: a study folder (``runs/digits-sgd``, or ``RunResult.study_dir``), or a study's
    name, looked up under ``out`` (``load_results("digits-sgd")`` reads ``runs/digits-sgd``).
    A study that has no finished trial yet gives empty frames; a path that is no study (none
    there, or a folder without a study's tables, journal or ``study.json``) raises
    :class:`StudyNotFound`, naming the path and a study folder of a close name if there is
    one (``run_study(task="digits")`` writes ``runs/digits-sgd``, named ``<task>-<inner>``).
    """
    from lookbench.results import StudyResults

    results = StudyResults(_study_dir(Path(study), Path(out)))
    return results.trials().to_pandas(), results.curves().to_pandas()


def _is_study(path: Path) -> bool:
    """A folder lookbench wrote a study in: its tables, its definition or its journal."""
    from lookbench.coordination.storage import JOURNAL_FILE
    from lookbench.results.store import DEFINITION_FILE, TRIALS_DIR

    return path.is_dir() and any((path / name).exists()
                                 for name in (TRIALS_DIR, DEFINITION_FILE, JOURNAL_FILE))


def _studies_in(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if _is_study(p))
    except OSError:
        return []


def _study_dir(given: Path, out: Path) -> Path:
    """The study folder ``given`` names (a path, else a name under ``out``), or
    :class:`StudyNotFound` saying what is there instead."""
    candidates = [given]
    if not given.is_absolute() and out / given != given:
        candidates.append(out / given)
    for path in candidates:
        if _is_study(path):
            return path
    inside = _studies_in(given) if given.is_dir() else []
    if inside:  # (the folder that holds the studies: --out)
        names = ", ".join(p.name for p in inside[:5]) + (", ..." if len(inside) > 5 else "")
        raise StudyNotFound(f"{given} is not a study but holds studies ({names}): pass one of "
                            f"them, e.g. load_results({str(inside[0])!r})")
    nearby = {p: None for folder in (given.parent, out) for p in _studies_in(folder)}
    by_name: dict[str, list[Path]] = {}
    for p in nearby:
        by_name.setdefault(p.name, []).append(p)
    close = difflib.get_close_matches(given.name, list(by_name), n=3, cutoff=0.6)
    close += [n for n in sorted(by_name) if n.startswith(f"{given.name}-") and n not in close]
    folder = next((p for p in candidates if p.is_dir()), None)
    if folder is not None:
        what = f"{folder} is not a study folder (no trials/, study.json or journal in it)"
    elif len(given.parts) == 1:
        what = f"no study {str(given)!r} here or under {out}/"
    else:
        what = f"no study at {given}: it does not exist"
    hint = ""
    if close:
        hint = "; did you mean " + " or ".join(str(by_name[n][0]) for n in close[:3]) + "?"
        if any(n.startswith(f"{given.name}-") for n in close):
            hint += " (a study without a name is named <task>-<inner>)"
    raise StudyNotFound(what + hint)
