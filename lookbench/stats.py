"""Distribution-free intervals over seeds (or timing rounds), and the planning arithmetic that
says how many would decide.

Why order statistics and not a t-interval or a bootstrap: a study affords 3–10 seeds, and real
runs are not normal (a seed that ends at chance, a setting that lands in one of two basins, a
skewed spread near divergence). A Student-t interval over 3 seeds covers 84% of the time for
skewed values and 27% when one seed in ten fails (measured: ``tests/report/test_coverage.py``);
a percentile bootstrap over 3 seeds covers about 74% even for normal values. The interval
``[x_(j), x_(n-j+1)]`` between two order statistics of n independent values covers their
distribution's median with probability at least ``1 − 2·P(Bin(n, ½) ≤ j − 1)`` *whatever the
distribution* (the sign test, inverted; ties only make it more conservative). The price is that
a bracket needs at least 5 values (93.75%), and 3 seeds can bracket nothing: the report says so
instead of printing one.

Everything here is numpy and ``scipy.special`` (``scipy.stats`` takes three times as long to
import, and ``lookbench report`` imports no more than it needs).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import special

LEVEL = 0.95  # the coverage an interval aims for
MINIMUM = 0.93  # the least it may have (5 values give 93.75%, the first bracket there is)
POWER = 0.8  # planning: "would be seen" means seen 4 times in 5
MAX_PLANNED = 1000  # the most seeds a plan ever proposes


def coverage(n: int, j: int) -> float:
    """The least coverage of ``[x_(j), x_(n−j+1)]`` for the median of n independent values."""
    if n < 1 or j < 1 or 2 * j > n + 1:
        return 0.0
    return float(1.0 - 2.0 * special.bdtr(j - 1, n, 0.5))


def per_look(looks: int, level: float = LEVEL, minimum: float = MINIMUM) -> tuple[float, float]:
    """The level (and least level) each of ``looks`` looks at the data must have for every
    look's interval to hold together at ``level`` (Bonferroni: the miss rate is shared out)."""
    looks = max(1, int(looks))
    return 1.0 - (1.0 - level) / looks, 1.0 - (1.0 - minimum) / looks


def order_index(n: int, level: float = LEVEL, minimum: float = MINIMUM) -> int | None:
    """The ``j`` of the narrowest order-statistic interval over n values whose coverage is at
    least ``level``; else 1 when ``[min, max]`` reaches ``minimum``; else ``None`` (too few)."""
    if n < 2:
        return None
    if n <= MAX_PLANNED:
        j = int(_orders(level, minimum)[n])
        return j or None
    return _order_index(n, level, minimum)


