"""One trial's configuration: a flat, validated record.

The same mapping is a row of the trials table and an Optuna trial's parameters, so it is flat
data, checked by pydantic with messages that name the bad field. Its hyperparameter fields are
made from ``lookbench.hparams.HYPERPARAMETERS`` (one field each, checked by the table's own
bounds), so a hyperparameter added there is a field here without an edit. Fields an optimizer
does not use stay ``None`` (``k`` for a plain SGD trial).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from lookbench.choices import Schedule
from lookbench.hparams import BY_NAME, HYPERPARAMETERS, MAX_COUNT, NAMES, Hyperparameter

__all__ = ["MAX_COUNT", "OPTIMIZER_FIELDS", "TrialConfig", "hyperparameter_columns"]

# Fields passed to lookbench.optim.build: what a wrapper wraps, and every hyperparameter.
OPTIMIZER_FIELDS = ("inner", *NAMES)


class _TrialBase(BaseModel):
    """Everything that determines a trial's result besides the device and the hyperparameters
    (which :data:`TrialConfig` adds from the table)."""

    # Strict: a study file's `lr = [true]` or `alpha = ["0.5"]` is refused, not coerced; and
    # finite numbers only (`--lr inf` used to create a study that broke `status`).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    task: str
    optimizer: str
    inner: str | None = None
    seed: int = Field(0, ge=0, le=MAX_COUNT)
    epochs: int = Field(ge=1, le=MAX_COUNT)
    batch_size: int | None = Field(None, ge=1, le=MAX_COUNT,
                                   description="None: the task's default")
    schedule: Schedule | None = Field(None, description="None: the task's default")
    deterministic: bool = Field(True, description="deterministic cuDNN kernels on CUDA")
    trace_fast: bool = Field(False, description="also evaluate the fast weights each epoch "
                             "(fast_<m> curves; the paper's Figure 10)")
    task_options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _lookahead_fields(self) -> _TrialBase:
        for h in HYPERPARAMETERS:
            if (h.role == "lookahead" and self.optimizer != "lookahead"
                    and getattr(self, h.name) is not None):
                raise ValueError(f"{h.name} applies to lookahead only, not to {self.optimizer}")
        return self

    def optimizer_hparams(self) -> dict[str, Any]:
        """Keyword arguments for ``lookbench.optim.build(self.optimizer, params, ...)``."""
        return {f: getattr(self, f) for f in OPTIMIZER_FIELDS if getattr(self, f) is not None}

    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters that are set, by name."""
        return {n: getattr(self, n) for n in NAMES if getattr(self, n) is not None}


def _in_bounds(cls: type, value: Any, info: ValidationInfo) -> Any:
    """The table's check of one hyperparameter (its bounds, in the message every layer uses)."""
    problem = None if value is None else BY_NAME[str(info.field_name)].check(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _annotation(h: Hyperparameter) -> Any:
    """The field's type (its bounds are checked by ``Hyperparameter.check``, one message)."""
    if h.kind == "choice":
        return Literal[h.words]  # type: ignore[valid-type]
    number: Any = int if h.kind == "int" else float
    return number | Literal[h.words] if h.words else number  # type: ignore[valid-type]


def _field(h: Hyperparameter) -> tuple[Any, Any]:
    if h.name == "lr":  # every optimizer has a learning rate, and every trial sets it
        return _annotation(h), Field(description=h.label)
    return _annotation(h) | None, Field(None, description=h.label)


# pydantic's create_model: the fields come from the table (see the module's docstring).
TrialConfig = create_model(  # type: ignore[misc]
    "TrialConfig", __base__=_TrialBase, __module__=__name__,
    __validators__={"_in_bounds": field_validator(*NAMES)(_in_bounds)},
    **{h.name: _field(h) for h in HYPERPARAMETERS},
)
TrialConfig.__doc__ = "Everything that determines a trial's result, besides the device."
assert set(BY_NAME) <= set(TrialConfig.model_fields)


def hyperparameter_columns(config: TrialConfig) -> dict[str, Any]:
    """A configuration's hyperparameter columns (``lookbench.hparams``): its values, a number's
    words as boolean columns (``alpha_adaptive``), and for Lookahead the value an unset policy
    means (``inner_state`` ``maintain``), so equal configurations share a row key."""
    out: dict[str, Any] = {}
    for h in HYPERPARAMETERS:
        v = getattr(config, h.name)
        if v is None and h.unset is not None and h.role == "lookahead" == config.optimizer:
            v = h.unset
        words = h.words if h.numeric else ()
        out[h.name] = None if v in words else v
        for w in words:
            out[f"{h.name}_{w}"] = v == w
    return out
