"""How lookbench's own costs grow with a study's size: the engine per trial, and the wall time
of ``lookbench status`` and ``lookbench report``.

For each size (100, 1,000 and 5,000 trials by default), in one run:

- engine: an analytic noisy-quadratic study of that many trials run by lookbench's engine
  (journal storage, one worker in the command's process), minus a plain loop calling the same
  trial function on the same configurations: the engine's own cost per trial (goal: under
  5 ms at any size);
- store: the results store's share of it at that size, one ``write_trial`` and one
  ``recorded()`` per trial (what a worker does for each trial it finishes);
- status/report: a synthetic study of that many trials (a Lookahead lr × k × α grid and an SGD
  lr × momentum grid, two seeds, ten epochs of curves per trial), written with the store's own
  writer (rows from ``lookbench.execution.records``, ``StudyResults.write_trial``), then
  ``python -m lookbench status`` and ``python -m lookbench report`` timed as a user runs them
  (a new process each: start-up included); with one part file per trial, and again after
  ``StudyResults.compact()`` where the store has it. The report's time in-process is split
  into reading the tables, the analysis (``lookbench.comparison.metrics``/``matched``) and the
  page.

Usage: python benchmarks/status_report_timing.py [--sizes 100,1000,5000] [--skip-engine]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from lookbench.results import StudyResults
from lookbench.study.spec import StudySpec, load_spec, lookbench_id, plan


def engine_spec(n: int, name: str | None) -> StudySpec:
    """engine_overhead.py's study: Lookahead 10 lr × 5 k × (n/100) α; SGD n/2 lrs."""
    half = n // 2
    n_alpha = max(1, half // 50)
    lrs = [float(x) for x in np.geomspace(1e-3, 1.5, 10)]
    grid = {
        "lookahead": {"lr": lrs, "momentum": [0.0], "k": [1, 2, 4, 5, 10],
                      "alpha": [float(a) for a in np.linspace(0.05, 1.0, n_alpha)]},
        "sgd": {"lr": [float(x) for x in np.geomspace(1e-4, 1.5, half)], "momentum": [0.0]},
    }
    return load_spec(None, task="nqm", task_options={"analytic": True}, epochs=10, grid=grid,
                     name=name, allow_large=True)


def engine_cost(n: int, out: Path) -> tuple[int, tuple[float, float], tuple[float, float],
                                            Path]:
    """(trials, plain loop (wall s, CPU s), engine (wall s, CPU s), the study) for an analytic
    NQM study of ``n`` trials under ``out``. (CPU: this process's, every thread's.)"""
    from rich.console import Console

    from lookbench.execution.engine import run_study
    from lookbench.execution.trial import run_trial

    spec = engine_spec(n, f"engine{n}")
    configs = plan(spec)
    start, cpu = time.perf_counter(), time.process_time()
    for config in configs:
        run_trial(config, "cpu")
    loop = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    result = run_study(spec, out=out, storage_url=None, devices="cpu", workers=1,
                       data_dir=None, console=Console(file=io.StringIO()))
    engine = time.perf_counter() - start, time.process_time() - cpu
    assert result.recorded == len(configs), (result.recorded, len(configs))
    return len(configs), loop, engine, out / spec.study_name


def synthetic_spec(n: int, name: str) -> StudySpec:
    """About ``n`` trials, two seeds: Lookahead lr × k × α and SGD lr × momentum, n/4
    configurations each (momentum 0 shared, so the report has a matched comparison)."""
    n_lr = 5 if n < 500 else 10
    per = max(1, n // 4)
    lrs = [float(x) for x in np.geomspace(1e-3, 1.0, n_lr)]
    n_alpha = max(1, round(per / (n_lr * 5)))
    n_mom = max(1, round(per / n_lr))
    alphas = sorted({0.5, *(round(float(a), 4) for a in np.linspace(0.1, 1.0, n_alpha))})
    alphas = alphas[:n_alpha] if n_alpha > 1 else [0.5]
    grid = {
        "lookahead": {"lr": lrs, "momentum": [0.0], "k": [1, 2, 5, 10, 20], "alpha": alphas},
        "sgd": {"lr": lrs, "momentum": [round(float(m), 4)
                                        for m in np.linspace(0.0, 0.95, n_mom)]},
    }
    return load_spec(None, task="digits", epochs=10, seeds=2, grid=grid, name=name,
                     allow_large=True)


def _noise(trial: str) -> float:
    return int.from_bytes(hashlib.sha256(trial.encode()).digest()[:4], "little") / 2**32 - 0.5


def write_synthetic(out: Path, n: int) -> tuple[Path, int]:
    """A synthetic study of about ``n`` trials under ``out``; returns its folder and size."""
    from lookbench.execution.records import curve_rows, trial_row
    from lookbench.execution.trial import EpochRecord
    from lookbench.study.definition import write_file

    spec = synthetic_spec(n, f"synthetic{n}")
    study = out / spec.study_name
    write_file(study, spec)
    results = StudyResults(study)
    configs = plan(spec)
    for c in configs:
        tid = lookbench_id(c)
        k, alpha = c.k or 5, c.alpha if isinstance(c.alpha, float) else 0.5
        final = (0.97 - 0.04 * (math.log10(c.lr) + 1.3) ** 2 - 0.004 * abs(k - 5) / 5
                 - 0.03 * (alpha - 0.6) ** 2 - 0.03 * (c.momentum or 0) ** 4
                 + 0.01 * _noise(tid) + 0.002 * c.seed)
        final = min(max(final, 0.05), 0.999)
        diverge_at = 3 if c.lr >= 1.0 and (c.optimizer == "sgd" or alpha >= 0.8) else None
        records = []
        for e in range(1, (diverge_at or 10) + 1):
            bad = e == diverge_at
            acc = final * (1 - 0.5 ** e)
            records.append(EpochRecord(
                epoch=e, train_loss=math.nan if bad else 1.2 - acc,
                test_loss=math.nan if bad else 1.25 - acc, test_acc=None if bad else acc,
                train_eval_loss=None, lr=c.lr, steps=50 * e, wall_s=0.4 * e, diverged=bad))
        row = trial_row(study=spec.study_name, trial=tid, config=c, metric="test_acc",
                        higher_is_better=True, batch_size=64, schedule="constant",
                        records=records, device="cpu", resumes=0)
        results.write_trial(row, curve_rows(tid, records))
    return study, len(configs)


def store_cost(study: Path, extra: int = 20) -> float:
    """ms per trial of what a worker asks the store per finished trial (``write_trial`` and
    ``recorded()``), at the study's size (``extra`` more trials are added)."""
    results = StudyResults(study)
    results.recorded()  # (a long-lived worker's store has listed the study once)
    row = results.trials().slice(0, 1).to_pylist()[0]
    curves = results.curves()
    curve = curves.filter(pc.equal(curves["trial"], row["trial"])).to_pylist()
    start = time.perf_counter()
    for i in range(extra):
        tid = f"extra{i:04d}-{time.monotonic_ns()}"
        results.write_trial({**row, "trial": tid}, [{**r, "trial": tid} for r in curve])
        assert tid in results.recorded()
    return (time.perf_counter() - start) / extra * 1e3


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of a command, start-up included."""
    env = {**os.environ, "COLUMNS": "200"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def report_parts(study: Path) -> tuple[float, float, float]:
    """In-process seconds of the report's stages: read tables, analysis, page (+json, csv)."""
    import json

    from lookbench.report import _json_value, load_study, page, verdict
    from lookbench.report.analysis import analysis_of

    start = time.perf_counter()
    data = load_study(study)
    read = time.perf_counter() - start
    start = time.perf_counter()
    analysis = analysis_of(data)
    analyse = time.perf_counter() - start
    start = time.perf_counter()
    page.study_page(data)
    json.dumps(verdict.summary(analysis, data), default=_json_value)
    page.config_frame(data).to_csv(index=False)
    return read, analyse, time.perf_counter() - start


def measure_study(study: Path, out: Path, store: bool = True) -> dict[str, float]:
    py = [sys.executable, "-m", "lookbench"]
    status, status_cpu = timed([*py, "status", "--out", str(study.parent), study.name])
    report, report_cpu = timed([*py, "report", "--runs", str(study.parent), study.name,
                                "--out", str(out / "reports")])
    read, analyse, page = report_parts(study)
    return {"status": status, "status_cpu": status_cpu, "report": report,
            "report_cpu": report_cpu, "read": read, "analysis": analyse, "page": page,
            "store_ms": store_cost(study) if store else math.nan}


def _line(what: str, m: dict[str, float]) -> str:
    return (f"{what}: status {m['status']:6.2f} s (CPU {m['status_cpu']:5.2f} s), report "
            f"{m['report']:6.2f} s (CPU {m['report_cpu']:5.2f} s; in-process: read "
            f"{m['read']:5.2f} s, analysis {m['analysis']:5.2f} s, page {m['page']:5.2f} s)"
            + (f"; store {m['store_ms']:5.2f} ms per trial" if not math.isnan(m["store_ms"])
               else ""))


def _both(study: Path, tmp: Path, store: bool) -> dict[str, dict[str, float]]:
    """The study measured with its part files, then compacted (where the store can)."""
    out = {"parts": measure_study(study, tmp, store)}
    if hasattr(StudyResults, "compact"):
        start = time.perf_counter()
        StudyResults(study).compact()
        out["compact"] = {"s": time.perf_counter() - start}
        out["compacted"] = measure_study(study, tmp, store)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--skip-report", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    engine: dict[int, tuple[int, tuple[float, float], tuple[float, float]]] = {}
    studies: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            if not args.skip_engine:
                trials, loop, eng, made = engine_cost(n, tmp / "engine")
                engine[n] = (trials, loop, eng)
                print(f"engine {trials:5d} trials: plain loop {loop[0]:6.2f} s, engine "
                      f"{eng[0]:7.2f} s (CPU {eng[1]:7.2f} s), own cost "
                      f"{(eng[0] - loop[0]) / trials * 1e3:6.2f} ms per trial (CPU "
                      f"{(eng[1] - loop[1]) / trials * 1e3:6.2f} ms)", flush=True)
                if not args.skip_report:
                    studies["nqm (engine)", trials] = _both(made, tmp, store=False)
            if not args.skip_report:
                start = time.perf_counter()
                made, trials = write_synthetic(tmp / "synthetic", n)
                print(f"(synthetic study of {trials} trials written in "
                      f"{time.perf_counter() - start:.1f} s)", flush=True)
                studies["synthetic", trials] = _both(made, tmp, store=True)
            for (kind, trials), layouts in studies.items():
                if trials == n or kind == "synthetic" and abs(trials - n) < n // 10 + 1:
                    for layout in ("parts", "compacted"):
                        if layout in layouts and not layouts[layout].get("shown"):
                            print("  " + _line(f"{kind}, {trials} trials, {layout}",
                                               layouts[layout]), flush=True)
                            layouts[layout]["shown"] = 1.0
    print()
    print("summary (one run; wall times on a shared machine, CPU times beside them)")
    if engine:
        per = {n: [(e[i] - lp[i]) / t * 1e3 for i in (0, 1)]
               for n, (t, lp, e) in engine.items()}
        for n, (trials, loop, eng) in engine.items():
            print(f"  engine own cost, {trials:5d} trials: {per[n][0]:6.2f} ms per trial (CPU "
                  f"{per[n][1]:6.2f} ms; goal < 5 ms)")
        small, large = min(engine), max(engine)
        if small != large:
            print(f"  engine own cost per trial, {engine[large][0]} ÷ {engine[small][0]} trials: "
                  f"{per[large][0] / per[small][0]:.2f}× (CPU "
                  f"{per[large][1] / per[small][1]:.2f}×)")
    for (kind, trials), layouts in studies.items():
        for layout in ("parts", "compacted"):
            if layout in layouts:
                print("  " + _line(f"{kind}, {trials:5d} trials, {layout:9s}", layouts[layout]))
        if "compact" in layouts:
            p, c = layouts["parts"], layouts["compacted"]
            print(f"    compacted in {layouts['compact']['s']:.2f} s "
                  f"({layouts['compact']['s'] / trials * 1e3:.2f} ms per trial; by the process "
                  f"that wrote the parts); part files ÷ compacted: "
                  f"status {p['status'] / c['status']:.1f}×, report "
                  f"{p['report'] / c['report']:.1f}×, read {p['read'] / c['read']:.1f}×")


if __name__ == "__main__":
    main()
