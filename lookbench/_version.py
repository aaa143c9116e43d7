"""lookbench's version, for the modules that write it (the trials table, the report page):
from here rather than ``lookbench``'s own face, which sits above them (it exports the scripting
API)."""

from __future__ import annotations

import functools


@functools.cache
def version() -> str:
    """The installed version (importlib.metadata, read when first asked for: importing it
    takes tens of milliseconds, which ``import lookbench`` need not pay, and which a Ctrl-C
    at the command's very start would otherwise interrupt outside any handler)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("lookbench")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"
