"""Trial checkpoints: atomic files, written in the background, every few seconds of training.

A checkpoint is ``torch.save`` of a trial's state, written to a temporary file, fsynced and
renamed over the previous one, so a crash at any moment leaves either the old or the new
checkpoint whole, never a torn one.

Writing ResNet-18 with Lookahead(SGD) (135 MB) takes 0.3–0.55 s on this project's machines,
10–25% of an epoch on a fast GPU, so :class:`CheckpointWriter` takes a snapshot of the state
(a CPU copy of every tensor: tens of ms) and writes it on a background thread while the next
epoch trains. At most one write is in flight; the next snapshot waits for it, so checkpoints
land in order and the extra memory is one copy of the state. Python's ``concurrent.futures``
is not used because a write's failure must surface at a known point (the next epoch's
checkpoint, or the end of the trial), which one explicit thread makes plain.
"""

from __future__ import annotations

import io
import os
import queue
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from lookbench import _tempfiles
from lookbench._messages import first_line

CHECKPOINTS_DIR = "checkpoints"
INTERVAL_ENV = "LOOKBENCH_CHECKPOINT_EVERY_S"  # seconds of training between checkpoints
DEFAULT_INTERVAL_S = 10.0


class CheckpointError(Exception):
    """A trial's checkpoint cannot be used; the message says which file and what to do."""


def checkpoint_path(study_dir: Path, trial_id: str) -> Path:
    """Where trial ``trial_id``'s checkpoint lives (alone or a population's member)."""
    return Path(study_dir) / CHECKPOINTS_DIR / f"{trial_id}.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a crash leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tempfiles.temp_path(path)  # (named after its writer: see remove_dead_temps)
    # Serialised in memory first, then written as plain bytes: torch's zip writer reports a
    # full disk as "unexpected pos ...", a plain write as an OSError with its errno, which
    # tells the worker the machine is at fault (the trial runs again), not the trial.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a failed write names no file: name the checkpoint
        raise OSError(e.errno, os.strerror(e.errno) if e.errno else e.strerror, str(path)) from e
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint (tensors on the CPU); any unreadable file is a :class:`CheckpointError`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "trial" not in state:
            raise ValueError("not a lookbench trial checkpoint")
        return state
    except Exception as e:  # truncated, garbage, wrong format: all mean "unusable"
        reason = first_line(e)[:200]
        if "weights only load failed" in reason.lower():
            # torch's message advises loading with weights_only=False, which runs the file's
            # code: unsafe for a file from a shared folder, so it is never quoted.
            reason = "it holds objects other than tensors and plain data, which are not loaded"
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({reason}); delete it to restart that trial from "
            f"scratch"
        ) from None


def remove_recorded(directory: Path, recorded: set[str]) -> int:
    """Delete the checkpoints (and temporary files) of trials whose result is recorded.

    A worker killed between recording a trial and deleting its checkpoint leaves the file
    behind; a recorded trial never runs again, so the file is dead weight (135 MB for a
    ResNet-18). Returns how many files were removed.
    """
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.iterdir():
        name = path.name.lstrip(".")
        if name.split(".pt", 1)[0] in recorded and ".pt" in name:
            if path.name.endswith(".tmp") and _tempfiles.held_by_live_writer(path.name):
                continue  # (a live writer is about to rename it: its own cleanup removes it)
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def remove_dead_temps(directory: Path) -> int:
    """Delete the temporary files of checkpoint writes that were killed midway (a worker
    killed while it wrote: ``.<trial>.pt.<writer>.tmp``, up to hundreds of MB each), never
    one a live writer is about to rename (see ``lookbench._tempfiles``). Returns how many
    files were removed."""
    return _tempfiles.remove_dead(directory)


def snapshot(state: Any) -> Any:
    """A copy of ``state`` that training cannot change: every tensor cloned to the CPU.

    Dicts, lists and tuples are copied structurally; other values (numbers, strings) are
    immutable or owned by the caller and are kept as they are.
    """
    if isinstance(state, torch.Tensor):
        t = state.detach()
        return t.to("cpu", copy=True) if t.device.type != "cpu" else t.clone()
    if isinstance(state, dict):
        return {k: snapshot(v) for k, v in state.items()}
    if isinstance(state, list):
        return [snapshot(v) for v in state]
    if isinstance(state, tuple):
        return tuple(snapshot(v) for v in state)
    return state


def checkpoint_interval_s() -> float:
    """Seconds of training between two checkpoints of a trial (``LOOKBENCH_CHECKPOINT_EVERY_S``,
    default 10; 0: after every epoch).

    Checkpointing every epoch cost the digits study 12% CPU and 15% wall (20 ms epochs), for
    trials that a kill would cost less than a second to redo. By elapsed time, a kill still
    loses at most this much work, and a short trial writes no checkpoint at all.
    """
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S



class CheckpointWriter:
    """Writes checkpoints on one background thread, one at a time, in order.

    ``submit`` blocks only for the snapshot (and for the previous write, if it is still
    running); a failed write is raised by the next ``submit`` or by ``wait``. Leaving the
    ``with`` block waits for the last write, so a trial's final cleanup never races it. The
    thread starts with the first write and serves every later one.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[list[tuple[Path, dict[str, Any]]] | None] = queue.Queue()
        self._error: BaseException | None = None

    def submit(self, path: Path, state: dict[str, Any]) -> None:
        """Snapshot ``state`` now and write it to ``path`` in the background."""
        self.submit_all([(path, state)])

    def submit_all(self, items: list[tuple[Path, dict[str, Any]]]) -> None:
        """Snapshot every state now and write them, in order, in the background (a
        population's members: one wait for the whole set, not one per member)."""
        copies = [(path, snapshot(state)) for path, state in items]
        self.wait()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="lookbench-checkpoint",
                                            daemon=True)
            self._thread.start()
        self._queue.put(copies)

    def _serve(self) -> None:
        while True:
            items = self._queue.get()
            try:
                if items is None:
                    return
                for path, state in items:
                    save_checkpoint(path, state)
            except BaseException as e:  # handed to the training thread by wait()
                self._error = e
            finally:
                self._queue.task_done()

    def wait(self) -> None:
        """Block until the write in flight (if any) is on disk; raise its error if it failed."""
        if self._thread is not None:
            self._queue.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Wait for the last write and end the thread (its error, if any, is raised)."""
        try:
            self.wait()
        finally:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
                self._thread = None

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # already failing: keep what was written, but do not mask the original error
            self.close()
        except Exception:
            pass
