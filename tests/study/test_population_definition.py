"""``--population`` is part of a study's definition, as ``--threads`` is: a member's results
depend, in their last bits, on the population it is computed in (tests/population: equal to
its trial alone only to float tolerance), so a study resumed with another setting would mix
layouts, and at chaotic settings their outcomes; it is refused in one line naming both values."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lookbench.cli import app
from lookbench.results import StudyResults

runner = CliRunner()
TINY = ["digits", "--lr", "0.1,0.3", "--k", "5", "--alpha", "0.5", "--epochs", "1",
        "--devices", "cpu", "--workers", "1"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def refusal(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.output, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_resuming_with_another_population_is_refused_naming_both_values(tmp_path):
    assert invoke("run", *TINY, "--population", "2", "--out", tmp_path).exit_code == 0
    study = tmp_path / "digits-sgd"
    assert json.loads((study / "study.json").read_text())["population"] == 2
    before = {p.name: p.read_bytes() for p in (study / "trials").iterdir()}
    line = refusal(invoke("run", *TINY, "--population", "4", "--out", tmp_path))
    assert "already exists with population=2, not 4" in line
    line = refusal(invoke("run", *TINY, "--out", tmp_path))  # unset: as many as fit
    assert "already exists with population=2, not auto" in line
    assert {p.name: p.read_bytes() for p in (study / "trials").iterdir()} == before
    again = invoke("run", *TINY, "--population", "2", "--out", tmp_path)
    assert again.exit_code == 0 and "4 of 4 trials recorded" in again.output


def test_a_study_created_without_population_refuses_one(tmp_path):
    assert invoke("run", *TINY, "--out", tmp_path).exit_code == 0
    line = refusal(invoke("run", *TINY, "--population", "1", "--out", tmp_path))
    assert "already exists with population=auto, not 1" in line


def test_a_study_file_sets_the_population_and_the_api_trains_in_it(tmp_path):
    """The definition's setting is the one the workers use, from a study file or the API."""
    import lookbench

    spec = tmp_path / "s.toml"
    spec.write_text('task = "digits"\nepochs = 1\npopulation = 1\n'
                    '[grid.lookahead]\nlr = [0.1, 0.3]\nk = [5]\nalpha = [0.5]\n'
                    '[grid.sgd]\nlr = [0.1, 0.3]\n')
    result = lookbench.run_study(spec, out=tmp_path / "a", devices="cpu", workers=1)
    assert result.recorded == result.planned == 4
    sizes = StudyResults(tmp_path / "a" / "digits-sgd").trials().column("population")
    assert set(sizes.to_pylist()) == {1}  # one at a time, as the file says
    grouped = lookbench.run_study(spec=None, out=tmp_path / "b", devices="cpu", workers=1,
                                  task="digits", epochs=1, lr=[0.1, 0.3], k=[5], alpha=[0.5])
    assert grouped.recorded == 4
    sizes = StudyResults(tmp_path / "b" / "digits-sgd").trials().column("population")
    assert max(sizes.to_pylist()) > 1  # unset: trained together (so the setting did it)


def test_a_stored_definition_from_before_the_field_reads_as_auto():
    from lookbench.study.spec import StudySpec

    old = StudySpec.model_validate({"task": "digits", "inner": "sgd"})
    assert old.population is None


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_a_population_below_one_in_a_study_file_is_one_line(tmp_path, bad):
    spec = tmp_path / "s.toml"
    spec.write_text(f'task = "digits"\npopulation = {bad}\n')
    line = refusal(invoke("run", "--spec", spec, "--out", tmp_path))
    assert "population" in line
    assert not (tmp_path / "digits-sgd").exists()
