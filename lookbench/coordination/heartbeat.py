"""How often a worker shows it is alive, and how long a silent trial waits before another
worker takes it over (apart from ``lookbench.coordination.queue``, which imports Optuna: the command
line checks ``--stale-after`` before anything heavy is imported)."""

from __future__ import annotations

import math

HEARTBEAT_S = 15.0
GRACE_S = 120.0
# The shortest --stale-after: four heartbeats. A live worker's trial is taken over only after
# it missed three beats in a row; one beat can be late (a slow or briefly unreachable database,
# a busy process) and two hosts' clocks may differ by seconds, and taking over a live trial
# costs a whole trial's work (the first to commit keeps it; the other's result is discarded).
MIN_GRACE_S = 4 * HEARTBEAT_S


def check_stale_after(seconds: float) -> str | None:
    """Why ``--stale-after`` cannot be ``seconds`` (None if it can): finite, and at least
    :data:`MIN_GRACE_S`."""
    if not math.isfinite(seconds) or seconds < MIN_GRACE_S:
        return (f"--stale-after takes a number of seconds of at least {MIN_GRACE_S:g} (four "
                f"heartbeats of {HEARTBEAT_S:g} s: a live worker must not look dead), got "
                f"{seconds:g}")
    return None
