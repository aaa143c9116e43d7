"""How lookbench writes a metric's numbers: one unit per metric on the whole page, and in
``lookbench status`` (a module of the lowest layer, so that both can use it).

A fraction metric (higher is better, every value in [0, 1]: an accuracy) is written as a
percentage with two decimals everywhere: heatmap cells, tables, hover text, verdict sentences
and axis ticks (``97.69%``), and a difference between two scores in percentage points
(``+0.09 pp``). Any other metric (a loss, a perplexity, an RMSE) is written in its own units
with four significant digits (``0.1234``, ``52.00``), a difference with three (``+0.00123``).
A gap to the best (how the ε-good rule measures distance,
:meth:`lookbench.comparison.rules.Rules.gap`) is a share, written in % (``0.09%``; in the
metric's units with ``--absolute``).

Every figure, table and sentence of the page goes through :func:`units_of`, so the same number
never reads ``0.9769`` in one place and ``97.7`` in another. The JSON summary and the CSV keep
raw values (fractions), for scripts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

SCORE_DECIMALS = 2  # 97.69%
LOSS_DIGITS = 4  # 0.1234
DIFF_DIGITS = 3  # +0.00123


def is_fraction(values: Iterable[float], maximize: bool) -> bool:
    """Whether a metric is written as a fraction (in %): higher is better and every value of
    it lies in [0, 1] (an accuracy)."""
    seen = [v for v in values if v == v]  # (NaN: no value)
    return bool(maximize and seen and all(0 <= v <= 1 for v in seen))


def _finite(v: object) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _digits(v: float, digits: int) -> str:
    """``v`` with ``digits`` significant digits, trailing zeros kept so that a column of
    numbers reads alike (``52.00`` beside ``52.51``, never ``52``)."""
    text = f"{v:#.{digits}g}"
    mantissa, _, exponent = text.partition("e")
    return mantissa.rstrip(".") + (f"e{exponent}" if exponent else "")


@dataclass(frozen=True)
class Units:
    """A study's number formats. ``fraction``: the metric is written in % and its differences
    in percentage points; ``absolute``: tolerances and gaps are in the metric's own units."""

    fraction: bool
    absolute: bool = False

    # -- scores --------------------------------------------------------------------------------
    def score(self, v: object) -> str:
        """A score: ``97.69%`` or ``0.1234``; ``–`` for nothing or a non-finite value."""
        f = _finite(v)
        if f is None:
            return "–"
        if self.fraction:
            return f"{f * 100:.{SCORE_DECIMALS}f}%"
        return _digits(f, LOSS_DIGITS)

    def diff(self, v: object, unit: bool = True) -> str:
        """A signed difference of two scores: ``+0.09 pp`` or ``-0.00123`` (``unit=False``: a
        bound beside an estimate that carries the unit)."""
        f = _finite(v)
        if f is None:
            return "–"
        if self.fraction:
            return f"{f * 100:+.{SCORE_DECIMALS}f}" + (" pp" if unit else "")
        return ("+" if f >= 0 else "") + _digits(f, DIFF_DIGITS)

    def magnitude(self, v: object) -> str:
        """An unsigned amount of the metric (a margin, the smallest detectable difference):
        ``0.09 pp`` or ``0.00123``."""
        f = _finite(v)
        if f is None:
            return "–"
        return self.diff(abs(f)).lstrip("+")

    # -- gaps ----------------------------------------------------------------------------------
    def gap(self, v: object) -> str:
        """A gap to the best in the units of ε: ``0.09%`` (a share of the best, or of the
        improvement from the start), or the metric's units with ``--absolute``."""
        if v is not None and isinstance(v, float) and math.isinf(v):
            return "∞"
        f = _finite(v)
        if f is None:
            return "–"
        if self.absolute:
            return _digits(f, DIFF_DIGITS)
        pct = f * 100
        return f"{pct:,.0f}%" if abs(pct) >= 1000 else f"{pct:.{SCORE_DECIMALS}f}%"

    # -- Plotly --------------------------------------------------------------------------------
    @property
    def d3(self) -> str:
        """The d3 format of a score in hover templates (``%{y:.2%}``), the same digits as
        :meth:`score`."""
        return f".{SCORE_DECIMALS}%" if self.fraction else f".{LOSS_DIGITS}g"

    def axis(self) -> dict:
        """An axis of scores: ticks in % for a fraction metric (``97.5%``), hover as
        :meth:`score` writes it."""
        if self.fraction:
            return {"tickformat": f".{SCORE_DECIMALS}~%", "hoverformat": self.d3}
        return {"hoverformat": self.d3}
