"""A study's results on disk: two directories of Parquet files, the trials table and the curves
table, each holding the trials recorded since the last compaction (a part file per trial, or a
batch file per group of trials recorded together) plus, once compacted, one file holding every
trial before it.

``<study>/trials/part-<trial>.parquet`` and ``<study>/curves/part-<trial>.parquet``: a trial
recorded on its own. ``<study>/{trials,curves}/batch-<time>-<random>.parquet``: the trials a
worker recorded in one go (short trials finish many a second; one file for all of them is what
keeps the engine's cost per trial small, see ``lookbench.execution.recorder``). Every file is
written to a hidden temporary file in the same directory and renamed into place, so a crash
never leaves half a file, and readers (``pyarrow.dataset``, ``pandas.read_parquet``, DuckDB)
skip the hidden names. A temporary file is named after its writer, and one whose writer is
gone (a write killed midway) is removed by the next compaction (``lookbench._tempfiles``).

A trial's curve rows are written before its row in the trials table, so a reader that finds
the row finds the curve. Rows without their curve (a curves file deleted, or lost with a
disk) are found by :meth:`StudyResults.without_curves`; ``lookbench run`` sets them aside and
runs their trials again.

A trial is recorded once however often it is finished: writing it again replaces its part, and
where a trial is in several files (finished again after a takeover, or a compaction in
progress), this module's readers take its rows from one file only, in this order of
precedence: its part, else the latest batch file holding it (batch names sort by the time they
were written), else the compacted file.

Compaction (:meth:`StudyResults.compact`, ``lookbench compact``, and at the end of every
``lookbench run``) merges a table's part and batch files and its earlier ``compacted.parquet``
into a new ``compacted.parquet``: written under a hidden name, flushed to disk, renamed into
place (the folder flushed too), and only then are the files it holds removed. A reader
therefore always finds every trial, in a part or batch or in the compacted file, and for a while
possibly in both; by the precedence above (a part or batch is never older than the compacted
copy of the same trial) nothing is counted twice. A file written while a compaction runs is not
in its list and stays; a part replaced while it runs is kept. Compactions of one study take
turns (a lock file, ``<study>/.compaction.lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lookbench import _tempfiles
from lookbench._messages import first_line
from lookbench.results.schema import CONFIG, CURVES, TRIALS, with_config, with_metrics

TRIALS_DIR = "trials"
CURVES_DIR = "curves"
DEFINITION_FILE = "study.json"  # the study's definition beside its tables (sampler, grid, ...)
COMPACTED_FILE = "compacted.parquet"  # every trial of a table up to its last compaction
LOCK_FILE = ".compaction.lock"  # in the study folder: compactions (and set-asides) take turns
_PREFIX, _SUFFIX = "part-", ".parquet"
_BATCH_PREFIX = "batch-"  # batch-<time_ns, 20 digits>-<random>.parquet

# recorded(): a listing of the trials folder is reused while the folder's mtime is unchanged.
# A listing made within SETTLE_S of the folder's last change may miss a change made later in
# the same tick of the file system's clock, so it is trusted for TRUST_S at most, and only by a
# store that has seen no other writer; otherwise the folder is listed again.
SETTLE_S = 1.0
TRUST_S = 1.0
READ_ATTEMPTS = 20  # a compaction that removes parts while they are read: read again


class ResultsUnreadable(ValueError):
    """A part file cannot be read; the message names it and what to do."""


def _part_name(trial: str) -> str:
    return f"{_PREFIX}{trial}{_SUFFIX}"


def _part_trial(name: str) -> str | None:
    """The trial id of a part file's name (``None`` for any other name)."""
    if name.startswith(_PREFIX) and name.endswith(_SUFFIX):
        return name[len(_PREFIX): -len(_SUFFIX)]
    return None


def _batch_name() -> str:
    """A new batch file's name: later batches sort after earlier ones (see the precedence in
    the module's docstring)."""
    return f"{_BATCH_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{_SUFFIX}"


def _is_batch(name: str) -> bool:
    return name.startswith(_BATCH_PREFIX) and name.endswith(_SUFFIX)


def _holds_many(name: str) -> bool:
    """Files that hold several trials (ids read from the file, not its name)."""
    return name == COMPACTED_FILE or _is_batch(name)


