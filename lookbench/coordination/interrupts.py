"""Ctrl-C and SIGTERM for a worker: interrupt training at once, never a storage update.

A worker's bookkeeping (claiming a trial, recording its result, handing it back) is a few
storage writes that must not be cut in half: a trial cut off between them stays RUNNING until
its lease is judged stale. Signals come in pairs in practice: Ctrl-C in a terminal sends
SIGINT to the whole process group, and ``lookbench run`` then sends SIGTERM to each worker, so
a second interrupt often lands while the first is being handled. :class:`Interrupts` turns
both signals into ``KeyboardInterrupt`` only inside :meth:`Interrupts.allowed` (training);
elsewhere it remembers them, and :meth:`Interrupts.check` raises at the next safe point.

Handlers can only be installed from the main thread; in any other thread (tests that run a
worker in a thread with a ``stop`` event) the object is inert and Python's defaults apply.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_active: Interrupts | None = None  # the installed instance (main thread only)


class Interrupts:
    """Install with ``with Interrupts():``; the previous handlers come back on leaving."""

    def __init__(self) -> None:
        self.pending = False
        self._allowed = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        global _active
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
            _active = self
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        global _active
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        if self._previous:
            _active = None
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.pending = True
        if self._allowed:
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a signal arrived while interrupts were held off."""
        if self.pending:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def allowed(self) -> Iterator[None]:
        """A region a signal may interrupt at once (after raising for one already pending)."""
        self.check()
        previous, self._allowed = self._allowed, True
        try:
            yield
        finally:
            self._allowed = previous

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A region inside :meth:`allowed` that must finish (a storage write); a signal that
        arrives meanwhile is raised when it ends."""
        previous, self._allowed = self._allowed, False
        try:
            yield
        finally:
            self._allowed = previous
        if previous:
            self.check()


def sleep(seconds: float) -> None:
    """``time.sleep`` that ends with ``KeyboardInterrupt`` as soon as a held-off signal is
    pending: for waits in which nothing is half-written, such as the pause before retrying a
    storage call that failed, so Ctrl-C during a database outage does not wait the outage out."""
    end = time.monotonic() + seconds
    while True:
        if _active is not None:
            _active.check()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))
