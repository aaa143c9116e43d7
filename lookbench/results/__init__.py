"""A study's results as Parquet: schemas, atomic part files, and loading them as tables.

May import: the base modules only (never ``tasks``: what a task declares is passed in).
"""

from lookbench.results.schema import (
    CONFIG,
    CURVES,
    FIXED_METRICS,
    TRIAL_STATES,
    TRIALS,
    check_metric_name,
    config_id,
    higher_is_better,
    study_metric,
)
from lookbench.results.store import (
    DEFINITION_FILE,
    TRIALS_DIR,
    ResultsUnreadable,
    StudyResults,
    write_part,
)

__all__ = ["CONFIG", "CURVES", "DEFINITION_FILE", "FIXED_METRICS", "TRIALS", "TRIALS_DIR",
           "TRIAL_STATES", "ResultsUnreadable", "StudyResults", "check_metric_name", "config_id",
           "higher_is_better", "study_metric", "write_part"]
