"""Study definitions: TOML files, command-line overrides, validation, and the plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookbench.study.spec import SpecError, load_spec, lookbench_id, plan, planned_runs

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
    assert len({lookbench_id(c) for c in configs}) == len(configs)


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
    assert [lookbench_id(c) for c in a] == [lookbench_id(c) for c in b]
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
         r"grid\.lookahead\.alpha: alpha must be in \(0, 1\]"),
        ('task = "digits"\n[grid.lookahead]\nlr = [0.1]\nk = [0]\n', r"grid\.lookahead\.k: "),
        ('task = "digits"\n[grid.sgd]\nlr = [-0.1]\n', r"grid\.sgd\.lr: lr must be in \(0, inf\)"),
        ('task = "digits"\n[grid.sgd]\nlr = [0.1]\nk = [5]\n', r"grid\.sgd\.k: applies to "
         r"lookahead only"),
        ('task = "digits"\n[grid.adam]\nlr = [0.1]\n', r"no grid for adam"),
        ('task = "digits"\nepochs = "many"\n', r"epochs: Input should be a valid integer"),
        ('task = "digits"\ncolour = "red"\n', r"colour: unknown key; the keys are name, task"),
        ('task = "mnist"\n', r"unknown task 'mnist'"),
        ('task = "digits"\ninner = "lbfgs"\n', r"inner: unknown inner optimizer 'lbfgs'"),
        ('task = "digits"\n[task_options]\nhidden = -1\n', r"task_options: hidden"),
        ('task = "digits\n', r"is not valid TOML"),
        ('task = "digits"\nsampler = "tpe"\n', r"needs --trials"),
        ('task = "digits"\n[grid.sgd]\nlr = 0.1\n', r"grid\.sgd\.lr: give a non-empty list"),
        ('task = "digits"\n[grid]\nsgd = 3\n', r"grid\.sgd: give a table \[grid\.sgd\] or "
         r"tables \[\[grid\.sgd\]\]"),
        ('task = "digits"\n[grid]\nsgd = []\n', r"grid\.sgd: .* not an empty list"),
        ('task = "digits"\n[[grid.lookahead]]\nlr = [0.1]\n[[grid.lookahead]]\nlr = [0.1]\n'
         'alpha = [0.5, 2.0]\n', r"grid\.lookahead\[1\]\.alpha: alpha must be in \(0, 1\]"),
        ('task = "digits"\n[[grid.lookahead]]\nlr = [0.1]\n[[grid.lookahead]]\nk = [5]\n',
         r"grid\.lookahead\[1\]\.lr: every optimizer needs learning rates"),
        ('task = "digits"\n[[grid.sgd]]\nlr = [0.1]\n[[grid.sgd]]\nlr = [0.1]\nk = [5]\n',
         r"grid\.sgd\[1\]\.k: applies to lookahead only"),
        ('task = "digits"\nsampler = "random"\ntrials = 4\n[[grid.lookahead]]\nlr = [0.1]\n'
         '[[grid.lookahead]]\nlr = [0.3]\n', r"grid\.lookahead: the random sampler draws from "
         r"the ranges of one table; 2 tables \[\[grid\.lookahead\]\] \(a union of grids\) "
         r"need the grid sampler"),
        ('task = "digits"\nsampler = "tpe"\ntrials = 4\n[[grid.sgd]]\nlr = [0.1]\n'
         '[[grid.sgd]]\nlr = [0.3]\n', r"grid\.sgd: the tpe sampler draws from the ranges of "
         r"one table"),
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


# The paper's section 5.5: Lookahead at one (k, α) over the baseline's own lr × momentum grid,
# plus Lookahead's k × α at one inner setting; the two tables meet at (lr 0.1, k 5, α 0.5).
UNION = """
task = "digits"
seeds = 2

[[grid.lookahead]]
lr = [0.01, 0.1, 1.0]
momentum = [0.0, 0.9]
k = [5]
alpha = [0.5]

[[grid.lookahead]]
lr = [0.1]
momentum = [0.9]
k = [5, 10]
alpha = [0.5, 0.8]

