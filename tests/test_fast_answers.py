"""Bad input is answered before torch or Optuna is imported (seconds on a busy machine): every
check of the command line and the study file runs on the task's and optimizers' classes, which
import torch only to build something (``lookbench._lazy``). Measured as "not imported", never
as a wall-clock limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "optuna")

PROBE = """
import json, runpy, sys
sys.argv = ["lookbench", *json.loads(sys.argv[1])]
try:
    runpy.run_module("lookbench", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
else:
    code = 0
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def answer(args: list[str], cwd) -> tuple[int, list[str], str]:
    # (with no Slurm commands on the PATH, whether or not this machine has them: the answer
    # to --launcher slurm where jobs cannot be submitted)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if not (Path(p) / "sbatch").exists())
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": path})
    last = json.loads(done.stdout.strip().splitlines()[-1])
    return last["code"], last["heavy"], done.stderr


BAD = [
    ["run", "digit"],
    ["run", "digits", "--alpha", "2"],
    ["run", "digits", "--k", "0"],
    ["run", "digits", "--lr", "-0.1"],
    ["run", "digits", "--lr", "0.1", "0.2"],
    ["run", "digits", "--inner", "adamm"],
    ["run", "digits", "--baselines", "polyakk"],
    ["run", "digits", "-o", "hiden=32"],
    ["run", "digits", "--seeds", "many"],
    ["run", "digits", "--stale-after", "5"],
    ["run", "digits", "--workers", "0"],
    ["run", "cifar100", "--alpha", "2"],
    ["run", "cifar10", "-o", "model=resnet99"],
    ["run", "ptb", "--alpha", "0"],
    ["run", "wmt14", "-o", "size=huge"],
    ["run", "imagenet", "--momentum", "1.5"],
    ["run", "nqm", "--k", "0"],
    ["run", "quadratic", "--alpha", "2"],
    ["run", "--spec", "bad.toml"],
    ["run", "--spec", "unknown-key.toml"],
    ["run", "--spec", "missing.toml"],
    ["run", "--spec", "bad-grid.toml"],
    ["tasks", "cifar1000"],
    ["run", "ptb"],                                   # data: no --data-dir
    ["run", "ptb", "--data-dir", "."],                # data: the corpus's files missing
    ["run", "wikitext2", "--data-dir", "nowhere"],
    ["run", "wmt14", "--data-dir", "."],
    ["run", "imagenet", "--data-dir", "."],           # data: no train/ and val/
    ["run", "imagefolder", "--data-dir", "bad.toml"],  # data: a file, not a folder
    ["run", "digits", "--launcher", "slrum"],
    ["run", "digits", "--launcher", "slurm"],         # no sbatch on this machine
    ["run", "digits", "--launcher", "submitit-local", "--sbatch", "--not an option"],
    ["run", "digits", "--sbatch", "--qos=high"],      # --sbatch without a Slurm launcher
    ["run", "digits", "--jobs", "4"],                 # a cluster's option, run locally
    ["run", "digits", "--launcher", "submitit-local", "--workers", "2"],
]


@pytest.mark.parametrize("args", BAD, ids=[" ".join(a) for a in BAD])
def test_bad_input_is_answered_before_torch_or_optuna_is_imported(tmp_path, args):
    (tmp_path / "bad.toml").write_text('task = "digits"\nseeds = [\n')  # not TOML
    (tmp_path / "unknown-key.toml").write_text('task = "digits"\nseedz = 3\n')
    (tmp_path / "bad-grid.toml").write_text('task = "digits"\n[grid.lookahead]\nalpha = [2.0]\n')
    code, heavy, stderr = answer(args, tmp_path)
    assert code == 2, stderr
    assert stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1, stderr
    assert heavy == [], f"{heavy} imported before the answer: {stderr}"
    assert not (tmp_path / "runs").exists()  # and nothing was created


def test_a_good_study_is_checked_before_its_workers_start(tmp_path):
    """The same check passes a good study through without importing torch (the run then
    imports it): the probe stops the command right after the check."""
    probe = """
import sys
import lookbench.study.spec as spec
for task in ("nqm", "quadratic", "digits", "cifar10", "cifar100", "ptb", "wikitext2",
             "wmt14", "imagefolder", "imagenet"):
    spec.load_spec(None, task=task, baselines=["polyak", "asgd"])
import lookbench.tasks as tasks
for name in tasks.available():
    tasks.get(name).study_grid("sgd")
print([m for m in %r if m in sys.modules])
""" % (HEAVY,)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_torchvision_models_taken_without_torchvision_are_torchvision_models():
    import torchvision

    from lookbench.choices import TORCHVISION_CLASSIFIERS

    known = set(torchvision.models.list_models(module=torchvision.models))
    assert TORCHVISION_CLASSIFIERS <= known
