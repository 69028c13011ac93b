"""``FrameIndex``: the frames a storage holds, by coordinates, with what finds each one, in memory
that stays flat however long the run.

The newest frames' records stay in memory (``in_memory`` of them); older ones move, a batch at a
time, to an SQLite file in the temporary folder, deleted when the index is closed. Lookups of old
frames (a reader scrolling back, the check that refuses a frame stored twice) go to the file; an
open-ended acquisition's memory stops growing once the window is full.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pickle
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from ..kernel.data_coords import DataCoordinates

__all__ = ["DEFAULT_IN_MEMORY", "FrameIndex"]

_NONE = object()

#: Frames whose records an index keeps in memory (about 0.5-1 KB each with their coordinates).
DEFAULT_IN_MEMORY = 20_000


def _key(coords: DataCoordinates) -> str:
    """The text that identifies ``coords`` whatever the order of its axes."""
    return json.dumps(sorted(coords.items()))


class FrameIndex:
    """An ordered mapping of frame coordinates to records (anything picklable, ``None`` too)."""

    def __init__(self, in_memory: int | None = None) -> None:
        in_memory = DEFAULT_IN_MEMORY if in_memory is None else in_memory
        if isinstance(in_memory, bool) or not isinstance(in_memory, int) or in_memory < 2:
            raise ValueError(f"in_memory must be a whole number >= 2, got {in_memory!r}")
        self._limit = in_memory
        self._recent: dict[DataCoordinates, Any] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._db_path: str | None = None
        self._spilled = 0

    def __len__(self) -> int:
        return len(self._recent) + self._spilled

    def __contains__(self, coords: object) -> bool:
        if coords in self._recent:
            return True
        if self._db is None:
            return False
        with self._lock:
            return coords in self._recent or self._find(coords) is not None

    def get(self, coords: DataCoordinates, default: Any = None) -> Any:
        """The record of the frame at ``coords`` (``default`` when there is none)."""
        record = self._recent.get(coords, _NONE)
        if record is not _NONE or self._db is None:
            return default if record is _NONE else record
        with self._lock:
            record = self._recent.get(coords, _NONE)
            row = self._find(coords) if record is _NONE else None
        if record is not _NONE:
            return record
        return default if row is None else pickle.loads(row[0])

    def add(self, coords: DataCoordinates, record: Any = None) -> None:
        """List the frame at ``coords`` (again: its record replaced). Only moving the oldest
        records to the file takes the lock (they are in the file before they leave memory)."""
        self._recent[coords] = record
        if len(self._recent) > self._limit:
            with self._lock:
                self._spill(self._limit // 2)

    def pop(self, coords: DataCoordinates, default: Any = None) -> Any:
        """Unlist a frame still in memory (a write taken back); ``default`` when it is not."""
        with self._lock:
            return self._recent.pop(coords, default)

    def __iter__(self) -> Iterator[DataCoordinates]:
        """The coordinates, in the order the frames were listed."""
        with self._lock:
            recent = list(self._recent)
            rows = (
                []
                if self._db is None
                else self._db.execute("SELECT coords FROM frames ORDER BY rowid").fetchall()
            )
        for (text,) in rows:
            yield DataCoordinates(json.loads(text))
        yield from recent

    def close(self) -> None:
        """Delete the file the older records went to (the index is empty then)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
                with contextlib.suppress(OSError):
                    os.unlink(self._db_path)  # type: ignore[arg-type]
            self._recent.clear()
            self._spilled = 0

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _find(self, coords: Any) -> tuple[bytes] | None:
        if self._db is None or not isinstance(coords, dict):
            return None
        return self._db.execute(
            "SELECT record FROM frames WHERE key = ?", (_key(coords),)
        ).fetchone()

    def _spill(self, count: int) -> None:
        """Move the ``count`` oldest records to the file."""
        if self._db is None:
            handle, self._db_path = tempfile.mkstemp(prefix="exengine-frames-", suffix=".sqlite")
            os.close(handle)
            self._db = sqlite3.connect(self._db_path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute("CREATE TABLE frames (key TEXT PRIMARY KEY, coords TEXT, record BLOB)")
        oldest = list(itertools.islice(self._recent.items(), count))
        rows = [(_key(c), json.dumps(c), pickle.dumps(r, protocol=5)) for c, r in oldest]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO frames VALUES (?, ?, ?)", rows)
        for coords, _ in oldest:  # in the file first: a reader finds them all along
            del self._recent[coords]
        self._spilled += len(rows)
