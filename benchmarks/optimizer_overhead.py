"""What Lookahead costs per optimizer step, against the other Lookahead implementations.

On ResNet-18's parameter list (CIFAR stem: 62 tensors, 11.2M values) with fixed random
gradients, this times, interleaved in one run so machine noise hits all alike, and with the
caches evicted before every timed step as a training step's forward and backward passes would
(``--no-flush`` turns that off):

* the sync itself (the outer update, the part Lookahead adds every k steps) of each
  implementation: lookbench (and lookbench with ``fused=False``), timm and torch-optimizer (the
  ``bench`` extra; each is skipped if not installed), right after an inner step as in training,
  against the memory-traffic floor: two plain multi-tensor copies of the parameters. Each
  repetition times every implementation once, in random order, so its ratios are paired: the
  ratio printed is the median of the per-repetition ratios, with a 95% bootstrap interval over
  the repetitions.
* the bare inner optimizer (SGD with momentum, Adam; foreach and fused kernels), and
  Lookahead(k) around it from each implementation. The *added cost per step* is the Lookahead
  step time minus the time of its own inner optimizer's step on the same tensors: each round
  times one cycle of k Lookahead steps, each paired with a step of the inner optimizer alone
  timed right before or after it (random order); per position in the cycle the median of the
  paired differences is taken, and the medians are summed over the cycle and divided by k. For
  "bare" the same difference (the inner optimizer against itself) measures nothing but noise:
  its spread is the noise floor. The added cost is about sync/k, a few ms or less, while on a
  busy machine a step varies by tens of ms; where the 95% interval of an added cost is not
  above 0, or the estimate is not above the noise floor, no ratio is given and the script says
  so instead (the sync ratios then measure what Lookahead adds).

It prints the ratios the project's goals are stated in:
  lookbench sync / each other implementation's sync     [95% interval]
  lookbench added cost / best other implementation's    (goal <= 0.85), or why not measurable
  lookbench sync / two foreach copies                    (goal <= 1.3)

No number is ever printed as nan or inf: what cannot be computed says n/a and why.

Usage: python benchmarks/optimizer_overhead.py [--rounds 30] [--syncs 30] [--k 5]
       [--inner sgd|adam ...] [--kernel foreach|fused ...] [--threads N] [--no-flush]
       [--seed S]
  --rounds 0 skips the per-step part (the sync ratios only: a few minutes on a busy machine).
  Quick look: --rounds 8 --syncs 20 --inner sgd --kernel foreach
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torchvision

from lookbench.optim import Lookahead, _fused


def resnet18_shapes(num_classes: int = 100) -> list[torch.Size]:
    """Parameter shapes of ResNet-18 with the CIFAR stem (3×3 conv, no max-pool)."""
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    return [p.shape for p in model.parameters()]


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Variant:
    name: str
    step: Callable[[], object]
    sync: Callable[[], None] | None = None  # the outer update alone
    inner_step: Callable[[], object] | None = None  # the wrapped optimizer's own step
    step_times: list[float] = field(default_factory=list)
    sync_times: list[float] = field(default_factory=list)


def make_params(shapes, grads, device):
    params = [torch.nn.Parameter(torch.randn(s, device=device)) for s in shapes]
    for p, g in zip(params, grads):
        p.grad = g
    return params


def make_inner(kind: str, kernel: str, params):
    flags = {"foreach": True} if kernel == "foreach" else {"fused": True}
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, **flags)
    return torch.optim.Adam(params, lr=1e-3, **flags)


def build_variants(kind, kernel, shapes, grads, device, k) -> list[Variant]:
    variants = []
    bare_params = make_params(shapes, grads, device)
    bare = make_inner(kind, kernel, bare_params)
    copies = [torch.empty_like(p) for p in bare_params]
    fast = [p.detach() for p in bare_params]

    def two_copies() -> None:  # the memory-traffic floor of a sync
        torch._foreach_copy_(copies, fast)
        torch._foreach_copy_(fast, copies)

    variants.append(Variant("bare", bare.step, two_copies, bare.step))

    ours = Lookahead(make_inner(kind, kernel, make_params(shapes, grads, device)), k=k, alpha=0.5)
    variants.append(Variant("lookbench", ours.step, lambda o=ours: _lookbench_sync(o),
                            ours.inner.step))
    # The same with the fused CPU sync turned off: what a user with fused=False (or without a
    # C++ compiler) gets. On CUDA both are the same foreach path.
    eager = Lookahead(make_inner(kind, kernel, make_params(shapes, grads, device)), k=k,
                      alpha=0.5, fused=False)
    variants.append(Variant("lookbench eager", eager.step, lambda o=eager: _lookbench_sync(o),
                            eager.inner.step))

    try:
        import timm.optim

        timm_la = timm.optim.Lookahead(
            make_inner(kind, kernel, make_params(shapes, grads, device)), alpha=0.5, k=k
        )
        variants.append(Variant("timm", timm_la.step, timm_la.sync_lookahead,
                                timm_la._base_optimizer.step))
    except ImportError:
        pass
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torch_optimizer
        to_la = torch_optimizer.Lookahead(
            make_inner(kind, kernel, make_params(shapes, grads, device)), k=k, alpha=0.5
        )
        variants.append(
            Variant("torch-optimizer", to_la.step,
                    lambda o=to_la: [o._update(g) for g in o.param_groups], to_la.optimizer.step)
        )
    except ImportError:
        pass
    return variants


def _lookbench_sync(opt: Lookahead) -> None:
    with torch.no_grad():
        for group in opt.param_groups:
            opt._outer_update(group)


class CacheFlusher:
    """Evicts the caches, as a training step's forward and backward passes do.

    In training, the optimizer step starts after the forward/backward passes have streamed
    activations through the caches, so its state comes from memory. Timing steps back to back
    instead lets a whole ResNet-18 optimizer state sit in a large last-level cache (hundreds of
    MB on some servers) until Lookahead's extra copy of the weights pushes it out, which
    measures the cache's size, not the optimizer. Writing a buffer twice the size of the
    last-level cache before every timed step removes that artefact for every variant alike.
    """

    def __init__(self, device: torch.device) -> None:
        size = 256 * 2**20
        if device.type == "cuda":
            size = torch.cuda.get_device_properties(device).L2_cache_size
        else:
            try:
                with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:
                    text = f.read().strip()
                size = int(text.rstrip("KMG")) * {"K": 2**10, "M": 2**20, "G": 2**30}.get(
                    text[-1], 1)
            except (OSError, ValueError):
                pass
        self.buffer = torch.empty(2 * size // 4, device=device)  # float32

    def __call__(self) -> None:
        self.buffer.fill_(1.0)


def time_it(fn: Callable[[], object], repeats: int, device: torch.device,
            flush: Callable[[], None] | None = None) -> float:
    """Mean seconds per call of ``fn``; with ``flush``, caches are evicted (untimed) first."""
    total = 0.0
    for _ in range(repeats):
        if flush is not None:
            flush()
        sync_device(device)
        start = time.perf_counter()
        fn()
        sync_device(device)
        total += time.perf_counter() - start
    return total / repeats


LEVEL = 0.95  # of every interval printed
N_BOOT = 2000  # bootstrap resamples
MIN_REPS = 5  # fewer repetitions (syncs, rounds) give no interval: a bootstrap of 2 says little
FEW_ROUNDS = f"too few rounds for an interval ({MIN_REPS} or more)"


def fmt(x: float | None, spec: str = ".2f", scale: float = 1.0) -> str:
    """``x * scale`` formatted; "n/a" where it is missing or not finite, never nan or inf."""
    if x is None or not math.isfinite(x) or not math.isfinite(x * scale):
        return "n/a"
    return format(x * scale, spec)


def fmt_interval(lo: float | None, hi: float | None, spec: str = ".2f",
                 scale: float = 1.0) -> str:
    if lo is None or hi is None or "n/a" in (fmt(lo, spec, scale), fmt(hi, spec, scale)):
        return "[interval n/a]"
    return f"[{fmt(lo, spec, scale)}, {fmt(hi, spec, scale)}]"


class NoNonFinite:
    """The last guard on an output stream: a nan or inf that got past fmt() prints as n/a."""

    TOKEN = re.compile(r"(?<![\w.])[-+]?(?:nan|inf(?:inity)?)(?!\w)", re.IGNORECASE)

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(self.TOKEN.sub("n/a", text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def percentile_interval(boot: np.ndarray) -> tuple[float | None, float | None]:
    boot = boot[np.isfinite(boot)]
    if len(boot) < 10:
        return None, None
    lo, hi = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def paired_ratio(num: np.ndarray, den: np.ndarray, rng: np.random.Generator
                 ) -> tuple[float | None, float | None, float | None]:
    """Median of the per-repetition ratios num/den, with a bootstrap interval over repetitions.

    Rows are repetitions (measured side by side, so each row's ratio is paired); columns, if
    any, are blocks of the same repetition (the configurations, pooled) and are resampled
    together. Rows with a missing or non-positive time are left out. (estimate, lo, hi), None
    where it cannot be computed.
    """
    num, den = np.asarray(num, float), np.asarray(den, float)
    if num.ndim == 1:
        num, den = num[:, None], den[:, None]
    ok = (np.isfinite(num) & np.isfinite(den) & (num > 0) & (den > 0)).all(axis=1)
    ratios = num[ok] / den[ok]
    if ratios.size == 0:
        return None, None, None
    estimate = float(np.median(ratios))
    if len(ratios) < MIN_REPS:
        return estimate, None, None
    picks = rng.integers(0, len(ratios), (N_BOOT, len(ratios)))
    boot = np.median(ratios[picks].reshape(N_BOOT, -1), axis=1)
    return (estimate, *percentile_interval(boot))


def added_per_step(diffs: np.ndarray, k: int) -> np.ndarray:
    """Σ over the cycle's positions of the median (over rounds) paired difference, over k.

    ``diffs`` is (rounds, k), or (resamples, rounds, k) for a bootstrap.
    """
    return np.median(diffs, axis=-2).sum(axis=-1) / k


@dataclass
class Added:
    """One implementation's added cost per step in one configuration, in seconds."""

    estimate: float
    lo: float | None
    hi: float | None
    boot: np.ndarray  # resampled rounds, the same resamples for every variant of a config

    def why_not(self, floor: float | None) -> str | None:
        """Why this added cost is no figure to divide by, or None where it is one."""
        if self.lo is None or self.hi is None:
            return FEW_ROUNDS
        if floor is None:
            return "no noise floor to compare with"
        where = fmt_interval(self.lo, self.hi, ".2f", 1e3)
        if self.hi <= 0:  # a Lookahead step cheaper than its own inner step: noise only
            return f"{LEVEL:.0%} interval {where} ms/step lies below 0"
        if self.lo <= 0:
            return f"{LEVEL:.0%} interval {where} ms/step includes 0"
        if self.estimate <= floor:
            return (f"estimate {fmt(self.estimate, '.2f', 1e3)} ms/step is below the "
                    f"noise floor")
        return None


def main() -> None:
    sys.stdout, sys.stderr = NoNonFinite(sys.stdout), NoNonFinite(sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30,
                        help="interleaved rounds; each times one Lookahead cycle per variant, "
                             "every step paired with an inner step (0: the sync part only)")
    parser.add_argument("--syncs", type=int, default=30,
                        help="repetitions of the syncs; each times every implementation once")
    parser.add_argument("--no-flush", action="store_true",
                        help="time steps back to back, without evicting caches in between")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--inner", choices=["sgd", "adam"], action="append",
                        help="inner optimizer(s) to measure (default: both)")
    parser.add_argument("--kernel", choices=["foreach", "fused"], action="append",
                        help="inner optimizer kernel(s) to measure (default: both)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the random order of the measurements (default: random)")
    args = parser.parse_args()
    if args.rounds < 0 or args.syncs < 1 or args.k < 1:
        parser.error("--rounds must be >= 0, --syncs and --k >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes = resnet18_shapes()
    n_values = sum(s.numel() for s in shapes)
    grads = [torch.randn(s, device=device) * 1e-3 for s in shapes]
    flush = None if args.no_flush else CacheFlusher(device)
    try:
        load_1min = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        load_1min = None
    load = ("" if load_1min is None
            else f"load average {load_1min:.2f} on {os.cpu_count()} CPUs; ")
    busy = load_1min is not None and load_1min > 0.75 * (os.cpu_count() or 1)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; {load}"
          f"ResNet-18 (CIFAR) parameters: {len(shapes)} tensors, {n_values / 1e6:.1f}M values; "
          f"k={args.k}; {args.rounds} rounds of one cycle; {args.syncs} syncs each; "
          f"caches {'not ' if flush is None else ''}evicted before each step")

    configs = [(kind, kernel) for kind in args.inner or ("sgd", "adam")
               for kernel in args.kernel or ("foreach", "fused")]
    suites = {cfg: build_variants(*cfg, shapes, grads, device, args.k) for cfg in configs}
    warmup: dict[str, float] = {}
    for variants in suites.values():  # warm-up: allocate state and slow weights, compile
        for v in variants:
            start = time.perf_counter()
            time_it(v.step, 2 * args.k, device)
            warmup[v.name] = max(warmup.get(v.name, 0.0), time.perf_counter() - start)
    if _fused._compiled:
        print(f"lookbench's sync: fused (torch.compile; first warm-up {warmup['lookbench']:.1f} s, "
              f"of which {warmup['lookbench'] - warmup['lookbench eager']:.1f} s more than eager)")
    else:
        print(f"lookbench's sync: eager foreach ({_fused._broken or 'fused path not taken'})")

    # 1. The sync alone, timed right after an inner step as in training (the weights it reads
    # were just written), against the floor: two multi-tensor copies of the parameters, timed
    # the same way (they are the "sync" of the bare variant). Each repetition times every
    # implementation of every configuration once, in random order: sync_times[i] of two
    # variants were measured side by side, so their ratio is paired.
    syncs = [v for variants in suites.values() for v in variants]

    def sync_repetition() -> None:
        for v in random.sample(syncs, len(syncs)):
            if flush is not None:
                flush()
            v.inner_step()
            v.sync_times.append(time_it(v.sync, 1, device))

    # 2. Added cost per step. Each round times one cycle of k Lookahead steps per variant
    # (variants and configurations in random order), each step paired with one step of its own
    # inner optimizer on the same tensors, timed right before or after it (at random), every
    # step on its own with cold caches. Per position in the cycle, the median over rounds of
    # the paired differences (robust to the spikes of a shared machine); added = Σ medians / k.
    # The same resamples of the rounds give every variant of a configuration its interval and
    # pair the ratios.
    diffs: dict[tuple[tuple[str, str], str], list[list[float]]] = {}

    def step_round() -> None:
        for cfg, variants in random.sample(list(suites.items()), len(suites)):
            for v in random.sample(variants, len(variants)):
                la_row, diff_row = [], []
                for _pos in range(args.k):
                    if random.random() < 0.5:
                        inner = time_it(v.inner_step, 1, device, flush)
                        la = time_it(v.step, 1, device, flush)
                    else:
                        la = time_it(v.step, 1, device, flush)
                        inner = time_it(v.inner_step, 1, device, flush)
                    la_row.append(la)
                    diff_row.append(la - inner)
                v.step_times.append(sum(la_row) / args.k)
                diffs.setdefault((cfg, v.name), []).append(diff_row)

    # The two parts take turns, spread evenly over the run, so a change in the machine's load
    # hits both alike (the message comparing the noise floor with sync / k relies on it).
    schedule = sorted([((i + 0.5) / args.syncs, sync_repetition) for i in range(args.syncs)]
                      + [((i + 0.5) / args.rounds, step_round) for i in range(args.rounds)],
                      key=lambda item: item[0])
    for _, work in schedule:
        work()
    rng = np.random.default_rng(0)
    added: dict[tuple[tuple[str, str], str], Added] = {}
    for cfg, variants in suites.items():
        picks = rng.integers(0, args.rounds, (N_BOOT, args.rounds)) if args.rounds else None
        for v in variants:
            if (cfg, v.name) not in diffs:
                continue
            d = np.array(diffs[(cfg, v.name)])
            boot = added_per_step(d[picks], args.k) if args.rounds >= MIN_REPS else np.array([])
            added[(cfg, v.name)] = Added(float(added_per_step(d, args.k)),
                                         *percentile_interval(boot), boot)

    floor = statistics.median(t for v in syncs if v.name == "bare" for t in v.sync_times)
    if busy:
        print("the machine is busy: timings are inflated and noisy (--threads 1 is less "
              "sensitive to other processes on the cores)")
    print(f"\nsync floor, two foreach copies of the parameters after a step: "
          f"{fmt(floor, '.2f', 1e3)} ms")
    if args.rounds:
        print("added = Lookahead step − its inner optimizer's own step on the same tensors, "
              f"paired step by step (per-position medians over rounds) [{LEVEL:.0%} interval "
              "by resampling rounds]; 'within noise': not above 0 or below the noise floor, "
              "the bare optimizer's step against itself\n")
    else:
        print("added cost per step: not measured (--rounds 0)\n")
    header = (f"{'inner':<14}{'implementation':<17}{'step ms':>9}{'added ms/step':>26}"
              f"{'sync ms':>9}{'sync/floor':>12}")
    print(header)
    print("-" * len(header))
    summary: list[str] = []
    pooled: dict[str, list[list[float]]] = {}  # name -> per config, its sync times
    for cfg, variants in suites.items():
        kind, kernel = cfg
        bare = variants[0]
        base = added.get((cfg, "bare"))
        noise = (max(abs(base.estimate), abs(base.lo), abs(base.hi))
                 if base is not None and base.lo is not None and base.hi is not None else None)
        for v in variants:
            a = added.get((cfg, v.name))
            if a is None:
                cell = "-"
            elif v is bare:
                cell = f"noise floor ±{fmt(noise, '.2f', 1e3)}" if noise is not None else "n/a"
            elif a.why_not(noise) is None:
                cell = f"{fmt(a.estimate, '.3f', 1e3)} {fmt_interval(a.lo, a.hi, '.2f', 1e3)}"
            else:
                cell = "within noise"
            sync = ratio = ""
            pooled.setdefault(v.name, []).append(v.sync_times)
            if v is not bare:
                sync = fmt(statistics.median(v.sync_times), ".2f", 1e3)
                ratio = fmt(paired_ratio(v.sync_times, bare.sync_times, rng)[0])
            step = fmt(statistics.median(v.step_times), ".2f", 1e3) if v.step_times else "-"
            print(f"{kind + ' ' + kernel:<14}{v.name:<17}{step:>9}{cell:>26}{sync:>9}{ratio:>12}")
        print()
        summary.append(f"{kind} {kernel}:")
        summary += sync_lines({v.name: np.array(v.sync_times) for v in variants}, rng)
        summary.append(added_line(cfg, variants, added, noise, args))

    # Every configuration pooled: the sync does not depend on the inner optimizer, so its
    # figures over all configurations, still paired by repetition (resampled as a whole).
    if len(suites) > 1:
        names = [n for n, per_cfg in pooled.items() if len(per_cfg) == len(suites)]
        rows = {n: np.array(pooled[n]).T for n in names}  # (syncs, configs)
        times = ", ".join(f"{n} {fmt(float(np.median(rows[n])), '.2f', 1e3)} ms"
                          for n in names if n != "bare")
        summary.append(f"all {len(suites)} configurations pooled: sync {times}")
        summary += sync_lines(rows, rng)
    print(f"ratios (each with its {LEVEL:.0%} interval, given from {MIN_REPS} repetitions on)")
    for line in summary:
        print(("    " if line.startswith(" ") else "  ") + line.strip())


