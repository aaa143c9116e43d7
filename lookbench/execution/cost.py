"""What Lookahead costs beside each baseline, measured once per study: ``<study>/cost.json``.

Why a pass of its own: the trials' wall times cannot say it. Trials trained as a population
share one wall time, and trials trained one after another on a machine that is busy, warming
up or throttling drift by more than Lookahead's few percent. So at the end of ``lookbench run``
this pass builds one representative configuration of every optimizer of the study (the same
inner hyperparameters, the same seed, hence the same initial weights), on the study's own
device and thread count, through the trial runner's own step (:meth:`Trial.train_step`), and
times blocks of training steps interleaved round-robin: round r runs a block of each optimizer
in turn, the order rotated every round, so drift falls on every optimizer alike. Each block is
a whole number of Lookahead's k steps, so every block holds the same number of syncs.

Per round, Lookahead's time per step over a baseline's is one ratio; the result is their
median with the order-statistic interval of :func:`lookbench.stats.median_interval` (no
assumption about how timing noise is distributed). Rounds are added until every interval is
within :data:`NARROW` of its estimate or the time budget is spent. The memory the optimizer's
state takes is counted from its ``state_dict()``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from lookbench._messages import environmental, first_line, naming
from lookbench.hparams import LOOKAHEAD_OWN, SHARED
from lookbench.stats import median_interval
from lookbench.study.config import TrialConfig
from lookbench.study.spec import StudySpec, config_from_point, plan

__all__ = ["COST_FILE", "SECONDS_ENV", "budget_seconds", "measure_cost", "representatives",
           "state_bytes", "summary", "write_cost"]

COST_FILE = "cost.json"
VERSION = 1
SECONDS_ENV = "LOOKBENCH_COST_SECONDS"  # the pass's time budget; 0 turns the pass off
DEFAULT_SECONDS = 10.0
MIN_ROUNDS = 5  # the fewest ratios an order-statistic interval brackets (93.75%)
NARROW = 0.02  # stop when every interval's half-width is within 2% of its estimate
# A block's target duration. Timing noise on a 2-core VM was about ±10% per round whether
# blocks took 0.05, 0.1 or 0.2 s, so the shortest blocks give the most rounds, and the
# narrowest interval, per second (digits: narrow after ~2.5 s at 0.05 s, ~5-10 s at 0.1 s).
# (A model whose k steps take longer gets blocks of k steps.)
BLOCK_S = 0.05
CALIBRATION_S = 0.01  # a calibration block at least this long is timed well enough
WARMUP_BLOCKS = 2  # blocks of k steps per optimizer before anything is timed
PAPER_SETTING = {"k": 5, "alpha": 0.5}  # the paper's default Lookahead setting
ANALYTIC = "an analytic task has no training step to time"


MIN_SECONDS = 3.0  # the default budget never goes below this ...
STUDY_SHARE = 0.05  # ... nor above this share of the study's own training time (up to 10 s)


def budget_seconds(seconds: float | None = None, study_s: float | None = None) -> float:
    """The pass's time budget: ``seconds``, else ``LOOKBENCH_COST_SECONDS``, else 5% of the
    study's summed training time ``study_s`` between 3 and 10 s (the pass is part of the
    answer, and must stay a small part of what the user waits for: on the README's digits study
    it would otherwise add half of the run), or 10 s when that is unknown. An unreadable value
    counts as unset: a typo must not fail a finished run."""
    if seconds is None:
        default = DEFAULT_SECONDS if study_s is None else min(
            DEFAULT_SECONDS, max(MIN_SECONDS, STUDY_SHARE * study_s))
        try:
            seconds = float(os.environ.get(SECONDS_ENV, default))
        except ValueError:
            seconds = default
        if not math.isfinite(seconds):
            seconds = default
    return seconds if math.isfinite(seconds) else DEFAULT_SECONDS


# -- which configurations -------------------------------------------------------------------


def _planned(spec: StudySpec) -> list[TrialConfig]:
    """The study's configurations (seed 0); TPE has no plan, so its ranges are drawn from as
    the random sampler would."""
    if spec.sampler == "tpe":
        spec = spec.model_copy(update={"sampler": "random"})
    return [c for c in plan(spec) if c.seed == 0]


def _values(config: TrialConfig, names: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    return tuple((n, getattr(config, n)) for n in names if getattr(config, n) is not None)


def _most_frequent(items: list[Any]) -> Any:
    """The most frequent item; ties go to the one seen first."""
    counts = Counter(items)
    return max(dict.fromkeys(items), key=lambda item: counts[item])


def representatives(spec: StudySpec) -> dict[str, TrialConfig]:
    """One configuration per optimizer of the study (seed 0), all at the same inner
    hyperparameters, in ``spec.optimizers``' order.

    Lookahead's own setting: the paper's k = 5, α = 0.5 where the plan has it (then its most
    frequent inner-state policy), else the plan's most frequent (k, α, inner state). The inner
    setting: among those both Lookahead at that setting and the inner optimizer ran (else the
    inner optimizer's), the one at the median learning rate (of an even count the lower
    middle one: a diverging rate makes NaN arithmetic, which runs at another speed), ties
    going to the setting the plan runs most often. An averaging baseline keeps a planned
    setting of its own (decay, start) at those inner values.
    """
    planned = _planned(spec)
    by_opt = {opt: [c for c in planned if c.optimizer == opt] for opt in spec.optimizers}
    la = by_opt["lookahead"]
    paper = [c for c in la if all(getattr(c, n) == v for n, v in PAPER_SETTING.items())]
    own = _most_frequent([_values(c, LOOKAHEAD_OWN) for c in paper or la]) if la else ()
    la_inner = [_values(c, SHARED) for c in la if _values(c, LOOKAHEAD_OWN) == own]
    base_inner = [_values(c, SHARED) for c in by_opt[spec.inner]]
    both = [v for v in dict.fromkeys(la_inner) if v in set(base_inner)]
    candidates = both or list(dict.fromkeys(base_inner or la_inner))
    if not candidates:
        raise ValueError("the study plans no configuration to time")
    lrs = sorted(dict(v)["lr"] for v in candidates)
    median_lr = lrs[(len(lrs) - 1) // 2]
    everywhere = [_values(c, SHARED) for c in planned]
    inner = dict(_most_frequent([v for v in everywhere
                                 if v in candidates and dict(v)["lr"] == median_lr]))
    configs = {"lookahead": config_from_point(spec, "lookahead", {**inner, **dict(own)}, 0),
               spec.inner: config_from_point(spec, spec.inner, inner, 0)}
    for baseline in spec.baselines:
        mine = by_opt[baseline]
        at_inner = [c for c in mine if dict(_values(c, SHARED)) == inner] or mine
        averaging = {n: getattr(at_inner[0], n) for n in at_inner[0].hyperparameters()
                     if n not in SHARED} if at_inner else {}
        configs[baseline] = config_from_point(spec, baseline, {**inner, **averaging}, 0)
    return configs


# -- measuring ------------------------------------------------------------------------------


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in ``optimizer.state_dict()`` (nested dicts and lists walked; a
    tensor reached twice counted once): a wrapper's own tensors (Lookahead's slow weights, an
    average) and its inner optimizer's state, which it keeps beside them."""
    seen: set[tuple[int, int, torch.dtype]] = set()
    total = 0

    def walk(value: Any) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            key = (value.data_ptr(), value.numel(), value.dtype)
            if key not in seen:
                seen.add(key)
                total += value.numel() * value.element_size()
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    state = optimizer.state_dict()
    walk({k: v for k, v in state.items() if k != "param_groups"})
    return total


