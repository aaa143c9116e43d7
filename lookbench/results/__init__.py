"""A study's results as Parquet: schemas, atomic part files, and loading them as tables."""

from lookbench.results.schema import (
    CURVES,
    TRIAL_STATES,
    TRIALS,
    higher_is_better,
    study_metric,
)
from lookbench.results.store import (
    DEFINITION_FILE,
    ResultsUnreadable,
    StudyResults,
    write_part,
)

__all__ = ["CURVES", "DEFINITION_FILE", "TRIALS", "TRIAL_STATES", "ResultsUnreadable",
           "StudyResults", "higher_is_better", "study_metric", "write_part"]
