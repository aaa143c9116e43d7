"""The fixed choice sets that several layers name, defined once (torch-free, so the trial
config and the command line can use them without importing torch)."""

from __future__ import annotations

from typing import Literal, get_args

# Lookahead's inner-state policies (paper, Appendix D.1).
InnerStatePolicy = Literal["maintain", "reset", "interpolate"]
INNER_STATE_POLICIES: tuple[str, ...] = get_args(InnerStatePolicy)

# Learning-rate schedules of a trial (see lookbench.study.trial).
Schedule = Literal["constant", "step", "cosine"]
