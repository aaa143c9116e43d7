"""How fast lookbench answers what needs no training: bad input, ``tasks``, ``status`` of a
compacted study, ``--help`` of each command, as a user waits for them (a new process each,
start-up included: ``python -m lookbench ...``).

Each command runs ``--repeats`` times, the commands interleaved round by round so that a change
in the machine's load hits them alike; the median and the spread (min–max) are printed, with
the load before and after, and beside them ``python -c "import torch"`` timed the same way: the
cost an answer does not pay when nothing heavy is imported. On a busy machine the spread says
how far to trust the medians.

Usage: python benchmarks/answer_timing.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands(runs: Path, bad_spec: Path) -> dict[str, list[str]]:
    lb = [sys.executable, "-m", "lookbench"]
    return {
        "run digit (unknown task)": [*lb, "run", "digit"],
        "run digits --alpha 2": [*lb, "run", "digits", "--alpha", "2"],
        "run cifar100 --alpha 2": [*lb, "run", "cifar100", "--alpha", "2"],
        "run --spec (malformed file)": [*lb, "run", "--spec", str(bad_spec)],
        "run ptb --data-dir (no corpus)": [*lb, "run", "ptb", "--data-dir", str(runs)],
        "tasks": [*lb, "tasks"],
        "status (compacted study)": [*lb, "status", "--runs", str(runs)],
        "--help": [*lb, "--help"],
        "run --help": [*lb, "run", "--help"],
        "report --help": [*lb, "report", "--help"],
        "(python -c 'import torch')": [sys.executable, "-c", "import torch"],
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        bad_spec = Path(tmp) / "bad.toml"
        bad_spec.write_text('task = "digits"\nseeds = [\n')
        study = [sys.executable, "-m", "lookbench", "run", "digits", "--lr", "0.1,0.3", "--k",
                 "5", "--alpha", "0.5", "--epochs", "1", "--seeds", "1", "--runs", str(runs)]
        subprocess.run(study, cwd=tmp, capture_output=True, check=True)  # (ends compacted)
        todo = commands(runs, bad_spec)
        print(f"load average before: {load()}; {os.cpu_count()} CPUs; {args.repeats} "
              f"repeats, commands interleaved")
        seconds: dict[str, list[float]] = {name: [] for name in todo}
        for _ in range(args.repeats):
            for name, cmd in todo.items():
                start = time.perf_counter()
                subprocess.run(cmd, cwd=tmp, capture_output=True)
                seconds[name].append(time.perf_counter() - start)
        print(f"load average after: {load()}\n")
        width = max(map(len, todo))
        print(f"{'command':<{width}}  median s   min–max s")
        for name, times in seconds.items():
            print(f"{name:<{width}}  {statistics.median(times):8.2f}   "
                  f"{min(times):.2f}–{max(times):.2f}")


if __name__ == "__main__":
    main()
