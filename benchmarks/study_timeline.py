"""Where a study's time goes, as the user waits for it: ``lookbench run`` from its start to
its exit, stage by stage, for populations and one trial at a time, one worker and two.

Each layout runs the README's study (``studies/digits.toml`` by default) in a fresh folder as
a real command (``python -m lookbench run``), with ``LOOKBENCH_TIMELINE`` set so that every
process of the run notes its stages (``lookbench/timeline.py``). Layouts alternate round by
round, so a busy machine slows each alike; the table gives each stage's median time from the
command's start. Below it, per layout: the whole command, the summed compute of its trials
(``wall_s`` in the trials table), and the ratios the
README quotes (the whole command with populations against ``--population 1``; the whole
command against the summed compute; ``wall_s`` of a population member is its share of the
population's time, so the sum is what training took). The load average is printed before and after.

Usage: python benchmarks/study_timeline.py [--rounds 1] [--spec studies/digits.toml]
       [--layouts pop-1w,pop-2w,one-1w,one-2w] [--cost-seconds S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lookbench.timeline import ENV, read  # noqa: E402

LAYOUTS = {  # name: extra options of `lookbench run`
    "pop-1w": ["--workers", "1"],
    "pop-2w": ["--workers", "2"],
    "one-1w": ["--workers", "1", "--population", "1"],
    "one-2w": ["--workers", "2", "--population", "1"],
}
# The stages, in the order a run passes them; "first"/"last" pick among repeated marks.
STAGES = [
    ("cli imported", "first", "typer & the CLI imported"),
    ("study checked", "first", "command line and study checked (no torch yet)"),
    ("engine imported", "first", "torch, Optuna, pyarrow imported"),
    ("definition stored", "first", "study created, definition stored"),
    ("plan queued", "first", "plan queued"),
    ("worker ready", "first", "first worker has the queue"),
    ("worker ready", "second", "second worker has the queue"),
    ("claimed", "first", "first claim"),
    ("population built", "first", "first population built and checked"),
    ("trial built", "first", "first single trial built"),
    ("epoch", "first", "first epoch trained"),
    ("recorded", "first", "first trials recorded"),
    ("recorded", "last", "last trials recorded"),
    ("compacted", "first", "tables compacted"),
    ("cost measured", "first", "Lookahead's cost measured"),
    ("status printed", "first", "summary printed"),
    ("exit", "first", "command exited"),
]


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def one_run(spec: Path, extra: list[str], where: Path, cost_seconds: str | None
            ) -> dict[str, float]:
    """Run the study once; each stage's time (s) from the command's start, plus the whole
    command ("exit") and the summed compute ("compute")."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    timeline = where / "timeline.txt"
    env = {**os.environ, ENV: str(timeline), "COLUMNS": "120"}
    if cost_seconds is not None:
        env["LOOKBENCH_COST_SECONDS"] = cost_seconds
    cmd = [sys.executable, "-m", "lookbench", "run", "--spec", str(spec), "--out",
           str(where / "runs"), *extra]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    end = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    marks = read(timeline)
    times: dict[str, float] = {"exit": end - start}
    pids: dict[str, list[int]] = {}
    for stamp, pid, event in marks:
        name = event.split(" ")[0] if event.startswith("recorded") else event
        t = stamp - start
        if name == "worker ready":
            pids.setdefault(name, [])
            if pid not in pids[name]:
                pids[name].append(pid)
                key = "worker ready/" + ("first" if len(pids[name]) == 1 else "second")
                times.setdefault(key, t)
            continue
        times.setdefault(f"{name}/first", t)
        times[f"{name}/last"] = t
    study = next((where / "runs").iterdir())
    trials = ds.dataset(str(study / "trials"), format="parquet").to_table(
        columns=["wall_s"]).to_pandas()
    # (a population's member records its share of each epoch: the sum is the compute spent)
    times["compute"] = float(trials["wall_s"].sum())
    times["trials"] = float(len(trials))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--spec", type=Path, default=ROOT / "studies" / "digits.toml")
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--cost-seconds", default=None,
                        help="LOOKBENCH_COST_SECONDS for the runs (default: the tool's own)")
    args = parser.parse_args()
    layouts = args.layouts.split(",")
    root = Path(tempfile.mkdtemp(prefix="lookbench-timeline-"))
    print(f"load average before: {load()}; {os.cpu_count()} CPUs; {args.spec.name}; "
          f"{args.rounds} round(s), layouts alternating")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in layouts}
    try:
        for r in range(args.rounds):
            order = layouts[r % len(layouts):] + layouts[:r % len(layouts)]
            for name in order:
                runs[name].append(one_run(args.spec, LAYOUTS[name], root / name,
                                          args.cost_seconds))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average after: {load()}")

    def median(name: str, key: str) -> float | None:
        values = [t[key] for t in runs[name] if key in t]
        return statistics.median(values) if values else None

    width = max(len(label) for *_, label in STAGES)
    print()
    print(f"{'seconds from the command start':<{width}}  " + "  ".join(f"{n:>7}" for n in layouts))
    for event, which, label in STAGES:
        key = "exit" if event == "exit" else f"{event}/{which}"
        cells = [median(n, key) for n in layouts]
        if all(c is None for c in cells):
            continue
        print(f"{label:<{width}}  " + "  ".join(f"{c:7.2f}" if c is not None else f"{'-':>7}"
                                                  for c in cells))
    print(f"{'summed compute of the trials':<{width}}  "
          + "  ".join(f"{median(n, 'compute'):7.2f}" for n in layouts))
    print()
    for n in layouts:
        whole, compute = median(n, "exit"), median(n, "compute")
        print(f"{n}: whole command {whole:.2f} s = {whole / compute:.2f}× its summed compute "
              f"({compute:.2f} s, {int(median(n, 'trials'))} trials)")
    pairs = [(p, o) for p, o in (("pop-1w", "one-1w"), ("pop-2w", "one-2w"))
             if p in runs and o in runs]
    for pop, one in pairs:
        ratios = [b["exit"] / a["exit"] for a, b in zip(runs[pop], runs[one])]
        print(f"whole command, {one} / {pop}: {statistics.median(ratios):.2f}× "
              f"(per round: {', '.join(f'{x:.2f}' for x in ratios)})")
    if "pop-1w" in runs and "pop-2w" in runs:
        ratios = [a["exit"] / b["exit"] for a, b in zip(runs["pop-1w"], runs["pop-2w"])]
        print(f"whole command, pop-1w / pop-2w (what a second worker gains): "
              f"{statistics.median(ratios):.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
