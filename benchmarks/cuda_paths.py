"""Every task's CUDA code path for a few hundred steps, with throughput: one prepared script for
the time a GPU is lent to the project (one command, no internet, well under 5 minutes on one
H200).

Parts, each guarded (a failure prints ``FAILED: <part>: <error>`` and a short traceback, and
the script goes on with the next measurement):

1. versions, device, bf16 support, TF32 flags;
2. ``Trial(config, device, data_dir)`` per task on data written here in the real on-disk
   formats (CIFAR-10 pickle batches, JPEG class folders, ``ptb.*.txt``,
   ``train/valid/test.{en,de}``): digits; cifar10 with resnet20 and resnet18; imagefolder with
   ``pipeline=memory`` and ``pipeline=stream`` (JPEGs decoded by nvJPEG; the decode calls are
   counted, since ``image_stream`` falls back to the CPU silently); ptb ``size=small``; wmt14
   ``size=small``; Lookahead(SGD) on resnet20 (the foreach sync on CUDA);
3. ``PopulationTrial``: digits with 32 configurations, cifar10 resnet20 with 12, against the
   same configurations run one at a time (two single trials timed, the rest extrapolated),
   with the largest difference of final test loss between a member and its single trial;
4. ResNet-18 (cifar10, 32×32) populations of 8, 16, 32 members until one runs out of memory:
   aggregate training images/s (goal: 100k/s on one H200);
5. peak GPU memory per measurement and part.

Throughput "train" is the last epoch's units (images or tokens, counted from the batches the
trial consumed) over its time without the evaluation; "overall" is every unit over the whole
run including construction, warm-up and evaluation.

Usage (repo root, after ``pip install -e .``):
    python benchmarks/cuda_paths.py                      # the GPU run
    python benchmarks/cuda_paths.py --device cpu --quick # tiny sizes, checks every path here
Options: --parts 1,2,3,4  --budget-s 270 (later measurements are skipped past it).
Exit code 0 even where parts fail; the failures are counted at the end.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import pickle
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lookbench.execution.trial import Trial
from lookbench.study.config import TrialConfig

# -- sizes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    epochs: int  # per trial in part 2 and per population
    digits_epochs: int
    cifar_train: int  # images written; trials use cifar_subset of them (train_subset)
    cifar_test: int
    cifar_subset: int
    cifar_batch: int
    img_classes: int
    img_train: int  # per class
    img_val: int  # per class
    img_size: int
    img_batch: int
    ptb_lines: int
    ptb_vocab: int
    ptb_batch: int
    wmt_pairs: int
    wmt_vocab: int
    wmt_batch: int  # tokens
    pop_lrs: tuple[float, ...]  # digits grid: lr x (k, alpha) x seeds
    pop_kas: tuple[tuple[int, float], ...]
    pop_cifar_lrs: tuple[float, ...]
    pop_cifar_kas: tuple[tuple[int, float], ...]
    pop_cifar_subset: int
    r18_members: tuple[int, ...]
    r18_subset: int
    r18_batch: int


FULL = Sizes(
    epochs=2, digits_epochs=4, cifar_train=12_800, cifar_test=1_000, cifar_subset=12_800,
    cifar_batch=128, img_classes=10, img_train=640, img_val=20, img_size=64, img_batch=64,
    ptb_lines=21_000, ptb_vocab=10_000, ptb_batch=80, wmt_pairs=40_000, wmt_vocab=2_000,
    wmt_batch=4096, pop_lrs=(0.03, 0.1, 0.3, 1.0),
    pop_kas=((5, 0.5), (5, 0.8), (10, 0.5), (10, 0.8)),
    pop_cifar_lrs=(0.05, 0.1, 0.2), pop_cifar_kas=((5, 0.5), (10, 0.8)),
    pop_cifar_subset=3_840, r18_members=(8, 16, 32), r18_subset=2_560, r18_batch=128,
)
QUICK = Sizes(
    epochs=1, digits_epochs=1, cifar_train=160, cifar_test=32, cifar_subset=64,
    cifar_batch=16, img_classes=3, img_train=8, img_val=2, img_size=32, img_batch=8,
    ptb_lines=300, ptb_vocab=40, ptb_batch=4, wmt_pairs=200, wmt_vocab=20, wmt_batch=200,
    pop_lrs=(0.1,), pop_kas=((5, 0.5), (10, 0.8)), pop_cifar_lrs=(0.1,),
    pop_cifar_kas=((5, 0.5),), pop_cifar_subset=32, r18_members=(2, 4), r18_subset=16,
    r18_batch=8,
)
SEEDS = (0, 1)

# -- bookkeeping -----------------------------------------------------------------------------

FAILURES: list[str] = []
ROWS: list[tuple[str, str, str, str]] = []  # (part, measurement, result, peak memory)
PART_PEAK: dict[str, int] = {}  # bytes, the largest of a part's measurements
START = time.perf_counter()
DEVICE = torch.device("cpu")
BUDGET_S = math.inf


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def free_memory() -> None:
    gc.collect()
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()


@contextmanager
def guard(name: str) -> Iterator[None]:
    """Run a measurement; on an error print one FAILED line and a traceback summary."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - every failure is reported, then the next part
        line = one_line(e)
        print(f"FAILED: {name}: {line}", flush=True)
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.name != "guard"]
        for frame in frames[-4:]:
            where = "/".join(Path(frame.filename).parts[-2:])
            print(f"    at {where}:{frame.lineno} in {frame.name}", flush=True)
        FAILURES.append(f"{name}: {line}")
        ROWS.append((name.split(":")[0], name, "FAILED", "-"))
    finally:
        free_memory()


