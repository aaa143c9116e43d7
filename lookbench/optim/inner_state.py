"""What an inner optimizer keeps per parameter, by family.

Lookahead's inner-state policies (paper, Appendix D.1) act on the *momentum-like* state of the
inner optimizer, and adaptive α (section 2.1) reads its *second-moment* estimate. Other Lookahead
implementations only know SGD's ``momentum_buffer``, so "reset" silently does nothing for Adam.
Here each known family is listed explicitly, an optimizer this table does not know is refused
with a clear error unless the caller names its keys, and a wrapper (an optimizer holding another
in ``.inner``) is looked through.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim import Optimizer

# Momentum-like (first-moment) state per optimizer family. An empty tuple means the family is
# known and has no such state (plain Adagrad, say), so "reset"/"interpolate" are exact no-ops.
MOMENTUM_KEYS: dict[type[Optimizer], tuple[str, ...]] = {
    torch.optim.SGD: ("momentum_buffer",),
    torch.optim.Adam: ("exp_avg",),
    torch.optim.AdamW: ("exp_avg",),
    torch.optim.NAdam: ("exp_avg",),
    torch.optim.RAdam: ("exp_avg",),
    torch.optim.Adamax: ("exp_avg",),
    torch.optim.RMSprop: ("momentum_buffer",),
    torch.optim.Adagrad: (),
    torch.optim.Adadelta: (),
    torch.optim.Rprop: (),
    torch.optim.ASGD: (),
    torch.optim.Adafactor: (),  # second moments only (factored), no first moment
}


@dataclass(frozen=True)
class SecondMoment:
    """Where an optimizer keeps its running mean of squared gradients.

    ``beta_index`` locates the decay rate in the param group (``group["betas"][1]`` for Adam,
    ``group["alpha"]`` for RMSprop) so that the estimate can be bias-corrected with the
    optimizer's own ``step`` count; ``None`` means "use as is".
    """

    key: str
    beta_key: str | None = None
    beta_index: int | None = None


SECOND_MOMENT: dict[type[Optimizer], SecondMoment] = {
    torch.optim.Adam: SecondMoment("exp_avg_sq", "betas", 1),
    torch.optim.AdamW: SecondMoment("exp_avg_sq", "betas", 1),
    torch.optim.NAdam: SecondMoment("exp_avg_sq", "betas", 1),
    torch.optim.RAdam: SecondMoment("exp_avg_sq", "betas", 1),
    torch.optim.RMSprop: SecondMoment("square_avg"),
}


def innermost(optimizer: Optimizer) -> Optimizer:
    """The optimizer that really keeps the per-parameter state, looking through wrappers."""
    while isinstance(getattr(optimizer, "inner", None), Optimizer):
        optimizer = optimizer.inner  # type: ignore[attr-defined]
    return optimizer


def _lookup(table: dict, optimizer: Optimizer):
    for cls in type(optimizer).__mro__:
        if cls in table:
            return table[cls]
    return None


def momentum_keys(optimizer: Optimizer, override: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """State keys holding the momentum-like state of ``optimizer`` (looking through wrappers):
    the known families' keys, else a class's own ``MOMENTUM_KEYS`` attribute.

    Raises ``ValueError`` for an optimizer family this module does not know, unless ``override``
    names the keys: silently doing nothing would make "reset" a lie.
    """
    if override is not None:
        return tuple(override)
    base = innermost(optimizer)
    keys = _lookup(MOMENTUM_KEYS, base)
    if keys is None:
        declared = getattr(type(base), "MOMENTUM_KEYS", None)  # an optimizer of one's own
        if declared is not None:
            return tuple(declared)
        known = ", ".join(sorted(cls.__name__ for cls in MOMENTUM_KEYS))
        raise ValueError(
            f"don't know which state of {type(base).__name__} is momentum-like; pass "
            f"momentum_keys=(...) naming its state keys, declare them on the class as "
            f"MOMENTUM_KEYS = (...), or use inner_state='maintain' (known optimizers: {known})"
        )
    return keys


def second_moment(optimizer: Optimizer) -> SecondMoment | None:
    """Where ``optimizer`` keeps a second-moment estimate, or ``None`` if it keeps none."""
    return _lookup(SECOND_MOMENT, innermost(optimizer))
