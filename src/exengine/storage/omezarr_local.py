"""The writes of an OME-Zarr dataset in a local folder (``FrameFiles``): each frame's chunk is a
file of its own, written under a temporary name and renamed into place (complete or absent, also on
a full disk), then its record is appended to ``frame_metadata.jsonl`` whole or cut off again.

Chunks being files of their own, several frames are written at once (``LOCAL_WRITES_IN_FLIGHT``,
on writer threads; see ``_writer_threads``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from ._writer_threads import WriterThreads
from .dataset_lock import lock_for_writing
from .omezarr_reader import RECORDS
from .omezarr_store import write_file

__all__ = ["FrameFiles", "RecordFile", "write_chunk_file"]


def write_chunk_file(target: str, data: np.ndarray) -> None:
    """Write ``data`` (little-endian, C order) as the chunk file ``target``: complete or absent."""
    write_file(target, np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).data)


class RecordFile:
    """``frame_metadata.jsonl`` of the dataset at ``dataset``, open for appending (and locked: one
    writing process at a time). Records are appended one at a time, from any thread."""

    def __init__(self, path: str, dataset: str) -> None:
        self._name = os.path.basename(path)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            lock_for_writing(self._fd, dataset)
        except BaseException:
            os.close(self._fd)
            raise
        self._size = os.fstat(self._fd).st_size
        self._lock = threading.Lock()

    def append(self, record: bytes) -> None:
        """Append ``record`` whole; one that cannot be written whole is cut off, then raised."""
        with self._lock:
            if self._fd is None:
                raise ValueError(f"{self._name} is closed: the dataset was finished")
            try:
                written = 0
                while written < len(record):
                    written += os.write(self._fd, record[written:])
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
                raise
            self._size += len(record)

    def close(self) -> None:
        """Close the file, and let go of its lock."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class FrameFiles:
    """The frames' files of the dataset in the folder ``dataset``: its records (``RecordFile``) and
    up to ``at_once`` frames written at once (``start``)."""

    def __init__(self, dataset: str, at_once: int) -> None:
        self.records = RecordFile(os.path.join(dataset, RECORDS), dataset)
        self._writers = WriterThreads(at_once, "omezarr-chunks")

    def write(
        self,
        target: str,
        data: np.ndarray,
        record: bytes,
        by_zarr: Callable[[], object] | None = None,
    ) -> None:
        """Write a frame's chunk (the file ``target``, or ``by_zarr()`` with a codec), then its
        record; a record that fails takes its chunk back (the frame is absent, not half there)."""
        if by_zarr is not None:
            by_zarr()  # zarr's LocalStore: a temporary file, renamed
        else:
            write_chunk_file(target, data)
        try:
            self.records.append(record)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise

    def start(
        self,
        target: str,
        data: np.ndarray,
        record: bytes,
        by_zarr: Callable[[], object] | None = None,
    ) -> Future[None]:
        """``write`` on a writer thread (``WriterThreads.start``)."""
        return self._writers.start(data.nbytes, lambda: self.write(target, data, record, by_zarr))

    def close(self) -> None:
        """Close the records (and let go of their lock); a write still going then fails."""
        self.records.close()
        self._writers.close()
