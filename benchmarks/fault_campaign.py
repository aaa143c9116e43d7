"""A fault campaign: break a real study in every way a hostile user or a flaky cluster would,
let the same command finish it, and check nothing was lost, doubled or changed.

Each try starts from an empty folder, runs ``lookbench run`` on a small digits study, injects
one fault, then re-runs the same command until it says the study is complete (at most three
times), and compares the result with a clean run of the same study made first:

* the trials table holds every planned trial exactly once, with the clean run's state and
  final metric, bit for bit; every trial that trained has its curves;
* what the faulty command exited with (its expected code), and that no command printed a
  Python traceback or more than one line per error;
* the study folder ends without part files, batch files or temporary files (compacted), and
  without checkpoints.

Faults: SIGKILL of the whole process group, of the command alone, of one worker child, SIGTERM
and SIGINT of the command, each at a random moment; two commands on one folder at once; a
deleted or damaged curves file; a damaged checkpoint; a damaged journal (exit 2, nothing
touched); a full disk (a small tmpfs, root only) at a random fill level; two machines with
their own ``--out`` folders sharing a PostgreSQL database, one killed (its whole group) at a
random moment while the other goes on (a throwaway server; skipped where PostgreSQL's server
is not installed): every trial in exactly one of the two folders, the union bit-identical.

Usage: python benchmarks/fault_campaign.py [--tries N] [--seed S] [--only KIND,...]
Prints one row per try and a summary table per fault kind; exits 1 if any try lost, doubled
or changed a result.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as ds

LOOKBENCH = [sys.executable, "-m", "lookbench"]
STUDY = ["digits", "--epochs", "3", "--lr", "0.03,0.1,0.3", "--momentum", "0.9",
         "--k", "5", "--alpha", "0.5,0.8", "--seeds", "2", "--study", "faults"]
TIMEOUT = 600


def run(out: Path, *extra: str, wait: bool = True, env_extra: dict[str, str] | None = None
        ) -> subprocess.Popen | tuple[int, str]:
    cmd = [*LOOKBENCH, "run", *STUDY, "--out", str(out), *extra]
    env = {**os.environ, "LOOKBENCH_COST_SECONDS": "0", "COLUMNS": "120", **(env_extra or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    if not wait:
        return proc
    text, _ = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, text


def table(study: Path | list[Path], name: str):
    studies = study if isinstance(study, list) else [study]
    files = [p for s in studies if (s / name).exists() for p in (s / name).glob("*.parquet")]
    if not files:
        return None
    return ds.dataset([str(p) for p in files], format="parquet").to_table().to_pandas()


def outcome(study: Path | list[Path]) -> dict[str, tuple]:
    trials = table(study, "trials")
    if trials is None:
        return {}
    return {r.trial: (r.state, r.final_test_acc, r.epochs_done) for r in trials.itertuples()}


def check(study: Path | list[Path], clean: dict[str, tuple], texts: list[str]) -> list[str]:
    """What is wrong with ``study`` (or the union of several machines' folders, read as pandas
    would, without lookbench's precedence) against the clean run (empty: nothing)."""
    problems = []
    studies = study if isinstance(study, list) else [study]
    trials = table(studies, "trials")
    if trials is None:
        return ["no trials table"]
    dup = trials["trial"].duplicated().sum()
    if dup:
        problems.append(f"{dup} trials twice")
    got = outcome(study)
    if set(got) != set(clean):
        problems.append(f"{len(set(clean) - set(got))} missing, {len(set(got) - set(clean))} "
                        "extra")
    changed = [t for t in clean if t in got and got[t] != clean[t]]
    if changed:
        problems.append(f"{len(changed)} changed")
    curves = table(studies, "curves")
    trained = set(trials.loc[trials["epochs_done"] > 0, "trial"])
    if trained and (curves is None or not trained <= set(curves["trial"])):
        problems.append("curves missing")
    leftovers = []
    for s in studies:
        leftovers += [p.name for d in ("trials", "curves") for p in (s / d).glob("*")
                      if p.name != "compacted.parquet"] if (s / "trials").exists() else []
        leftovers += [p.name for p in (s / "checkpoints").glob("*")] \
            if (s / "checkpoints").exists() else []
    if leftovers:
        problems.append(f"leftovers {sorted(leftovers)[:3]}")
    for text in texts:
        if "Traceback" in text:
            problems.append("traceback")
            break
        if "already exists with" in text:
            problems.append("a re-run refused")
            break
    return problems


def finish(out: Path, texts: list[str], *extra: str) -> int:
    """Re-run the same command until complete (at most 3 times); the last exit code."""
    code = -1
    for _ in range(3):
        code, text = run(out, *extra)
        texts.append(text)
        if code == 0:
            break
    return code


class Postgres:
    """A throwaway PostgreSQL server on a free port that trusts local connections (written
    here rather than imported from the tests, so the campaign needs no pytest)."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise FileNotFoundError("PostgreSQL's server is not installed")
        self.bin = Path(found[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="lookbench-faults-pg-"))
        self.user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.root, "postgres")
            self.user = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        data = self.root / "data"
        subprocess.run([*self.user, str(self.bin / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres"], check=True, capture_output=True, timeout=120)
        self.ctl = [*self.user, str(self.bin / "pg_ctl"), "-D", str(data)]
        subprocess.run([*self.ctl, "-o", f"-p {self.port} -k {self.root} -c "
                        "listen_addresses=127.0.0.1", "-l", str(self.root / "log"), "-w",
                        "start"], check=True, capture_output=True, timeout=120)

    def new_database(self) -> str:
        name = f"lb_{uuid.uuid4().hex[:10]}"
        subprocess.run([*self.user, str(self.bin / "createdb"), "-h", "127.0.0.1", "-p",
                        str(self.port), "-U", "postgres", name], check=True, timeout=60)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run([*self.ctl, "-m", "immediate", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres | None]:
    try:
        server = Postgres()
    except (FileNotFoundError, subprocess.CalledProcessError):
        yield None
        return
    try:
        yield server
    finally:
        server.stop()


SERVER: Postgres | None = None  # (set by main for the postgres-folders tries)


def children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(x) for x in out.split()]


def kill_at(kind: str, proc: subprocess.Popen, after: float) -> None:
    time.sleep(after)
    if proc.poll() is not None:
        return
    if kind == "kill-group":
        os.killpg(proc.pid, signal.SIGKILL)
    elif kind == "kill-command":
        os.kill(proc.pid, signal.SIGKILL)
    elif kind == "kill-child":
        workers = [c for c in children(proc.pid)]
        if workers:
            os.kill(random.choice(workers), signal.SIGKILL)
    elif kind == "sigterm":
        os.kill(proc.pid, signal.SIGTERM)
    elif kind == "sigint":
        os.kill(proc.pid, signal.SIGINT)


def damage(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + b"\x00garbage" * 8)


def one_try(kind: str, root: Path, clean: dict[str, dict], duration: float
            ) -> tuple[str, str, list[str]]:
    out = root / kind
    shutil.rmtree(out, ignore_errors=True)
    texts: list[str] = []
    first = "-"
    study = out / "faults"
    if kind in ("kill-group", "kill-command", "kill-child", "sigterm", "sigint"):
        extra = ("--workers", "2", "--population", "1") if kind == "kill-child" else ()
        proc = run(out, *extra, wait=False)
        kill_at(kind, proc, random.uniform(0.3, 0.9) * duration)
        text, _ = proc.communicate(timeout=TIMEOUT)
        texts.append(text)
        first = str(proc.returncode)
        if kind == "kill-command":  # its workers end with it (PDEATHSIG): give them a moment
            time.sleep(1.0)
        finish(out, texts, *extra)
    elif kind == "twins":
        a, b = run(out, wait=False), run(out, wait=False)
        for p in (a, b):
            texts.append(p.communicate(timeout=TIMEOUT)[0])
        first = f"{a.returncode},{b.returncode}"
        finish(out, texts)
    elif kind in ("lost-curves", "damaged-curves"):
        texts.append(run(out)[1])
        subprocess.run([*LOOKBENCH, "compact", "--out", str(out)], capture_output=True)
        target = study / "curves" / "compacted.parquet"
        if kind == "lost-curves":
            target.unlink()
        else:
            damage(target)
        code, text = run(out)
        texts.append(text)
        first = str(code)
        if code != 0:
            target.unlink(missing_ok=True)  # as the one-line error advises
            finish(out, texts)
    elif kind == "damaged-checkpoint":
        # (a checkpoint every epoch: the study's trials are shorter than the usual 10 s)
        proc = run(out, "--population", "1", wait=False,
                   env_extra={"LOOKBENCH_CHECKPOINT_EVERY_S": "0"})
        deadline = time.monotonic() + max(duration, 10.0)
        ckpts: list[Path] = []
        while time.monotonic() < deadline and not ckpts and proc.poll() is None:
            ckpts = list((study / "checkpoints").glob("*.pt")) \
                if (study / "checkpoints").exists() else []
            time.sleep(0.05)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=TIMEOUT)
        if not ckpts:
            return kind, "no checkpoint", []  # (the run ended first: nothing to damage)
        for c in ckpts:
            if c.exists():
                damage(c)
        code, text = run(out, "--population", "1")
        texts.append(text)
        first = str(code)
        if code != 0:  # as its one-line error advises
            for c in (study / "checkpoints").glob("*.pt"):
                c.unlink()
            finish(out, texts, "--population", "1")
    elif kind == "damaged-journal":
        texts.append(run(out)[1])
        journal = study / "optuna.journal"
        if not journal.exists():
            return kind, "no journal", ["no journal found"]
        before = outcome(study)
        saved = journal.read_bytes()
        journal.write_bytes(saved[:-40] + b"{not json\n")
        code, text = run(out)
        texts.append(text)
        first = str(code)
        problems = [] if code == 2 and outcome(study) == before else ["damaged journal: "
                                                                       f"exit {code}"]
        if len([ln for ln in text.splitlines() if ln.startswith("error")]) != 1:
            problems.append("not one error line")
        return kind, first, problems
    elif kind == "full-disk":
        if os.geteuid() != 0:
            return kind, "skipped", []
        mount = root / "tmpfs"
        mount.mkdir(exist_ok=True)
        size = random.choice([2, 4, 8, 16])
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}m", "tmpfs", str(mount)],
                       check=True)
        try:
            out = mount / "runs"
            code, text = run(out)
            texts.append(text)
            first = f"{code}@{size}MB"
            # move to a big disk and finish there: nothing recorded may be lost or wrong
            target = root / "full-disk"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(out, target, symlinks=True) if out.exists() else target.mkdir()
        finally:
            subprocess.run(["umount", str(mount)], check=False)
        out, study = target, target / "faults"
        finish(out, texts)
    elif kind == "postgres-folders":
        if SERVER is None:
            return kind, "skipped", []
        url = SERVER.new_database()
        a_out, b_out = out / "a", out / "b"
        # one trial at a time, so the two machines take turns and A has rows when it dies
        db = ("--storage", url, "--population", "1")
        a = run(a_out, *db, wait=False)
        b = run(b_out, *db, wait=False)
        # A dies at a random moment after its first rows (before them it would hold nothing)
        deadline = time.monotonic() + TIMEOUT
        while a.poll() is None and time.monotonic() < deadline and not any(
                (a_out / "faults" / "trials").glob("*.parquet")):
            time.sleep(0.02)
        kill_at("kill-group", a, random.uniform(0.0, 0.5) * duration)
        texts.append(a.communicate(timeout=TIMEOUT)[0])
        texts.append(b.communicate(timeout=TIMEOUT)[0])
        first = f"{a.returncode},{b.returncode}"
        finish(a_out, texts, *db)  # A comes back; B had finished what it could claim
        finish(b_out, texts, *db)
        studies = [o / "faults" for o in (a_out, b_out) if (o / "faults").exists()]
        problems = check(studies, clean["1"], texts)  # ("first": A's, B's exit; each's trials)
        in_a, in_b = (set(outcome(o / "faults")) for o in (a_out, b_out))
        if in_a & in_b:
            problems.append(f"{len(in_a & in_b)} trials in both folders")
        return kind, f"{first} ({len(in_a)}+{len(in_b)})", problems
    one_at_a_time = kind in ("kill-child", "damaged-checkpoint")
    problems = check(study, clean["1" if one_at_a_time else "auto"], texts)
    return kind, first, problems


KINDS = ["kill-group", "kill-command", "kill-child", "sigterm", "sigint", "twins",
         "lost-curves", "damaged-curves", "damaged-checkpoint", "damaged-journal", "full-disk",
         "postgres-folders"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=2, help="tries per fault kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="comma-separated fault kinds")
    args = parser.parse_args()
    random.seed(args.seed)
    kinds = args.only.split(",") if args.only else KINDS
    root = Path(tempfile.mkdtemp(prefix="lookbench-faults-"))
    start = time.monotonic()
    code, text = run(root / "clean")
    duration = time.monotonic() - start
    code1, text1 = run(root / "clean-1", "--population", "1")
    if code != 0 or code1 != 0:
        print(text, text1)
        return 1
    # (one trial at a time is another layout: equal to a population's within float rounding,
    # not bit for bit, so a kill of one worker of --population 1 is held against that)
    clean = {"auto": outcome(root / "clean" / "faults"),
             "1": outcome(root / "clean-1" / "faults")}
    print(f"clean run: {len(clean['auto'])} trials, {duration:.1f} s (exit {code})")
    rows: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    global SERVER
    with contextlib.ExitStack() as stack:
        if "postgres-folders" in kinds:
            SERVER = stack.enter_context(postgres_server())
        for i in range(args.tries):
            for kind in kinds:
                k, first, problems = one_try(kind, root, clean, duration)
                rows[k].append((first, problems))
                print(f"{i + 1:>3} {k:<20} first exit {first:<16} "
                      f"{'ok' if not problems else '; '.join(problems)}", flush=True)
    print()
    print(f"{'fault':<20} {'tries':>5} {'ok':>4}  first exits")
    bad = 0
    for kind in kinds:
        results = rows[kind]
        ok = sum(not p for _, p in results)
        bad += len(results) - ok
        exits = Counter(f for f, _ in results)
        print(f"{kind:<20} {len(results):>5} {ok:>4}  "
              + ", ".join(f"{e}×{n}" for e, n in exits.most_common()))
    shutil.rmtree(root, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
