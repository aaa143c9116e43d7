"""Configurations per hour: population training against one trial at a time, side by side.

Two sweeps, each timed both ways on the same device in one run (alternating rounds, so a busy
machine slows both alike):

1. **digits**: the README's study (``studies/digits.toml``: 36 configurations × 3 seeds, 20
   epochs each) through the whole engine, ``lookbench run`` with ``--population 1`` against
   the default (populations); plus the same 108 trainings by the trial runner in a plain loop
   (no engine), which says what the engine itself costs.
2. **cifar**: a 12-configuration grid (SGD and Lookahead k × α, 3 learning rates) of a CIFAR
   ResNet on synthetic images written in CIFAR-10's own on-disk format, trained as one
   population against one trial at a time (the trial runner, no engine).

Goals (issue 15): at least 5× for digits on the CPU; on a GPU at least 8× for the small CIFAR
ResNet (``--model resnet20``).

Usage: python benchmarks/sweep_throughput.py [--rounds 2] [--skip-cifar] [--cifar-images N]
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from rich.console import Console

from lookbench.execution.engine import run_study
from lookbench.execution.population.trial import PopulationTrial
from lookbench.execution.trial import resolve_device, run_trial
from lookbench.results import StudyResults
from lookbench.study.config import TrialConfig
from lookbench.study.spec import load_spec, plan

ROOT = Path(__file__).resolve().parents[1]
# Rounds whose ratios spread by more than this (relative) are reported as too noisy to trust.
NOISE_LIMIT = 0.5


def _per_hour(configs: int, seconds: float) -> float:
    return configs * 3600.0 / max(seconds, 1e-9)


def _summary(name: str, configs: int, one: list[float], pop: list[float]) -> None:
    """Median times, configurations per hour and the ratio, with the rounds' spread."""
    ratios = [a / max(b, 1e-9) for a, b in zip(one, pop)]
    ratio = statistics.median(ratios)
    spread = (max(ratios) - min(ratios)) / ratio if len(ratios) > 1 else 0.0
    print(f"{name}: one at a time {statistics.median(one):.1f} s "
          f"({_per_hour(configs, statistics.median(one)):,.0f} configurations/hour), "
          f"population {statistics.median(pop):.1f} s "
          f"({_per_hour(configs, statistics.median(pop)):,.0f}/hour): "
          f"{ratio:.2f}x (rounds {', '.join(f'{r:.2f}' for r in ratios)})")
    if spread > NOISE_LIMIT:
        print(f"  note: the rounds' ratios spread by {spread:.0%}: the machine was too busy "
              f"for one number; run again on a quiet machine")