def _batches(trial: Any) -> Iterator[Any]:
    """The trial's training batches, pass after pass, as training would draw them."""
    data_pass = 0
    while True:
        yielded = False
        for batch in trial.workload.train_batches(data_pass, trial._pass_generator(data_pass)):
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("the task's train_batches yielded no batch")
        data_pass += 1


class _Timed:
    """One optimizer's trial, its stream of batches and its step count."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.batches = _batches(trial)
        self.steps = 0
        self.per_step: list[float] = []  # seconds per step, one per timed round

    def block(self, steps: int) -> float:
        """Seconds that ``steps`` training steps take (the device synchronised around them)."""
        device = self.trial.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            self.steps += 1
            self.trial.train_step(next(self.batches), self.steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start


def _block_steps(timed: dict[str, _Timed], k: int) -> int:
    """Steps per block: the multiple of k (at least k) that takes about :data:`BLOCK_S` for
    the slowest optimizer (calibrated on blocks doubled until they take
    :data:`CALIBRATION_S`; those steps count as warm-up)."""
    slowest = 0.0
    for t in timed.values():
        n = k
        while (seconds := t.block(n)) < CALIBRATION_S and n < 1 << 20:
            n *= 2
        slowest = max(slowest, seconds / n)
    return k * max(1, round(BLOCK_S / (slowest * k)) if slowest > 0 else 1)


def _narrow(interval: Any) -> bool:
    return (interval.bracketed and interval.estimate > 0
            and (interval.high - interval.low) / 2 <= NARROW * interval.estimate)


def _time_rounds(timed: dict[str, _Timed], k: int, budget: float) -> tuple[str, float, int]:
    """Warm up, then time rounds until narrow or out of time: (why it stopped, seconds, steps
    per block)."""
    start = time.perf_counter()
    for t in timed.values():
        for _ in range(WARMUP_BLOCKS):
            t.block(k)
    steps = _block_steps(timed, k)
    names = list(timed)
    for name in names:  # one uncounted round at the block length
        timed[name].block(steps)
    rounds = 0
    while True:
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            timed[name].per_step.append(timed[name].block(steps) / steps)
        rounds += 1
        if rounds >= MIN_ROUNDS and all(_narrow(median_interval(_ratios(timed, b)))
                                        for b in names[1:]):
            return "narrow", time.perf_counter() - start, steps
        if time.perf_counter() - start >= budget:
            return "time", time.perf_counter() - start, steps


def _ratios(timed: dict[str, _Timed], baseline: str) -> list[float]:
    """Lookahead's time per step over ``baseline``'s, one per round."""
    return [a / b for a, b in zip(timed["lookahead"].per_step, timed[baseline].per_step)]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def _plain(value: Any) -> Any:
    """A hyperparameter's value as plain JSON (ints stay ints)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    return float(value)