def sync_lines(times: dict[str, np.ndarray], rng: np.random.Generator) -> list[str]:
    """The paired sync ratios of lookbench (and lookbench eager) against each other one.

    ``times``: implementation name -> its sync times, one row per repetition ("bare": the
    floor).
    """
    others = [n for n in times if n != "bare" and not n.startswith("lookbench")]
    lines = []
    for ours in [n for n in times if n.startswith("lookbench")]:
        parts = []
        for other in others:
            est, lo, hi = paired_ratio(times[ours], times[other], rng)
            parts.append(f"/ {other} = {fmt(est)} {fmt_interval(lo, hi)}")
        if not others:
            parts.append("no other implementation installed (pip install -e '.[bench]')")
        est, lo, hi = paired_ratio(times[ours], times["bare"], rng)
        goal = " (goal <= 1.3)" if ours == "lookbench" else ""
        parts.append(f"/ floor = {fmt(est)} {fmt_interval(lo, hi)}{goal}")
        lines.append(f"   sync, {ours} " + "; ".join(parts))
    return lines


def added_line(cfg, variants, added: dict, noise: float | None, args) -> str:
    """lookbench's added cost per step against the best other one's, or why there is no ratio."""
    if not args.rounds:
        return "   added cost per step: not measured (--rounds 0)"
    others = [v.name for v in variants
              if v.name != "bare" and not v.name.startswith("lookbench")]
    if not others:
        return ("   added cost per step: no other implementation installed "
                "(pip install -e '.[bench]')")
    reasons = {n: added[(cfg, n)].why_not(noise) for n in ["lookbench", *others]}
    unresolved = {n: r for n, r in reasons.items() if r is not None}
    if unresolved:
        head = "   added cost per step, lookbench / best other: no ratio"
        if noise is None:  # too few rounds: nothing to say about the noise
            return (f"{head}, {FEW_ROUNDS}; the sync ratios above measure the part Lookahead "
                    "adds. Goal <= 0.85 not assessed.")
        sync_k = statistics.median(next(v for v in variants if v.name == "lookbench").sync_times)
        return (f"{head}, the noise was too large in this run: "
                + "; ".join(f"{n}: {r}" for n, r in unresolved.items())
                + f" (noise floor ±{fmt(noise, '.2f', 1e3)} ms/step, the bare optimizer's "
                f"step against itself; lookbench's sync / k is {fmt(sync_k / args.k, '.2f', 1e3)}"
                " ms/step). More --rounds or a quieter machine would resolve it; the sync "
                "ratios above measure the part Lookahead adds. Goal <= 0.85 not assessed.")
    best = min(others, key=lambda n: added[(cfg, n)].estimate)
    theirs = added[(cfg, best)]
    parts = []
    for name in ("lookbench", "lookbench eager"):
        mine = added.get((cfg, name))
        if mine is None:
            continue
        why = mine.why_not(noise)
        if why is not None:
            parts.append(f"{name}: no ratio, {why}")
            continue
        ok = theirs.boot > 0
        lo, hi = percentile_interval(mine.boot[ok] / theirs.boot[ok])
        parts.append(f"{name} = {fmt(mine.estimate / theirs.estimate)} {fmt_interval(lo, hi)}")
    return (f"   added cost per step / best other's ({best}, "
            f"{fmt(theirs.estimate, '.3f', 1e3)} ms/step): " + "; ".join(parts)
            + " (goal <= 0.85 for lookbench)")


if __name__ == "__main__":
    main()