def _visible(name: str) -> bool:
    """Names readers read (``pyarrow.dataset`` skips those starting with ``.`` or ``_``)."""
    return not name.startswith((".", "_"))


def write_part(directory: Path, trial: str, table: pa.Table) -> Path:
    """Write ``table`` as ``directory/part-<trial>.parquet`` atomically (temp file + rename)."""
    final = directory / _part_name(trial)
    _write_new(final, table)
    return final


def _write_new(final: Path, table: pa.Table) -> tuple[int, int, int, int]:
    """Write a part or batch file atomically, keep its table in memory (``_kept``) and return
    the identity of the file written."""
    final.parent.mkdir(parents=True, exist_ok=True)
    # (a row or a few dozen: no dictionaries, no statistics, a third less time to write)
    identity = _write_atomically(table, final, use_dictionary=False, write_statistics=False)
    _kept.put(final, identity, table)
    return identity


def _write_atomically(table: pa.Table, final: Path, **options: Any
                      ) -> tuple[int, int, int, int]:
    """Write ``table`` to ``final`` through a hidden temporary file (``options``: Parquet's);
    returns the identity of the file written."""
    tmp = _tempfiles.temp_path(final)
    encoded = pa.BufferOutputStream()  # (encoded in memory, written in one go: faster)
    pq.write_table(table, encoded, **options)
    try:
        with open(tmp, "xb") as f:
            f.write(encoded.getvalue())
            f.flush()
            os.fsync(f.fileno())  # the data must be on disk before the name points to it
            identity = _identity(os.fstat(f.fileno()))
        os.replace(tmp, final)
    except OSError as e:  # (pyarrow's message names the temporary file, or none)
        raise OSError(e.errno, os.strerror(e.errno) if e.errno else e.strerror,
                      str(final)) from e
    finally:
        tmp.unlink(missing_ok=True)
    return identity


class _Kept:
    """The tables of the part files this process wrote, by path and file identity: reading a
    part this process wrote (a compaction at the end of a run, above all) takes its table from
    here instead of opening the file, as long as the name still holds that very file. Bounded:
    the oldest are dropped first (and read from disk when needed)."""

    LIMIT = 20_000

    def __init__(self) -> None:
        self._tables: OrderedDict[str, tuple[tuple[int, int, int, int], pa.Table]] = \
            OrderedDict()
        self._lock = threading.Lock()

    def put(self, path: Path, identity: tuple[int, int, int, int], table: pa.Table) -> None:
        key = os.path.abspath(path)
        with self._lock:
            self._tables[key] = (identity, table)
            self._tables.move_to_end(key)
            while len(self._tables) > self.LIMIT:
                self._tables.popitem(last=False)

    def get(self, path: Path) -> pa.Table | None:
        """The table of ``path``, if this process wrote the file the name holds now."""
        key = os.path.abspath(path)
        with self._lock:
            kept = self._tables.get(key)
        if kept is None:
            return None
        try:
            if _identity(os.stat(path)) == kept[0]:
                return kept[1]
        except OSError:
            pass
        self.forget(path)
        return None

    def forget(self, path: Path) -> None:
        with self._lock:
            self._tables.pop(os.path.abspath(path), None)


_kept = _Kept()


