"""How a study's storage fails, each kind one line for the user: shared by the journal file
(``journal``) and the database storages (``storage``), which both raise them."""

from __future__ import annotations


class StorageUnavailable(Exception):
    """The storage cannot be used now (a database still unreachable after the wait, a full
    disk under the journal); the message says why, in one line."""


class BadStorage(StorageUnavailable):
    """The storage as given cannot be used until someone changes it: an unsupported or
    malformed URL, a missing driver, a server that refuses us (password, user, database,
    host), a damaged journal file. The same command fails the same way again (exit 2)."""


class ReadOnlyStorage(StorageUnavailable):
    """A storage opened read-only (for ``lookbench status``) was asked to write."""


class LockTimeout(StorageUnavailable):
    """Another lookbench process held the study lock for longer than we may wait."""
