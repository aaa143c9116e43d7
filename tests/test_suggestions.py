"""Errors that say what to do: a name close to one lookbench knows is named ("did you mean"),
the valid choices are listed where they are few, a space-separated list gets a hint, and
``--inner`` offers only what can be an inner optimizer."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lookbench._suggest import did_you_mean
from lookbench.cli import INNER_NAMES, app

runner = CliRunner()


def error_line(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_did_you_mean_names_only_a_close_match():
    assert did_you_mean("digit", ["nqm", "digits"]) == " (did you mean 'digits'?)"
    assert did_you_mean("zzzz", ["nqm", "digits"]) == ""


@pytest.mark.parametrize("args, says", [
    (["run", "digit"], "unknown task 'digit' (did you mean 'digits'?)"),
    (["tasks", "cifar1000"], "unknown task 'cifar1000' (did you mean 'cifar100'?)"),
    (["run", "digits", "--inner", "adamm"], "unknown inner optimizer 'adamm' (did you mean "
                                            "'adam'?)"),
    (["run", "digits", "--baselines", "polyak,emaa"], "unknown baseline 'emaa' (did you mean "
                                                      "'ema'?); choose from polyak, ema, swa, "
                                                      "asgd"),
    (["run", "digits", "-o", "hiden=32"], "task_options: hiden: unknown option (did you mean "
                                          "'hidden'?); the options are hidden"),
    (["run", "digits", "--lrr", "0.1"], "no such option: --lrr"),
])
def test_a_close_name_is_suggested(args, says):
    assert says in error_line(*args)


def test_inner_lists_only_inner_optimizers():
    line = error_line("run", "digits", "--inner", "nosuch")
    listed = line.split("choose one of ", 1)[1]
    for name in INNER_NAMES:
        assert name in listed
    for wrapper in ("lookahead", "polyak", "ema", "swa", "asgd"):
        assert wrapper not in listed.split(", or your own")[0]


def test_a_space_separated_list_gets_a_hint():
    line = error_line("run", "digits", "--lr", "0.1", "0.2")
    assert "a list takes commas, without spaces: --lr 0.1,0.2" in line


def test_a_study_file_key_and_a_grid_key_name_the_close_one(tmp_path):
    study = tmp_path / "s.toml"
    study.write_text('task = "digits"\nseedz = 3\n')
    assert "seedz: unknown key (did you mean 'seeds'?)" in error_line("run", "--spec",
                                                                       str(study))
    study.write_text('task = "digits"\n[grid.lookahead]\nlr = [0.1]\nalpah = [0.5]\n')
    assert "alpah: not a sweepable field (did you mean 'alpha'?)" in error_line(
        "run", "--spec", str(study))
