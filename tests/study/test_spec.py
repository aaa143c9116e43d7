"""Study definitions: TOML files, command-line overrides, validation, and the plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookbench.study.spec import SpecError, load_spec, plan, planned_runs, trial_id

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def test_the_papers_cifar_grid_is_planned_as_appendix_c_gives_it():
    spec = load_spec(STUDIES / "cifar100-paper.toml")
    configs = plan(spec)
    la = [c for c in configs if c.optimizer == "lookahead"]
    sgd = [c for c in configs if c.optimizer == "sgd"]
    assert len(la) == 2 * 3 * 3 and len(sgd) == 6 * 3 * 3  # (k × α | lr × wd) × 3 seeds
    assert {(c.k, c.alpha) for c in la} == {(k, a) for k in (5, 10) for a in (0.2, 0.5, 0.8)}
    assert {c.lr for c in la} == {0.1} and {c.inner_state for c in la} == {"reset"}
    assert {c.lr for c in sgd} == {0.01, 0.03, 0.05, 0.1, 0.2, 0.3}
    assert {c.weight_decay for c in sgd} == {3e-4, 1e-3, 3e-3}
    assert {c.epochs for c in configs} == {200} and {c.seed for c in configs} == {0, 1, 2}
    assert len({trial_id(c) for c in configs}) == len(configs)


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_study_file_is_valid(path):
    spec = load_spec(path)
    assert sum(planned_runs(spec).values()) > 0


def test_task_defaults_and_command_line_overrides():
    spec = load_spec(None, task="digits", grid_overrides={"lr": [0.05, 0.5], "k": [3]})
    assert spec.study_name == "digits-sgd" and spec.epochs == 20
    assert spec.grid["lookahead"]["lr"] == [0.05, 0.5] and spec.grid["lookahead"]["k"] == [3]
    assert spec.grid["sgd"]["lr"] == [0.05, 0.5] and "k" not in spec.grid["sgd"]
    assert spec.grid["lookahead"]["momentum"] == [0.9]  # momentum 0.9 unless listed


def test_the_file_is_overridden_by_options(tmp_path):
    spec = load_spec(STUDIES / "digits.toml", epochs=3, seeds=1, name="quick")
    assert (spec.epochs, spec.seeds, spec.study_name) == (3, 1, "quick")


def test_ids_are_stable_and_random_plans_are_reproducible():
    a = plan(load_spec(None, task="digits", sampler="random", trials=5))
    b = plan(load_spec(None, task="digits", sampler="random", trials=5))
    assert [trial_id(c) for c in a] == [trial_id(c) for c in b]
    lrs = [c.lr for c in a if c.optimizer == "sgd"]
    assert len(set(lrs)) == 5 and all(0.003 <= lr <= 1.0 for lr in lrs)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('task = "digits"\n[grid.lookahead]\nlr = [0.1]\nalpha = [1.5]\n',
         r"grid\.lookahead: alpha: alpha must be in \(0, 1\]"),
        ('task = "digits"\n[grid.lookahead]\nlr = [0.1]\nk = [0]\n', r"grid\.lookahead: k: "),
        ('task = "digits"\n[grid.sgd]\nlr = [-0.1]\n', r"grid\.sgd: lr: Input should be greater"),
        ('task = "digits"\n[grid.sgd]\nlr = [0.1]\nk = [5]\n', r"grid\.sgd\.k: applies to "
         r"lookahead only"),
        ('task = "digits"\n[grid.adam]\nlr = [0.1]\n', r"no grid for adam"),
        ('task = "digits"\nepochs = "many"\n', r"epochs: Input should be a valid integer"),
        ('task = "digits"\ncolour = "red"\n', r"colour: Extra inputs are not permitted"),
        ('task = "mnist"\n', r"unknown task 'mnist'"),
        ('task = "digits"\ninner = "rmsprop"\n', r"inner: Input should be 'sgd', 'adam'"),
        ('task = "digits"\n[task_options]\nhidden = -1\n', r"task_options: hidden"),
        ('task = "digits\n', r"is not valid TOML"),
        ('task = "digits"\nsampler = "tpe"\n', r"needs --trials"),
        ('task = "nqm"\n[task_options]\nanalytic = true\n[grid.sgd]\nlr = [0.1]\n'
         'momentum = [0.0, 0.9]\n', r"grid\.sgd: the analytic NQM covers SGD without "
         r"momentum, not momentum 0\.9"),
        ('task = "nqm"\ninner = "adam"\n[task_options]\nanalytic = true\n',
         r"grid\.lookahead: the analytic NQM covers SGD and Lookahead\(SGD\), not adam"),
        ('task = "nqm"\n[task_options]\nanalytic = true\nsteps_per_epoch = 12\n'
         '[grid.lookahead]\nlr = [0.1]\nk = [5]\n', r"multiple of k \(5\)"),
    ],
)
def test_bad_study_files_name_the_field(tmp_path, text, match):
    with pytest.raises(SpecError, match=match) as info:
        load_spec(_toml(tmp_path, text))
    assert "\n" not in str(info.value)


def test_a_missing_study_file_is_one_clear_line(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
