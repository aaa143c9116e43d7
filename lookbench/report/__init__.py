"""``lookbench report``: the verdict, robustness metrics and Plotly figures as one offline HTML
page per study, read from the study's Parquet tables only; beside each page, ``<study>.json``
(the summary, for scripts) and ``<study>-configs.csv`` (every configuration's score).

May import: every layer below it but ``execution`` and ``launchers``, which it does not
need: a report reads a study's files, never runs one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from lookbench.report.data import ReportError, StudyData, load_study

__all__ = ["ReportError", "StudyData", "build_reports", "load_study"]


def build_reports(study_dirs: list[Path], out: Path, compare: bool = False,
                  within: tuple[float, ...] | None = None,
                  absolute: bool = False) -> list[Path]:
    """Write a page per study (and an index when there are several) under ``out``; with
    ``compare``, one page with the two studies side by side. ``within``/``absolute``: the
    tolerances ε the verdict judges by. Returns every file written, in a stable order: for
    each study in the order given, its page, ``<study>.json`` and ``<study>-configs.csv``;
    then the index (or the comparison page alone)."""
    from lookbench.report import page

    # all readable before anything is written
    studies = [load_study(d, within=within, absolute=absolute) for d in study_dirs]
    if compare:
        if len(studies) != 2:
            raise ReportError(f"--compare takes exactly two studies, got {len(studies)}")
        a, b = studies
        return [page.write(out / f"{a.name}-vs-{b.name}.html", page.compare_page(a, b))]
    written: list[Path] = []
    pages: list[Path] = []
    for s in studies:
        pages.append(page.write(out / f"{s.name}.html", page.study_page(s)))
        written.append(pages[-1])
        written.append(page.write(out / f"{s.name}.json", summary_json(s)))
        written.append(page.write(out / f"{s.name}-configs.csv",
                                  page.config_frame(s).to_csv(index=False)))
    if len(studies) > 1:
        entries = [(s, p.name) for s, p in zip(studies, pages)]
        written.append(page.write(out / "index.html", page.index_page(entries)))
    return written


def summary_json(data: StudyData) -> str:
    """``<study>.json``: the summary as text (counts and k as integers, NaN as null)."""
    from lookbench.report import verdict
    from lookbench.report.analysis import analysis_of

    return json.dumps(verdict.summary(analysis_of(data), data), indent=2, allow_nan=False,
                      default=_json_value) + "\n"


def _json_value(v: object) -> object:
    """numpy scalars as plain numbers; a non-finite number as null (JSON has no NaN)."""
    item = getattr(v, "item", None)
    if item is not None:
        v = item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")
