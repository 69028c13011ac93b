"""NDTiff (on disk) and NDRAM (in memory) storage on the ``ndstorage`` package (extra ``ndstorage``).

Guards the adapter adds around ``ndstorage`` 0.1.18:

- NDTiff frames must be 2-D uint8 or uint16, all of one shape, with at least one pixel; NDRAM frames
  numeric, at least 2-D and not empty. Anything else is refused with a clear error before anything is
  written. Non-contiguous arrays are copied to C order (lossless).
- Metadata may hold numpy scalars and arrays; they are converted to JSON numbers and lists.
- A failed write leaves no phantom frame behind; writing the same coordinates twice is an error
  that keeps the first frame.
- A dataset is never overwritten: each one gets a new numbered folder ``<name>_<n>``.
- Reads right after writes see the new bytes (ndstorage's buffered readers are refreshed).
- The index is flushed after every frame, so every frame reported stored survives a crash.
- On ext4 and XFS, disk space is reserved 64 MB at a time ahead of the writer, which makes each
  frame's write much cheaper; finishing the dataset trims the file to its data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from ..kernel.data_coords import CoordinatesLike, DataCoordinates
from ._frames import FrameStorage, check_writable, json_safe
from ._preallocate import SpaceReserver

try:
    import ndstorage
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "NDTiff/NDRAM storage needs the 'ndstorage' package: pip install 'napari-exengine[ndstorage]'"
    ) from error

__all__ = ["NDRAMStorage", "NDTiffStorage", "json_safe"]

NDTIFF_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def _refuse_empty(backend: str, coords: DataCoordinates, data: np.ndarray) -> None:
    """Raise ``ValueError`` for a frame without pixels (a 0 x 512 frame makes the NDTiff index unreadable)."""
    if data.size == 0:
        raise ValueError(
            f"{backend} cannot store a frame without pixels; data at {dict(coords)} has shape {data.shape} "
            f"(every dimension must be at least 1)"
        )


class _NDStorage(FrameStorage):
    """What NDTiff and NDRAM storage share: an ``ndstorage`` dataset underneath."""

    def __init__(self, dataset: Any, summary_metadata: Optional[Mapping[str, Any]]) -> None:
        super().__init__(summary_metadata)
        self._dataset = dataset
        dataset.initialize(self._summary)

    @property
    def dataset(self) -> Any:
        """The underlying ``ndstorage`` dataset."""
        return self._dataset

    def get_data(self, data_coordinates: CoordinatesLike) -> np.ndarray:
        coords = self._known(data_coordinates)
        return self._dataset.read_image(**coords)

    def get_metadata(self, data_coordinates: CoordinatesLike) -> Any:
        coords = self._known(data_coordinates)
        return self._dataset.read_metadata(**coords)

    def _write(self, coords: DataCoordinates, data: np.ndarray, metadata: dict[str, Any]) -> None:
        self._dataset.put_image(dict(coords), data, metadata)

    def _finish(self) -> None:
        self._dataset.finish()


class NDTiffStorage(_NDStorage):
    """Frames saved as an NDTiff dataset in a new folder ``<directory>/<name>_<n>``.

    ``name`` defaults to ``"exengine"``; :meth:`at_path` writes to an exact, new folder instead.
    Frames must be 2-D uint8 or uint16. The folder is in :attr:`path`.
    """

    def __init__(self, directory: str | os.PathLike[str], name: Optional[str] = None,
                 summary_metadata: Optional[Mapping[str, Any]] = None, *, _exact: bool = False) -> None:
        directory = os.fspath(directory)
        name = "exengine" if name is None else name
        if not isinstance(name, str) or not name or os.sep in name or name in (".", ".."):
            raise ValueError(f"name must be a plain folder name, got {name!r}")
        check_writable(directory)
        if _exact:
            target = os.path.join(directory, name)
            if os.path.exists(target):
                raise FileExistsError(f"{target!r} already exists; NDTiff datasets are never overwritten")
            os.makedirs(target)
            dataset = ndstorage.NDTiffDataset(target, writable=True)
        else:
            dataset = ndstorage.NDTiffDataset(directory, name=name, writable=True)
        super().__init__(dataset, summary_metadata)
        self._frame_kind: Optional[tuple[tuple[int, ...], np.dtype]] = None
        self._stale_readers = False
        self._reserver = SpaceReserver()
        self.path = os.path.normpath(dataset.path)

    @classmethod
    def at_path(cls, path: str | os.PathLike[str],
                summary_metadata: Optional[Mapping[str, Any]] = None) -> NDTiffStorage:
        """A dataset in exactly the folder ``path``, which must not exist yet."""
        path = os.path.abspath(os.fspath(path))
        return cls(os.path.dirname(path), os.path.basename(path), summary_metadata, _exact=True)

    def _check_frame(self, coords: DataCoordinates, data: np.ndarray) -> np.ndarray:
        if data.dtype not in NDTIFF_DTYPES:
            raise TypeError(
                f"NDTiff stores uint8 or uint16 frames; data at {dict(coords)} is {data.dtype}. "
                f"Convert it first (e.g. data.astype(np.uint16)) or use NDRAMStorage"
            )
        if data.ndim != 2:
            raise ValueError(f"NDTiff stores 2-D frames; data at {dict(coords)} has shape {data.shape}")
        _refuse_empty("NDTiff", coords, data)
        if self._frame_kind is None:
            self._frame_kind = (data.shape, data.dtype)
        elif (data.shape, data.dtype) != self._frame_kind:
            shape, dtype = self._frame_kind
            raise ValueError(
                f"All frames of an NDTiff dataset share one shape and dtype ({shape}, {dtype}); "
                f"data at {dict(coords)} is {data.shape}, {data.dtype}"
            )
        return np.ascontiguousarray(data)

    def _write(self, coords: DataCoordinates, data: np.ndarray, metadata: dict[str, Any]) -> None:
        key = frozenset(coords.items())
        try:
            super()._write(coords, data, metadata)
        except BaseException:
            self._dataset._write_pending_images.pop(key, None)
            raise
        self._dataset._index_file.flush()
        self._reserver.after_write(self._dataset.current_writer.file)
        self._stale_readers = True

    def get_data(self, data_coordinates: CoordinatesLike) -> np.ndarray:
        self._refresh_readers()
        return super().get_data(data_coordinates)

    def get_metadata(self, data_coordinates: CoordinatesLike) -> Any:
        self._refresh_readers()
        return super().get_metadata(data_coordinates)

    def _refresh_readers(self) -> None:
        # ndstorage reads through buffered files; a buffer filled before later writes would return stale bytes.
        if self._stale_readers:
            self._stale_readers = False
            for reader in self._dataset._readers_by_filename.values():
                reader.file.seek(0, os.SEEK_END)

    def close(self) -> None:
        self.finish()
        self._dataset.close()

    def __repr__(self) -> str:
        return f"NDTiffStorage({self.path!r})"


class NDRAMStorage(_NDStorage):
    """Frames kept in memory (any numeric dtype), readable at once; nothing is written to disk."""

    def __init__(self, summary_metadata: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(ndstorage.NDRAMDataset(), summary_metadata)

    def _check_frame(self, coords: DataCoordinates, data: np.ndarray) -> np.ndarray:
        if data.dtype.kind not in "uifb":
            raise TypeError(f"NDRAM stores numeric frames; data at {dict(coords)} is {data.dtype}")
        if data.ndim < 2:
            raise ValueError(
                f"NDRAM stores frames of 2 or more dimensions; data at {dict(coords)} has shape {data.shape}"
            )
        _refuse_empty("NDRAM", coords, data)
        return data

    def close(self) -> None:
        self.finish()

    def __repr__(self) -> str:
        return f"NDRAMStorage({len(self._coordinates)} frames)"