[grid.sgd]
lr = [0.01, 0.1, 1.0]
momentum = [0.0, 0.9]
"""


def _la_points(configs):
    return [(c.lr, c.momentum, c.k, c.alpha) for c in configs
            if c.optimizer == "lookahead" and c.seed == 0]


def test_several_tables_plan_the_union_of_their_products_once_each_in_order(tmp_path):
    spec = load_spec(_toml(tmp_path, UNION))
    configs = plan(spec)
    first = [(lr, m, 5, 0.5) for lr in (0.01, 0.1, 1.0) for m in (0.0, 0.9)]
    second = [(0.1, 0.9, k, a) for a in (0.5, 0.8) for k in (5, 10)]  # fields crossed by name
    # (0.1, 0.9, 5, 0.5) is in both tables: planned once, where the first table puts it.
    assert _la_points(configs) == first + [p for p in second if p not in first]
    assert len(first) + len(second) - 1 == 9
    assert planned_runs(spec) == {"lookahead": 9 * 2, "sgd": 6 * 2}
    assert len({lookbench_id(c) for c in configs}) == len(configs) == 30
    # The baseline and Lookahead's first table share the inner grid exactly.
    sgd = {(c.lr, c.momentum) for c in configs if c.optimizer == "sgd"}
    assert sgd == {(lr, m) for lr, m, _, _ in first}


def test_a_single_table_in_array_form_is_the_same_study_as_a_table(tmp_path):
    as_table = load_spec(_toml(tmp_path, 'task = "digits"\n[grid.sgd]\nlr = [0.1, 0.3]\n'))
    as_array = load_spec(_toml(tmp_path, 'task = "digits"\n[[grid.sgd]]\nlr = [0.1, 0.3]\n'))
    assert as_table.grid == as_array.grid and as_table.grid["sgd"] == {"lr": [0.1, 0.3]}
    assert plan(as_table) == plan(as_array)


def test_command_line_overrides_apply_to_every_table(tmp_path):
    spec = load_spec(_toml(tmp_path, UNION), grid_overrides={"momentum": [0.5], "k": [20]})
    for table in spec.tables("lookahead"):
        assert table["momentum"] == [0.5] and table["k"] == [20]
    assert spec.tables("sgd")[0] == {"lr": [0.01, 0.1, 1.0], "momentum": [0.5]}
    points = _la_points(plan(spec))
    # The first table gives 3 lr × α 0.5; the second lr 0.1 × α {0.5, 0.8}, one of them new.
    assert points == [(lr, 0.5, 20, 0.5) for lr in (0.01, 0.1, 1.0)] + [(0.1, 0.5, 20, 0.8)]


def test_a_union_study_definition_round_trips_through_its_stored_form(tmp_path):
    from lookbench.study.definition import StudyConflict
    from lookbench.study.definition import (
        check_same_definition as _check_same_definition,
    )
    from lookbench.study.spec import StudySpec

    spec = load_spec(_toml(tmp_path, UNION))
    stored = StudySpec.model_validate(spec.model_dump(mode="json"))  # as Optuna keeps it
    assert stored == spec and plan(stored) == plan(spec)
    _check_same_definition(stored, spec)  # the same study: accepted
    changed = load_spec(_toml(tmp_path, UNION.replace("k = [5, 10]", "k = [5, 20]")))
    with pytest.raises(StudyConflict, match=r"grid\.lookahead\[1\]\.k=\[5, 10\], not \[5, 20\]"):
        _check_same_definition(stored, changed)
    one_table = load_spec(_toml(tmp_path, UNION), grid_overrides={"k": [5], "alpha": [0.5]})
    assert len(one_table.tables("lookahead")) == 2  # overrides keep the tables apart
    with pytest.raises(StudyConflict, match=r"grid\.lookahead\[1\]\.alpha="):
        _check_same_definition(stored, one_table)


@pytest.mark.parametrize("name", ["digits.toml", "cifar10-fig8.toml"])
def test_the_matched_studies_run_lookahead_over_the_baselines_own_grid(name):
    spec = load_spec(STUDIES / name)
    configs = [c for c in plan(spec) if c.seed == 0]
    inner = {(c.lr, c.momentum, c.weight_decay) for c in configs if c.optimizer == "sgd"}
    la = [c for c in configs if c.optimizer == "lookahead"]
    at_default = {(c.lr, c.momentum, c.weight_decay) for c in la if (c.k, c.alpha) == (5, 0.5)}
    assert at_default == inner and len(inner) >= 12  # the same lr × momentum grid, matched
    assert {c.momentum for c in la} == {c.momentum for c in configs if c.optimizer == "sgd"}
    # Figure 9's k × alpha, at one inner setting, each configuration once.
    swept = {(c.k, c.alpha) for c in la}
    assert swept == {(k, a) for k in (5, 10, 20) for a in (0.2, 0.5, 0.8)}
    assert len({(c.lr, c.momentum) for c in la if (c.k, c.alpha) != (5, 0.5)}) == 1
    assert len(la) == len(inner) + 8 and spec.seeds == 3
    assert len({c.inner_state for c in la}) == 1


@pytest.mark.parametrize("toml, says", [
    ("lr = [true]", "grid.lookahead.lr: Input should be a valid number"),
    ('alpha = ["0.5"]', "grid.lookahead.alpha"),
    ("k = [5.0]", "grid.lookahead.k: Input should be a valid integer"),
    ("k = [99999999999]", "grid.lookahead.k: k must be in [1, 2147483647]"),
    ("lr = [inf]", "grid.lookahead.lr: Input should be a finite number"),
    ("lr = [nan]", "grid.lookahead.lr: Input should be a finite number"),
])
def test_grid_values_are_strict_and_finite(tmp_path, toml, says):
    path = tmp_path / "s.toml"
    head = 'task = "digits"\n[grid.lookahead]\n'
    path.write_text(head + (toml if toml.startswith("lr") else f"lr = [0.1]\n{toml}") + "\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("args, says", [
    (["--lr", "inf"], "finite number"),
    (["--weight-decay", "inf"], "finite number"),
    (["--study", "abc\n"], "study name"),
    (["--epochs", "99999999999"], "less than or equal to"),
])
def test_bad_numbers_and_names_on_the_command_line_are_one_line(tmp_path, args, says):
    from typer.testing import CliRunner

    from lookbench.cli import app

    result = CliRunner().invoke(app, ["run", "digits", *args, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert says in lines[0] or says == "study name" and "name" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_a_study_file_with_a_boolean_count_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('task = "digits"\nepochs = true\n')
    with pytest.raises(SpecError, match="epochs: Input should be a valid integer"):
        load_spec(path)


def test_trial_ids_are_those_of_earlier_versions():
    """A study on disk resumes only if its ids do not change: the ids of lookbench's first
    results are pinned here, and a hyperparameter added to the table since (hashed only when
    set) leaves them alone."""
    spec = load_spec(None, task="digits", inner="sgd", seeds=2)
    ids = [lookbench_id(c) for c in plan(spec)]
    assert ids[:3] == ["52c9729b9dd913c6", "1624b3ed6b47c0c7", "6edf4bc365d3acd3"]
    adaptive = load_spec(None, task="digits", inner="adam",
                         grid_overrides={"alpha": [0.5, "adaptive"], "inner_state": ["reset"]})
    assert lookbench_id(plan(adaptive)[-1]) == "299fce454dc03676"


def test_an_option_given_beside_a_study_file_changes_that_option_only():
    """`--spec studies/wmt14-paper.toml -o size=small` keeps the file's tokens_per_step and
    epoch_steps (it used to replace the whole [task_options] table)."""
    spec = load_spec(STUDIES / "wmt14-paper.toml", task_options={"size": "small"})
    assert spec.task_options["size"] == "small"
    assert spec.task_options["tokens_per_step"] == 16384
    assert spec.task_options["epoch_steps"] == 5000
