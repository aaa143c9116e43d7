"""What lookbench's training loop costs over a bare forward/backward/step.

Trains the CIFAR ResNet-18 (or ``--model resnet20``) two ways, interleaved in one run:

* **lookbench**: ``Trial.train_epoch()`` — the shared trial runner with the device-side data
  pipeline (random crop + flip + normalise per batch, on the device), divergence tracking and
  the learning-rate schedule, on a synthetic data set written in the official CIFAR-10 pickle
  layout and read by lookbench's own loader;
* **bare**: the same model, initialisation and optimizer in a plain loop over batches that
  were prepared (augmented, normalised) before timing: only forward, backward and step.

It prints images per second of each and the loop's overhead (goal: at most 5% over bare).
Usage: python benchmarks/train_step.py [--model resnet18|resnet20] [--steps 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lookbench.execution.trial import Trial, resolve_device
from lookbench.study.config import TrialConfig
from lookbench.tasks.cifar_data import write_synthetic_cifar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["resnet18", "resnet20"], default="resnet18")
    parser.add_argument("--steps", type=int, default=6, help="steps per timing")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    bs = args.batch_size
    n_images = bs * args.steps

    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_cifar(Path(tmp), "cifar10", n_train=n_images, n_test=bs, seed=0)
        config = TrialConfig(task="cifar10", optimizer="sgd", lr=0.05, momentum=0.9,
                             weight_decay=5e-4, epochs=1000, batch_size=bs, schedule="step",
                             task_options={"model": args.model})
        trial = Trial(config, device, data_dir=Path(tmp))

        # The bare loop: same architecture and initialisation, batches prepared in advance.
        from lookbench.tasks.models import build_model

        torch.manual_seed(0)
        bare_model = build_model(args.model, 10).to(device)
        bare_model.load_state_dict(trial.workload.model.state_dict())
        if trial.workload.channels_last and device.type == "cuda":
            bare_model.to(memory_format=torch.channels_last)
        bare_opt = torch.optim.SGD(bare_model.parameters(), lr=0.05, momentum=0.9,
                                   weight_decay=5e-4)
        gen = torch.Generator(device=device).manual_seed(0)
        batches = list(trial.workload.train_batches(0, gen))
        autocast = trial._autocast

        def bare_epoch() -> None:
            bare_model.train()
            for x, y in batches:
                bare_opt.zero_grad(set_to_none=True)
                with autocast():
                    loss = torch.nn.functional.cross_entropy(bare_model(x), y)
                loss.backward()
                bare_opt.step()

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        def timed(fn) -> float:
            sync()
            start = time.perf_counter()
            fn()
            sync()
            return time.perf_counter() - start

        timed(bare_epoch)  # warm-up (allocator, kernels)
        timed(trial.train_epoch)
        ours, bare = [], []
        for r in range(args.rounds):
            pair = [("lookbench", trial.train_epoch), ("bare", bare_epoch)]
            for name, fn in pair if r % 2 == 0 else pair[::-1]:
                (ours if name == "lookbench" else bare).append(timed(fn))

    t_ours, t_bare = statistics.median(ours), statistics.median(bare)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"{args.model}, batch {bs}, {args.steps} steps per timing, {args.rounds} rounds")
    print(f"  lookbench loop: {n_images / t_ours:10.1f} images/s")
    print(f"  bare loop     : {n_images / t_bare:10.1f} images/s")
    overhead = t_ours / t_bare - 1
    if overhead < 0:  # a cost cannot be negative: the machine's noise exceeded it
        print(f"overhead of lookbench's loop: within the noise (measured {overhead:+.1%}: the "
              f"bare loop was the slower this time; goal <= +5%)")
    else:
        print(f"overhead of lookbench's loop: {overhead:+.1%} (goal <= +5%)")


if __name__ == "__main__":
    main()