def _order_index(n: int, level: float, minimum: float) -> int | None:
    best = None
    for j in range(1, (n + 1) // 2 + 1):
        if coverage(n, j) >= level:
            best = j
        else:
            break
    if best is None and coverage(n, 1) >= minimum:
        best = 1
    return best


@functools.lru_cache(maxsize=16)
def _orders(level: float, minimum: float) -> np.ndarray:
    """``order_index`` for n = 0 … MAX_PLANNED (0: none), worked out once per level: planning
    asks for hundreds of n per verdict line."""
    out = np.zeros(MAX_PLANNED + 1, dtype=int)
    for size in range(2, MAX_PLANNED + 1):
        # coverage falls as j grows: the largest j at or above the level, by bisection
        lo, hi = 0, (size + 1) // 2
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if coverage(size, mid) >= level:
                lo = mid
            else:
                hi = mid - 1
        if lo == 0 and coverage(size, 1) >= minimum:
            lo = 1
        out[size] = lo
    return out


def fewest(level: float = LEVEL, minimum: float = MINIMUM) -> int:
    """The fewest values that can be bracketed at all (5 for 95%/93%)."""
    n = 2
    while order_index(n, level, minimum) is None:
        n += 1
    return n


@dataclass(frozen=True)
class Interval:
    """The median of some values, with a distribution-free interval when there are enough of
    them (``low``/``high``/``coverage`` are ``None`` otherwise)."""

    estimate: float
    low: float | None
    high: float | None
    n: int
    coverage: float | None  # the least probability that [low, high] holds the median
    spread: float = 0.0  # the values' standard deviation (planning only)

    @property
    def bracketed(self) -> bool:
        return self.low is not None and self.high is not None


def median_interval(values: np.ndarray | list[float], level: float = LEVEL,
                    minimum: float = MINIMUM) -> Interval:
    """The median of ``values`` and the order-statistic interval for the median of the
    distribution they were drawn from (see the module docstring)."""
    v = np.sort(np.asarray(values, dtype=float))
    n = len(v)
    if n == 0:
        return Interval(math.nan, None, None, 0, None)
    spread = float(v.std(ddof=1)) if n > 1 else 0.0
    est = float(np.median(v))
    j = order_index(n, level, minimum)
    if j is None:
        return Interval(est, None, None, n, None, spread)
    return Interval(est, float(v[j - 1]), float(v[n - j]), n, coverage(n, j), spread)


def _largest_p(n: int, j: int, power: float) -> float:
    """The largest chance p that one value falls on the wrong side of zero with which at most
    j − 1 of n do, with probability ``power`` (``bdtr`` falls as p grows: bisection)."""
    lo, hi = 0.0, 0.5
    if special.bdtr(j - 1, n, hi) >= power:
        return hi
    for _ in range(60):
        mid = (lo + hi) / 2
        if special.bdtr(j - 1, n, mid) >= power:
            lo = mid
        else:
            hi = mid
    return lo


def detectable(n: int, spread: float, level: float = LEVEL, minimum: float = MINIMUM,
               power: float = POWER) -> float | None:
    """The smallest true difference that n values would bracket away from zero with
    probability ``power``, were they normal with this ``spread`` (a planning model: the
    interval itself assumes nothing). ``None`` when n values bracket nothing."""
    j = order_index(n, level, minimum)
    if j is None:
        return None
    p = _largest_p(n, j, power)
    if p <= 0.0:
        return math.inf
    return float(-spread * special.ndtri(p)) if spread > 0 else 0.0


def _planned_sizes(start: int, level: float, minimum: float) -> tuple[np.ndarray, np.ndarray]:
    """The candidate counts start … MAX_PLANNED that can bracket at all, with their ``j``."""
    orders = _orders(level, minimum)
    sizes = np.arange(max(2, int(start)), MAX_PLANNED + 1)
    js = orders[sizes]
    keep = js > 0
    return sizes[keep], js[keep]


def seeds_to_detect(difference: float, spread: float, level: float = LEVEL,
                    minimum: float = MINIMUM, power: float = POWER,
                    start: int = 2) -> int | None:
    """The fewest values (from ``start``) at which a true ``difference`` would be bracketed away
    from zero with probability ``power``, were they normal with this ``spread`` (a planning
    model: the interval itself assumes nothing); ``None`` for no difference, or when more than
    :data:`MAX_PLANNED` would be needed."""
    if difference == 0 or not math.isfinite(difference):
        return None
    sizes, js = _planned_sizes(start, level, minimum)
    if not len(sizes):
        return None
    wrong = special.ndtr(-abs(difference) / spread) if spread > 0 else 0.0
    hits = special.bdtr(js - 1, sizes, wrong) >= power
    return int(sizes[np.argmax(hits)]) if hits.any() else None


def seeds_to_bound(centre: float, margin: float, spread: float, level: float = LEVEL,
                   minimum: float = MINIMUM, power: float = POWER,
                   start: int = 2) -> int | None:
    """The fewest values at which an interval around a true ``centre`` would lie within
    ``±margin`` with probability ``power`` (an equivalence, planned as for
    :func:`seeds_to_detect`); ``None`` when ``centre`` is not inside the margin or more than
    :data:`MAX_PLANNED` would be needed."""
    if margin <= 0 or abs(centre) >= margin:
        return None
    sizes, js = _planned_sizes(start, level, minimum)
    if not len(sizes):
        return None
    if spread <= 0:
        return int(sizes[0])
    below = special.ndtr((-margin - centre) / spread)  # one value under −margin
    above = special.ndtr((centre - margin) / spread)  # one value over +margin
    hits = special.bdtr(js - 1, sizes, below) * special.bdtr(js - 1, sizes, above) >= power
    return int(sizes[np.argmax(hits)]) if hits.any() else None

def schedule(start: int, cap: int) -> list[int]:
    """The seed counts a sequential study looks at: ``start``, then half as many again each
    time (rounded up), up to ``cap``. Growing by a factor keeps the looks few, so each keeps
    more of the error rate they share."""
    n, out = max(1, int(start)), [max(1, int(start))]
    while n < cap:
        n = min(int(cap), max(n + 1, math.ceil(n * 1.5)))
        out.append(n)
    return out


def looks(start: int, cap: int, level: float = LEVEL,
          minimum: float = MINIMUM) -> tuple[list[int], float, float]:
    """The points of :func:`schedule` at which a sequential study may decide, and the level
    (and least level) each look's intervals need so that every look holds together at
    ``level``: the fewest looks L whose shared-out level leaves at most L points of the
    schedule able to bracket anything (earlier points could bracket nothing at that level, so
    they spend none of it)."""
    points = schedule(start, cap)
    for count in range(1, len(points) + 1):
        lv, mn = per_look(count, level, minimum)
        able = [n for n in points if order_index(n, lv, mn) is not None]
        if len(able) <= count:
            return able, lv, mn
    lv, mn = per_look(len(points), level, minimum)
    return points, lv, mn
