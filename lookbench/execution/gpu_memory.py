"""Several workers on one GPU (``--workers N``), started only as far as its memory holds them.

A worker's memory is not known before it runs (the model, the batch, the optimizer state, a
population's members, cuDNN's workspaces), so it is measured: the first worker on a GPU
starts at once; a further one starts when the memory the workers already there took has
settled and what is left holds one more of them with a margin. If it does not, the run goes
on with the workers it has and says so in one line, instead of every worker on the GPU
failing with an out-of-memory error later.

The free memory is read with ``nvidia-smi`` (the parent process never creates a CUDA context
of its own); where it cannot be read the workers start as asked.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MARGIN = 1.2  # a further worker needs this many times what one took
SETTLE_POLLS = 3  # readings in a row within SETTLE_MIB of each other: the usage has settled
SETTLE_MIB = 64
SETTLE_TIMEOUT_S = 180.0  # after this, decide on the reading there is


def free_mib(gpu: str) -> int | None:
    """Free memory of the GPU with this index, in MiB, or ``None`` if it cannot be read."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits",
                              "-i", gpu], capture_output=True, text=True, timeout=10)
        return int(out.stdout.strip().splitlines()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


@dataclass
class GpuMemoryGate:
    """Decides, GPU by GPU, when the next worker may start (see the module docstring)."""

    free: Callable[[str], int | None] = free_mib
    clock: Callable[[], float] = time.monotonic
    _baseline: dict[str, int | None] = field(default_factory=dict)
    _started: dict[str, int] = field(default_factory=dict)
    _readings: dict[str, list[int]] = field(default_factory=dict)
    _since: dict[str, float] = field(default_factory=dict)

    def started(self, gpu: str) -> None:
        """A worker was started on ``gpu`` (call it right after; the first call also reads
        the memory free before any worker, which must come just before the start)."""
        self._started[gpu] = self._started.get(gpu, 0) + 1
        self._readings[gpu] = []
        self._since[gpu] = self.clock()

    def baseline(self, gpu: str) -> None:
        """Read the free memory before the first worker on ``gpu`` starts."""
        if gpu not in self._baseline:  # (one nvidia-smi call, before the first worker only)
            self._baseline[gpu] = self.free(gpu)

    def decide(self, gpu: str) -> tuple[str, str | None]:
        """``("start", None)``, ``("wait", None)`` or ``("stop", why)`` for the next worker."""
        base = self._baseline.get(gpu)
        now_free = self.free(gpu)
        if base is None or now_free is None:
            return "start", None  # cannot measure: as many as asked
        readings = self._readings.setdefault(gpu, [])
        readings.append(now_free)
        used = base - now_free
        recent = readings[-SETTLE_POLLS:]
        settled = (len(recent) == SETTLE_POLLS and used > 0
                   and max(recent) - min(recent) <= SETTLE_MIB)
        if not settled and self.clock() - self._since.get(gpu, 0.0) < SETTLE_TIMEOUT_S:
            return "wait", None
        need = max(used, 1) / max(1, self._started.get(gpu, 1))
        if now_free >= need * MARGIN:
            return "start", None
        return "stop", (f"GPU {gpu}: {self._started.get(gpu, 0)} worker(s) started; each "
                        f"takes about {need / 1024:.1f} GiB and {now_free / 1024:.1f} GiB is "
                        f"left, so no more start there")