def _measure(spec: StudySpec, device: torch.device, data_dir: Path | None, budget: float
             ) -> dict[str, Any]:
    """The measurement itself (see the module's docstring); raises what the task raises."""
    from lookbench.execution.trial import Trial, _stream_seed

    configs = representatives(spec)
    trials = {name: Trial(config, device, data_dir) for name, config in configs.items()}
    if any(t.analytic is not None for t in trials.values()):
        return {"version": VERSION, "skipped": ANALYTIC}
    lookahead = trials["lookahead"]
    k = int(lookahead.optimizer.defaults.get("lookahead_k", 1))
    torch.manual_seed(_stream_seed(0, 0, 0))  # dropout & co., as a trial's first epoch
    for t in trials.values():
        t.workload.model.train()
    timed = {name: _Timed(t) for name, t in trials.items()}
    stopped, seconds, _ = _time_rounds(timed, k, budget)
    sizes = {name: state_bytes(t.optimizer) for name, t in trials.items()}
    ratios = {}
    for baseline in list(trials)[1:]:
        interval = median_interval(_ratios(timed, baseline))
        ratios[baseline] = {"estimate": interval.estimate, "low": interval.low,
                            "high": interval.high, "coverage": interval.coverage,
                            "rounds": interval.n}
    where = lookahead.device
    return {
        "version": VERSION, "skipped": None,
        "device": str(where), "device_name": _device_name(where),
        "threads": torch.get_num_threads(), "host": socket.gethostname(),
        "torch_version": str(torch.__version__),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": spec.task, "batch_size": int(lookahead.batch_size),
        "optimizers": {name: {"config": {n: _plain(v)
                                         for n, v in configs[name].hyperparameters().items()},
                              "step_s": statistics.median(timed[name].per_step),
                              "state_bytes": sizes[name]}
                       for name in trials},
        "ratios": ratios,
        "extra_bytes": {b: sizes["lookahead"] - sizes[b] for b in list(trials)[1:]},
        "seconds": seconds, "stopped": stopped,
    }