def _fsync_dir(directory: Path) -> None:
    """Make the folder's entries (a rename) durable before anything relies on them."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _order_key(trial: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The order rows are returned in: their part files' names' (``<trial>.parquet``)."""
    return pc.binary_join_element_wise(trial, pa.scalar(""), _SUFFIX)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """Which file a name holds (not its ctime: moving the file changes that)."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class Compaction:
    """What :meth:`StudyResults.compact` did: part files merged per table, and the trials the
    compacted trials table holds now."""

    trials_parts: int = 0
    curves_parts: int = 0
    trials: int = 0

    @property
    def parts(self) -> int:
        return self.trials_parts + self.curves_parts


@dataclass
class _Listing:
    """What a store knows of its trials folder (for :meth:`StudyResults.recorded`)."""

    key: tuple[int, int, int]  # (device, inode, mtime) of the folder the listing is of
    names: set[str]  # its visible file names
    parts: dict[str, str]  # part file name -> trial id
    many: dict[str, _Ids]  # compacted and batch file name -> (identity, ids)
    trusted_until: float  # time.monotonic() up to which the listing is reused unchecked
    ids: set[str]  # every file's ids


_Ids = tuple[tuple[int, int, int, int] | None, frozenset[str]]  # a file's identity and trials


class StudyResults:
    """Reads and writes one study's trials and curves tables under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.trials_dir = self.root / TRIALS_DIR
        self.curves_dir = self.root / CURVES_DIR
        self._lock = threading.RLock()
        self._listing: _Listing | None = None
        self._written: set[str] = set()  # part names this store wrote since it last listed
        self._others = False  # whether another writer changed the folder since it was opened
        self._many: dict[str, _Ids] = {}  # for has(): compacted and batch files' ids

    # -- writing -----------------------------------------------------------------------------

    def write_trial(self, trial_row: dict, curve_rows: list[dict]) -> None:
        """Record one finished trial: its curve first, then the row that marks it done."""
        self.write_trials([(trial_row, curve_rows)])

    def write_trials(self, trials: list[tuple[dict, list[dict]]]) -> None:
        """Record finished trials, each ``(trial row, curve rows)``: one alone as its part
        file, several as one batch file per table. The curves first, then the rows that mark
        the trials done."""
        if not trials:
            return
        rows = [row for row, _ in trials]
        curve_rows = [c for _, curve in trials for c in curve]
        ids = [row["trial"] for row in rows]
        if len(set(ids)) != len(ids):
            raise ValueError("a trial recorded twice in one batch")
        name = _part_name(ids[0]) if len(rows) == 1 else _batch_name()
        curves = pa.Table.from_pylist(curve_rows, schema=with_metrics(CURVES, curve_rows))
        table = with_config(pa.Table.from_pylist(rows, schema=with_metrics(TRIALS, rows)))
        with self._lock:
            _write_new(self.curves_dir / name, curves)
            current = self._current()
            identity = _write_new(self.trials_dir / name, table)
            self._written.add(name)
            if len(rows) > 1:
                self._many[name] = (identity, frozenset(ids))
            listing = self._listing
            if current and listing is not None and not self._others:
                # The folder held the listing just before this write: it holds the listing and
                # this file now (checked again within TRUST_S, in case another writer came).
                with contextlib.suppress(OSError):
                    st = os.stat(self.trials_dir)
                    listing.names.add(name)
                    if len(rows) == 1:
                        listing.parts[name] = ids[0]
                    else:
                        listing.many[name] = (identity, frozenset(ids))
                    listing.ids.update(ids)
                    listing.key = (st.st_dev, st.st_ino, st.st_mtime_ns)
                    listing.trusted_until = time.monotonic() + TRUST_S

    def set_aside(self, trials: str | Iterable[str], where: Path) -> None:
        """Move the rows of ``trials`` (one id or several) out of the tables, into part files
        under ``where/trials`` and ``where/curves``. The rows go first: a kill in between
        leaves a curve without a row, which no reader counts as a trial and the trial's next
        run replaces. Each trial's rows are those readers take (see the precedence in the
        module's docstring); a compacted or batch file holding one is rewritten without it."""
        ids = {trials} if isinstance(trials, str) else set(trials)
        if not ids:
            return
        with self._lock, self._turn():
            self._set_aside(ids, where)

    def set_aside_without_curves(self, where: Path) -> set[str]:
        """Set the trials whose curves are lost (:meth:`without_curves`) aside under
        ``where``, as :meth:`set_aside` does, so that they run again; returns their ids. Both
        in one turn of the compaction lock: no compaction or other set-aside moves rows
        between the check and the move."""
        with self._lock, self._turn():
            lost = self.without_curves()
            if lost:
                self._set_aside(lost, where)
        return lost

    def _set_aside(self, ids: set[str], where: Path) -> None:
        """:meth:`set_aside`'s move (the caller holds the locks)."""
        value_set = pa.array(sorted(ids), pa.string())
        for directory, schema in ((self.trials_dir, TRIALS), (self.curves_dir, CURVES)):
            try:
                names = sorted(n for n in os.listdir(directory) if _visible(n))
            except (FileNotFoundError, NotADirectoryError):
                continue
            moving = self._read(directory, schema, [directory / n for n in names])
            moving = moving.filter(pc.is_in(moving["trial"], value_set=value_set))
            for trial in sorted(set(moving["trial"].to_pylist())):
                write_part(where / directory.name, trial,
                           moving.filter(pc.equal(moving["trial"], trial)))
            changed = False
            for name in names:
                path = directory / name
                if _holds_many(name):
                    table = self._read(directory, schema, [path])
                    inside = pc.is_in(table["trial"], value_set=value_set)
                    if not pc.any(inside).as_py():
                        continue
                    kept = table.filter(pc.invert(inside))
                    _kept.forget(path)
                    if kept.num_rows or name == COMPACTED_FILE:
                        _write_atomically(_required_where_filled(kept), path)
                    else:
                        path.unlink()
                    changed = True
                elif _part_trial(name) in ids:
                    _kept.forget(path)
                    path.unlink(missing_ok=True)
                    changed = True
            if changed:
                _fsync_dir(directory)
        self._listing = None
        self._many.clear()

    # -- the recorded set --------------------------------------------------------------------

    def recorded(self, refresh: bool = False) -> set[str]:
        """Ids of the trials that have a row (a part file, or a row in the compacted file).
        Their curves are not checked here (workers ask often): ``lookbench run`` checks them
        once, where it plans the study (:meth:`set_aside_without_curves`).

        Cheap whatever the study's size: the folder is listed again only when it changed
        (its mtime) since this store last listed it, and this store's own writes are added
        without listing. ``refresh``: list it now whatever it looks like."""
        with self._lock:
            if refresh or not self._current():
                self._relist()
            return set(self._listing.ids) if self._listing is not None else set()

    def is_recorded(self, trial: str) -> bool:
        """Whether ``trial`` has a row, by the same listing as :meth:`recorded` (without
        copying the set: a worker asks before every trial it runs)."""
        with self._lock:
            if not self._current():
                self._relist()
            return self._listing is not None and trial in self._listing.ids

    def recorded_view(self) -> Container[str]:
        """``trial in view``: :meth:`is_recorded`, now, for code that takes a set."""
        return _RecordedView(self)

    def has(self, trial: str) -> bool:
        """Whether ``trial`` has a row, looked up on disk now (its part's existence, or the
        ids of the compacted and batch files, each file read once): for one id, exact and
        cheaper than :meth:`recorded`."""
        if (self.trials_dir / _part_name(trial)).exists():
            return True
        with self._lock:
            try:
                names = [n for n in os.listdir(self.trials_dir) if _holds_many(n)]
            except (FileNotFoundError, NotADirectoryError):
                return False
            self._many = {n: self._file_ids(self.trials_dir / n, self._many.get(n))
                          for n in names}
            return any(trial in ids for _, ids in self._many.values())

    def without_curves(self) -> set[str]:
        """Ids of the recorded trials whose curves are lost: a row in the trials table, at
        least one epoch done (a trial that ended before its first epoch has no curve rows),
        and no row in the curves table (a curves file deleted, or lost with a disk). Such a
        trial is not recorded in full: ``lookbench run`` sets it aside and runs it again
        (:meth:`set_aside_without_curves`), ``status`` and ``report`` say so.

        Reads the trials folder's listing first, then the curves folder's: a trial's curves
        are written (and compacted) before its row, so a trial recorded meanwhile is never
        taken for one without curves. Part files are known by their names; only batch and
        compacted files are read (their ``trial`` column), and the trials table itself only
        where some trial has no curves."""
        with self._lock:
            recorded = self.recorded(refresh=True)
            if not recorded:
                return set()
            missing = recorded - self._ids_in(self.curves_dir)
            if not missing:
                return set()
            rows = self.trials().select(["trial", "epochs_done"]).to_pydict()
        return {t for t, done in zip(rows["trial"], rows["epochs_done"])
                if t in missing and (done or 0) > 0}

    def _ids_in(self, directory: Path) -> set[str]:
        """Ids of the trials with rows in ``directory``: a part's from its name, a batch's or
        the compacted file's from its ``trial`` column. Listed and read again if a compaction
        removed a file meanwhile (batch names sort before the compacted file's, so a batch
        gone when it is read is in the compacted file read after it)."""
        for _ in range(READ_ATTEMPTS):
            try:
                names = sorted(n for n in os.listdir(directory) if _visible(n))
            except (FileNotFoundError, NotADirectoryError):
                return set()
            ids = {t for n in names if (t := _part_trial(n)) is not None}
            gone = False
            for n in names:
                if _holds_many(n):
                    identity, found = self._file_ids(directory / n)
                    gone = gone or identity is None
                    ids.update(found)
            if not gone:
                return ids
            time.sleep(0.01)
        raise ResultsUnreadable(f"the results in {directory} kept changing while they were "
                                f"read (a compaction or a copy in progress?); try again")

    def _current(self) -> bool:
        """Whether the listing still describes the trials folder (see SETTLE_S)."""
        listing = self._listing
        if listing is None or time.monotonic() >= listing.trusted_until:
            return False
        try:
            st = os.stat(self.trials_dir)
        except OSError:
            return False
        return (st.st_dev, st.st_ino, st.st_mtime_ns) == listing.key

    def _relist(self) -> None:
        previous = self._listing
        try:
            st = os.stat(self.trials_dir)
            started = time.time_ns()
            names = {n for n in os.listdir(self.trials_dir) if _visible(n)}
        except (FileNotFoundError, NotADirectoryError):
            self._listing = None
            self._written.clear()
            return
        if previous is None:
            parts = {n: t for n in names if (t := _part_trial(n)) is not None}
        else:
            parts = {n: t for n, t in previous.parts.items() if n in names}
            added = names - previous.names
            parts.update((n, t) for n in added if (t := _part_trial(n)) is not None)
            if (added - self._written - {COMPACTED_FILE}) or (previous.names - names):
                self._others = True  # another process (or machine) writes here too
        self._written.clear()
        many: dict[str, _Ids] = {}
        for n in sorted(names):
            if _holds_many(n):
                known = (previous.many.get(n) if previous else None) or self._many.get(n)
                many[n] = self._file_ids(self.trials_dir / n, known)
                old = previous.many.get(n) if previous else None
                if old is not None and old[0] != many[n][0]:
                    self._others = True  # rewritten by someone else
        settled = started - st.st_mtime_ns > SETTLE_S * 1e9
        if settled:
            trusted = float("inf")
        elif not self._others:
            trusted = time.monotonic() + TRUST_S
        else:
            trusted = float("-inf")  # listed again on every call until the folder settles
        ids = set(parts.values()).union(*(v[1] for v in many.values()))
        self._listing = _Listing((st.st_dev, st.st_ino, st.st_mtime_ns), names, parts,
                                 many, trusted, ids)

    def _file_ids(self, path: Path, known: _Ids | None = None) -> _Ids:
        """A compacted or batch file's identity and ids (``known`` is reused if it is the
        same file; no identity and no ids if it is gone)."""
        for _ in range(READ_ATTEMPTS):
            try:
                identity = _identity(os.stat(path))
                if known is not None and known[0] == identity:
                    return known
                # (by its path: pyarrow 26 reading a Python file object can abort the
                # interpreter at exit, "terminate called without an active exception")
                ids = pq.read_table(path, columns=["trial"])["trial"]
                if _identity(os.stat(path)) != identity:
                    continue  # replaced while it was read (a compaction): read the new one
            except FileNotFoundError:
                return None, frozenset()
            except (pa.ArrowException, OSError) as e:
                raise _unreadable(path.parent, e, path) from None
            return identity, frozenset(pc.unique(ids).to_pylist())
        raise ResultsUnreadable(f"{path} kept changing while it was read; try again")

    # -- reading -----------------------------------------------------------------------------

    def _load(self, directory: Path, schema: pa.Schema) -> pa.Table:
        """The table in ``directory``: its parts and its compacted file, a trial's rows taken
        from its part where it has one. Read again if a compaction removed a part meanwhile."""
        for _ in range(READ_ATTEMPTS):
            try:
                names = sorted(n for n in os.listdir(directory) if _visible(n))
            except (FileNotFoundError, NotADirectoryError):
                return schema.empty_table()
            files = [directory / n for n in names]
            try:
                return self._read(directory, schema, files)
            except ResultsUnreadable:
                if all(f.exists() for f in files):
                    raise
                time.sleep(0.01)  # a compaction replaced some of them: read what is there now
        raise ResultsUnreadable(f"the results in {directory} kept changing while they were "
                                f"read (a compaction or a copy in progress?); try again")

    def _read(self, directory: Path, schema: pa.Schema, files: list[Path]) -> pa.Table:
        """``files`` of ``directory`` as one table: every file's columns (the fixed ones, null
        where a file of an earlier version lacks one, and any metric of the task's own, in the
        order the files bring them), each trial's rows from one file only (by the precedence
        in the module's docstring), in the order of the trials' part files' names. Files this
        process wrote are taken from memory (``_kept``). The trials table's ``config`` is
        computed for rows written before that column (``schema.with_config``), so every
        reader, and the next compaction's file, has it."""
        table = self._read_files(directory, schema, files)
        return with_config(table) if CONFIG in schema.names else table

    def _read_files(self, directory: Path, schema: pa.Schema, files: list[Path]) -> pa.Table:
        """:meth:`_read` as the files hold it."""
        if not files:
            return schema.empty_table()
        # In precedence order, lowest first: the compacted file, the batches (oldest first),
        # the parts (one group: each holds its own trial).
        compacted = [f for f in files if f.name == COMPACTED_FILE]
        batches = sorted((f for f in files if _is_batch(f.name)), key=lambda f: f.name)
        parts = [f for f in files if f.name != COMPACTED_FILE and not _is_batch(f.name)]
        groups = [g for g in (compacted, *([b] for b in batches), parts) if g]
        kept = {f: t for f in [*batches, *parts] if (t := _kept.get(f)) is not None}
        fs = pafs.LocalFileSystem()
        try:
            on_disk = [f for g in groups for f in g if f not in kept]
            if not kept:  # pyarrow reads only the first file's schema unless asked for all
                schemas = [ds.FileSystemDatasetFactory(
                    fs, [str(f) for f in on_disk], ds.ParquetFileFormat()).inspect()]
            else:
                schemas = [kept[f].schema if f in kept else _schema(directory, f)
                           for g in groups for f in g]
            full = pa.unify_schemas([schema, *schemas])
            tables = []
            for group in groups:
                disk = [f for f in group if f not in kept]
                pieces = [ds.dataset([str(f) for f in disk], format="parquet", schema=full,
                                     filesystem=fs).to_table()] if disk else []
                if len(disk) < len(group):
                    pieces.append(_conform(pa.concat_tables(
                        [kept[f] for f in group if f in kept], promote_options="default"
                    ).combine_chunks(), full))
                tables.append(pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0])
        except (pa.ArrowException, OSError) as e:  # a damaged file (files are written whole)
            raise _unreadable(directory, e) from None
        if len(groups) == 1 and (compacted or not batches) and not kept:
            # (one group read from disk in its files' order: the names' order, the trials')
            return tables[0].combine_chunks()  # (one chunk per part is slow to use)
        # Each trial from the highest group that holds it: walk down from the top.
        chosen, seen = [], None
        for table in reversed(tables):
            if seen is not None and table.num_rows:
                table = table.filter(pc.invert(pc.is_in(table["trial"], value_set=seen)))
            chosen.append(table)
            unique = pc.unique(table["trial"])
            seen = unique if seen is None else pc.unique(pa.concat_arrays([seen, unique]))
        merged = pa.concat_tables(chosen[::-1]).combine_chunks()
        return merged.take(pc.sort_indices(_order_key(merged["trial"])))

    def trials(self) -> pa.Table:
        """The trials table: one row per recorded trial."""
        return self._load(self.trials_dir, TRIALS)

    def curves(self) -> pa.Table:
        """The curves table: one row per recorded trial per epoch."""
        return self._load(self.curves_dir, CURVES)

    # -- compaction --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """Hold the study's compaction lock (other compactions and set-asides wait)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def compact(self) -> Compaction:
        """Merge each table's part files (and its compacted file) into one compacted file per
        table, then remove the parts it holds. Safe while others read and write the study
        (see the module's docstring); a no-op for a table without parts, but for a trials
        table whose compacted file was written before the ``config`` column: rewritten with
        it. Returns what it did."""
        done = Compaction()
        with self._lock, self._turn():
            for directory, schema in ((self.curves_dir, CURVES), (self.trials_dir, TRIALS)):
                n = self._compact_table(directory, schema)
                if directory == self.trials_dir:
                    done.trials_parts = n
                else:
                    done.curves_parts = n
            self._listing = None
            self._many.clear()
            done.trials = len(self._file_ids(self.trials_dir / COMPACTED_FILE)[1])
        return done

    def _compact_table(self, directory: Path, schema: pa.Schema) -> int:
        try:
            self._clean_up(directory, os.listdir(directory))
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return 0
        parts: dict[Path, tuple[int, int, int, int]] = {}
        for name in names:
            if _visible(name) and name != COMPACTED_FILE:
                with contextlib.suppress(FileNotFoundError):
                    parts[directory / name] = _identity(os.stat(directory / name))
        compacted = directory / COMPACTED_FILE
        if not parts:
            if CONFIG in schema.names and compacted.exists() \
                    and CONFIG not in _schema(directory, compacted).names:
                # (written before the column: rewritten with it, for readers other than ours)
                _write_atomically(_required_where_filled(self._read(
                    directory, schema, [compacted])), compacted)
                _fsync_dir(directory)
            return 0
        files = [*([compacted] if compacted.exists() else []), *parts]
        table = self._read(directory, schema, files)
        _write_atomically(_required_where_filled(table), compacted)
        _fsync_dir(directory)  # the compacted file is in place for good: now the parts go
        for part, identity in parts.items():
            _remove_if_unchanged(part, identity)
            _kept.forget(part)
        return len(parts)

    @staticmethod
    def _clean_up(directory: Path, names: list[str]) -> None:
        """What a compaction killed midway left behind: its temporary file (removed) and the
        parts it was removing (put back unless a newer one took the name); and the temporary
        files of part and batch writes whose writer is gone (killed mid-write: see
        ``lookbench._tempfiles``; a live writer's, about to be renamed, stays). The caller
        holds the compaction lock, so no compaction or set-aside of another process is
        writing its files now."""
        now = time.time()
        for name in names:
            path = directory / name
            if name.startswith(f".{COMPACTED_FILE}.") and name.endswith(".tmp"):
                path.unlink(missing_ok=True)
            elif name.startswith((f".{_PREFIX}", f".{_BATCH_PREFIX}")) \
                    and name.endswith(".tmp") and _tempfiles.is_dead(path, now):
                path.unlink(missing_ok=True)
            elif name.startswith((f".{_PREFIX}", f".{_BATCH_PREFIX}")) \
                    and name.endswith(".compacting"):
                original = directory / name[1:].rsplit(".", 2)[0]
                with contextlib.suppress(FileExistsError):
                    os.link(path, original)
                path.unlink(missing_ok=True)


