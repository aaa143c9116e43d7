"""The check every task's tests make: a trial cut after its first epoch and continued from
its ``state_dict`` gives the records of the same trial run straight through."""

from __future__ import annotations

from pathlib import Path

from lookbench.execution.trial import EpochRecord, Trial
from lookbench.study.config import TrialConfig


def straight_and_resumed(config: TrialConfig, data_dir: Path
                         ) -> tuple[Trial, list[EpochRecord], list[EpochRecord]]:
    """(the straight trial, its records, the records of the one cut after epoch 1 and
    resumed from its checkpoint state)."""
    straight = Trial(config, "cpu", data_dir)
    records = list(straight.run())
    first = Trial(config, "cpu", data_dir)
    first.run_epoch()
    resumed = Trial(config, "cpu", data_dir)
    resumed.load_state_dict(first.state_dict())
    resumed.run_epoch()
    return straight, records, resumed.records