@contextlib.contextmanager
def _threads(device: torch.device, threads: int) -> Iterator[None]:
    """On the CPU, ``threads`` intra-op threads (as the study's trials use), restored after."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure_cost(spec: StudySpec, study_dir: Path, device: str, threads: int,
                 data_dir: Path | None, seconds: float | None = None) -> dict[str, Any]:
    """Time Lookahead against the study's baselines on ``device`` and write ``cost.json``.

    ``seconds``: the time budget (default :func:`budget_seconds`) from the first warm-up step
    on (building the workloads is not counted); the pass stops after the round that spends
    it, and records how long it took in ``seconds``. A task or optimizer that fails while
    timing is recorded as ``skipped`` with its one-line reason; an error of the machine behind
    it (a full disk, a folder it may not read) raises that OSError and writes nothing, so a
    later run measures again, as does an error writing the file. Ctrl-C writes nothing. The
    caller's RNG and thread count are left as they were.
    """
    from lookbench.execution.trial import resolve_device

    budget = budget_seconds(seconds)
    where = resolve_device(device)
    devices = [where.index or 0] if where.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), _threads(where, threads):
            content = _measure(spec, where, data_dir, budget)
        json.dumps(content, allow_nan=False)  # (a NaN is a failure here, not at the write)
    except Exception as e:  # a task's or optimizer's own failure: recorded, never fatal
        machine = environmental(e)
        if machine is not None:
            raise machine from e
        content = {"version": VERSION, "skipped": first_line(e)}
    finally:
        if where.type == "cuda":
            torch.cuda.empty_cache()  # the pass's workloads are gone; give their memory back
    write_cost(study_dir, content)
    return content


def write_cost(study_dir: Path, content: dict[str, Any]) -> Path:
    """Write ``cost.json`` atomically (temp file in the same folder, fsync, rename): a reader
    sees the old file or the whole new one, never half of it."""
    path = Path(study_dir) / COST_FILE
    text = json.dumps(content, indent=2, allow_nan=False) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with naming(path), open(tmp, "w", encoding="utf-8") as f:  # (a full disk names it)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def _size(n: int) -> str:
    sign = "+" if n >= 0 else "−"
    n = abs(n)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{sign}{n / scale:.2f} {unit}"
    return f"{sign}{n} B"


def summary(cost: dict[str, Any], inner: str) -> str:
    """One line for the end of ``lookbench run``: ``cost: Lookahead(sgd) 1.05× sgd per step
    [1.03–1.07], +38.44 kB state``."""
    if cost.get("skipped"):
        return f"cost: not measured ({cost['skipped']})"
    parts = []
    for baseline, r in cost["ratios"].items():
        interval = (f"[{r['low']:.2f}–{r['high']:.2f}]" if r["low"] is not None
                    else f"(no interval from {r['rounds']} rounds)")
        per_step = " per step" if not parts else ""
        parts.append(f"{r['estimate']:.2f}× {baseline}{per_step} {interval}, "
                     f"{_size(cost['extra_bytes'][baseline])} state")
    return f"cost: Lookahead({inner}) " + "; ".join(parts)
