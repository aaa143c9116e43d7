"""A study's results on disk: two directories of Parquet files, the trials table and the curves
table, each one part file per trial recorded since the last compaction plus, once compacted,
one file holding every trial before it.

``<study>/trials/part-<trial>.parquet`` and ``<study>/curves/part-<trial>.parquet``. Each part is
written to a hidden temporary file in the same directory and renamed into place, so a crash
never leaves half a file, readers (``pyarrow.dataset``, ``pandas.read_parquet``, DuckDB) skip the
hidden names, and writing a trial again replaces its part instead of adding a row: a trial is
recorded once however often it is finished.

Compaction (:meth:`StudyResults.compact`, ``lookbench compact``) merges a table's part files
and its earlier ``compacted.parquet`` into a new ``compacted.parquet``: written under a hidden
name, flushed to disk, renamed into place (the folder flushed too), and only then are the parts
it holds removed. A reader therefore always finds every trial, in a part or in the compacted
file, and for a while possibly in both: this module's readers take a trial's rows from its part
when it has one (a part is never older than the compacted copy of the same trial) and from the
compacted file otherwise, so nothing is counted twice. A part written while a compaction runs
is not in its list and stays; one replaced while it runs is kept. Compactions of one study
take turns (a lock file, ``<study>/.compaction.lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lookbench._messages import first_line
from lookbench.results.schema import CURVES, TRIALS, with_metrics

TRIALS_DIR = "trials"
CURVES_DIR = "curves"
DEFINITION_FILE = "study.json"  # the study's definition beside its tables (sampler, grid, ...)
COMPACTED_FILE = "compacted.parquet"  # every trial of a table up to its last compaction
LOCK_FILE = ".compaction.lock"  # in the study folder: compactions (and set-asides) take turns
_PREFIX, _SUFFIX = "part-", ".parquet"

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


def _visible(name: str) -> bool:
    """Names readers read (``pyarrow.dataset`` skips those starting with ``.`` or ``_``)."""
    return not name.startswith((".", "_"))


def write_part(directory: Path, trial: str, table: pa.Table) -> Path:
    """Write ``table`` as ``directory/part-<trial>.parquet`` atomically (temp file + rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / _part_name(trial)
    # (a row or a few: no dictionaries, no statistics, a third less time to write)
    identity = _write_atomically(table, final, use_dictionary=False, write_statistics=False)
    _kept.put(final, identity, table)
    return final


def _write_atomically(table: pa.Table, final: Path, **options: Any
                      ) -> tuple[int, int, int, int]:
    """Write ``table`` to ``final`` through a hidden temporary file (``options``: Parquet's);
    returns the identity of the file written."""
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"
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
    compacted: tuple[tuple[int, int, int, int], frozenset[str]] | None  # identity, ids
    trusted_until: float  # time.monotonic() up to which the listing is reused unchecked
    ids: set[str]  # the parts' ids and the compacted file's


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
        self._compacted: tuple | None = None  # for has(): the compacted file's identity, ids

    # -- writing -----------------------------------------------------------------------------

    def write_trial(self, trial_row: dict, curve_rows: list[dict]) -> None:
        """Record one finished trial: its curve first, then the row that marks it done."""
        trial = trial_row["trial"]
        curves = with_metrics(CURVES, curve_rows)
        trials = with_metrics(TRIALS, [trial_row])
        with self._lock:
            write_part(self.curves_dir, trial, pa.Table.from_pylist(curve_rows, schema=curves))
            row = pa.Table.from_pylist([trial_row], schema=trials)
            current = self._current()
            write_part(self.trials_dir, trial, row)
            name = _part_name(trial)
            self._written.add(name)
            listing = self._listing
            if current and listing is not None and not self._others:
                # The folder held the listing just before this write: it holds the listing and
                # this part now (checked again within TRUST_S, in case another writer came).
                with contextlib.suppress(OSError):
                    st = os.stat(self.trials_dir)
                    listing.names.add(name)
                    listing.parts[name] = trial
                    listing.ids.add(trial)
                    listing.key = (st.st_dev, st.st_ino, st.st_mtime_ns)
                    listing.trusted_until = time.monotonic() + TRUST_S

    def set_aside(self, trials: str | Iterable[str], where: Path) -> None:
        """Move the rows of ``trials`` (one id or several) out of the tables, into part files
        under ``where/trials`` and ``where/curves``. The row goes first: a kill in between
        leaves a curve without a row, which no reader counts as a trial and the trial's next
        run replaces. A trial in a compacted file is written out of it, and the compacted file
        rewritten without it."""
        ids = {trials} if isinstance(trials, str) else set(trials)
        if not ids:
            return
        with self._lock, self._turn():
            for directory, schema in ((self.trials_dir, TRIALS), (self.curves_dir, CURVES)):
                target = where / directory.name
                compacted = directory / COMPACTED_FILE
                if compacted.exists():
                    table = self._read(directory, schema, [compacted])
                    inside = pc.is_in(table["trial"], value_set=pa.array(sorted(ids),
                                                                         pa.string()))
                    kept = table.filter(pc.invert(inside))
                    if kept.num_rows < table.num_rows:
                        moving = table.filter(inside)
                        for trial in sorted(set(moving["trial"].to_pylist())):
                            if not (directory / _part_name(trial)).exists():  # (a part is newer)
                                write_part(target, trial,
                                           moving.filter(pc.equal(moving["trial"], trial)))
                        _write_atomically(_required_where_filled(kept), compacted)
                        _fsync_dir(directory)
                for trial in sorted(ids):
                    part = directory / _part_name(trial)
                    if part.exists():
                        target.mkdir(parents=True, exist_ok=True)
                        os.replace(part, target / part.name)
            self._listing = None

    # -- the recorded set --------------------------------------------------------------------

    def recorded(self, refresh: bool = False) -> set[str]:
        """Ids of the trials that have a row (a part file, or a row in the compacted file).

        Cheap whatever the study's size: the folder is listed again only when it changed
        (its mtime) since this store last listed it, and this store's own writes are added
        without listing. ``refresh``: list it now whatever it looks like."""
        with self._lock:
            if refresh or not self._current():
                self._relist()
            return set(self._listing.ids) if self._listing is not None else set()

    def has(self, trial: str) -> bool:
        """Whether ``trial`` has a row, looked up on disk now (one file's existence, or the
        compacted file's ids): for one id, exact and cheaper than :meth:`recorded`."""
        if (self.trials_dir / _part_name(trial)).exists():
            return True
        with self._lock:
            self._compacted = self._compacted_ids(self._compacted)
            return trial in self._compacted[1]

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
        compacted = self._compacted_ids(previous.compacted if previous else None) \
            if COMPACTED_FILE in names else None
        if previous is not None and previous.compacted is not None and compacted is not None \
                and compacted[0] != previous.compacted[0]:
            self._others = True
        settled = started - st.st_mtime_ns > SETTLE_S * 1e9
        if settled:
            trusted = float("inf")
        elif not self._others:
            trusted = time.monotonic() + TRUST_S
        else:
            trusted = float("-inf")  # listed again on every call until the folder settles
        ids = set(parts.values()) | (compacted[1] if compacted else frozenset())
        self._listing = _Listing((st.st_dev, st.st_ino, st.st_mtime_ns), names, parts,
                                 compacted, trusted, ids)

    def _compacted_ids(self, known: tuple | None = None
                       ) -> tuple[tuple[int, int, int, int] | None, frozenset[str]]:
        """The compacted trials file's identity and ids (``known`` is reused if it is the
        same file)."""
        path = self.trials_dir / COMPACTED_FILE
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
                raise _unreadable(self.trials_dir, e, path) from None
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
        """``files`` of ``directory`` (in their names' order) as one table: every file's
        columns (the fixed ones, null where a file of an earlier version lacks one, and any
        metric of the task's own, in the order the files bring them), the rows in the order of
        the trials' part files' names, and the compacted file's rows of a trial left out
        where the trial has a part among ``files``. Parts this process wrote are taken from
        memory (``_kept``)."""
        if not files:
            return schema.empty_table()
        compacted = [f for f in files if f.name == COMPACTED_FILE]
        parts = [f for f in files if f.name != COMPACTED_FILE]
        kept = {f: t for f in parts if (t := _kept.get(f)) is not None}
        on_disk = [*compacted, *(f for f in parts if f not in kept)]
        fs = pafs.LocalFileSystem()
        try:
            if not kept:  # pyarrow reads only the first file's schema unless asked for all
                schemas = [ds.FileSystemDatasetFactory(
                    fs, [str(f) for f in on_disk], ds.ParquetFileFormat()).inspect()]
            else:
                schemas = [kept[f].schema if f in kept else _schema(directory, f)
                           for f in [*compacted, *parts]]
            full = pa.unify_schemas([schema, *schemas])
            tables = [ds.dataset([str(f) for f in group], format="parquet", schema=full,
                                 filesystem=fs).to_table()
                      for group in (compacted, [f for f in parts if f not in kept]) if group]
        except (pa.ArrowException, OSError) as e:  # a damaged file (files are written whole)
            raise _unreadable(directory, e) from None
        if kept:
            tables.append(_conform(pa.concat_tables(list(kept.values()),
                                                    promote_options="default"
                                                    ).combine_chunks(), full))
        if len(tables) == 1:  # (one group, read in its files' order: the names' order)
            return tables[0].combine_chunks()  # (one chunk per part is slow to use)
        if compacted:
            new = pa.concat_tables(tables[1:])
            overridden = pc.is_in(tables[0]["trial"], value_set=pc.unique(new["trial"]))
            tables = [tables[0].filter(pc.invert(overridden)), new]
        merged = pa.concat_tables(tables).combine_chunks()
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
        (see the module's docstring); a no-op for a table without parts. Returns what it
        did."""
        done = Compaction()
        with self._lock, self._turn():
            for directory, schema in ((self.curves_dir, CURVES), (self.trials_dir, TRIALS)):
                n = self._compact_table(directory, schema)
                if directory == self.trials_dir:
                    done.trials_parts = n
                else:
                    done.curves_parts = n
            self._listing = None
            done.trials = len(self._compacted_ids()[1])
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
        if not parts:
            return 0
        compacted = directory / COMPACTED_FILE
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
        parts it was removing (put back unless a newer one took the name)."""
        for name in names:
            path = directory / name
            if name.startswith(f".{COMPACTED_FILE}.") and name.endswith(".tmp"):
                path.unlink(missing_ok=True)
            elif name.startswith(f".{_PREFIX}") and name.endswith(".compacting"):
                original = directory / name[1:].rsplit(".", 2)[0]
                with contextlib.suppress(FileExistsError):
                    os.link(path, original)
                path.unlink(missing_ok=True)


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
    if path is not None and path.name not in what:
        what = f"{path.name}: {what}"
    advice = ("restore that file from a backup (it holds every trial compacted so far: without "
              "it they would run again)" if COMPACTED_FILE in what else
              "restore that file from a backup, or delete it to read the rest of the study "
              "without that trial")
    return ResultsUnreadable(f"cannot read the results in {directory}: {what}; {advice}")
