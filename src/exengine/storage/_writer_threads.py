"""Writer threads for storages that write several large frames at once into a local folder
(``WriterThreads``).

Writing into fresh memory (tmpfs, or the page cache in front of a disk) is bound by the kernel's
page allocation, not by Python: two writers into two files fill it about 1.65-1.8 times as fast as
one on this 2-core machine, where two writers into one file gain nothing (the file's lock)
(``benchmarks/bench_scmos.py``). So OME-Zarr (a file per chunk) and NDTiff (two image files side by
side) write two frames at once in a local folder.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["AT_ONCE_BELOW_BYTES", "LOCAL_WRITES_IN_FLIGHT", "WriterThreads"]

#: Frames a ``DataHandler`` writes to a local folder at once (``start_put``).
LOCAL_WRITES_IN_FLIGHT = 2
#: Frames smaller than this are written at once, on the caller's thread: handing a 512x512 frame to
#: a writer thread costs more than the write (OME-Zarr through a handler: 2,590 frames/s handed
#: over, 3,330 written at once).
AT_ONCE_BELOW_BYTES = 2 * 1024**2

T = TypeVar("T")


class _Once:
    """``write``, run by the first caller only; later callers get ``None``."""

    def __init__(self, write: Callable[[], T]) -> None:
        self._write: Callable[[], T] | None = write
        self._lock = threading.Lock()

    def __call__(self) -> T | None:
        with self._lock:
            write, self._write = self._write, None
        return None if write is None else write()


class WriterThreads:
    """Up to ``at_once`` writes going at once, each on a thread of its own."""

    def __init__(self, at_once: int, name: str) -> None:
        self._threads = ThreadPoolExecutor(at_once, name)

    def start(self, nbytes: int, write: Callable[[], T]) -> Future[T]:
        """``write()`` on a writer thread; at once, on this thread, for a small frame of ``nbytes``
        (``AT_ONCE_BELOW_BYTES``) or when no thread can start (Python exiting, or no memory for
        one). Whichever way, ``write`` runs once."""
        once = _Once(write)
        if nbytes >= AT_ONCE_BELOW_BYTES:
            # a thread that cannot start raises after the job was queued: the queued copy, should
            # it run later, finds the write done here and does nothing
            with contextlib.suppress(RuntimeError):
                return self._threads.submit(once)
        done: Future[T] = Future()
        try:
            done.set_result(once())
        except BaseException as error:
            done.set_exception(error)
        return done

    def close(self) -> None:
        """Start no more writes; those going finish on their own."""
        self._threads.shutdown(wait=False)
