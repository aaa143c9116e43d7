"""How a comparison judges its runs: what a failed run scores, which runs did not train, and
when a score is "within ε" of the best.

One :class:`Rules` object holds the task's facts (direction, chance level, loss at
initialisation, loss floor, whether it is deterministic) and the tolerances asked for (``ε``:
1% and 5% unless ``lookbench report --within`` says otherwise). Every figure of a comparison is
computed through it, from that comparison's own runs only, so nothing outside a comparison can
move a number inside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

WITHIN = (0.01, 0.05)  # the default tolerances ε, relative
NOT_TRAINED_SHARE = 0.01  # "no better than chance": within 1% of the way from chance to perfect
ZERO = 1e-12  # a difference this small (relative) is no difference


@dataclass(frozen=True)
class Rules:
    """A comparison's rules. ``within``: the tolerances ε (relative to the best unless
    ``absolute``); ``chance``: a higher-is-better metric's score without training;
    ``initial``/``floor``: a loss at initialisation and the lowest it can reach; ``exact``: the
    task is deterministic (every seed gives the same run)."""

    maximize: bool
    within: tuple[float, ...] = WITHIN
    absolute: bool = False
    chance: float | None = None
    initial: float | None = None
    floor: float | None = None
    exact: bool = False

    @property
    def primary(self) -> float:
        """The ε the headline counts at (the smallest asked for)."""
        return min(self.within)

    def with_within(self, within: tuple[float, ...] | None, absolute: bool = False) -> Rules:
        return replace(self, within=tuple(sorted(within)), absolute=absolute) if within else self

    # -- outcomes ---------------------------------------------------------------------------
    def stand_in(self, completed: np.ndarray) -> float:
        """What a diverged or failed run scores, from the *completed* runs of the comparison it
        belongs to: an accuracy scores the task's chance level where it knows it (a blow-up is
        no better and no worse than learning nothing), else the comparison's worst completed
        run; a loss scores the worse of its value at initialisation and the comparison's worst
        completed loss (completed runs counted as at most not training, :meth:`cap`, so where
        the start is known, the start)."""
        done = self.cap(np.asarray(completed, dtype=float))
        done = done[np.isfinite(done)]
        if self.maximize:
            if self.chance is not None:
                return float(self.chance)
            return float(done.min()) if len(done) else 0.0
        candidates = [float(done.max())] if len(done) else []
        if self.initial is not None and math.isfinite(self.initial):
            candidates.append(float(self.initial))
        return max(candidates) if candidates else math.nan

    def cap(self, values: np.ndarray) -> np.ndarray:
        """Completed runs' values, a run that did worse than not training counted as not
        training: an accuracy below the chance level at chance, a loss above its value at
        initialisation at that value (where the task knows them). How far a run went past its
        start says nothing of its optimizer's quality, and one blow-up (a loss of 1,000 where
        the start is 52) would otherwise outweigh every other setting in a mean."""
        v = np.asarray(values, dtype=float)
        if self.maximize and self.chance is not None:
            return np.where(v < self.chance, self.chance, v)
        if not self.maximize and self.initial is not None:
            return np.where(v > self.initial, self.initial, v)
        return v

    def trained(self, values: np.ndarray) -> np.ndarray:
        """Which completed runs trained: an accuracy above chance by more than 1% of the way to
        a perfect score, a loss below its value at initialisation (where the task knows
        either; otherwise every finite value counts as trained)."""
        v = np.asarray(values, dtype=float)
        ok = np.isfinite(v)
        if self.maximize and self.chance is not None:
            return ok & (v > self.chance + NOT_TRAINED_SHARE * (1.0 - self.chance))
        if not self.maximize and self.initial is not None:
            return ok & (v < self.initial)
        return ok

    # -- tolerance --------------------------------------------------------------------------
    def tolerance(self, best: np.ndarray | float, eps: float) -> np.ndarray:
        """How far below (above, for a loss) ``best`` a score may be and still be ε-good, in
        the metric's own units (see :meth:`describe`)."""
        b = np.asarray(best, dtype=float)
        if self.absolute:
            return np.full(b.shape, eps)
        if self.maximize:
            return eps * np.abs(b)
        if self.initial is not None:
            return eps * np.maximum(self.initial - b, 0.0)
        if self.floor is not None:
            return eps * np.maximum(b - self.floor, 0.0)
        return eps * np.abs(b)

    def good(self, values: np.ndarray, best: np.ndarray | float, eps: float) -> np.ndarray:
        """Whether each value is within ε of ``best`` (broadcast: a best per column)."""
        v = np.asarray(values, dtype=float)
        b = np.asarray(best, dtype=float)
        tol = self.tolerance(b, eps)
        slack = ZERO * np.maximum(np.abs(b), 1.0)
        if self.maximize:
            return v >= b - tol - slack
        return v <= b + tol + slack

    def gap(self, values: np.ndarray | float, best: float) -> np.ndarray:
        """How far a score is from ``best``, in units of the tolerance at ε = 1 (so a gap of
        0.01 is exactly the edge of 1%-good): 0 at the best, positive when worse."""
        v = np.asarray(values, dtype=float)
        scale = float(self.tolerance(best, 1.0))
        diff = (best - v) if self.maximize else (v - best)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(scale > 0, diff / scale, np.where(diff <= 0, 0.0, np.inf))
        return np.where(np.abs(out) < 1e-9, 0.0, out)

    def margin(self, best: float) -> float:
        """The equivalence margin of a score difference: the tolerance at the primary ε around
        the comparison's best (a difference smaller than what "1%-good" allows is no
        difference for the verdict)."""
        return float(self.tolerance(best, self.primary))

    def describe(self) -> str:
        """The rule for ε-good in words, for the page."""
        if self.absolute:
            return ("a score is ε-good when it is no more than ε (in the metric's own units) "
                    + ("below" if self.maximize else "above") + " the best")
        if self.maximize:
            return "a score is ε-good when it is at least (1 − ε) × the best"
        if self.initial is not None:
            return ("a loss is ε-good when it gives up no more than ε of the improvement the best "
                    "made from the loss at initialisation: loss ≤ best + ε × (initial − best) "
                    f"(initial {self.initial:.6g}); so two learning rates a factor 3 apart can "
                    "both be good, which a ratio of their distances from the floor would not "
                    "allow")
        if self.floor is not None:
            return ("a loss is ε-good when its excess over the task's floor "
                    f"({self.floor:.6g}) is at most (1 + ε) × the best excess")
        return "a loss is ε-good when it is at most (1 + ε) × the best"


def eps_key(eps: float) -> str:
    """``0.01`` → ``"0.01"``: the key used in column names and the JSON summary."""
    return f"{eps:g}"


def parse_within(text: str | None) -> tuple[float, ...] | None:
    """``"0.005,0.02"`` → ``(0.005, 0.02)``; ``ValueError`` (one line) for anything else."""
    if text is None or not text.strip():
        return None
    out = []
    for part in text.split(","):
        try:
            eps = float(part)
        except ValueError:
            raise ValueError(f"--within takes tolerances like 0.01,0.05; got {part.strip()!r}")
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"--within tolerances must be positive numbers; got {part.strip()!r}")
        out.append(eps)
    return tuple(sorted(set(out)))
