"""One trial's configuration: a flat, validated record.

The same mapping is a row of the trials table and (later) an Optuna trial's parameters, so it
is flat data, checked by pydantic with messages that name the bad field. Fields an optimizer
does not use stay ``None`` (``k`` for a plain SGD trial).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lookbench.choices import InnerStatePolicy, Schedule

MAX_COUNT = 2**31 - 1  # counts (k, epochs, seeds, batch) must fit the tables' integer columns

# Fields that are hyperparameters of the optimizer (passed to lookbench.optim.build).
OPTIMIZER_FIELDS = ("inner", "lr", "momentum", "weight_decay", "k", "alpha", "inner_state")


class TrialConfig(BaseModel):
    """Everything that determines a trial's result, besides the device."""

    # Strict: a study file's `lr = [true]` or `alpha = ["0.5"]` is refused, not coerced; and
    # finite numbers only (`--lr inf` used to create a study that broke `status`).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    task: str
    optimizer: str
    inner: str | None = None
    lr: float = Field(gt=0, description="(inner) learning rate")
    momentum: float | None = Field(None, ge=0, lt=1, description="heavy-ball momentum / Adam β1")
    weight_decay: float | None = Field(None, ge=0)
    k: int | None = Field(None, ge=1, le=MAX_COUNT, description="Lookahead: inner steps per sync")
    alpha: float | Literal["adaptive"] | None = Field(None, description="Lookahead: slow step")
    inner_state: InnerStatePolicy | None = None
    seed: int = Field(0, ge=0, le=MAX_COUNT)
    epochs: int = Field(ge=1, le=MAX_COUNT)
    batch_size: int | None = Field(None, ge=1, le=MAX_COUNT,
                                   description="None: the task's default")
    schedule: Schedule | None = Field(None, description="None: the task's default")
    deterministic: bool = Field(True, description="deterministic cuDNN kernels on CUDA")
    task_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("alpha")
    @classmethod
    def _alpha_in_range(cls, alpha: float | str | None) -> float | str | None:
        if isinstance(alpha, float) and not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        return alpha

    @model_validator(mode="after")
    def _lookahead_fields(self) -> TrialConfig:
        if self.optimizer != "lookahead" and (self.k is not None or self.alpha is not None):
            raise ValueError(f"k and alpha apply to lookahead only, not to {self.optimizer}")
        return self

    def optimizer_hparams(self) -> dict[str, Any]:
        """Keyword arguments for ``lookbench.optim.build(self.optimizer, params, ...)``."""
        return {f: getattr(self, f) for f in OPTIMIZER_FIELDS if getattr(self, f) is not None}
