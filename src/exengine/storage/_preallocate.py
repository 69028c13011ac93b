"""Reserving disk space ahead of a file that grows frame by frame.

On ext4 and XFS, writing into space reserved with ``fallocate`` is much cheaper than writing into a
hole (512 KB frames: 46 µs instead of 80 µs here). Elsewhere (tmpfs, network and non-Linux file
systems) reserving gains nothing or is emulated by writing zeros, so it is not done there.
"""

from __future__ import annotations

import ctypes
import sys
from typing import IO, Any

#: File systems where reserving pays: ext4 (also ext2/3) and XFS, by their ``statfs`` magic numbers.
_RESERVING_FILE_SYSTEMS = frozenset({0xEF53, 0x58465342})
_FALLOC_FL_KEEP_SIZE = 1
_STEP_BYTES = 64 * 1024**2


def _load_libc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


def file_system_reserves(fd: int) -> bool:
    """True when the file ``fd`` is on a file system where reserving space ahead of writes pays."""
    if _LIBC is None:
        return False
    buffer = ctypes.create_string_buffer(256)  # struct statfs; f_type (a C long) comes first
    if _LIBC.fstatfs(fd, buffer) != 0:
        return False
    return ctypes.c_long.from_buffer(buffer).value in _RESERVING_FILE_SYSTEMS


class SpaceReserver:
    """Keeps ``step_bytes`` of disk space reserved ahead of the write position of a growing file.

    Call :meth:`after_write` after each write. The reservation keeps the file's size (the file ends
    where the data ends once it is truncated) and is skipped where it does not pay (see
    :func:`file_system_reserves`) or after the file system refused it once.
    """

    def __init__(self, step_bytes: int = _STEP_BYTES) -> None:
        self._step = step_bytes
        self._file: IO[bytes] | None = None
        self._reserved_to = 0
        self._enabled = False

    def after_write(self, file: IO[bytes]) -> None:
        """Reserve the next step when less than half of one is left beyond ``file``'s position."""
        if file is not self._file:
            self._file, self._reserved_to = file, 0
            self._enabled = file_system_reserves(file.fileno())
        if not self._enabled:
            return
        position = file.tell()
        if position + self._step // 2 <= self._reserved_to:
            return
        start = max(position, self._reserved_to)
        if _LIBC.fallocate(file.fileno(), _FALLOC_FL_KEEP_SIZE, start, self._step) != 0:  # type: ignore[union-attr]
            self._enabled = False  # e.g. a full disk: the writes themselves will say so
            return
        self._reserved_to = start + self._step

    @property
    def reserved_to(self) -> int:
        """The end of the reserved space in the current file (0 when nothing is reserved)."""
        return self._reserved_to if self._enabled else 0
