"""What a study has done and has left: ``lookbench status``'s table (``status``) and the time
left of a running study (``time_left``), both read from the storage and the results tables.

May import: the base modules, ``results``, ``comparison``, ``tasks``, ``study`` and
``coordination``; never ``execution``, ``report`` or the commands.
"""

from __future__ import annotations

from lookbench._lazy import exports

# Each public name and its module, imported on first use (``lookbench._lazy.exports``).
_WHERE = {
    "StatusError": "status",
    "find_studies": "status",
    "status_table": "status",
    "estimate": "time_left",
}
__getattr__ = exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
