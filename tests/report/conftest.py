"""Hand-made study tables with known answers, written in the real on-disk format."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from lookbench.results import StudyResults


def write_study(root: Path, name: str, rows: list[dict], epochs: int = 3,
                task: str = "digits", metric: str = "test_acc",
                task_options: str = "{}") -> Path:
    """Write trials (and matching curves) for ``rows``: each row needs optimizer, lr, seed,
    state and value; everything else gets a sensible default (a row's own ``metric`` wins)."""
    study = root / name
    results = StudyResults(study)
    for i, r in enumerate(rows):
        la = r["optimizer"] == "lookahead"
        value = r.get("value")
        diverged = r["state"] == "diverged"
        row = {
            "trial": f"t{i:04d}", "study": name, "task": task, "optimizer": r["optimizer"],
            "inner": "sgd", "lr": r["lr"], "momentum": r.get("momentum", 0.9),
            "weight_decay": r.get("weight_decay"), "k": r.get("k", 5) if la else None,
            "alpha": r.get("alpha", 0.5) if la else None,
            "alpha_adaptive": r.get("alpha_adaptive", False) if la else None,
            "inner_state": "maintain" if la else None, "seed": r["seed"], "epochs": epochs,
            "batch_size": 32, "schedule": "constant", "task_options": task_options,
            "state": r["state"], "epochs_done": 1 if diverged else epochs,
            "final_test_acc": None if diverged or metric != "test_acc" else value,
            "final_test_loss": None if diverged else (value if metric == "test_loss"
                                                      else 1 - value),
            "final_train_loss": None, "best_test_acc": None, "best_test_loss": None,
            "best_epoch": None, "metric": r.get("metric", metric), "wall_s": 1.0, "resumes": 0,
            "device": "cpu", "host": "test", "finished_at": __import__("datetime").datetime(
                2026, 1, 1, tzinfo=__import__("datetime").timezone.utc),
            "error": None, "lookbench_version": "0", "torch_version": "0",
            "python_version": "3",
        }
        curve = [{"trial": row["trial"], "epoch": e, "train_loss": 1.0 / e,
                  "test_loss": None if diverged else 1.0 / e + 0.1,
                  "test_acc": None if diverged or metric != "test_acc" else value * e / epochs,
                  "train_eval_loss": None, "lr": r["lr"], "steps": 10 * e, "wall_s": float(e),
                  "diverged": diverged and e == row["epochs_done"],
                  # a traced study's fast weights (``--trace-fast``): the row's ``fast`` value
                  **({"fast_test_acc": r["fast"] * e / epochs} if "fast" in r else {})}
                 for e in range(1, row["epochs_done"] + 1)]
        results.write_trial(row, curve)
    return study


def known_rows() -> list[dict]:
    """Lookahead: 2 lr × 2 α; SGD: 2 lr; two seeds each. Values chosen to have exact answers.

    Lookahead scores (mean of the two seeds): (lr 0.1, α 0.5) 0.90, (0.1, 0.8) 0.80,
    (1.0, 0.5) 0.60, (1.0, 0.8) diverged in one seed → (0.7 + 0) / 2 = 0.35.
    SGD scores: lr 0.1 → 0.895, lr 1.0 → diverged in both seeds → 0.
    """
    rows = []
    la = {(0.1, 0.5): (0.89, 0.91), (0.1, 0.8): (0.80, 0.80), (1.0, 0.5): (0.55, 0.65),
          (1.0, 0.8): (0.7, None)}
    for (lr, alpha), values in la.items():
        for seed, v in enumerate(values):
            rows.append({"optimizer": "lookahead", "lr": lr, "alpha": alpha, "seed": seed,
                         "state": "diverged" if v is None else "complete", "value": v})
    for lr, values in {0.1: (0.89, 0.90), 1.0: (None, None)}.items():
        for seed, v in enumerate(values):
            rows.append({"optimizer": "sgd", "lr": lr, "seed": seed,
                         "state": "diverged" if v is None else "complete", "value": v})
    return rows


@pytest.fixture
def known_study(tmp_path: Path) -> Path:
    return write_study(tmp_path, "known", known_rows())


@pytest.fixture
def grid_study(tmp_path: Path) -> Path:
    """A bigger grid: Lookahead lr × k × α, SGD lr × momentum, three seeds."""
    rows = []
    for lr, k, alpha, seed in itertools.product([0.01, 0.1, 1.0], [5, 10], [0.5, 0.8],
                                                range(3)):
        v = 0.9 - 0.1 * abs(__import__("math").log10(lr) + 1) - 0.01 * seed
        rows.append({"optimizer": "lookahead", "lr": lr, "k": k, "alpha": alpha,
                     "seed": seed, "state": "complete", "value": v})
    for lr, mom, seed in itertools.product([0.01, 0.1, 1.0, 10.0], [0.5, 0.9], range(3)):
        diverged = lr == 10.0
        rows.append({"optimizer": "sgd", "lr": lr, "momentum": mom, "seed": seed,
                     "state": "diverged" if diverged else "complete",
                     "value": None if diverged else 0.88 - 0.2 * abs(__import__("math").log10(lr) + 1)})
    return write_study(tmp_path, "grid", rows, epochs=4)


def union_rows() -> list[dict]:
    """The digits preset's design (``studies/digits.toml``), a union grid: Lookahead's
    lr × momentum table at k = 5, α = 0.5 and a k × α table at lr 0.1, momentum 0.9; SGD on the
    lr × momentum table; three seeds. Accuracies near 0.9769, with four decimals."""
    import math

    rows = []
    lrs = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]

    def acc(lr: float, momentum: float, seed: int, shift: float = 0.0) -> float:
        return round(0.9769 - 0.05 * abs(math.log10(lr) + 1 + momentum) - 0.002 * seed
                     + shift, 4)

    for lr, mom, seed in itertools.product(lrs, [0.0, 0.9], range(3)):
        rows.append({"optimizer": "lookahead", "lr": lr, "momentum": mom, "k": 5, "alpha": 0.5,
                     "seed": seed, "state": "complete", "value": acc(lr, mom, seed)})
        rows.append({"optimizer": "sgd", "lr": lr, "momentum": mom, "seed": seed,
                     "state": "complete", "value": acc(lr, mom, seed, -0.003)})
    for k, alpha, seed in itertools.product([5, 10, 20], [0.2, 0.5, 0.8], range(3)):
        if (k, alpha) != (5, 0.5):
            rows.append({"optimizer": "lookahead", "lr": 0.1, "momentum": 0.9, "k": k,
                         "alpha": alpha, "seed": seed, "state": "complete",
                         "value": acc(0.1, 0.9, seed, 0.001 * k / 5 - 0.01 * alpha)})
    return rows


@pytest.fixture
def union_study(tmp_path: Path) -> Path:
    return write_study(tmp_path, "union", union_rows(), epochs=20)
