"""A fence around graph work: a time and memory bound that interrupts pure-Python loops.

Torch-Pruning's index mapping can grow without end on attention reshapes; a watchdog thread
raises ``BudgetExceeded`` asynchronously in the working thread when the wall time or the
process's resident memory growth passes the bound, and the caller skips that piece of work.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from typing import Iterator

DEFAULT_SECONDS = float(os.environ.get("LRP_GRAPH_SECONDS", "20"))
DEFAULT_MEMORY_BYTES = int(float(os.environ.get("LRP_GRAPH_MEMORY_GB", "2")) * 2**30)


class BudgetExceeded(Exception):
    """Raised inside the working thread when a bound is passed (internal: callers turn it into a skip)."""


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


@contextlib.contextmanager
def bounded(seconds: float | None = None, memory_bytes: int | None = None) -> Iterator[None]:
    """Run the block under a wall-time and resident-memory-growth bound (BudgetExceeded past it)."""
    seconds = DEFAULT_SECONDS if seconds is None else seconds
    memory_bytes = DEFAULT_MEMORY_BYTES if memory_bytes is None else memory_bytes
    target = threading.get_ident()
    start_mem, deadline = resident_bytes(), time.monotonic() + seconds
    done = threading.Event()
    fired = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            if time.monotonic() > deadline or resident_bytes() - start_mem > memory_bytes:
                fired.set()
                _raise_in(target, BudgetExceeded)
                return

    watcher = threading.Thread(target=watch, daemon=True, name="lrp-budget")
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        if fired.is_set():
            _raise_in(target, None)  # clear an exception not yet delivered
