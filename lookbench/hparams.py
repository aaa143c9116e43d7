"""The hyperparameters a study can sweep, defined once.

Every layer that names a hyperparameter derives what it needs from :data:`HYPERPARAMETERS`:
the trial configuration's fields and their checks (``lookbench.study.config``), the study
file's and the command line's grid options (``lookbench.study.spec``, ``lookbench.cli``), the
Optuna distributions and the random sampler's draws, the Parquet columns
(``lookbench.results.schema``), and the report's axes, labels and configuration keys. Sweeping
one more hyperparameter is one more entry here, provided the optimizers that take it have a
keyword argument of that name (``lookbench.optim.factory``): *which* optimizers take it is read
from their builders' signatures, not written down twice.

Torch-free and pydantic-free, so the command line can build its options from it at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from lookbench.choices import INNER_STATE_POLICIES

Role = Literal["inner", "lookahead", "averaging"]
Kind = Literal["float", "int", "choice"]


@dataclass(frozen=True)
class Hyperparameter:
    """One sweepable hyperparameter.

    ``role`` says whose it is: ``inner`` ones belong to the optimizer Lookahead wraps, so
    Lookahead and every baseline around the same inner optimizer share them (the matched
    comparison matches on them); ``lookahead`` and ``averaging`` ones belong to that wrapper
    alone. ``words`` are the choices of a ``choice``, or words a number also accepts (α's
    ``adaptive``; stored as a boolean column ``<name>_<word>``).
    """

    name: str
    label: str  # the report's axis and column label
    help: str  # the command line's option help
    kind: Kind = "float"
    log: bool = False  # drawn, distributed and plotted on a log scale (when all values > 0)
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    words: tuple[str, ...] = ()
    role: Role = "inner"
    unset: str | None = None  # what a row of an optimizer that takes it records when unset
    # Trial ids hash a configuration's fields. The fields of lookbench's first results are
    # hashed even when unset; any added since only when set, so adding one changes no id and
    # every study already on disk resumes.
    hashed_when_unset: bool = False

    @property
    def option(self) -> str:
        """``--weight-decay``."""
        return "--" + self.name.replace("_", "-")

    @property
    def numeric(self) -> bool:
        return self.kind != "choice"

    def bounds(self) -> str:
        """``(0, 1]``, ``[1, 2147483647]``."""
        def number(x: float) -> str:
            return str(int(x)) if math.isfinite(x) and x == int(x) else f"{x:g}"

        low_open = self.low_open or math.isinf(self.low)  # an infinite end is never reached
        high_open = self.high_open or math.isinf(self.high)
        return (f"{'(' if low_open else '['}{number(self.low)}, {number(self.high)}"
                f"{')' if high_open else ']'}")

    def check(self, value: Any) -> str | None:
        """Why ``value`` is not allowed (``None`` if it is): the one message of every layer."""
        if isinstance(value, str):
            if value in self.words:
                return None
            choices = ", ".join(self.words) if self.kind == "choice" else (
                f"a number in {self.bounds()}"
                + "".join(f" or {w!r}" for w in self.words))
            return f"{self.name} must be {choices}, got {value!r}"
        if self.kind == "choice":
            return f"{self.name} must be one of {', '.join(self.words)}, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{self.name} must be a number, got {value!r}"
        if self.kind == "int" and not isinstance(value, int):
            return f"{self.name} must be a whole number, got {value!r}"
        if not math.isfinite(value):
            return f"{self.name} must be a finite number, got {value!r}"
        ok_low = value > self.low if self.low_open else value >= self.low
        ok_high = value < self.high if self.high_open else value <= self.high
        if not (ok_low and ok_high):
            return f"{self.name} must be in {self.bounds()}, got {value!r}"
        return None

    def parse(self, text: str) -> Any:
        """One command-line value: ``0.5``, ``adaptive``, ``maintain``; ValueError if not."""
        if self.kind == "choice" or text in self.words:
            return text
        try:
            return int(text) if self.kind == "int" else float(text)
        except ValueError:
            kind = "whole number" if self.kind == "int" else "number"
            raise ValueError(f"{self.option}: {text!r} is not a {kind}") from None

    def columns(self) -> list[str]:
        """The Parquet columns that store it."""
        return [self.name, *(f"{self.name}_{w}" for w in self.words if self.numeric)]


MAX_COUNT = 2**31 - 1  # counts (k, epochs, seeds, batch) must fit the tables' integer columns

HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter("lr", "inner learning rate", "Learning rates to sweep, e.g. 0.01,0.1.",
                   log=True, low=0, low_open=True, hashed_when_unset=True),
    Hyperparameter("momentum", "momentum (Adam: β1)", "Momenta (Adam: beta1) to sweep.",
                   low=0, high=1, high_open=True, hashed_when_unset=True),
    Hyperparameter("weight_decay", "weight decay", "Weight decays to sweep.", log=True, low=0,
                   hashed_when_unset=True),
    Hyperparameter("beta2", "β2 (second-moment decay)", "Adam-family beta2 values to sweep, "
                   "e.g. 0.99,0.999.", low=0, high=1, high_open=True),
    Hyperparameter("eps", "ε (denominator)", "Epsilons of Adam, RMSprop, Adagrad, Adadelta to "
                   "sweep.", log=True, low=0, low_open=True),
    Hyperparameter("smoothing", "RMSprop smoothing (its alpha)", "RMSprop's squared-gradient "
                   "decay (torch's alpha) to sweep.", low=0, high=1, high_open=True),
    Hyperparameter("rho", "Adadelta ρ", "Adadelta's rho to sweep.", low=0, high=1),
    Hyperparameter("lr_decay", "Adagrad lr decay", "Adagrad's learning-rate decay to sweep.",
                   log=True, low=0),
    Hyperparameter("k", "k (steps per sync)", "Lookahead sync periods, e.g. 5,10.", kind="int",
                   low=1, high=MAX_COUNT, role="lookahead", hashed_when_unset=True),
    Hyperparameter("alpha", "α (slow step)", "Lookahead slow step sizes in (0, 1], or adaptive.",
                   low=0, high=1, low_open=True, words=("adaptive",), role="lookahead",
                   hashed_when_unset=True),
    Hyperparameter("inner_state", "inner state", "Lookahead inner-state policies: "
                   + ", ".join(INNER_STATE_POLICIES) + ".", kind="choice",
                   words=INNER_STATE_POLICIES, role="lookahead", unset="maintain",
                   hashed_when_unset=True),
    Hyperparameter("decay", "EMA decay", "EMA baseline: decays of the average to sweep.",
                   low=0, high=1, high_open=True, role="averaging"),
    Hyperparameter("start", "averaging start (step)", "Averaging baselines (polyak, ema, swa): "
                   "the step the average starts at.", kind="int", low=0, high=MAX_COUNT,
                   role="averaging"),
)

BY_NAME: dict[str, Hyperparameter] = {h.name: h for h in HYPERPARAMETERS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
SHARED: tuple[str, ...] = tuple(h.name for h in HYPERPARAMETERS if h.role == "inner")
LOOKAHEAD_OWN: tuple[str, ...] = tuple(h.name for h in HYPERPARAMETERS if h.role == "lookahead")


def columns(role: Role | None = None) -> list[str]:
    """The Parquet columns of every hyperparameter (of one ``role``), in the table's order."""
    return [c for h in HYPERPARAMETERS if role in (None, h.role) for c in h.columns()]


ADAM_FAMILY = ("adam", "adamw", "nadam", "radam", "adamax")  # their momentum is β1


def label(name: str, inner: str | None = None) -> str:
    """The report's label of a hyperparameter (or of any other column: its own name); with
    the study's ``inner`` optimizer, momentum is called what that optimizer calls it."""
    if name == "momentum" and inner is not None:
        return "β1" if inner in ADAM_FAMILY else "momentum"
    h = BY_NAME.get(name)
    return h.label if h is not None else name.replace("_", " ")


def is_log(name: str) -> bool:
    h = BY_NAME.get(name)
    return h is not None and h.log


def format_config(values: dict[str, Any]) -> str:
    """One configuration in words, the same everywhere (status, report, logs):
    ``lr=0.1 momentum=0.9 k=5 alpha=0.5`` (unset values left out; α's words as such)."""
    parts = []
    for h in HYPERPARAMETERS:
        v = values.get(h.name)
        for w in h.words if h.numeric else ():
            if values.get(f"{h.name}_{w}") in (True,):  # (a missing flag may be NaN)
                v = w
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        parts.append(f"{h.name}={v:g}" if isinstance(v, float) else f"{h.name}={v}")
    return " ".join(parts)
