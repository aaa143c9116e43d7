"""What Lookahead costs per optimizer step, against the other Lookahead implementations.

On ResNet-18's parameter list (CIFAR stem: 62 tensors, 11.2M values) with fixed random
gradients, this times, interleaved in one run so machine noise hits all alike, and with the
caches evicted before every timed step as a training step's forward and backward passes would
(``--no-flush`` turns that off):

* the bare inner optimizer (SGD with momentum, Adam; foreach and fused kernels), and
  Lookahead(k) around it from lookbench, timm and torch-optimizer (the ``bench`` extra; each is
  skipped if not installed). The *added cost per step* is the Lookahead step time minus the
  time of its own inner optimizer's step on the same tensors: each round times one cycle of
  k steps of each, every step alone, and the medians per position in the cycle are summed
  (for "bare" the same difference shows the noise level).
* the sync itself (the outer update) of each implementation, right after an inner step as in
  training, against the memory-traffic floor: two plain multi-tensor copies of the parameters,
  timed the same way.

It prints the ratios the project's goals are stated in:
  lookbench added cost / best other implementation's added cost   (goal <= 0.85)
  lookbench sync / two foreach copies                              (goal <= 1.3)

Usage: python benchmarks/optimizer_overhead.py [--rounds 30] [--syncs 30] [--k 5]
       [--inner sgd|adam ...] [--kernel foreach|fused ...] [--threads N] [--no-flush]
"""

from __future__ import annotations

import argparse
import random
import statistics
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
                text = open("/sys/devices/system/cpu/cpu0/cache/index3/size").read().strip()
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


def time_steps(fn: Callable[[], object], n: int, device: torch.device,
               flush: Callable[[], None] | None) -> list[float]:
    """Seconds of each of ``n`` consecutive calls, caches evicted (untimed) before each."""
    return [time_it(fn, 1, device, flush) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30,
                        help="interleaved rounds; each times one Lookahead cycle per variant")
    parser.add_argument("--syncs", type=int, default=30, help="timings of each sync")
    parser.add_argument("--no-flush", action="store_true",
                        help="time steps back to back, without evicting caches in between")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--inner", choices=["sgd", "adam"], action="append",
                        help="inner optimizer(s) to measure (default: both)")
    parser.add_argument("--kernel", choices=["foreach", "fused"], action="append",
                        help="inner optimizer kernel(s) to measure (default: both)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes = resnet18_shapes()
    n_values = sum(s.numel() for s in shapes)
    grads = [torch.randn(s, device=device) * 1e-3 for s in shapes]
    flush = None if args.no_flush else CacheFlusher(device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
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

    # 1. Added cost per step. Each round times one cycle of k Lookahead steps and k steps of
    # its own inner optimizer on the same tensors (in random order), every step on its own
    # with cold caches. Per position in the cycle the median over rounds is taken (robust to
    # the spikes of a shared machine); added = (Σ medians of Lookahead − Σ medians of the
    # inner steps) / k. Its spread comes from resampling the rounds.
    per_pos: dict[tuple[tuple[str, str], str], tuple[list[list[float]], list[list[float]]]] = {}
    for _ in range(args.rounds):
        for cfg, variants in random.sample(list(suites.items()), len(suites)):
            for v in random.sample(variants, len(variants)):
                la_rows, inner_rows = per_pos.setdefault((cfg, v.name), ([], []))
                if random.random() < 0.5:
                    inner_rows.append(time_steps(v.inner_step, args.k, device, flush))
                    la_rows.append(time_steps(v.step, args.k, device, flush))
                else:
                    la_rows.append(time_steps(v.step, args.k, device, flush))
                    inner_rows.append(time_steps(v.inner_step, args.k, device, flush))
    added_stats: dict[tuple[tuple[str, str], str], tuple[float, float, float]] = {}
    for key, (la_rows, inner_rows) in per_pos.items():
        la, inner = np.array(la_rows), np.array(inner_rows)
        estimate = (np.median(la, axis=0).sum() - np.median(inner, axis=0).sum()) / args.k
        rng = np.random.default_rng(0)
        boot = []
        for _ in range(200):
            pick = rng.integers(0, len(la), len(la))
            boot.append((np.median(la[pick], axis=0).sum()
                         - np.median(inner[pick], axis=0).sum()) / args.k)
        added_stats[key] = (float(np.quantile(boot, 0.25)), float(estimate),
                            float(np.quantile(boot, 0.75)))
        name = key[1]
        variant = next(v for v in suites[key[0]] if v.name == name)
        variant.step_times.append(float(np.median(la, axis=0).sum() / args.k))

    # 2. The sync alone, timed right after an inner step as in training (the weights it reads
    # were just written), against the floor: two multi-tensor copies of the parameters, timed
    # the same way (they are the "sync" of the bare variant).
    syncs = [v for variants in suites.values() for v in variants]
    for _ in range(args.syncs):
        for v in random.sample(syncs, len(syncs)):
            if flush is not None:
                flush()
            v.inner_step()
            v.sync_times.append(time_it(v.sync, 1, device))
    floor = statistics.median(v.sync_times[i] for v in syncs if v.name == "bare"
                              for i in range(len(v.sync_times)))
    print(f"\nsync floor, two foreach copies of the parameters after a step: {floor * 1e3:.2f} ms")
    print("added = Lookahead step − its inner optimizer's own step on the same tensors "
          "(per-position medians over rounds) [interquartile range by resampling rounds]\n")
    header = (f"{'inner':<14}{'implementation':<17}{'step ms':>9}{'added ms/step':>24}"
              f"{'sync ms':>9}{'sync/floor':>12}")
    print(header)
    print("-" * len(header))
    summary = []
    for (kind, kernel), variants in suites.items():
        bare = variants[0]
        added = {}
        for v in variants:
            # For "bare" the same difference measures nothing but noise: a reference.
            q1, added[v.name], q3 = added_stats[((kind, kernel), v.name)]
            cell = f"{added[v.name] * 1e3:.3f} [{q1 * 1e3:.2f}, {q3 * 1e3:.2f}]"
            sync = ratio = ""
            if v is not bare:
                sync = f"{statistics.median(v.sync_times) * 1e3:.2f}"
                ratio = f"{statistics.median(v.sync_times) / floor:.2f}"
            print(f"{kind + ' ' + kernel:<14}{v.name:<17}"
                  f"{statistics.median(v.step_times) * 1e3:9.2f}{cell:>24}{sync:>9}{ratio:>12}")
        print()
        ours = next(v for v in variants if v.name == "lookbench")
        sync_ratio = statistics.median(ours.sync_times) / floor
        others = {n: a for n, a in added.items() if n != "bare" and not n.startswith("lookbench")}
        if others:
            best = min(others, key=others.get)
            scale = 1 / others[best] if others[best] > 0 else float("nan")
            ratio, eager_ratio = added["lookbench"] * scale, added["lookbench eager"] * scale
            summary.append(f"{kind} {kernel}: added cost per step, lookbench / best other "
                           f"({best}) = {ratio:.2f} (goal <= 0.85; with fused=False "
                           f"{eager_ratio:.2f}); sync / floor = {sync_ratio:.2f} (goal <= 1.3)")
        else:
            summary.append(f"{kind} {kernel}: no other implementation installed "
                           f"(pip install -e '.[bench]'); sync / floor = {sync_ratio:.2f} "
                           f"(goal <= 1.3)")
    print("ratios")
    for line in summary:
        print("  " + line)


if __name__ == "__main__":
    main()
