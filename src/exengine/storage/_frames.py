"""What the bundled storage backends share: summary metadata, coordinate bookkeeping and put
checks."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..kernel.data_coords import CoordinatesLike, DataCoordinates, as_coordinates
from ..kernel.data_storage_base import DataStorage
from ._frame_index import FrameIndex

_MISSING = object()
#: What ``_write`` returns when it listed the frame itself.
LISTED = object()
#: What a run learns while acquiring and writes into the summary (``annotate``): a resumed run
#: leaves it out of what it starts from, and counts it again.
LEARNED_WHILE_RUNNING = ("FramesDropped", "DroppedCoordinates")


def json_safe(value: Any, where: str = "metadata") -> Any:
    """Return ``value`` with numpy scalars/arrays (and tuples) turned into JSON-native types, and
    NaN and infinities into ``None`` (strict JSON has no such numbers: a bare ``NaN`` in a file
    is refused by strict parsers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (np.generic, np.ndarray)):
        native = value.item() if isinstance(value, np.generic) else value.tolist()
        if isinstance(native, np.generic):  # no Python equivalent (e.g. a long double)
            raise TypeError(
                f"{where} holds {type(value).__name__} {value!r}, which cannot be saved as JSON"
            )
        return json_safe(native, where)  # e.g. a numpy date becomes a datetime.date: refused here
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"{where} holds {type(value).__name__} {value!r}, which cannot be saved as JSON"
    )


class FrameStorage(DataStorage):
    """A storage that refuses duplicates and puts after ``finish``, and keeps JSON-safe metadata.

    Subclasses check frames (``_check_frame``), write them (``_write``), finish (``_finish``) and
    read them back (``get_data``/``get_metadata``, after ``_known``).
    """

    def __init__(self, summary_metadata: Mapping[str, Any] | None) -> None:
        self._summary = json_safe(dict(summary_metadata or {}), "summary_metadata")
        #: The frames stored, each with the record ``_write`` returned (where to find it).
        self._frames = FrameIndex()
        self._finished = False
        self._annotated = False  # the summary grew after it was first written

    @property
    def summary_metadata(self) -> dict[str, Any]:
        return self._summary

    def annotate(self, metadata: Mapping[str, Any]) -> None:
        self._summary.update(json_safe(dict(metadata), "annotation"))
        self._annotated = True

    def __contains__(self, data_coordinates: CoordinatesLike) -> bool:
        return as_coordinates(data_coordinates) in self._frames

    def get_coordinates_list(self) -> list[DataCoordinates]:
        return list(self._frames)

    def _known(self, data_coordinates: CoordinatesLike) -> DataCoordinates:
        coords = as_coordinates(data_coordinates)
        if coords not in self._frames:
            raise KeyError(f"No data at {dict(coords)} in {self!r}")
        return coords

    def _frame_record(self, data_coordinates: CoordinatesLike) -> Any:
        """What ``_write`` returned for the frame at ``data_coordinates`` (``KeyError`` naming
        them when there is none)."""
        coords = as_coordinates(data_coordinates)
        record = self._frames.get(coords, _MISSING)
        if record is _MISSING:
            raise KeyError(f"No data at {dict(coords)} in {self!r}")
        return record

    def put(self, data_coordinates: CoordinatesLike, data: np.ndarray, metadata: Any) -> None:
        coords, data, metadata = self._accept(data_coordinates, data, metadata)
        record = self._write(coords, data, metadata)
        if record is not LISTED:
            self._frames.add(coords, record)

    def _accept(
        self, data_coordinates: CoordinatesLike, data: np.ndarray, metadata: Any
    ) -> tuple[DataCoordinates, np.ndarray, dict[str, Any]]:
        """The frame checked and ready to write, or raise naming its coordinates."""
        coords = as_coordinates(data_coordinates)
        if self._finished:
            raise RuntimeError(f"{self!r} is finished; no more data can be added")
        if coords in self._frames:
            raise ValueError(f"Data at {dict(coords)} is already stored; the first frame is kept")
        if not isinstance(data, np.ndarray):
            raise TypeError(
                f"Data at {dict(coords)} must be a numpy array, got {type(data).__name__}"
            )
        data = self._check_frame(coords, data)
        metadata = json_safe(
            metadata if metadata is not None else {}, f"metadata at {dict(coords)}"
        )
        if not isinstance(metadata, dict):
            raise TypeError(
                f"metadata at {dict(coords)} must be a dict, got {type(metadata).__name__}"
            )
        return coords, data, metadata

    def _claim(self, coords: DataCoordinates) -> None:
        """For storages that write frames at once (``start_put``; they hold a condition ``_idle``
        and the set ``_writing``): claim ``coords``, checked with the writes' ends held off, so
        that each frame is written once, ever."""
        with self._idle:  # type: ignore[attr-defined]
            if self._finished:
                raise RuntimeError(f"{self!r} is finished; no more data can be added")
            if coords in self._frames or coords in self._writing:  # type: ignore[attr-defined]
                raise ValueError(
                    f"Data at {dict(coords)} is already stored or being stored; the first frame is "
                    "kept"
                )
            self._writing.add(coords)  # type: ignore[attr-defined]

    def _check_frame(self, coords: DataCoordinates, data: np.ndarray) -> np.ndarray:
        """Return ``data`` ready to write, or raise naming ``coords`` (before anything is
        written)."""
        return data

    def _write(self, coords: DataCoordinates, data: np.ndarray, metadata: dict[str, Any]) -> Any:
        """Write one frame; return what finds it again (kept in the frame index)."""
        raise NotImplementedError

    def _finish(self) -> None:
        """Complete the dataset (called once)."""

    def finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._finish()


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed into place: the file is whole
    or absent, also after a crash."""
    folder = os.path.dirname(path) or "."
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as file:
        try:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
            os.chmod(file.name, 0o644)  # as any other file of the dataset (not 0600)
        except BaseException:
            file.close()
            os.unlink(file.name)
            raise
    os.replace(file.name, path)


def check_writable(directory: str) -> None:
    """Create ``directory`` if needed; ``PermissionError`` naming it when files cannot be written
    there."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise PermissionError(
            f"Cannot write datasets to {directory!r}: {error.strerror or error}"
        ) from error
