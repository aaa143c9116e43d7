"""A study's results on disk: two directories of Parquet part files, one part per trial.

``<study>/trials/part-<trial>.parquet`` and ``<study>/curves/part-<trial>.parquet``. Each part is
written to a hidden temporary file in the same directory and renamed into place, so a crash
never leaves half a file, readers (``pyarrow.dataset``, ``pandas.read_parquet``, DuckDB) skip the
hidden names, and writing a trial again replaces its part instead of adding a row: a trial is
recorded once however often it is finished.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from lookbench._messages import first_line
from lookbench.results.schema import CURVES, TRIALS, with_metrics

TRIALS_DIR = "trials"
CURVES_DIR = "curves"
DEFINITION_FILE = "study.json"  # the study's definition beside its tables (sampler, grid, ...)


class ResultsUnreadable(ValueError):
    """A part file cannot be read; the message names it and what to do."""


def _part_name(trial: str) -> str:
    return f"part-{trial}.parquet"


def write_part(directory: Path, trial: str, table: pa.Table) -> Path:
    """Write ``table`` as ``directory/part-<trial>.parquet`` atomically (temp file + rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / _part_name(trial)
    tmp = directory / f".{final.name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:  # the data must be on disk before the name points to it
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:  # (pyarrow's message names the temporary file, or none)
        raise OSError(e.errno, os.strerror(e.errno) if e.errno else e.strerror,
                      str(final)) from e
    finally:
        tmp.unlink(missing_ok=True)
    return final


class StudyResults:
    """Reads and writes one study's trials and curves tables under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.trials_dir = self.root / TRIALS_DIR
        self.curves_dir = self.root / CURVES_DIR

    def write_trial(self, trial_row: dict, curve_rows: list[dict]) -> None:
        """Record one finished trial: its curve first, then the row that marks it done."""
        trial = trial_row["trial"]
        curves = with_metrics(CURVES, curve_rows)
        write_part(self.curves_dir, trial, pa.Table.from_pylist(curve_rows, schema=curves))
        trials = with_metrics(TRIALS, [trial_row])
        write_part(self.trials_dir, trial, pa.Table.from_pylist([trial_row], schema=trials))

    def set_aside(self, trial: str, where: Path) -> None:
        """Move a trial's part files to ``where/trials`` and ``where/curves``, out of the
        tables. The row goes first: a kill in between leaves a curve without a row, which no
        reader counts as a trial and the trial's next run replaces."""
        for directory in (self.trials_dir, self.curves_dir):
            part = directory / _part_name(trial)
            if part.exists():
                target = where / directory.name
                target.mkdir(parents=True, exist_ok=True)
                os.replace(part, target / part.name)

    def recorded(self) -> set[str]:
        """Ids of the trials that have a row (their part file exists)."""
        if not self.trials_dir.is_dir():
            return set()
        prefix, suffix = "part-", ".parquet"
        return {
            name[len(prefix) : -len(suffix)]
            for name in os.listdir(self.trials_dir)
            if name.startswith(prefix) and name.endswith(suffix)
        }

    def _load(self, directory: Path, schema: pa.Schema) -> pa.Table:
        if not directory.is_dir():
            return schema.empty_table()
        try:
            # Every part's columns: the fixed ones (null where a part of an earlier version
            # lacks one) and any metric of the task's own (pyarrow reads only the first part's
            # schema unless asked to inspect them all).
            found = ds.dataset(directory, format="parquet")
            parts = ds.FileSystemDatasetFactory(
                found.filesystem, found.files, ds.ParquetFileFormat()).inspect()
            full = pa.unify_schemas([schema, parts]) if found.files else schema
            return ds.dataset(directory, format="parquet", schema=full).to_table()
        except (pa.ArrowException, OSError) as e:  # a damaged part (parts are written whole)
            raise ResultsUnreadable(
                f"cannot read the results in {directory}: {first_line(e).rstrip('.')}; restore "
                f"that file from a backup, or delete it to read the rest of the study without "
                f"that trial"
            ) from None

    def trials(self) -> pa.Table:
        """The trials table: one row per recorded trial."""
        return self._load(self.trials_dir, TRIALS)

    def curves(self) -> pa.Table:
        """The curves table: one row per recorded trial per epoch."""
        return self._load(self.curves_dir, CURVES)
