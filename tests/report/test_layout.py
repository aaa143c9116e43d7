"""The page at the window sizes people use: opened in headless Chromium at 900, 1400 and 1920
px wide, nothing is wider than the window, no figure's title, subplot title, legend or colour
bar is cut at its figure's edge, and the figures follow the window when it is resized.

A probe script is added to a copy of the page; it measures the page after Plotly drew it and
writes what it found into the DOM, which ``--dump-dom`` returns. Skipped without Chromium,
unless ``LOOKBENCH_REQUIRE_BROWSER=1`` (CI), as every browser test of the report."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from lookbench.report import build_reports

from .test_page import render

WIDTHS = (900, 1400, 1920)

# Everything Plotly draws as text that a figure's edge could cut: the title, subplot titles
# (annotations), legend entries, colour bar titles and ticks, axis titles.
PROBE = """
<script>
window.addEventListener('load', function () { setTimeout(function () {
  var doc = document.documentElement, out = {scroll: doc.scrollWidth, client: doc.clientWidth,
      wide: [], cut: [], figures: []};
  document.querySelectorAll('body *').forEach(function (e) {
    var r = e.getBoundingClientRect(), p = e.parentElement.getBoundingClientRect();
    var inScroller = e.closest('.wide, .plot-scroll') !== null;
    if (!inScroller && r.right > doc.clientWidth + 1 && p.right <= doc.clientWidth + 1)
      out.wide.push(e.tagName + '.' + (e.getAttribute('class') || '') + ' ' + Math.round(r.right));
  });
  document.querySelectorAll('.figure').forEach(function (f) {
    var plot = f.querySelector('.js-plotly-plot'), svg = f.querySelector('svg.main-svg');
    if (!plot || !svg) { out.figures.push({name: f.dataset.figure, drawn: false}); return; }
    var box = svg.getBoundingClientRect();
    out.figures.push({name: f.dataset.figure, drawn: true, left: box.left, right: box.right,
                      width: box.width});
    plot.querySelectorAll('.gtitle, .annotation-text, .legendtext, .cbtitle text, ' +
                          '.cbaxis text, .xtitle, .ytitle').forEach(function (t) {
      var r = t.getBoundingClientRect();
      if (r.width === 0) return;
      if (r.left < box.left - 1 || r.right > box.right + 1)
        out.cut.push(f.dataset.figure + ': "' + t.textContent + '" spans ' +
                     Math.round(r.left - box.left) + ' to ' + Math.round(r.right - box.left) +
                     ' of ' + Math.round(box.width));
    });
  });
  var pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
}, 500); });
</script>
"""


def probe(page: Path, tmp_path: Path, width: int, name: str) -> dict:
    """What the probe measured on a copy of ``page`` in a window ``width`` px wide."""
    copy = page.with_name(f"{name}-{width}.html")
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                    encoding="utf-8")
    dom, console = render(copy, tmp_path, width=width)
    errors = [line for line in console if "Uncaught" in line]
    assert not errors, errors
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe did not run"
    import html

    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def union_study(tmp_path_factory) -> Path:
    """The digits preset's design (``conftest.union_rows``), written once for the module."""
    from .conftest import union_rows, write_study

    return write_study(tmp_path_factory.mktemp("union"), "digits-union", union_rows(),
                       epochs=20)


@pytest.fixture(scope="module")
def pages(union_study, tmp_path_factory) -> dict[str, Path]:
    """The union study's page, and the comparison page of it beside itself."""
    out = tmp_path_factory.mktemp("reports")
    (page, *_) = build_reports([union_study], out)
    twin = union_study.parent / "twin"
    shutil.copytree(union_study, twin)
    (both,) = build_reports([union_study, twin], out, compare=True)
    return {"study": page, "compare": both}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("which", ["study", "compare"])
def test_nothing_is_wider_than_the_window_and_no_text_is_cut(pages, tmp_path, width, which):
    found = probe(pages[which], tmp_path, width, which)
    # No sideways scrolling: wide tables scroll inside their own box (.wide), nothing else
    # is wider than the window.
    assert found["scroll"] <= found["client"], found["wide"]
    assert not found["wide"], found["wide"]
    assert found["figures"] and all(f["drawn"] for f in found["figures"]), found["figures"]
    for f in found["figures"]:
        assert f["left"] >= 0 and f["right"] <= found["client"] + 1, f
    # Titles wrap instead of running off the figure.
    assert not found["cut"], found["cut"]


FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" src="{src}" style="border:0; width:1920px; height:2000px"></iframe>
<script>
var frame = document.getElementById('f');
frame.addEventListener('load', function () {{ setTimeout(function () {{
  function widths() {{
    return Array.prototype.map.call(
      frame.contentDocument.querySelectorAll('.figure svg.main-svg:first-of-type'),
      function (s) {{ return Math.round(s.getBoundingClientRect().width); }});
  }}
  var before = widths();
  frame.style.width = '900px';
  // The browser sends the frame's window a resize event at its next frame, which headless
  // Chromium under a virtual time budget does not always draw: send it as the browser would.
  if (frame.contentDocument.documentElement.clientWidth === 900)
    frame.contentWindow.dispatchEvent(new Event('resize'));
  setTimeout(function () {{
    var doc = frame.contentDocument.documentElement;
    var pre = document.createElement('pre'); pre.id = 'probe';
    pre.textContent = JSON.stringify({{before: before, after: widths(),
                                       scroll: doc.scrollWidth, client: doc.clientWidth}});
    document.body.appendChild(pre);
  }}, 2000);
}}, 1000); }});
</script></body></html>
"""


def test_the_figures_follow_the_window_when_it_shrinks(pages, tmp_path):
    """Opened at 1920 px and narrowed to 900 px (the page in a frame whose width changes):
    every figure redraws at the new width (Plotly's responsive config, no fixed width) and
    the page does not scroll sideways."""
    page = pages["study"]
    frame = page.with_name("frame.html")
    frame.write_text(FRAME.format(src=page.name), encoding="utf-8")
    dom, _ = render(frame, tmp_path, width=1920, extra=("--allow-file-access-from-files",))
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe did not run"
    import html

    widths = json.loads(html.unescape(found.group(1)))
    assert widths["before"] and len(widths["before"]) == len(widths["after"])
    assert min(widths["before"]) > 1000  # drawn for the wide window first
    assert max(widths["after"]) <= 900 - 10, widths  # then redrawn for the narrow one
    assert widths["scroll"] <= widths["client"]
