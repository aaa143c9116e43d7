"""A study's stored definition, and what it ranks by: written once, read by every part.

``lookbench run`` stores the validated spec twice: as a user attribute of the study's Optuna
studies (so workers and other machines sharing the storage run exactly that study) and as
``study.json`` beside its tables (so a report, which reads the folder only, knows how the trials
were chosen and what the metric means). The engine, the workers and ``status`` read it through
this module; none of them works out the metric or its direction again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookbench._messages import naming
from lookbench.directions import from_words, resolve, to_words
from lookbench.results.store import DEFINITION_FILE
from lookbench.study.spec import StudySpec, grid_tables

SPEC_ATTR = "lookbench_spec"  # the spec, as a user attribute of each of the study's Optuna studies

# Everything that defines a study: re-running it with other values would mix two studies.
DEFINING_FIELDS = ("task", "inner", "baselines", "epochs", "seeds", "max_seeds", "sampler",
                   "trials",
                   "batch_size", "schedule", "threads", "population", "task_options", "grid")


class StudyConflict(ValueError):
    """The study exists with another definition; the message says what differs."""


@dataclass(frozen=True)
class Ranking:
    """What a study ranks configurations by: its task's metric and direction, and the
    directions its task declares for further metrics (``Task.directions``, for ``best_<m>``)."""

    metric: str
    higher_is_better: bool
    directions: tuple[tuple[str, bool], ...] = ()  # (metric, higher is better), as declared

    @property
    def direction(self) -> str:
        """Optuna's word for it."""
        return "maximize" if self.higher_is_better else "minimize"

    @property
    def declared(self) -> dict[str, bool]:
        """The task's declared directions, the ranking metric's included."""
        return {**dict(self.directions), self.metric: self.higher_is_better}

    def higher_is_better_for(self, name: str) -> bool | None:
        """Metric ``name``'s direction, as ``Task.higher_is_better_for`` gives it."""
        return resolve(name, dict(self.directions), metric=self.metric,
                       higher_is_better=self.higher_is_better)


def ranking(spec: StudySpec) -> Ranking:
    """The task's own metric and direction (the task declares both), and its directions."""
    from lookbench import tasks

    cls = tasks.task_class(spec.task)
    declared = cls.declared_directions()
    return Ranking(str(cls.metric), bool(cls.higher_is_better), tuple(sorted(declared.items())))


def stored_spec(storage: Any, name: str, *, check_inner: bool = True) -> StudySpec | None:
    """The study's definition as ``lookbench run`` stored it in Optuna, if it exists.

    ``check_inner=False`` skips checking the inner optimizer against those this version can
    build (which imports torch and every optimizer of one's own): the stored definition was
    checked when it was stored, and ``status`` only counts its trials."""
    import optuna

    try:
        study = optuna.load_study(study_name=f"{name}.lookahead", storage=storage)
    except KeyError:
        return None
    raw = study.user_attrs.get(SPEC_ATTR)
    if raw is None:
        return None
    return (StudySpec if check_inner else _unchecked_spec()).model_validate(raw)


def _unchecked_spec() -> type[StudySpec]:
    """``StudySpec`` without its check of the inner optimizer (see :func:`stored_spec`)."""
    from pydantic import field_validator

    class StoredSpec(StudySpec):
        @field_validator("inner")
        @classmethod
        def _known_inner(cls, inner: str) -> str:  # (overrides StudySpec's check)
            return inner

    return StoredSpec


def store_spec(studies: Any, spec: StudySpec) -> None:
    """Store ``spec`` with each of the study's Optuna studies (``TrialQueue.studies``)."""
    for study in studies:
        study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))


def _grid_difference(old: dict, new: dict) -> tuple[str, object, object] | None:
    """The first grid entry in which two definitions differ: (its name, old, new)."""
    for opt in sorted(set(old) | set(new)):
        a, b = old.get(opt, {}), new.get(opt, {})
        if a == b:
            continue
        ta, tb = grid_tables(a), grid_tables(b)
        if len(ta) != len(tb):
            return f"grid.{opt}", a, b
        for i, (va, vb) in enumerate(zip(ta, tb)):
            where = f"grid.{opt}" if len(ta) == 1 else f"grid.{opt}[{i}]"
            for name in sorted(set(va) | set(vb)):
                if va.get(name) != vb.get(name):
                    return f"{where}.{name}", va.get(name), vb.get(name)
    return None


def check_same_definition(old: StudySpec, new: StudySpec) -> None:
    """Raise :class:`StudyConflict` naming the first defining field that differs."""
    for f in DEFINING_FIELDS:
        a, b = getattr(old, f), getattr(new, f)
        if f == "grid":
            diff = _grid_difference(a, b)
            if diff is None:
                continue
            f, a, b = diff
        if a != b:
            raise StudyConflict(
                f"study {new.study_name!r} already exists with {f}={_shown(f, a)}, not "
                f"{_shown(f, b)}; run it with the options it was created with, or give another "
                f"--study name"
            )


def _shown(field: str, value: object) -> str:
    """A defining field's value as a conflict names it (an unset population: ``auto``)."""
    return "auto" if field == "population" and value is None else repr(value)


# What a task knows without training, recorded in study.json for the report (which then reads
# the folder only, and imports no torch to ask the task).
TASK_FACTS = ("loss_floor", "initial_loss", "chance_level")


def task_facts(task: Any) -> dict[str, float | bool | None]:
    """The task's :data:`TASK_FACTS` (``None`` where it does not know, or fails to say) and
    whether it is ``deterministic``."""
    out: dict[str, float | bool | None] = {}
    for name in TASK_FACTS:
        try:
            value = getattr(task, name)()
            out[name] = float(value) if value is not None and math.isfinite(value) else None
        except Exception:  # (a task of one's own that cannot say: the report goes without)
            out[name] = None
    try:
        out["deterministic"] = bool(task.deterministic())
    except Exception:
        out["deterministic"] = False
    return out


def write_file(study_dir: Path, spec: StudySpec, facts: dict[str, Any] | None = None) -> None:
    """``study.json`` beside the tables: the spec, the metric and direction it ranks by, the
    directions its task declares (``{metric: "max" | "min"}``), and what its task knows
    without training (``facts``, see :func:`task_facts`)."""
    path = study_dir / DEFINITION_FILE
    rank = ranking(spec)
    content = {**spec.model_dump(mode="json"), "metric": rank.metric,
               "higher_is_better": rank.higher_is_better,
               "directions": to_words(rank.declared), **(facts or {})}
    text = json.dumps(content, indent=2, sort_keys=True) + "\n"
    if path.exists() and path.read_text(encoding="utf-8", errors="replace") == text:
        return
    study_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with naming(path):  # (a full disk names the file)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)


def read_file(study_dir: Path) -> dict[str, Any]:
    """``study.json`` as written (empty for a folder without one: older studies, hand-made
    tables, or a damaged file; readers then fall back on the tables)."""
    try:
        content = json.loads((Path(study_dir) / DEFINITION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def stored_directions(content: dict[str, Any]) -> dict[str, bool]:
    """The directions a study.json (:func:`read_file`) declares, the ranking metric's
    included; empty for one written before they were stored (resolve the rest by name with
    ``lookbench.directions.resolve``)."""
    out = from_words(content.get("directions"))
    if isinstance(content.get("metric"), str) and isinstance(content.get("higher_is_better"),
                                                             bool):
        out[content["metric"]] = content["higher_is_better"]
    return out
