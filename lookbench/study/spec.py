"""A study: which task, which optimizers, which grid, how many seeds, which budget.

A study is defined by a TOML file (``studies/*.toml``), by command-line options, or both
(options override the file). It always holds Lookahead *and* the baseline it wraps, with the
same epochs and seeds. Validation happens here, once, with messages that name the bad field, so
that a bad study never reaches the engine or the results already on disk.

An optimizer's grid is one table of values, crossed (a product), or a list of such tables
(TOML's ``[[grid.lookahead]]``), meaning the union of their products: the paper's section 5.5
compares Lookahead at one (k, α) over the baseline's own lr × momentum grid, and sweeps
Lookahead's k × α at one inner setting, which no single product expresses.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lookbench.choices import Schedule
from lookbench.hparams import BY_NAME, HYPERPARAMETERS, LOOKAHEAD_OWN, NAMES
from lookbench.study.config import MAX_COUNT, OPTIMIZER_FIELDS, TrialConfig

Sampler = Literal["grid", "random", "tpe"]
BASELINES = ("polyak", "ema", "swa", "asgd")  # what --baselines takes
SWEEPABLE = NAMES  # the hyperparameters a study may sweep: lookbench.hparams' table
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_NAME = 200  # a folder name (and the journal's study names) must fit in 255 bytes
MAX_STUDY_FILE = 1 << 20  # bytes: a study file is a few hundred; /dev/zero is not one
LARGE_PLAN = 10_000  # trials: planning more asks for confirmation (allow_large / --yes)
AUTO_START = 3  # --seeds auto starts with at least this many seeds
DEFAULT_MAX_SEEDS = 20  # --seeds auto without --max-seeds

# One optimizer's grid: a table of values to cross, or several whose products are united.
GridTable = dict[str, Any]
Grid = GridTable | list[GridTable]


class SpecError(ValueError):
    """A study definition is invalid; the message names the field."""


class StudySpec(BaseModel):
    """A validated study definition (see ``studies/*.toml`` for examples)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: str | None = Field(None, max_length=MAX_NAME, description="default: <task>-<inner>")
    task: str
    inner: str = Field("sgd", description="what Lookahead wraps: sgd, adam, adamw, nadam, "
                       "radam, adamax, rmsprop, adagrad, adadelta, adafactor, or your own "
                       "(module:Class); default: the task's default_inner (wmt14: adam)")
    epochs: int | None = Field(None, ge=1, le=MAX_COUNT, description="default: the task's")
    seeds: int = Field(1, ge=1, le=10_000,
                       description="every configuration runs with seeds 0..seeds-1")
    max_seeds: int | None = Field(
        None, ge=1, le=10_000, description="add seeds to the matched settings, a stage at a "
        "time, until every verdict line is decided or this many seeds ran (--seeds auto)")
    sampler: Sampler = "grid"
    trials: int | None = Field(None, ge=1, le=1_000_000,
                               description="configurations per optimizer (random, tpe)")
    batch_size: int | None = Field(None, ge=1, le=MAX_COUNT)
    schedule: Schedule | None = None
    threads: int = Field(1, ge=1, le=1024, description="intra-op threads of a trial on the CPU: "
                         "part of the definition, since a result depends on it (a different "
                         "count sums in a different order)")
    population: int | None = Field(
        None, ge=1, le=1_000_000, description="trials trained together as one vectorised model "
        "(lookbench.execution.population), at most: part of the definition, since a member's results "
        "depend in their last bits on the population it is computed in; unset: as many as "
        "the device holds (up to 32 on the CPU, 128 on a GPU); 1: one trial at a time")
    task_options: dict[str, Any] = Field(default_factory=dict)
    trace_fast: bool = Field(False, description="also evaluate each wrapper's fast weights every "
                             "epoch (fast_<m> curves; the paper's Figure 10)")
    baselines: list[Literal[BASELINES]] = Field(  # type: ignore[valid-type]
        default_factory=list, description="further baselines beside the inner optimizer alone: "
        "averaging of its iterates (the paper compares Lookahead with Polyak averaging; asgd: "
        "Merity et al.'s NT-ASGD, averaging once validation stops improving)")
    grid: dict[str, Grid] = Field(
        default_factory=dict, description="values to sweep, per optimizer (lookahead, <inner>, "
        "each baseline): "
        "a table (crossed), or a list of tables (the union of their products)"
    )

    @model_validator(mode="before")
    @classmethod
    def _task_inner(cls, data: Any) -> Any:
        """A study that names no inner optimizer takes its task's (``Task.default_inner``: the
        Transformer's is Adam); stored, it names it, so the same command resumes it."""
        if isinstance(data, dict) and data.get("inner") is None \
                and isinstance(data.get("task"), str):
            from lookbench import tasks

            try:
                data = {**data, "inner": tasks.task_class(data["task"]).default_inner}
            except ValueError:
                pass  # (an unknown task: _complete says so, naming the field)
        return data

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str | None) -> str | None:
        if name is not None and not NAME_PATTERN.fullmatch(name):  # no "abc\n" folders
            raise ValueError("use letters, digits, '-', '_' and '.', starting with a letter/digit")
        return name

    @property
    def study_name(self) -> str:
        """The given name, else ``<task>-<inner>``; a task or optimizer of one's own
        (``file.py:Iris``, ``package.module:MySGD``) is named by its class (``iris-mysgd``),
        never by a path."""
        if self.name:
            return self.name

        def short(ref: str) -> str:
            return ref.rpartition(":")[2].lower() if ":" in ref else ref

        return f"{short(self.task)}-{short(self.inner)}"

    @field_validator("inner")
    @classmethod
    def _known_inner(cls, inner: str) -> str:
        from lookbench._suggest import did_you_mean
        from lookbench.optim.factory import available, plain, wraps

        if ":" not in inner and inner not in available():  # (only what it can be: no wrappers)
            raise ValueError(f"unknown inner optimizer {inner!r}{did_you_mean(inner, plain())}; "
                             f"choose one of {', '.join(plain())}, or your own as "
                             f"package.module:Class or path/to/file.py:Class")
        if wraps(inner):  # unknown names and broken references raise ValueError here
            raise ValueError(f"{inner} wraps another optimizer; the inner optimizer must be "
                             f"one that wraps nothing ({', '.join(plain())}, or your own)")
        return inner

    @field_validator("baselines", mode="before")
    @classmethod
    def _known_baselines(cls, baselines: Any) -> Any:
        """An unknown baseline names the close one (``polyakk``: did you mean 'polyak'?)."""
        from lookbench._suggest import did_you_mean

        for name in baselines if isinstance(baselines, list) else []:
            if isinstance(name, str) and name not in BASELINES:
                raise ValueError(f"unknown baseline {name!r}{did_you_mean(name, BASELINES)}; "
                                 f"choose from {', '.join(BASELINES)}")
        return baselines

    @field_validator("baselines")
    @classmethod
    def _distinct(cls, baselines: list[str]) -> list[str]:
        return list(dict.fromkeys(baselines))

    @property
    def optimizers(self) -> tuple[str, ...]:
        """Lookahead, the inner optimizer alone, then the further baselines, in that order."""
        return ("lookahead", self.inner, *self.baselines)

    def tables(self, optimizer: str) -> list[GridTable]:
        """The grid tables of ``optimizer`` (one, unless the study lists several)."""
        return grid_tables(self.grid.get(optimizer, {}))


def grid_tables(entry: Grid) -> list[GridTable]:
    """An optimizer's grid as a list of tables, whichever form it was given in."""
    return list(entry) if isinstance(entry, list) else [entry]


def _parse_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_STUDY_FILE + 1)  # never read a device or a huge file whole
    except FileNotFoundError:
        raise SpecError(f"study file {path} does not exist") from None
    except OSError as e:
        raise SpecError(f"cannot read study file {path}: {e.strerror}") from None
    if len(raw) > MAX_STUDY_FILE:
        raise SpecError(f"study file {path} is larger than {MAX_STUDY_FILE >> 20} MB: not a "
                        f"study file")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise SpecError(f"study file {path} is not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"study file {path} is not valid TOML: {e}") from None
    except RecursionError:
        raise SpecError(f"study file {path} nests tables or arrays too deeply") from None


def _first_error(e: ValidationError, where: str, model: type[BaseModel] | None = None
                 ) -> SpecError:
    """The first of pydantic's errors as one line; a key the model does not have names the
    close one it does (``seedz``: did you mean 'seeds'?) and, where they are few, all."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden" and model is not None and err["loc"]:
        from lookbench._suggest import did_you_mean

        keys = [k for k in _keys(model, err["loc"][:-1])]
        unknown = str(err["loc"][-1])
        what = "option" if where.endswith("task_options") else "key"
        msg = f"unknown {what}{did_you_mean(unknown, keys)}; " + (
            f"the {what}s are {', '.join(keys)}" if keys and len(keys) <= 24 else
            f"there are no {what}s here" if not keys else "see the study files under studies/")
    return SpecError(f"{where}: {loc}: {msg}")


def _keys(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The keys the table at ``path`` of ``model`` takes (those of a nested model where the
    path leads into one; none where it cannot tell)."""
    for part in path:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def load_spec(path: Path | None = None, *, allow_large: bool = False,
              **overrides: Any) -> StudySpec:
    """Build the spec from a TOML file (optional) and overrides (``None`` values ignored).

    Grid overrides are given as ``grid_overrides={"lr": [...], "k": [...]}`` and apply to every
    optimizer of the study that takes the field. A study of more than ``LARGE_PLAN`` trials is
    refused unless ``allow_large`` (``--yes``). Raises :class:`SpecError`.
    """
    data: dict[str, Any] = _parse_toml(path) if path is not None else {}
    grid_overrides = overrides.pop("grid_overrides", None) or {}
    given_seeds = data.get("seeds")
    given_options = overrides.pop("task_options", None)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if given_options is not None:  # -o KEY=VALUE changes one option of the file's, not all
        data["task_options"] = {**(data.get("task_options") or {}), **given_options}
    if data.get("seeds") == "auto":  # --seeds auto, or seeds = "auto" in a study file
        start = given_seeds if isinstance(given_seeds, int) and not isinstance(
            given_seeds, bool) else 0
        data["seeds"] = max(AUTO_START, start)
        if data.get("max_seeds") is None:
            data["max_seeds"] = max(DEFAULT_MAX_SEEDS, data["seeds"])
    where = str(path) if path is not None else "study"
    _check_grid_form(data.get("grid"), where)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as e:
        raise _first_error(e, where, StudySpec) from None
    return _complete(spec, grid_overrides, where, allow_large)


def _check_grid_form(grid: Any, where: str) -> None:
    """Each optimizer's grid is a table or a non-empty list of tables (checked before pydantic,
    whose message for a failed union would name both forms' types)."""
    if not isinstance(grid, dict):
        return  # absent, or pydantic says it is not a table
    for opt, entry in grid.items():
        form = f"give a table [grid.{opt}] or tables [[grid.{opt}]] of lists of values"
        if isinstance(entry, list):
            if not entry:
                raise SpecError(f"{where}: grid.{opt}: {form}, not an empty list")
            for i, table in enumerate(entry):
                if not isinstance(table, dict):
                    raise SpecError(f"{where}: grid.{opt}[{i}]: {form}")
        elif not isinstance(entry, dict):
            raise SpecError(f"{where}: grid.{opt}: {form}")


def _complete(spec: StudySpec, grid_overrides: dict[str, list[Any]], where: str,
              allow_large: bool = False) -> StudySpec:
    """Fill in the task's defaults, apply overrides, and check every grid value."""
    from lookbench import tasks

    try:
        task = tasks.get(spec.task, **spec.task_options)
    except ValidationError as e:  # (a ValueError too, so first)
        raise _first_error(e, f"{where}: task_options",
                           tasks.task_class(spec.task).Options) from None
    except ValueError as e:  # unknown task
        raise SpecError(f"{where}: task: {e}") from None
    from lookbench.results.schema import check_metric_name

    problem = check_metric_name(str(task.metric))  # it names columns of the results tables
    if problem is not None:
        raise SpecError(f"{where}: task: task {spec.task!r}: {problem}")
    unknown = set(spec.grid) - set(spec.optimizers)
    if unknown:
        raise SpecError(
            f"{where}: grid: a study of {spec.inner} holds {', '.join(spec.optimizers)}; "
            f"no grid for {', '.join(sorted(unknown))}"
        )
    for field in grid_overrides:
        if field not in SWEEPABLE:
            raise SpecError(f"{where}: cannot sweep {field!r}; sweepable: {', '.join(SWEEPABLE)}")
    takes = {opt: _takes(spec, opt) for opt in spec.optimizers}
    for field in grid_overrides:
        if not any(field in t for t in takes.values()):
            raise SpecError(f"{where}: {BY_NAME[field].option}: no optimizer of this study "
                            f"({', '.join(spec.optimizers)}) takes {field}")
    defaults = task.study_grid(spec.inner)
    for baseline in spec.baselines:  # averaging runs the inner optimizer over the same grid
        defaults.setdefault(baseline, spec.grid.get(spec.inner) or defaults.get(spec.inner, {}))
    grid: dict[str, Grid] = {}
    for opt in spec.optimizers:
        given = spec.grid.get(opt) or defaults.get(opt, {})
        tables = [dict(t) for t in grid_tables(given)]
        for values in tables:
            for field, override in grid_overrides.items():
                if field in takes[opt]:  # e.g. --beta2 for adam, lookahead(adam) and polyak
                    values[field] = list(override)
        # One table is stored as a table, as before lists of tables existed: a study defined
        # with one is the same study whichever form its file used.
        grid[opt] = tables[0] if len(tables) == 1 else tables
    spec = spec.model_copy(update={
        "grid": grid,
        "epochs": spec.epochs or task.default_epochs,
    })
    if spec.sampler != "grid" and spec.trials is None:
        raise SpecError(f"{where}: trials: the {spec.sampler} sampler needs --trials N")
    if spec.max_seeds is not None:
        if spec.max_seeds < spec.seeds:
            raise SpecError(f"{where}: max_seeds: {spec.max_seeds} is fewer than the "
                            f"{spec.seeds} seeds planned first")
        if spec.sampler != "grid":
            raise SpecError(f"{where}: max_seeds: adding seeds until the verdict is decided "
                            f"needs the grid sampler (a matched comparison), not "
                            f"{spec.sampler}")
    size = planned_size(spec)
    if size > LARGE_PLAN and not allow_large:  # (counted before any point is built)
        raise SpecError(
            f"{where}: this study plans {size:,} trials; planning takes about "
            f"{_duration(size * PLAN_S_PER_TRIAL)} and its journal grows by about "
            f"{size * JOURNAL_BYTES_PER_TRIAL / 1e6:,.0f} MB before the first trial runs. Add "
            f"--yes (allow_large=True) to go ahead, or sweep fewer values")
    for opt in spec.optimizers:
        tables = spec.tables(opt)
        if spec.sampler != "grid" and len(tables) > 1:
            raise SpecError(
                f"{where}: grid.{opt}: the {spec.sampler} sampler draws from the ranges of one "
                f"table; {len(tables)} tables [[grid.{opt}]] (a union of grids) need the grid "
                f"sampler"
            )
        for i, values in enumerate(tables):
            _check_table(spec, task, opt, values, f"{where}: grid.{opt}"
                         + (f"[{i}]" if len(tables) > 1 else ""))
    return spec


def _check_table(spec: StudySpec, task: Any, opt: str, values: GridTable, where: str) -> None:
    """Check one grid table: its fields, its lists, and every configuration it makes.

    ``where`` names the table (``study.toml: grid.lookahead[1]``) in every message.
    """
    for field, vals in values.items():
        if field not in SWEEPABLE:
            from lookbench._suggest import did_you_mean

            raise SpecError(f"{where}.{field}: not a sweepable field"
                            f"{did_you_mean(field, SWEEPABLE)}; sweepable: "
                            f"{', '.join(SWEEPABLE)}")
        if opt != "lookahead" and field in LOOKAHEAD_OWN:
            raise SpecError(f"{where}.{field}: applies to lookahead only")
        if not isinstance(vals, list) or not vals:
            raise SpecError(f"{where}.{field}: give a non-empty list of values")
    if "lr" not in values:
        raise SpecError(f"{where}.lr: every optimizer needs learning rates")
    takes = _takes(spec, opt)
    for field in values:
        if field not in takes:  # e.g. momentum for Adagrad: refused now, not in every trial
            raise SpecError(f"{where}.{field}: {opt}"
                            + (f" around {spec.inner}" if opt != spec.inner else "")
                            + f" does not take {field}")
    for point in _points(values):  # validates every value the study will run
        try:
            config = _config(spec, opt, point, seed=0)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            raise SpecError(f"{where}.{field}: {msg}" if field else f"{where}: {msg}") from None
        try:
            task.check_config(config)
        except ValueError as e:
            raise SpecError(f"{where}: {e}") from None


def _takes(spec: StudySpec, opt: str) -> dict[str, Any]:
    """The hyperparameters ``opt`` takes in this study (a wrapper: with the inner's)."""
    from lookbench.optim import hyperparameters

    return hyperparameters(opt, spec.inner if opt != spec.inner else None)


def grid_points(spec: StudySpec, optimizer: str) -> list[dict[str, Any]]:
    """The configurations of ``optimizer``'s grid: the union of each table's product, in
    order, each configuration once (tables may overlap, e.g. at Lookahead's default k, α)."""
    points: list[dict[str, Any]] = []
    seen: set[str] = set()
    for values in spec.tables(optimizer):
        for point in _points(values):
            key = lookbench_id(_config(spec, optimizer, point, seed=0))
            if key not in seen:
                seen.add(key)
                points.append(point)
    return points


def _points(values: dict[str, list[Any]]) -> list[dict[str, Any]]:
    fields = sorted(values)
    return [dict(zip(fields, combo)) for combo in itertools.product(*(values[f] for f in fields))]


def _config(spec: StudySpec, optimizer: str, point: dict[str, Any], seed: int) -> TrialConfig:
    fields = {f: point[f] for f in OPTIMIZER_FIELDS if f in point}
    if optimizer == "lookahead" or optimizer in spec.baselines:  # wrappers of the inner
        fields.setdefault("inner", spec.inner)
    return TrialConfig(
        task=spec.task, optimizer=optimizer, seed=seed, epochs=spec.epochs,
        batch_size=spec.batch_size, schedule=spec.schedule, task_options=spec.task_options,
        trace_fast=spec.trace_fast, **fields,
    )


def lookbench_id(config: TrialConfig) -> str:
    """A stable id for a configuration: the same config always gets the same id, in every
    version (a hyperparameter added to the table is hashed only when set)."""
    fields = config.model_dump(mode="json")
    for h in HYPERPARAMETERS:
        if not h.hashed_when_unset and fields[h.name] is None:
            del fields[h.name]
    if not fields["trace_fast"]:  # (added later: ids of studies without it stay the same)
        del fields["trace_fast"]
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _random_points(values: dict[str, list[Any]], n: int, rng: np.random.Generator
                   ) -> list[dict[str, Any]]:
    """``n`` points drawn from the ranges the grid values span, each on its table scale (log
    where the table says so and every value is positive, whole numbers for integers)."""
    points = []
    for _ in range(n):
        point: dict[str, Any] = {}
        for field, vals in sorted(values.items()):
            h = BY_NAME[field]
            if len(set(vals)) == 1 or not _numeric(vals):
                point[field] = vals[int(rng.integers(len(vals)))]
            elif h.kind == "int":
                point[field] = int(rng.integers(min(vals), max(vals) + 1))
            elif h.log and min(vals) > 0:
                lo, hi = np.log(min(vals)), np.log(max(vals))
                point[field] = float(np.exp(rng.uniform(lo, hi)))
            else:
                point[field] = float(rng.uniform(min(vals), max(vals)))
        points.append(point)
    return points


def _numeric(vals: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)


def distribution(field: str, vals: list[Any]) -> Any:
    """The Optuna distribution of one hyperparameter over the numbers ``vals`` holds, on its
    table scale: log where the table says so and every value is positive, integers for
    integers; a choice offers all its words. ``None`` if ``vals`` holds no number (α given
    only as ``adaptive``). The queue stores it with every trial, for optuna-dashboard."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    h = BY_NAME[field]
    if h.kind == "choice":
        return CategoricalDistribution(list(h.words))
    numbers = [v for v in vals if _numeric([v])]
    if not numbers:
        return None
    lo, hi = min(numbers), max(numbers)
    if h.kind == "int":
        return IntDistribution(int(lo), int(hi))
    return FloatDistribution(float(lo), float(hi), log=h.log and lo > 0)


def plan(spec: StudySpec) -> list[TrialConfig]:
    """Every (configuration, seed) the study runs, in a fixed order.

    Grid: the product of each optimizer's values (the union of the products, each
    configuration once, where an optimizer has several tables). Random: ``trials`` points per
    optimizer drawn from the ranges its one table spans, from a generator seeded by the study
    name, so running the same study again plans the same trials. (TPE plans adaptively in the
    engine.)
    """
    if spec.sampler == "tpe":
        raise ValueError("the tpe sampler has no fixed plan")
    configs = []
    name_seed = int.from_bytes(hashlib.sha256(spec.study_name.encode()).digest()[:8], "little")
    for i, opt in enumerate(spec.optimizers):
        if spec.sampler == "grid":
            points = grid_points(spec, opt)
        else:
            rng = np.random.default_rng([name_seed, i])
            points = _random_points(_one_table(spec, opt), spec.trials or 0, rng)
        for point in points:
            for seed in range(spec.seeds):
                configs.append(_config(spec, opt, point, seed))
    return configs


def _one_table(spec: StudySpec, optimizer: str) -> GridTable:
    """The one grid table the random and TPE samplers draw from (``load_spec`` refuses more)."""
    tables = spec.tables(optimizer)
    if len(tables) != 1:
        raise ValueError(f"the {spec.sampler} sampler needs one grid table for {optimizer}, "
                         f"not {len(tables)}")
    return tables[0]


def search_space(spec: StudySpec, optimizer: str) -> dict[str, Any]:
    """Optuna distributions spanning the grid values, for the TPE sampler (see
    :func:`distribution`)."""
    from optuna.distributions import CategoricalDistribution

    space: dict[str, Any] = {}
    for field, vals in sorted(_one_table(spec, optimizer).items()):
        if len(set(vals)) == 1 or not _numeric(vals):  # the values listed, as choices
            space[field] = CategoricalDistribution(sorted(set(vals), key=str))
        else:
            space[field] = distribution(field, vals)
    return space


def config_from_point(spec: StudySpec, optimizer: str, point: dict[str, Any],
                      seed: int) -> TrialConfig:
    """The trial config of a sampled point (TPE) for one seed."""
    return _config(spec, optimizer, point, seed)


# The cost of planning one trial (validating, hashing and queueing it) and its journal entry,
# measured on this project's 2-core machines: 1.0 ms and 1.2 kB each for 2,000 digits trials
# on an idle machine, 4.4 ms each for 10,000 on a busy one; the estimate takes the middle.
PLAN_S_PER_TRIAL = 0.002
JOURNAL_BYTES_PER_TRIAL = 1_250


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else (
        f"{seconds / 60:.0f} minutes" if seconds < 7200 else f"{seconds / 3600:.1f} hours")


def planned_size(spec: StudySpec) -> int:
    """How many (configuration, seed) runs the study plans at most, counted from the grid's
    shape without building a point (tables that overlap count their shared points twice)."""
    if spec.sampler != "grid":
        return (spec.trials or 0) * len(spec.optimizers) * spec.seeds
    total = 0
    for opt in spec.optimizers:
        for table in spec.tables(opt):
            n = 1
            for values in table.values():
                n *= len(values) if isinstance(values, list) else 1
            total += n
    return total * spec.seeds


def planned_runs(spec: StudySpec) -> dict[str, int]:
    """How many (configuration, seed) runs the study holds per optimizer."""
    if spec.sampler == "tpe":
        return {opt: (spec.trials or 0) * spec.seeds for opt in spec.optimizers}
    counts = dict.fromkeys(spec.optimizers, 0)
    for c in plan(spec):
        counts[c.optimizer] += 1
    return counts
