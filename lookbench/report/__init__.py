"""``lookbench report``: the verdict, robustness metrics and Plotly figures as one offline HTML
page per study, read from the study's Parquet tables only; beside each page, ``<study>.json``
(the summary, for scripts) and ``<study>-configs.csv`` (every configuration's score)."""

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
    tolerances ε the verdict judges by. Returns the pages written."""
    from lookbench.report import page, verdict

    # all readable before anything is written
    studies = [load_study(d, within=within, absolute=absolute) for d in study_dirs]
    if compare:
        if len(studies) != 2:
            raise ReportError(f"--compare takes exactly two studies, got {len(studies)}")
        a, b = studies
        return [page.write(out / f"{a.name}-vs-{b.name}.html", page.compare_page(a, b))]
    written = []
    for s in studies:
        written.append(page.write(out / f"{s.name}.html", page.study_page(s)))
        page.write(out / f"{s.name}.json", json.dumps(verdict.summary(s.analysis, s), indent=2,
                                                      allow_nan=False, default=_json_value))
        page.write(out / f"{s.name}-configs.csv", page.config_frame(s).to_csv(index=False))
    if len(studies) > 1:
        entries = [(s, p.name) for s, p in zip(studies, written)]
        written.append(page.write(out / "index.html", page.index_page(entries)))
    return written


def _json_value(v: object) -> object:
    """numpy scalars as plain numbers; a non-finite number as null (JSON has no NaN)."""
    item = getattr(v, "item", None)
    if item is not None:
        v = item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")
