"""The worker process's entry point: ``python -m lookbench.execution.worker_main`` (what ``lookbench
run`` starts, see ``lookbench.execution.engine._worker_command``).

The worker's code lives in :mod:`lookbench.execution.worker` and is only ever imported under that
name. Run as ``python -m lookbench.execution.worker``, that module would be executed a second time
as ``__main__``: two copies of every class, so an ``except WorkerStopped`` in one copy missed
the ``WorkerStopped`` raised by code that imports the other (the population's), and a corrupt
population checkpoint ended in a traceback instead of one line.
"""

from __future__ import annotations

import sys

from lookbench.execution.worker import main
from lookbench.timeline import skip_final_collection

if __name__ == "__main__":
    skip_final_collection()
    sys.exit(main())
