"""``lookbench report``: robustness metrics and Plotly figures as one offline HTML page per
study, read from the study's Parquet tables only."""

from __future__ import annotations

from pathlib import Path

from lookbench.report.data import ReportError, StudyData, load_study

__all__ = ["ReportError", "StudyData", "build_reports", "load_study"]


def build_reports(study_dirs: list[Path], out: Path, compare: bool = False) -> list[Path]:
    """Write a page per study (and an index when there are several) under ``out``; with
    ``compare``, one page with the two studies side by side. Returns the pages written."""
    from lookbench.report import page

    studies = [load_study(d) for d in study_dirs]  # all readable before anything is written
    if compare:
        if len(studies) != 2:
            raise ReportError(f"--compare takes exactly two studies, got {len(studies)}")
        a, b = studies
        return [page.write(out / f"{a.name}-vs-{b.name}.html", page.compare_page(a, b))]
    written = [page.write(out / f"{s.name}.html", page.study_page(s)) for s in studies]
    if len(studies) > 1:
        entries = [(s, p.name) for s, p in zip(studies, written)]
        written.append(page.write(out / "index.html", page.index_page(entries)))
    return written