class _RecordedView(Container[str]):
    def __init__(self, results: StudyResults) -> None:
        self._results = results

    def __contains__(self, trial: object) -> bool:
        return isinstance(trial, str) and self._results.is_recorded(trial)


def _remove_if_unchanged(part: Path, identity: tuple[int, int, int, int]) -> None:
    """Remove ``part`` if it is still the file compacted; a writer may have replaced it since
    (the same trial finished again): that newer part stays. The part is first moved to a
    hidden name and checked there, so a replacement arriving meanwhile is never the one
    removed (it goes back, unless an even newer part took the name)."""
    held = part.with_name(f".{part.name}.{uuid.uuid4().hex[:8]}.compacting")
    try:
        os.rename(part, held)
    except FileNotFoundError:
        return
    if _identity(os.stat(held)) != identity:  # replaced since it was read
        with contextlib.suppress(FileExistsError):
            os.link(held, part)  # back, unless an even newer part took the name
    held.unlink()


def _schema(directory: Path, path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(directory, e, path) from None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order (null where the table has none)."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names
               else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _required_where_filled(table: pa.Table) -> pa.Table:
    """``table`` with columns declared non-null but holding nulls (rows of an earlier version
    that lacked the column) made nullable, so Parquet can store them."""
    fields = [f.with_nullable(True) if not f.nullable and table.column(i).null_count else f
              for i, f in enumerate(table.schema)]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def _unreadable(directory: Path, e: BaseException, path: Path | None = None
                ) -> ResultsUnreadable:
    what = first_line(e).rstrip(".")
    if path is not None and str(path) not in what:  # (the whole path: one to copy, to restore)
        what = f"{path}: {what}"
    advice = ("restore that file from a backup (it holds every trial compacted so far: without "
              "it they would run again)" if COMPACTED_FILE in what else
              "restore that file from a backup, or delete it to read the rest of the study "
              "(the next `lookbench run` runs its trials again)")
    return ResultsUnreadable(f"cannot read the results in {directory}: {what}; {advice}")
