"""Every metric has a direction, and ``best_<m>`` follows it: the best of an accuracy or a BLEU
score is its maximum, of a loss or a perplexity its minimum; a metric no one gave a direction
has no best. ``<m>_at_best`` is each metric at the epoch the ranking metric was best (the
paper's test perplexity at the best validation perplexity)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
from typer.testing import CliRunner

from lookbench import tasks
from lookbench.cli import app
from lookbench.directions import KNOWN, by_name, from_words, resolve, to_words
from lookbench.execution.records import trial_row
from lookbench.execution.trial import EpochRecord
from lookbench.study.config import TrialConfig
from lookbench.study.definition import Ranking, read_file, stored_directions
from lookbench.tasks import BUILTIN_RANKING
from lookbench.tasks.base import Task

# Epochs 1..4 of a translation-like task ranked by validation perplexity, best at epoch 2
# (not the last): every other metric's minimum and maximum differ, and neither is at epoch 2.
SCRIPT: dict[str, list[float]] = {
    "valid_perplexity": [50.0, 30.0, 40.0, 45.0],  # ranking, lower is better
    "test_acc": [0.2, 0.5, 0.9, 0.7],
    "test_acc_top5": [0.4, 0.8, 0.95, 0.9],
    "test_bleu": [5.0, 10.0, 15.0, 12.0],
    "test_loss": [2.0, 1.5, 1.0, 1.2],
    "test_perplexity": [60.0, 35.0, 33.0, 50.0],
    "fast_test_acc": [0.1, 0.3, 0.6, 0.4],  # the fast weights: as test_acc
    "fast_valid_perplexity": [70.0, 40.0, 38.0, 39.0],  # as the ranking metric
    "f1": [0.1, 0.2, 0.4, 0.3],  # declared: higher is better
    "spread": [3.0, 2.0, 0.5, 1.0],  # declared: lower is better
    "grad_norm": [3.0, 1.0, 2.0, 4.0],  # no direction
}
BEST_EPOCH = 2
DECLARED = {"f1": True, "spread": False}
UP = {"test_acc", "test_acc_top5", "test_bleu", "fast_test_acc", "f1"}
DOWN = {"valid_perplexity", "test_loss", "test_perplexity", "fast_valid_perplexity", "spread"}


class Scripted(Task):
    metric = "valid_perplexity"
    higher_is_better = False
    directions = DECLARED

    def workload(self, **kw):  # pragma: no cover (its rows are built by hand below)
        raise NotImplementedError


def _records() -> list[EpochRecord]:
    out = []
    for i in range(4):
        values = {k: v[i] for k, v in SCRIPT.items()}
        out.append(EpochRecord(epoch=i + 1, train_loss=1.0, test_loss=values.pop("test_loss"),
                               test_acc=values.pop("test_acc"), train_eval_loss=None, lr=0.1,
                               steps=i + 1, wall_s=float(i + 1), extra=values))
    return out


def _row(records: list[EpochRecord], rank: Ranking) -> dict:
    config = TrialConfig(task="digits", optimizer="sgd", lr=0.1, epochs=4, seed=0)
    return trial_row(study="s", trial="t", config=config, metric=rank.metric,
                     higher_is_better=rank.higher_is_better, batch_size=1, schedule="constant",
                     records=records, device="cpu", resumes=0, directions=rank.declared)


def _ranking(cls: type[Task]) -> Ranking:
    return Ranking(cls.metric, cls.higher_is_better,
                   tuple(sorted(cls.declared_directions().items())))


def _expect_row(row: dict) -> None:
    assert row["best_epoch"] == BEST_EPOCH
    for name, values in SCRIPT.items():
        assert row[f"final_{name}"] == values[-1], name
        assert row[f"{name}_at_best"] == values[BEST_EPOCH - 1], name
        if name in UP:
            assert row[f"best_{name}"] == max(values), name
        elif name in DOWN:
            assert row[f"best_{name}"] == min(values), name
        else:
            assert row[f"best_{name}"] is None or pd.isna(row[f"best_{name}"]), name
    # the numbers the bug gave: the minimum of a higher-is-better metric
    assert row["best_test_acc_top5"] == 0.95 and row["best_test_bleu"] == 15.0
    assert row["test_perplexity_at_best"] == 35.0 and row["best_test_perplexity"] == 33.0


def test_every_best_follows_its_metrics_direction_and_at_best_is_the_ranking_epoch():
    assert {n for n in SCRIPT if Scripted.higher_is_better_for(n) is True} == UP
    assert {n for n in SCRIPT if Scripted.higher_is_better_for(n) is False} == DOWN
    assert Scripted.higher_is_better_for("grad_norm") is None
    _expect_row(_row(_records(), _ranking(Scripted)))


def test_a_diverged_epoch_counts_for_no_best_and_ties_go_to_the_earliest_epoch():
    records = _records()
    records[2].diverged = True  # epoch 3 held every other metric's best
    row = _row(records, _ranking(Scripted))
    assert row["best_test_acc"] == 0.7 and row["best_test_loss"] == 1.2
    assert row["best_epoch"] == BEST_EPOCH
    records = _records()
    records[3].extra["valid_perplexity"] = 30.0  # as good as epoch 2, later
    assert _row(records, _ranking(Scripted))["best_epoch"] == BEST_EPOCH


def test_without_a_ranking_value_there_is_no_best_epoch_and_nothing_at_it():
    records = _records()
    for r in records:
        r.extra["valid_perplexity"] = math.nan
    row = _row(records, _ranking(Scripted))
    assert row["best_epoch"] is None and row["best_valid_perplexity"] is None
    assert row["test_acc_at_best"] is None and row["best_test_acc"] == 0.9


def test_the_ranking_metric_takes_higher_is_better_whatever_its_name_says():
    class Odd(Task):
        metric = "test_loss"  # ranked as if higher were better: the task says so
        higher_is_better = True
        directions: ClassVar[dict[str, bool]] = {"test_loss": False}

        def workload(self, **kw):  # pragma: no cover
            raise NotImplementedError

    assert Odd.higher_is_better_for("test_loss") is True
    assert Odd.higher_is_better_for("fast_test_loss") is True
    assert _ranking(Odd).higher_is_better_for("test_loss") is True


def test_names_say_their_direction_and_unknown_ones_say_none():
    assert all(by_name(n) is up for n, up in KNOWN.items())
    for name in ("valid_acc", "train_acc5", "top1_accuracy", "valid_bleu"):
        assert by_name(name) is True, name
    for name in ("train_perplexity", "valid_nll", "test_error", "test_rmse", "train_ppl"):
        assert by_name(name) is False, name
    for name in ("grad_norm", "weight_norm", "grad_accum_steps", "lr_scale", "acc_loss"):
        assert by_name(name) is None, name
    assert resolve("fast_fast_test_acc") is True and resolve("fast_") is None
    assert resolve("grad_norm", {"grad_norm": False}) is False
    assert from_words(to_words({"a": True, "b": False})) == {"a": True, "b": False}
    assert from_words({"a": "maximize", "b": False, "c": "sideways", "d": 3}) == \
        {"a": True, "b": False}
    assert from_words(None) == {} and from_words(["max"]) == {}


# What each built-in task can report, read from its source (evaluate, extra, analytic_curve);
# the cheap ones are also checked against what they return below.
BUILTIN_METRICS: dict[str, set[str]] = {
    "nqm": {"test_loss"},
    "quadratic": {"test_loss"},
    "digits": {"test_loss", "test_acc"},
    "cifar10": {"test_loss", "test_acc"},
    "cifar100": {"test_loss", "test_acc"},
    "imagefolder": {"test_loss", "test_acc", "test_acc_top5"},
    "imagenet": {"test_loss", "test_acc", "test_acc_top5"},
    "ptb": {"test_loss", "test_perplexity", "valid_loss", "valid_perplexity",
            "train_perplexity"},
    "wikitext2": {"test_loss", "test_perplexity", "valid_loss", "valid_perplexity",
                  "train_perplexity"},
    "wmt14": {"test_loss", "test_perplexity", "valid_loss", "valid_perplexity",
              "train_perplexity", "test_bleu"},
}
# What each name means: an accuracy or BLEU is better higher, a loss or perplexity lower.
MEANING = {"test_acc": True, "test_acc_top5": True, "test_bleu": True, "test_loss": False,
           "valid_loss": False, "test_perplexity": False, "valid_perplexity": False,
           "train_perplexity": False}


@pytest.mark.parametrize("name", tasks.available())
def test_every_metric_of_every_builtin_task_has_the_direction_it_means(name):
    cls = tasks.task_class(name)
    assert cls.higher_is_better_for(cls.metric) is bool(cls.higher_is_better)
    assert cls.declared_directions()[cls.metric] is bool(cls.higher_is_better)
    assert BUILTIN_RANKING[name] == (cls.metric, cls.higher_is_better)
    assert cls.metric in BUILTIN_METRICS[name]
    for metric in BUILTIN_METRICS[name]:
        assert cls.higher_is_better_for(metric) is MEANING[metric], (name, metric)
        assert cls.higher_is_better_for(f"fast_{metric}") is MEANING[metric], (name, metric)
        assert by_name(metric) is MEANING[metric]  # the table alone covers it
        if metric != cls.metric:
            assert _ranking(cls).higher_is_better_for(metric) is MEANING[metric]


@pytest.mark.parametrize("name", ["nqm", "quadratic", "digits"])
def test_the_cheap_builtin_tasks_report_only_the_names_listed(name):
    import torch

    task = tasks.task_class(name).with_options()
    wl = task.workload(batch_size=task.default_batch_size, device=torch.device("cpu"), seed=0)
    with torch.no_grad():
        reported = set(wl.evaluate(wl.model)) | set(wl.extra(wl.model) if wl.extra else {})
    assert reported <= BUILTIN_METRICS[name]
    config = TrialConfig(task=name, optimizer="sgd", lr=0.1, epochs=2, seed=0)
    for point in task.analytic_curve(config) or []:
        assert set(point) <= BUILTIN_METRICS[name]


# The same task end to end: a study records the rows above, and study.json the directions.
TASK_FILE = '''
import torch
from torch import nn
from lookbench import Task, Workload

SCRIPT = {script!r}


class Scripted(Task):
    metric = "valid_perplexity"
    higher_is_better = False
    directions = {declared!r}
    default_epochs = 4
    default_batch_size = 4

    def workload(self, *, batch_size, device, seed, data_dir=None):
        torch.manual_seed(seed)
        model = nn.Linear(2, 1)
        x = torch.ones(8, 2)
        epoch = [0]

        def train_batches(e, generator):
            yield x

        def loss(model, batch):
            return 1e-3 * model(batch).pow(2).mean()

        def evaluate(model):
            epoch[0] += 1
            return {{k: v[epoch[0] - 1] for k, v in SCRIPT.items()}}

        return Workload(model=model, steps_per_epoch=1, train_batches=train_batches,
                        loss=loss, evaluate=evaluate)
'''


def test_a_study_records_every_best_and_at_best_and_stores_the_directions(tmp_path: Path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scripted.py").write_text(TASK_FILE.format(script=SCRIPT, declared=DECLARED))
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "scripted.py:Scripted", "--lr", "0.001", "--k", "5",
                                      "--alpha", "0.5", "--seeds", "1", "--devices", "cpu",
                                      "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    study = out / "scripted-sgd"
    from lookbench.api import load_results

    trials, _ = load_results(study)
    assert len(trials) == 2 and set(trials["state"]) == {"complete"}
    for _, row in trials.iterrows():
        _expect_row({k: (None if pd.isna(v) else v) for k, v in row.items()})
    stored = read_file(study)
    assert stored["directions"] == {"f1": "max", "spread": "min", "valid_perplexity": "min"}
    assert stored_directions(stored) == {**DECLARED, "valid_perplexity": False}
    raw = json.loads((study / "study.json").read_text())
    raw.pop("directions")  # as written before directions were stored
    assert stored_directions(raw) == {"valid_perplexity": False}
    assert stored_directions({}) == {}