def over_budget(name: str) -> bool:
    elapsed = time.perf_counter() - START
    if elapsed > BUDGET_S:
        print(f"SKIPPED: {name}: past the {BUDGET_S:.0f} s budget ({elapsed:.0f} s)", flush=True)
        ROWS.append((name.split(":")[0], name, "skipped (budget)", "-"))
        return True
    return False


def reset_peak() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak() -> str:
    if DEVICE.type != "cuda":
        return "n/a"
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f}GiB"


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def report(part: str, name: str, result: str) -> None:
    mem = peak()
    if DEVICE.type == "cuda":
        PART_PEAK[part] = max(PART_PEAK.get(part, 0), torch.cuda.max_memory_allocated())
    print(f"[{part}] {name}: {result} peak={mem}", flush=True)
    ROWS.append((part, name, result, mem))


# -- data in the real on-disk formats (logic copied from tests/tasks) -----------------------


def write_cifar10(root: Path, n_train: int, n_test: int) -> Path:
    """cifar-10-batches-py/: data_batch_1..5, test_batch, batches.meta, pickled dicts with bytes
    keys (protocol 2; the loader reads the official Python 2 pickles the same way). Each class
    a bright channel in its own band of rows, on noise, so the loss can fall."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 128, (n, 3, 32, 32), dtype=np.uint8)
        for c in range(10):
            band = (c // 3) * 8
            images[labels == c, c % 3, band:band + 8] += 110
        return images, labels

    def entry(images: np.ndarray, labels: np.ndarray, name: str) -> dict[bytes, Any]:
        return {b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
                b"data": images.reshape(len(images), 3072),
                b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(images))]}

    def dump(path: Path, obj: Any) -> None:
        path.write_bytes(pickle.dumps(obj, protocol=2))

    per_batch = -(-n_train // 5)
    for i in range(5):
        n = max(0, min(per_batch, n_train - i * per_batch))
        dump(folder / f"data_batch_{i + 1}", entry(*split(n), f"training batch {i + 1} of 5"))
    dump(folder / "test_batch", entry(*split(n_test), "testing batch 1 of 1"))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    dump(folder / "batches.meta", {b"label_names": [n.encode() for n in names],
                                   b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    return root


def write_image_folder(root: Path, classes: int, train: int, val: int,
                       size: tuple[int, int] = (80, 96)) -> Path:
    """train/<class>/*.jpg and val/<class>/*.jpg (ImageNet's layout): each class a bright
    channel in its own band of rows, on noise; one grayscale JPEG among them."""
    from torchvision.io import encode_jpeg

    g = torch.Generator().manual_seed(0)
    rows = size[0] // 4
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True)
            for i in range(n):
                img = torch.randint(0, 90, (3, *size), generator=g, dtype=torch.uint8)
                band = (c // 3) % 4 * rows
                img[c % 3, band:band + rows] += 150
                if i == 0 and c == 0:
                    img = img[:1]  # one grayscale image
                (folder / f"{i:05d}.jpg").write_bytes(encode_jpeg(img, quality=90).numpy()
                                                      .tobytes())
    return root


def write_ptb(root: Path, lines: int, vocab: int) -> Path:
    """PTB's format: one sentence per line, words separated by spaces, <unk> for rare ones
    (Zipf-distributed words, so the softmax has a realistic size)."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(vocab - 1)] + ["<unk>"]
    cum = list(itertools.accumulate(1 / (i + 1) for i in range(vocab)))
    root.mkdir(parents=True)
    for split, n in (("train", lines), ("valid", max(10, lines // 10)),
                     ("test", max(10, lines // 10))):
        text = [" " + " ".join(rng.choices(words, cum_weights=cum, k=rng.randint(3, 35))) + " "
                for _ in range(n)]
        (root / f"ptb.{split}.txt").write_text("\n".join(text) + "\n")
    return root


def write_wmt(root: Path, pairs: int, vocab: int) -> Path:
    """train/valid/test.{en,de}, one tokenised, BPE-applied sentence per line: German is the
    English reversed word for word (a word 0 split as BPE does)."""
    rng = random.Random(0)
    root.mkdir(parents=True)
    for split, size in (("train", pairs), ("valid", max(20, pairs // 20)),
                        ("test", max(20, pairs // 20))):
        src, tgt = [], []
        for _ in range(size):
            ws = [rng.randrange(vocab) for _ in range(rng.randint(3, 30))]
            src.append(" ".join(f"e{w}" for w in ws))
            tgt.append(" ".join(f"d{w}@@ x" if w == 0 else f"d{w}" for w in reversed(ws)))
        (root / f"{split}.en").write_text("\n".join(src) + "\n")
        (root / f"{split}.de").write_text("\n".join(tgt) + "\n")
    return root


class Data:
    """Each data set written once, on first use, under one temporary folder."""

    def __init__(self, root: Path, s: Sizes) -> None:
        self.root, self.s, self.made = root, s, {}

    def get(self, name: str) -> Path:
        if name not in self.made:
            s, start = self.s, time.perf_counter()
            makers: dict[str, Callable[[], Path]] = {
                "cifar": lambda: write_cifar10(self.root / "cifar", s.cifar_train, s.cifar_test),
                "images": lambda: write_image_folder(self.root / "images", s.img_classes,
                                                     s.img_train, s.img_val),
                "ptb": lambda: write_ptb(self.root / "ptb", s.ptb_lines, s.ptb_vocab),
                "wmt": lambda: write_wmt(self.root / "wmt", s.wmt_pairs, s.wmt_vocab),
            }
            self.made[name] = makers[name]()
            print(f"    (wrote {name} data in {time.perf_counter() - start:.1f} s)", flush=True)
        return self.made[name]


# -- counting what a trial consumes ---------------------------------------------------------


def image_units(batch: Any) -> int:
    return int(batch[0].shape[0])


def ptb_units(batch_size: int) -> Callable[[Any], int]:
    return lambda batch: int(batch[1]) * batch_size  # (start, window length, scale)


def wmt_units(batch: Any) -> torch.Tensor:
    from lookbench.tasks.wmt import PAD

    return (batch[2] != PAD).sum()  # target tokens, summed on the device (no sync per step)


class Meter:
    """Wraps a workload's train_batches (units consumed) and evaluate (its time)."""

    def __init__(self, units: Callable[[Any], Any]) -> None:
        self.units_fn = units
        self.total: Any = 0
        self.eval_s = 0.0

    def units(self) -> int:
        return int(self.total)

    def attach(self, workload: Any, count: bool = True) -> None:
        batches, evaluate = workload.train_batches, workload.evaluate

        def counted(epoch: int, generator: torch.Generator) -> Iterator[Any]:
            for batch in batches(epoch, generator):
                self.total = self.total + self.units_fn(batch)
                yield batch

        def timed(model: torch.nn.Module) -> dict[str, float]:
            sync()
            start = time.perf_counter()
            out = evaluate(model)
            sync()
            self.eval_s += time.perf_counter() - start
            return out

        if count:
            workload.train_batches = counted
        workload.evaluate = timed


@dataclass
class Run:
    steps: int
    train_rate: float  # units/s of the last epoch without evaluation
    overall_rate: float  # units/s over everything, construction included
    total_s: float
    train_loss: float
    test_loss: float
    records: list


def run_single(config: TrialConfig, data_dir: Path | None, units: Callable[[Any], Any]
               ) -> tuple[Trial, Run]:
    start = time.perf_counter()
    trial = Trial(config, device=DEVICE, data_dir=data_dir)
    meter = Meter(units)
    meter.attach(trial.workload)
    last_units = last_eval = 0.0
    prev_wall = 0.0
    rate = math.nan
    for record in trial.run():
        units_now, eval_now = meter.units(), meter.eval_s
        train_s = (record.wall_s - prev_wall) - (eval_now - last_eval)
        rate = (units_now - last_units) / max(train_s, 1e-9)
        last_units, last_eval, prev_wall = units_now, eval_now, record.wall_s
    total = time.perf_counter() - start
    last = trial.records[-1]
    return trial, Run(last.steps, rate, meter.units() / total, total, last.train_loss,
                      last.test_loss, trial.records)


def fmt_rate(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 10_000 else f"{x:.0f}"


# -- part 1 ----------------------------------------------------------------------------------


def part1() -> None:
    import torchvision

    print(f"[1] python {sys.version.split()[0]} torch {torch.__version__} torchvision "
          f"{torchvision.__version__} cuda {torch.version.cuda} cudnn "
          f"{torch.backends.cudnn.version()}", flush=True)
    if DEVICE.type == "cuda":
        props = torch.cuda.get_device_properties(DEVICE)
        bf16 = torch.cuda.is_bf16_supported()
        print(f"[1] device {props.name} cc {props.major}.{props.minor} "
              f"{props.total_memory / 2**30:.0f}GiB bf16={bf16} "
              f"tf32 matmul={torch.backends.cuda.matmul.allow_tf32} "
              f"cudnn={torch.backends.cudnn.allow_tf32}", flush=True)
        ROWS.append(("1", "device", f"{props.name} bf16={bf16}", "-"))
    else:
        print(f"[1] device cpu ({torch.get_num_threads()} threads), bf16 n/a", flush=True)
        ROWS.append(("1", "device", "cpu", "-"))


# -- part 2 ----------------------------------------------------------------------------------


def config(task: str, optimizer: str = "sgd", epochs: int = 1, **fields: Any) -> TrialConfig:
    base: dict[str, Any] = {"lr": 0.1, "momentum": 0.9}
    if optimizer == "adam":
        base = {"lr": 1e-3, "momentum": 0.9, "beta2": 0.98}
    return TrialConfig(**{"task": task, "optimizer": optimizer, "epochs": epochs, "seed": 0,
                          **base, **fields})


def single(part: str, name: str, cfg: TrialConfig, data_dir: Path | None,
           units: Callable[[Any], Any], unit: str) -> Run | None:
    if over_budget(f"{part}: {name}"):
        return None
    run = None
    with guard(f"{part}: {name}"):
        reset_peak()
        trial, run = run_single(cfg, data_dir, units)
        wl = trial.workload
        report(part, name, f"steps={run.steps} train={fmt_rate(run.train_rate)} {unit}/s "
               f"overall={fmt_rate(run.overall_rate)} {unit}/s loss={run.train_loss:.3f}/"
               f"{run.test_loss:.3f} amp={wl.amp} cl={wl.channels_last} "
               f"wall={run.total_s:.1f}s")
        del trial, wl
    return run


def part2(data: Data, s: Sizes) -> None:
    part = "2"
    single(part, "digits sgd", config("digits", epochs=s.digits_epochs), None, image_units,
           "img")
    cifar_runs = {}
    for model in ("resnet20", "resnet18"):
        name = f"cifar10 {model}"
        if over_budget(f"{part}: {name}"):
            continue
        with guard(f"{part}: {name} data"):
            root = data.get("cifar")
        if "cifar" not in data.made:
            continue
        cfg = config("cifar10", epochs=s.epochs, weight_decay=5e-4, batch_size=s.cifar_batch,
                     task_options={"model": model, "train_subset": s.cifar_subset})
        cifar_runs[model] = single(part, name, cfg, root, image_units, "img")

    for pipeline in ("memory", "stream"):
        name = f"imagefolder {pipeline} resnet18 {s.img_size}px"
        if over_budget(f"{part}: {name}"):
            continue
        with guard(f"{part}: imagefolder data"):
            root = data.get("images")
        if "images" not in data.made:
            continue
        cfg = config("imagefolder", epochs=s.epochs, lr=0.02, weight_decay=5e-5,
                     batch_size=s.img_batch,
                     task_options={"model": "resnet18", "image_size": s.img_size,
                                   "pipeline": pipeline})
        if pipeline == "stream":
            with counting_decode() as calls:
                single(part, name, cfg, root, image_units, "img")
            report(part, "imagefolder stream decode_jpeg calls",
                   ", ".join(f"{k}={v}" for k, v in sorted(calls.items()))
                   or "none (CPU decoding goes through read_rgb)")
        else:
            single(part, name, cfg, root, image_units, "img")

    with guard(f"{part}: ptb data"):
        root = data.get("ptb")
    if "ptb" in data.made:
        cfg = config("ptb", epochs=s.epochs, lr=10.0, momentum=0.0, batch_size=s.ptb_batch,
                     task_options={"size": "small"})
        single(part, "ptb small sgd", cfg, root, ptb_units(s.ptb_batch), "tok")

    with guard(f"{part}: wmt data"):
        root = data.get("wmt")
    if "wmt" in data.made:
        cfg = config("wmt14", "adam", epochs=s.epochs, batch_size=s.wmt_batch,
                     task_options={"size": "small", "bleu": False})
        single(part, "wmt14 small adam", cfg, root, wmt_units, "tok")

    if "cifar" in data.made:
        cfg = config("cifar10", "lookahead", epochs=s.epochs, inner="sgd", weight_decay=5e-4,
                     k=5, alpha=0.5, batch_size=s.cifar_batch,
                     task_options={"model": "resnet20", "train_subset": s.cifar_subset})
        la = single(part, "cifar10 resnet20 lookahead(sgd) k5 a0.5", cfg, data.made["cifar"],
                    image_units, "img")
        sgd = cifar_runs.get("resnet20")
        if la is not None and sgd is not None:
            report(part, "lookahead vs sgd (resnet20, train img/s)",
                   f"{la.train_rate / sgd.train_rate:.3f}x")


@contextmanager
def counting_decode() -> Iterator[dict[str, int]]:
    """Count torchvision.io.decode_jpeg calls by device and failures: image_stream imports it
    at each call and silently decodes on the CPU when nvJPEG raises."""
    import torchvision.io

    calls: dict[str, int] = {}
    original = torchvision.io.decode_jpeg

    def counted(*args: Any, **kwargs: Any) -> Any:
        where = str(kwargs.get("device", "cpu"))
        try:
            out = original(*args, **kwargs)
        except Exception as e:
            key = f"{where}_error"
            calls[key] = calls.get(key, 0) + 1
            if calls[key] == 1:
                print(f"    decode_jpeg on {where} raised {one_line(e)}", flush=True)
            raise
        calls[where] = calls.get(where, 0) + 1
        return out

    torchvision.io.decode_jpeg = counted
    try:
        yield calls
    finally:
        torchvision.io.decode_jpeg = original


# -- parts 3 and 4: populations -------------------------------------------------------------


def lookahead_grid(task: str, lrs: tuple[float, ...], kas: tuple[tuple[int, float], ...],
                   seeds: tuple[int, ...], **fields: Any) -> list[TrialConfig]:
    return [TrialConfig(task=task, optimizer="lookahead", inner="sgd", lr=lr, momentum=0.9,
                        k=k, alpha=a, seed=seed, **fields)
            for seed in seeds for lr in lrs for k, a in kas]


def build_population(configs: list[TrialConfig], data_dir: Path | None, label: str) -> Any:
    """A PopulationTrial; on CUDA, if its numerical check refuses the model (TF32 convs may
    round beyond its tolerance), say so and retry once with TF32 off (left off after)."""
    from lookbench.execution.population.layers import NotPopulable
    from lookbench.execution.population.trial import PopulationTrial

    try:
        return PopulationTrial(configs, DEVICE, data_dir)
    except NotPopulable as e:
        if DEVICE.type != "cuda" or "mixes" not in str(e):
            raise
        FAILURES.append(f"{label}: with TF32 on: {one_line(e)}")
        print(f"FAILED: {label}: with TF32 on: {one_line(e)}; retrying with TF32 off",
              flush=True)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        return PopulationTrial(configs, DEVICE, data_dir)


@dataclass
class PopRun:
    members: int
    steps: int
    train_rate: float  # aggregate units/s, last epoch, without evaluation
    total_s: float
    pop: Any


def run_population(configs: list[TrialConfig], data_dir: Path | None, label: str) -> PopRun:
    start = time.perf_counter()
    pop = build_population(configs, data_dir, label)
    meter = Meter(image_units)
    for i, seed in enumerate(pop.seeds):
        meter.attach(pop.workloads[seed], count=i == 0)
    rate = math.nan
    last_units = last_eval = 0.0
    while not pop.finished:
        t = time.perf_counter()
        pop.run_epoch()
        epoch_s = time.perf_counter() - t
        units_now, eval_now = meter.units(), meter.eval_s
        rate = (units_now - last_units) * pop.size / max(epoch_s - (eval_now - last_eval), 1e-9)
        last_units, last_eval = units_now, eval_now
    total = time.perf_counter() - start
    return PopRun(pop.size, max(pop.steps), rate, total, pop)


def population_vs_single(part: str, name: str, configs: list[TrialConfig],
                         data_dir: Path | None) -> None:
    if over_budget(f"{part}: {name}"):
        return
    m = len(configs)
    with guard(f"{part}: {name} population of {m}"):
        reset_peak()
        run = run_population(configs, data_dir, f"{part}: {name}")
        report(part, f"{name} population M={m}",
               f"steps={run.steps} {3600 * m / run.total_s:.0f} configs/h, "
               f"train={fmt_rate(run.train_rate)} img/s aggregate, wall={run.total_s:.1f}s")
        pop = run.pop
        del run
        compare = [0, m - 1] if m > 1 else [0]
        singles = []
        for i in compare:
            if over_budget(f"{part}: {name} single #{i}"):
                break
            reset_peak()
            trial, srun = run_single(configs[i], data_dir, image_units)
            del trial
            diff = abs(pop.records[i][-1].test_loss - srun.test_loss)
            singles.append((srun, diff))
            report(part, f"{name} single #{i}",
                   f"train={fmt_rate(srun.train_rate)} img/s, wall={srun.total_s:.1f}s, "
                   f"|test_loss pop-single|={diff:.2e}")
        if singles:
            mean_s = sum(r.total_s for r, _ in singles) / len(singles)
            rate = sum(r.train_rate for r, _ in singles) / len(singles)
            report(part, f"{name} one at a time (extrapolated from {len(singles)} singles)",
                   f"{3600 / mean_s:.0f} configs/h, train={fmt_rate(rate)} img/s, "
                   f"{m} configs ~{m * mean_s:.1f}s; max |test_loss diff|="
                   f"{max(d for _, d in singles):.2e}")
        del pop


def part3(data: Data, s: Sizes) -> None:
    part = "3"
    configs = lookahead_grid("digits", s.pop_lrs, s.pop_kas, SEEDS, epochs=s.digits_epochs)
    population_vs_single(part, "digits", configs, None)
    with guard(f"{part}: cifar data"):
        root = data.get("cifar")
    if "cifar" in data.made:
        configs = lookahead_grid("cifar10", s.pop_cifar_lrs, s.pop_cifar_kas, SEEDS,
                                 epochs=s.epochs, weight_decay=5e-4, batch_size=s.cifar_batch,
                                 task_options={"model": "resnet20",
                                               "train_subset": s.pop_cifar_subset})
        population_vs_single(part, "cifar10 resnet20", configs, root)


def part4(data: Data, s: Sizes) -> None:
    part = "4"
    with guard(f"{part}: cifar data"):
        root = data.get("cifar")
    if "cifar" not in data.made:
        return
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    results: list[tuple[float, int, str]] = []  # (aggregate img/s, members, mode)

    def attempt(m: int, deterministic: bool) -> bool:
        """One population of m members; False if it ran out of memory (or failed)."""
        mode = "deterministic" if deterministic else "cudnn.benchmark"
        name = f"resnet18 population M={m} {mode}"
        if over_budget(f"{part}: {name}"):
            return False
        configs = lookahead_grid(
            "cifar10", tuple(0.02 * (1 + i) for i in range(m)), ((5, 0.5),), (0,),
            epochs=s.epochs, weight_decay=5e-4, batch_size=s.r18_batch,
            deterministic=deterministic,
            task_options={"model": "resnet18", "train_subset": s.r18_subset})
        ok = False
        with guard(f"{part}: {name}"):
            reset_peak()
            try:
                run = run_population(configs, root, f"{part}: {name}")
            except Exception as e:  # cuDNN/cuBLAS may say "out of memory" as a RuntimeError
                if not (isinstance(e, oom) or "out of memory" in str(e).lower()):
                    raise
                report(part, name, f"out of memory ({one_line(e)[:80]})")
            else:
                report(part, name, f"steps={run.steps} train={fmt_rate(run.train_rate)} "
                       f"img/s aggregate, wall={run.total_s:.1f}s")
                results.append((run.train_rate, m, mode))
                ok = True
                del run
        return ok

    # The study default (deterministic cuDNN) at each size until one does not fit; then the
    # largest that fitted once more with cudnn.benchmark (deterministic=false), which may
    # pick faster grouped-convolution kernels.
    largest = None
    for m in s.r18_members:
        if not attempt(m, True):
            break
        largest = m
    if largest is not None and DEVICE.type == "cuda":  # (cuDNN's choice: CUDA only)
        attempt(largest, False)
    if results:
        rate, m, mode = max(results)
        report(part, "resnet18 best population",
               f"M={m} {mode}: {fmt_rate(rate)} img/s aggregate (goal 100k on one H200: "
               f"{'reached' if rate >= 100_000 else 'not reached'})")


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    global DEVICE, BUDGET_S
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU check)")
    parser.add_argument("--parts", default="1,2,3,4", help="which parts, e.g. 2,3")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip measurements started after this many seconds "
                             "(default: 270, none with --quick)")
    args = parser.parse_args()
    DEVICE = torch.device(args.device)
    sizes = QUICK if args.quick else FULL
    BUDGET_S = args.budget_s if args.budget_s is not None else (
        math.inf if args.quick else 270.0)
    parts = {p.strip() for p in args.parts.split(",")}
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        print("FAILED: 1: CUDA is not available on this machine (use --device cpu --quick)")
        FAILURES.append("1: CUDA is not available")
        parts = set()

    with tempfile.TemporaryDirectory(prefix="lookbench-cuda-") as tmp:
        data = Data(Path(tmp), sizes)
        for p, fn in (("1", part1), ("2", part2), ("3", part3), ("4", part4)):
            if p not in parts:
                continue
            with guard(f"{p}: part"):
                start = time.perf_counter()
                fn() if p == "1" else fn(data, sizes)
                most = (f"{PART_PEAK[p] / 2**30:.2f}GiB" if p in PART_PEAK else "n/a")
                print(f"[{p}] part done in {time.perf_counter() - start:.1f} s, peak GPU "
                      f"memory {most}", flush=True)
                ROWS.append((p, "whole part (wall time; peak memory)",
                             f"{time.perf_counter() - start:.1f}s", most))

    print("\nSUMMARY (peak = torch.cuda.max_memory_allocated per measurement)")
    width = max([len(r[1]) for r in ROWS] + [10])
    for part, name, result, mem in ROWS:
        print(f"{part:>2} {name:<{width}} {mem:>8}  {result}")
    print(f"total {time.perf_counter() - START:.1f} s; {len(FAILURES)} failure(s)")
    for f in FAILURES:
        print(f"FAILED: {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
