"""Every protocol point docs/protocols.md calls "same" (lookbench does what the paper and its
reference code do), pinned: a change that breaks one of them fails here, and the page must
then say why."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from lookbench.execution.trial import lr_factor
from lookbench.study.spec import load_spec, plan
from lookbench.tasks.base import parameter_count

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def _grids(name: str) -> tuple[object, dict[str, set]]:
    spec = load_spec(STUDIES / name)
    values: dict[str, dict[str, set]] = {}
    for c in plan(spec):
        for field, v in c.hyperparameters().items():
            values.setdefault(c.optimizer, {}).setdefault(field, set()).add(v)
    return spec, values


# -- CIFAR (Appendix C.1, Cutout's train.py) ------------------------------------------------


@pytest.mark.parametrize("study", ["cifar10-paper.toml", "cifar100-paper.toml"])
def test_cifar_study_is_the_papers(study: str) -> None:
    spec, grid = _grids(study)
    assert (spec.batch_size, spec.epochs, spec.schedule, spec.seeds) == (128, 200, "step", 3)
    assert spec.task_options == {"model": "resnet18", "train_eval": True}
    assert grid["sgd"] == {"lr": {0.01, 0.03, 0.05, 0.1, 0.2, 0.3}, "momentum": {0.9},
                           "weight_decay": {3e-4, 1e-3, 3e-3}}
    assert grid["lookahead"]["lr"] == {0.1} and grid["lookahead"]["k"] == {5, 10}
    assert grid["lookahead"]["alpha"] == {0.2, 0.5, 0.8}
    assert grid["lookahead"]["inner_state"] == {"reset"}
    assert spec.baselines == ["polyak"]
    assert grid["polyak"] == {"lr": {0.05, 0.1, 0.2, 0.3, 0.5}, "momentum": {0.9},
                              "weight_decay": {1e-3}}


def test_cifar_schedule_augmentation_and_model() -> None:
    from lookbench.tasks import cifar
    from lookbench.tasks.augment import augmented_batches
    from lookbench.tasks.models import build_model

    factors = [lr_factor("step", e, 200) for e in (59, 60, 119, 120, 159, 160)]
    assert factors == pytest.approx([1, 0.2, 0.2, 0.04, 0.04, 0.008])
    assert inspect.signature(augmented_batches).parameters["pad"].default == 4
    assert "pad=" not in inspect.getsource(cifar._Cifar.workload)  # CIFAR takes the default
    assert parameter_count(lambda: build_model("resnet18", 10)) == 11_173_962
    adamw = cifar.Cifar100().default_grid("adamw")["adamw"]
    assert adamw == {"lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "weight_decay": [0.1, 0.3, 1.0, 3.0]}


# -- ImageNet (Appendix C.2, the PyTorch example / torchvision) ------------------------------


def test_imagenet_study_and_recipe() -> None:
    from lookbench.tasks import augment, imagefolder
    from lookbench.tasks.imagefolder_data import eval_resize

    spec, grid = _grids("imagenet-paper.toml")
    assert (spec.batch_size, spec.epochs, spec.schedule) == (256, 90, "thirds")
    assert grid["sgd"] == {"lr": {0.01, 0.02, 0.05, 0.1, 0.2, 0.3}, "momentum": {0.9},
                           "weight_decay": {1e-4}}
    assert grid["lookahead"]["k"] == {5} and grid["lookahead"]["alpha"] == {0.5}
    assert grid["lookahead"]["lr"] == {0.1}
    assert [lr_factor("thirds", e, 90) for e in (29, 30, 59, 60)] == pytest.approx(
        [1, 0.1, 0.1, 0.01])
    assert [lr_factor("aggressive", e, 60) for e in (29, 30, 48, 58)] == pytest.approx(
        [1, 0.1, 0.01, 0.001])
    assert (augment.SCALE, augment.RATIO, augment.TRIES) == ((0.08, 1.0), (3 / 4, 4 / 3), 10)
    assert eval_resize(224) == 256
    assert imagefolder.IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert imagefolder.IMAGENET_STD == (0.229, 0.224, 0.225)
    task = imagefolder.ImageNet()
    assert task.opts.model == "resnet50" and task.opts.augment == "resized_crop"
    assert task.size().parameters == 25_557_032  # torchvision's resnet50, 1000 classes


# -- Penn Treebank (Appendix C.3, awd-lstm-lm main.py) ---------------------------------------


def test_ptb_model_regularisation_and_budget() -> None:
    from lookbench.tasks import ptb

    p = ptb.PRESETS["paper"]
    assert (p.layers, p.hidden, p.embedding, p.bptt) == (3, 1150, 400, 70)
    assert (p.dropout_output, p.dropout_hidden, p.dropout_input, p.dropout_embedding,
            p.weight_drop, p.ar, p.tar) == (0.4, 0.3, 0.65, 0.1, 0.5, 2.0, 1.0)
    task = ptb.PennTreebank()
    assert task.size().parameters == 24_221_600
    assert (task.default_batch_size, task.default_epochs) == (80, 750)
    assert (task.default_schedule, task.plateau_patience) == ("plateau", 15)
    assert ptb.EVAL_BATCH == 10  # the reference's validation batch


def test_ptb_studies_are_the_papers() -> None:
    spec, grid = _grids("ptb-paper.toml")
    assert (spec.batch_size, spec.epochs, spec.schedule) == (80, 750, "plateau")
    assert spec.baselines == ["asgd"]
    assert grid["sgd"] == {"lr": {50.0, 30.0, 10.0, 5.0, 2.5, 1.0, 0.1}, "momentum": {0.0},
                           "weight_decay": {1.2e-6}}
    assert grid["lookahead"]["k"] == {5, 10, 20}
    assert grid["lookahead"]["alpha"] == {0.2, 0.5, 0.8}
    spec, grid = _grids("ptb-adam-paper.toml")
    assert grid["adam"]["lr"] == {0.1, 0.05, 0.01, 0.005, 0.001, 0.0005, 0.0001}
    assert grid["adam"]["weight_decay"] == {1.2e-6}
    assert grid["lookahead"]["k"] == {5, 10, 20}
    assert grid["lookahead"]["alpha"] == {0.2, 0.5, 0.8}


def test_ptb_step_clipping_and_nt_asgd(tmp_path: Path) -> None:
    import torch

    from lookbench.optim import factory
    from lookbench.tasks import ptb

    for split in ("train", "valid", "test"):
        (tmp_path / f"ptb.{split}.txt").write_text(" the cat sat on the mat \n" * 60)
    wl = ptb.PennTreebank.with_options(size="small").workload(
        batch_size=4, device=torch.device("cpu"), seed=0, data_dir=tmp_path)
    assert wl.clip_grad_norm == 0.25
    batch = next(iter(wl.train_batches(0, torch.Generator().manual_seed(0))))
    assert wl.step_scale(batch) == batch[1] / 35  # the window's length / bptt, on the step
    assert inspect.signature(factory._asgd).parameters["patience"].default == 5  # nonmono


# -- WMT'14 (Appendix C.4, Vaswani et al. / tensor2tensor) -----------------------------------


def test_wmt_model_optimizer_and_budget() -> None:
    from lookbench.tasks import wmt

    p = wmt.PRESETS["base"]
    assert (p.d_model, p.heads, p.layers, p.ffn, p.dropout, p.warmup) == (
        512, 8, 6, 2048, 0.1, 4000)
    assert wmt.LABEL_SMOOTHING == 0.1
    assert wmt.MAX_LEN == 256
    assert (wmt.WMT14.default_inner, wmt.WMT14.inner_defaults) == (
        "adam", {"momentum": 0.9, "beta2": 0.98, "eps": 1e-9})
    spec, grid = _grids("wmt14-paper.toml")
    assert spec.inner == "adam" and spec.schedule == "rsqrt"
    assert spec.task_options["tokens_per_step"] == 8 * 2048
    assert spec.epochs * spec.task_options["epoch_steps"] == 250_000
    for opt in ("adam", "lookahead"):
        assert grid[opt]["beta2"] == {0.98} and grid[opt]["eps"] == {1e-9}
    assert grid["lookahead"]["k"] == {5, 10} and grid["lookahead"]["alpha"] == {0.5}
    options = wmt.WMT14.Options.model_fields
    assert options["length_penalty"].default == 0.6
