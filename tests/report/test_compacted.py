"""A study reports the same from its part files, from one compacted file per table, and from
a compacted file plus newer parts: compaction changes how a study is stored, never a number."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lookbench.report import build_reports
from lookbench.results import StudyResults
from lookbench.results import store as store_module
from tests.report.conftest import known_rows, write_study


def _outputs(study: Path, out: Path) -> dict[str, str]:
    build_reports([study], out)
    texts = {p.name: p.read_text() for p in sorted(out.iterdir())}
    # (the page's footer says when it was made)
    return {k: re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "", v) for k, v in texts.items()}


@pytest.fixture(autouse=True)
def _read_from_files(monkeypatch):
    """Read every part from its file, as a reader in another process does."""
    monkeypatch.setattr(store_module._kept, "LIMIT", 0)
    store_module._kept._tables.clear()


@pytest.mark.parametrize("fixture", ["known_study", "grid_study"])
def test_a_compacted_study_reports_the_same(request, tmp_path, fixture):
    study = request.getfixturevalue(fixture)
    parts = _outputs(study, tmp_path / "parts")
    assert StudyResults(study).compact().trials_parts > 0
    assert _outputs(study, tmp_path / "compacted") == parts


def test_a_study_compacted_midway_reports_the_same(tmp_path):
    study = write_study(tmp_path, "known", known_rows())
    expected = _outputs(study, tmp_path / "parts")
    later = tmp_path / "later"  # the last five trials, as if recorded after the compaction
    for table in ("trials", "curves"):
        (later / table).mkdir(parents=True)
        for part in sorted((study / table).glob("part-*.parquet"))[7:]:
            part.rename(later / table / part.name)
    assert StudyResults(study).compact().trials == 7
    for table in ("trials", "curves"):
        for part in (later / table).iterdir():
            part.rename(study / table / part.name)
    assert _outputs(study, tmp_path / "both") == expected
    assert StudyResults(study).compact().trials == 12
    assert _outputs(study, tmp_path / "compacted") == expected
