"""What lookbench's study engine costs per trial, beyond the trial itself.

A 1,000-trial study on the analytic noisy quadratic (every trial computes the paper's expected
dynamics in well under a millisecond, so nearly all of the time is the engine's): lookbench's
engine with the default journal storage, one worker in the command's process (claiming trials
from Optuna's storage, several at a time when they are this short; heartbeats; per-epoch
progress; finished trials recorded together in atomic Parquet batch files and one journal
append; the compaction at the end) against a plain Python loop calling the same trial
function on the same 1,000 configurations. Run one after the other, twice, in one process.
Goal (issue 15): engine overhead below 5 ms per trial.

Usage: python benchmarks/engine_overhead.py [--trials 1000]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from status_report_timing import engine_spec  # (benchmarks/ is on the path when run)

from lookbench.execution.engine import run_study
from lookbench.execution.trial import run_trial
from lookbench.study.spec import plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials (even)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    spec = engine_spec(args.trials, None)  # (the same study status_report_timing uses)
    configs = plan(spec)
    n = len(configs)
    engine_s, loop_s = [], []
    for r in range(args.rounds):
        start = time.perf_counter()
        for config in configs:
            run_trial(config, "cpu")
        loop_s.append(time.perf_counter() - start)

        with tempfile.TemporaryDirectory() as tmp:
            console = Console(file=io.StringIO())  # progress drawn, not shown
            start = time.perf_counter()
            result = run_study(spec.model_copy(update={"name": f"overhead{r}"}), out=Path(tmp),
                               storage_url=None, devices="cpu", workers=1, data_dir=None,
                               console=console)
            engine_s.append(time.perf_counter() - start)
            assert result.recorded == n, (result.recorded, n)

    loop, engine = statistics.median(loop_s), statistics.median(engine_s)
    print(f"{n} trials (analytic NQM, 10 epochs each), journal storage, 1 worker")
    print(f"  plain loop : {loop:7.2f} s  ({loop / n * 1e3:6.2f} ms per trial)")
    print(f"  engine     : {engine:7.2f} s  ({engine / n * 1e3:6.2f} ms per trial)")
    overhead = (engine - loop) / n * 1e3
    print(f"engine overhead: {max(overhead, 0.0):.2f} ms per trial (goal < 5 ms)")


if __name__ == "__main__":
    main()
