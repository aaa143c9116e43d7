"""`lookbench report`: the pages it writes, opened in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookbench.cli import app

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs Chromium and sets this, so the browser check cannot be silently skipped there.
REQUIRE_BROWSER = os.environ.get("LOOKBENCH_REQUIRE_BROWSER") == "1"


def render(page: Path, tmp_path: Path, width: int | None = None,
           extra: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and the browser console's messages (``width``:
    the window's, in CSS pixels; ``extra``: more Chromium flags)."""
    if CHROMIUM is None:
        if REQUIRE_BROWSER:
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)  # fresh per run
    size = [f"--window-size={width},1000", "--hide-scrollbars"] if width else []
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", *size, *extra,
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", "--dump-dom",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


def test_a_study_page_renders_every_figure_with_no_script_error(grid_study, tmp_path):
    out = tmp_path / "reports"
    result = runner.invoke(app, ["report", str(grid_study), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    page = out / "grid.html"
    html = page.read_text()
    assert "<script src=" not in html  # plotly.js embedded: the page opens offline
    assert html.count("Plotly.newPlot") == len(re.findall(r'data-figure="', html))
    dom, console = render(page, tmp_path)
    names = re.findall(r'data-figure="([^"]+)"', dom)
    # matched, k × α, 4 whole-grid surfaces, lr sensitivity, curves, expected best
    assert len(names) == 9 and names[:2] == ["matched", "k-alpha"]
    for name in names:
        start = dom.index(f'data-figure="{name}"')
        chunk = dom[start:start + 20000]
        assert 'class="main-svg"' in chunk, f"figure {name} did not render"
    errors = [line for line in console if "Uncaught" in line or "rror" in line]
    assert not errors, errors
    assert "Whole grids" in dom and "within 5% of the whole study's best" in dom
    # The verdict comes first, in words and as a table, with the definitions it uses.
    verdict = dom.index('class="verdict"')
    assert verdict < dom.index('data-figure="matched"')
    headline = dom.index('class="headline"')
    assert headline < dom.index("Compared on the")
    assert "trains to within 1% of the best at" in dom and "in a typical sweep" in dom
    assert "Lookahead − sgd" in dom and "How to read this page" in dom
    assert "= lookahead with α = 1" not in dom
    # Beside the page: the JSON summary and every configuration as CSV.
    summary = json.loads((out / "grid.json").read_text())
    assert summary["verdict"] and summary["matched"]["lookahead_setting"]["k"] == 5
    assert summary["schema_version"] == 2 and summary["headline"].startswith("On digits")
    assert summary["comparisons"][0]["verdict"]["label"] in (
        "lookahead_better", "baseline_better", "equivalent", "undecided")
    import pandas as pd

    configs = pd.read_csv(out / "grid-configs.csv")
    assert len(configs) == 20 and {"score", "seed_min", "seed_max", "gap"} <= set(configs.columns)


def test_the_configuration_table_sorts_in_the_browser(grid_study, tmp_path):
    """Clicking a heading sorts the table: checked by running the page's own script."""
    out = tmp_path / "reports"
    assert runner.invoke(app, ["report", str(grid_study), "--out", str(out)]).exit_code == 0
    page = out / "grid.html"
    html = page.read_text().replace(
        "</body>", "<script>var th = document.querySelector('table.sortable th[data-col=\"1\"]');"
        "th.click(); th.click(); document.body.dataset.first = "
        "document.querySelector('table.sortable tbody tr td:nth-child(2)').textContent;"
        "</script></body>")
    page.write_text(html)
    dom, console = render(page, tmp_path)
    assert 'data-first="10"' in dom  # sorted by lr, descending after the second click
    assert not [line for line in console if "Uncaught" in line]


def test_several_studies_get_an_index_and_compare_puts_two_side_by_side(grid_study,
                                                                         known_study, tmp_path):
    out = tmp_path / "reports"
    result = runner.invoke(app, ["report", str(grid_study), str(known_study), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert {p.name for p in out.iterdir()} == {
        "grid.html", "known.html", "index.html", "grid.json", "known.json", "grid-configs.csv",
        "known-configs.csv"}
    index = (out / "index.html").read_text()
    assert 'href="grid.html"' in index and 'href="known.html"' in index
    # Each study's headline, the sentence its own page opens with.
    import html as html_lib

    for name in ("grid", "known"):
        headline = json.loads((out / f"{name}.json").read_text())["headline"]
        assert html_lib.escape(headline) in index
    result = runner.invoke(app, ["report", str(grid_study), str(known_study), "--compare",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    page = out / "grid-vs-known.html"
    dom, console = render(page, tmp_path)
    assert dom.count('class="pair"') >= 5
    assert 'data-figure="a-lr-sensitivity"' in dom and 'data-figure="b-lr-sensitivity"' in dom
    assert not [line for line in console if "Uncaught" in line]


def test_the_default_reports_every_study_under_runs(grid_study, tmp_path):
    result = runner.invoke(app, ["report", "--runs", str(grid_study.parent), "--out",
                                 str(tmp_path / "r")])
    assert result.exit_code == 0
    assert (tmp_path / "r" / "grid.html").exists()


@pytest.mark.parametrize("case", ["missing", "empty", "no-studies", "compare-one"])
def test_missing_or_empty_studies_are_one_line_and_a_nonzero_exit(tmp_path, grid_study, case):
    (tmp_path / "empty").mkdir()
    args = {
        "missing": ["report", str(tmp_path / "nope")],
        "empty": ["report", str(tmp_path / "empty")],
        "no-studies": ["report", "--runs", str(tmp_path / "empty")],
        "compare-one": ["report", str(grid_study), "--compare"],
    }[case]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2  # bad input, as the README's table says
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("command", ["report", "status"])
def test_a_damaged_results_file_is_one_line_naming_it_and_changes_nothing(tmp_path, grid_study,
                                                                          command):
    part = sorted((grid_study / "trials").glob("part-*.parquet"))[0]
    part.write_bytes(b"not parquet")
    before = {p: p.read_bytes() for p in grid_study.rglob("*") if p.is_file()}
    args = {"report": ["report", str(grid_study), "--out", str(tmp_path / "out")],
            "status": ["status", grid_study.name, "--out", str(grid_study.parent)]}[command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2  # a damaged file: bad input, the same for every command
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read the results")
    assert part.name in lines[0] and "delete it" in lines[0]
    assert {p: p.read_bytes() for p in grid_study.rglob("*") if p.is_file()} == before
