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


class WriterThreads:
    """Up to ``at_once`` writes going at once, each on a thread of its own."""

    def __init__(self, at_once: int, name: str) -> None:
        self._threads = ThreadPoolExecutor(at_once, name)

    def start(self, nbytes: int, write: Callable[[], T]) -> Future[T]:
        """``write()`` on a writer thread; at once, on this thread, for a small frame of ``nbytes``
        (``AT_ONCE_BELOW_BYTES``) or when no thread can start (Python exiting)."""
        if nbytes >= AT_ONCE_BELOW_BYTES:
            with contextlib.suppress(RuntimeError):  # raised once Python exits
                return self._threads.submit(write)
        done: Future[T] = Future()
        try:
            done.set_result(write())
        except BaseException as error:
            done.set_exception(error)
        return done

    def close(self) -> None:
        """Start no more writes; those going finish on their own."""
        self._threads.shutdown(wait=False)
