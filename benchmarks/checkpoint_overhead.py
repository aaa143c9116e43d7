"""How long a trial's training stops for its per-epoch checkpoint: background vs in-line.

On ResNet-18 (CIFAR-100 head) with Lookahead(SGD, momentum) state (weights, momentum, slow
weights: about 135 MB), this times, interleaved in one run, the time the training thread is
blocked by

* an in-line checkpoint: ``save_checkpoint`` (``torch.save`` + fsync + atomic rename), which is
  how a worker wrote checkpoints before ``CheckpointWriter``;
* a background checkpoint: ``CheckpointWriter.submit`` (a CPU snapshot of every tensor), with
  the previous write finished, as it is when an epoch takes longer than a write.

It also reports the time until the background write is on disk, and prints the ratio
blocked(background) / blocked(in-line), the share of checkpoint time a trial no longer pays.

Usage: python benchmarks/checkpoint_overhead.py [--rounds 8] [--dir PATH]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from lookbench.execution.checkpoints import CheckpointWriter, save_checkpoint
from lookbench.optim import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to write (default: a temporary folder on this disk)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = torchvision.models.resnet18(num_classes=100).to(device)
    opt = build("lookahead", model.parameters(), inner="sgd", lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # creates the momentum buffers and slow weights

    def state() -> dict:
        return {"trial": {"model": model.state_dict(), "optimizer": opt.state_dict()},
                "resumes": 0}

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        inline_path, background_path = Path(tmp) / "inline.pt", Path(tmp) / "background.pt"
        save_checkpoint(inline_path, state())  # warm-up
        size_mb = inline_path.stat().st_size / 1e6
        inline, blocked, landed = [], [], []
        writer = CheckpointWriter()
        for _ in range(args.rounds):
            for kind in random.sample(["inline", "background"], 2):
                if kind == "inline":
                    start = time.perf_counter()
                    save_checkpoint(inline_path, state())
                    inline.append(time.perf_counter() - start)
                else:
                    start = time.perf_counter()
                    writer.submit(background_path, state())
                    blocked.append(time.perf_counter() - start)
                    writer.wait()
                    landed.append(time.perf_counter() - start)
    print(f"device {device}; checkpoint {size_mb:.0f} MB; {args.rounds} interleaved rounds")
    print(f"in-line save (training blocked):        {statistics.median(inline) * 1e3:8.1f} ms")
    print(f"background submit (training blocked):   {statistics.median(blocked) * 1e3:8.1f} ms")
    print(f"background submit until on disk:        {statistics.median(landed) * 1e3:8.1f} ms")
    ratio = statistics.median(blocked) / statistics.median(inline)
    print(f"ratio blocked background / in-line = {ratio:.2f}")


if __name__ == "__main__":
    main()
