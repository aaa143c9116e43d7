"""Coordination through the storage: where a study's scheduling state lives (Optuna's journal
file or a database, ``storage``, ``journal``, their failures and locks), the queue of planned
trials that workers claim, lease and record (``queue``), the staleness rule of a lease
(``heartbeat``) and the rule that a signal never cuts a storage update short (``interrupts``).

May import: the base modules, ``results``, ``study`` (a trial's configuration and the plan's
ids); never ``execution``, ``progress``, ``report`` or the commands.
"""

from __future__ import annotations

from lookbench._lazy import exports

# Each public name and its module, imported on first use (``lookbench._lazy.exports``).
_WHERE = {
    "check_stale_after": "heartbeat",
    "Interrupts": "interrupts",
    "sleep": "interrupts",
    "CONFIG_ATTR": "queue",
    "Claimed": "queue",
    "GRACE_S": "queue",
    "HEARTBEAT_ATTR": "queue",
    "Heartbeat": "queue",
    "ID_ATTR": "queue",
    "OWNER_ATTR": "queue",
    "Outcome": "queue",
    "TrialQueue": "queue",
    "owner_alive": "queue",
    "BadStorage": "storage",
    "JOURNAL_FILE": "storage",
    "LockTimeout": "storage",
    "ReadOnlyStorage": "storage",
    "StorageUnavailable": "storage",
    "open_storage": "storage",
    "study_lock": "storage",
}
__getattr__ = exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