def digits(rounds: int, device: str) -> None:
    # Training throughput only: the timing pass at the end of a run (what Lookahead costs,
    # 3 s on this study) is the same whichever way the trials trained, so it is left out of
    # both sides of the ratio.
    os.environ["LOOKBENCH_COST_SECONDS"] = "0"
    spec = load_spec(ROOT / "studies" / "digits.toml")
    configs = plan(spec)
    console = Console(file=io.StringIO())  # the engine's live view, not wanted here
    one, pop, loop, inside = [], [], [], []
    for _ in range(rounds):
        for population, times in ((1, one), (None, pop)):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                result = run_study(spec, out=Path(tmp), storage_url=None, devices=device,
                                   workers=1, data_dir=None, console=console,
                                   population=population)
                times.append(time.perf_counter() - start)
                assert result.recorded == len(configs), result
                if population == 1:  # the trials' own time, as each measured it inside
                    rows = StudyResults(Path(tmp) / spec.study_name).trials()
                    inside.append(float(pc.sum(rows["wall_s"]).as_py()))
        start = time.perf_counter()
        for config in configs:
            run_trial(config, device)
        loop.append(time.perf_counter() - start)
    _summary(f"digits ({len(configs)} trials, engine)", len(configs), one, pop)
    # The engine's own cost, from one run: its wall time against the time its trials took
    # inside it. Robust to a machine whose speed drifts by a quarter from one minute to the
    # next (measured here), which the comparison with a plain loop run a minute later is not.
    # (the trials' times are measured within the engine's, so the difference is never < 0)
    own = [a / max(b, 1e-9) for a, b in zip(one, inside)]
    per_trial = statistics.median([max(a - b, 0.0) for a, b in zip(one, inside)]) / len(configs)
    print(f"  engine with --population 1: {statistics.median(own):.3f}x the time its trials' "
          f"epochs took inside it (rounds {', '.join(f'{r:.3f}' for r in own)}); outside "
          f"them {per_trial * 1e3:.1f} ms per trial: the engine's own cost plus each trial's "
          f"set-up (data, model; the first round also imports)")
    ratios = [a / max(b, 1e-9) for a, b in zip(one, loop)]
    spread = (max(ratios) - min(ratios)) / statistics.median(ratios) if len(ratios) > 1 else 0
    print(f"  against the trial runner in a plain loop ({statistics.median(loop):.1f} s): "
          f"--population 1 {statistics.median(ratios):.2f}x its wall time (rounds "
          f"{', '.join(f'{r:.2f}' for r in ratios)}); with populations "
          f"{statistics.median(pop) / statistics.median(loop):.2f}x")
    if spread > NOISE_LIMIT / 5:
        print(f"  note: those rounds spread by {spread:.0%} (the loop runs a minute after the "
              f"engine): the in-run figure above is the one to trust on this machine")


def _write_cifar10(root: Path, images: int) -> None:
    """Random images and labels in CIFAR-10's python format (five training batches, a test
    batch, the meta file): what ``torchvision``'s download unpacks."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per_batch = max(1, images // 5)

    def batch(n: int, name: str) -> dict:
        return {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"filenames": [f"{i}.png".encode() for i in range(n)]}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_batch, f"b{i}"), 2))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(max(100, images // 5), "t"), 2))
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, 2))


def cifar(rounds: int, device: str, model: str, images: int, epochs: int) -> None:
    configs = []
    for lr in (0.03, 0.1, 0.3):
        base = {"task": "cifar10", "lr": lr, "momentum": 0.9, "epochs": epochs, "seed": 0,
                "batch_size": 128, "schedule": "constant",
                "task_options": {"model": model}}
        configs.append(TrialConfig(optimizer="sgd", **base))
        for k, alpha in ((5, 0.5), (5, 0.8), (10, 0.5)):
            configs.append(TrialConfig(optimizer="lookahead", inner="sgd", k=k, alpha=alpha,
                                       **base))
    dev = resolve_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        _write_cifar10(Path(tmp), images)
        run_trial(configs[0].model_copy(update={"epochs": 1}), dev, Path(tmp))  # warm-up
        one, pop = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            for config in configs:
                run_trial(config, dev, Path(tmp))
            _sync(dev)
            one.append(time.perf_counter() - start)
            start = time.perf_counter()
            population = PopulationTrial(configs, dev, Path(tmp))
            list(population.run())
            _sync(dev)
            pop.append(time.perf_counter() - start)
        trained = len(configs) * images * epochs
        _summary(f"cifar10 {model} ({len(configs)} configurations, {images} images, "
                 f"{epochs} epochs)", len(configs), one, pop)
        print(f"  training images/s over all configurations: one at a time "
              f"{trained / statistics.median(one):,.0f}, population "
              f"{trained / statistics.median(pop):,.0f}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--skip-cifar", action="store_true")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--cifar-images", type=int, default=1000)
    parser.add_argument("--cifar-epochs", type=int, default=1)
    args = parser.parse_args()
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads",
          file=sys.stderr)
    if not args.skip_digits:
        digits(args.rounds, "cpu" if device == "cpu" else "0")
    if not args.skip_cifar:
        cifar(args.rounds, device, args.model, args.cifar_images, args.cifar_epochs)


if __name__ == "__main__":
    main()
