"""What `lookbench report` writes: every file it wrote is returned (and printed by the CLI) in a
stable order, and the JSON summary keeps whole numbers whole."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.report import build_reports
from lookbench.report.verdict import INT_FIELDS, integers


def test_every_file_written_is_returned_in_a_stable_order(grid_study, known_study, tmp_path):
    out = tmp_path / "reports"
    one = build_reports([grid_study], out)
    assert [p.name for p in one] == ["grid.html", "grid.json", "grid-configs.csv"]
    assert all(p.is_file() and p.parent == out for p in one)
    both = build_reports([grid_study, known_study], tmp_path / "two")
    assert [p.name for p in both] == ["grid.html", "grid.json", "grid-configs.csv",
                                      "known.html", "known.json", "known-configs.csv",
                                      "index.html"]
    # Nothing is written that is not returned.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in both)
    again = build_reports([grid_study, known_study], tmp_path / "two")
    assert again == both
    (page,) = build_reports([grid_study, known_study], tmp_path / "cmp", compare=True)
    assert page.name == "grid-vs-known.html" and list((tmp_path / "cmp").iterdir()) == [page]


def test_the_command_prints_a_line_per_file(grid_study, tmp_path):
    result = CliRunner().invoke(app, ["report", str(grid_study), "--reports",
                                      str(tmp_path / "r")])
    assert result.exit_code == 0, result.stderr
    wrote = [line.split(" ", 1)[1] for line in result.stdout.splitlines()
             if line.startswith("wrote ")]
    assert [w.rsplit("/", 1)[-1] for w in wrote] == ["grid.html", "grid.json",
                                                    "grid-configs.csv"]


def _whole_fields(value, key=None, path=""):
    """(path, value) of every value under a field that counts something."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _whole_fields(v, k, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _whole_fields(v, key, f"{path}/{i}")
    elif key in INT_FIELDS:
        yield path, value


def test_counts_k_seeds_and_epochs_are_json_integers(union_study, tmp_path):
    (_, summary_path, _) = build_reports([union_study], tmp_path)
    text = summary_path.read_text()
    summary = json.loads(text)
    assert summary["epochs"] == 20 and summary["seeds"] == 3
    assert summary["matched"]["lookahead_setting"]["k"] == 5
    fields = list(_whole_fields(summary))
    assert {p.rsplit("/", 1)[-1] for p, _ in fields} >= {"k", "seeds", "epochs", "sweeps",
                                                       "configs", "configurations", "runs"}
    floats = [(p, v) for p, v in fields if v is not None and not isinstance(v, int)]
    assert not floats, floats
    assert not re.search(r'"(k|seeds|epochs|sweeps|configs|configurations|runs)": -?\d+\.0\b',
                         text)
    # The learning-rate counts are whole too, and the fractions stay fractions.
    counts = summary["matched"]["optimizers"]["lookahead"]["learning_rates_within"]["0.01"]
    assert isinstance(counts["estimate"], int)
    assert isinstance(summary["matched"]["comparison_best"], float)


def test_integers_turns_whole_floats_of_counting_fields_into_ints():
    import numpy as np

    raw = {"k": 5.0, "alpha": 1.0, "seeds": [0.0, np.float64(1.0)], "runs": np.int64(42),
           "nested": [{"configs": 14.0, "best": 0.9769}], "sweeps": None, "epochs": 2.5}
    out = integers(raw)
    assert out == {"k": 5, "alpha": 1.0, "seeds": [0, 1], "runs": 42,
                   "nested": [{"configs": 14, "best": 0.9769}], "sweeps": None, "epochs": 2.5}
    assert type(out["k"]) is int and type(out["alpha"]) is float
    assert all(type(s) is int for s in out["seeds"]) and type(out["runs"]) is int
    json.dumps(out)  # plain Python numbers only
