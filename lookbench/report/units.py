"""A study's number formats for its report page (the formats themselves: ``lookbench.units``)."""

from __future__ import annotations

from lookbench.units import Units

__all__ = ["Units", "units_of"]


def units_of(data) -> Units:
    """The units of a study (``StudyData``): its metric a fraction or not, and whether its
    tolerances are absolute."""
    return Units(fraction=bool(data.score_is_fraction), absolute=bool(data.absolute))
