"""What a study is: its specification (``spec``: a study file and the command line, validated
once), a trial's configuration (``config``), the definition stored with the study and the
ranking it implies (``definition``), and the plan of (configuration, seed) runs, grown by stages
when seeds are added until the verdict is decided (``seeds``).

May import: the base modules, ``optim`` and ``tasks`` (names and checks, not torch),
``results`` and ``comparison``; never ``coordination``, ``execution``, ``progress``, ``report``
or the commands.
"""

from __future__ import annotations

from lookbench._lazy import exports

# Each public name and its module, imported on first use (``lookbench._lazy.exports``).
_WHERE = {
    "TrialConfig": "config",
    "hyperparameter_columns": "config",
    "Ranking": "definition",
    "StudyConflict": "definition",
    "check_same_definition": "definition",
    "ranking": "definition",
    "read_file": "definition",
    "store_spec": "definition",
    "stored_spec": "definition",
    "task_facts": "definition",
    "write_file": "definition",
    "boundaries": "seeds",
    "current_plan": "seeds",
    "sequential": "seeds",
    "SWEEPABLE": "spec",
    "SpecError": "spec",
    "StudySpec": "spec",
    "config_from_point": "spec",
    "distribution": "spec",
    "load_spec": "spec",
    "lookbench_id": "spec",
    "plan": "spec",
    "planned_runs": "spec",
    "search_space": "spec",
}
__getattr__ = exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
