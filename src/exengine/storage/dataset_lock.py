"""A dataset written by one process at a time: the writer holds one of its files locked (NDTiff:
``NDTiff.index``; OME-Zarr: ``frame_metadata.jsonl``) while it writes. The system lets go of the
lock when the file is closed or the process ends, killed too, so a crash leaves no stale lock."""

from __future__ import annotations

import os

__all__ = ["DatasetInUse", "check_not_in_use", "lock_for_writing"]


class DatasetInUse(OSError):
    """Another process writes the dataset (an acquisition, or a resume, still running)."""


def lock_for_writing(fd: int, path: str) -> None:
    """Hold an exclusive lock on the open file ``fd`` of the dataset at ``path`` while writing it
    (the system lets go of it when the file is closed or the process ends, killed too);
    :class:`DatasetInUse` when another process holds it. No lock where the system has none."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DatasetInUse(
            f"{path} is being written by another process (an acquisition or a resume still "
            "running): wait for it to end"
        ) from None


def check_not_in_use(file: str, path: str) -> None:
    """:class:`DatasetInUse` when another process holds ``file`` of the dataset at ``path``
    locked for writing (see :func:`lock_for_writing`)."""
    if not os.path.isfile(file):
        return
    fd = os.open(file, os.O_RDONLY)
    try:
        lock_for_writing(fd, path)
    finally:
        os.close(fd)  # and the lock with it
