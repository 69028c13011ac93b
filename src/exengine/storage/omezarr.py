"""OME-Zarr storage (zarr v3 format, OME-NGFF 0.5 ``multiscales`` metadata) on ``zarr`` (extra ``zarr``).

Frames stream into one growing array ``0`` of shape (axes..., y, x), one chunk per frame; while
acquiring, the array grows in doubling steps (unwritten frames read as zeros) and ``finish`` trims it
to the acquired extent. Axes are
``time``, ``channel`` and ``z`` when present (in the NGFF order t, c, z) preceded by any other axes
(e.g. ``position``, typed ``custom``). String coordinate values map to indices kept in the group
attributes (``exengine.axis_values``); channel names are also written as ``omero`` channel labels.
Per-frame metadata goes to ``frame_metadata.jsonl`` beside the array, one line per frame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from ..kernel.data_coords import CoordinatesLike, DataCoordinates
from ._frames import FrameStorage, check_writable

try:
    import zarr
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("OME-Zarr storage needs the 'zarr' package: pip install 'napari-exengine[zarr]'") from error

__all__ = ["OMEZarrStorage"]

_NGFF_ORDER = ("time", "channel", "z")
_AXIS_TYPES = {"time": "time", "channel": "channel", "z": "space"}


class OMEZarrStorage(FrameStorage):
    """Frames written to ``<directory>/<name>_<n>.ome.zarr``; readable by any OME-Zarr tool.

    Chunks are uncompressed unless ``compress`` (zarr's default codec, zstd), which saves disk at
    about half the write speed.
    """

    def __init__(self, directory: str | os.PathLike[str], name: Optional[str] = None,
                 summary_metadata: Optional[Mapping[str, Any]] = None, pixel_size_um: float = 1.0,
                 compress: bool = False) -> None:
        super().__init__(summary_metadata)
        directory = os.fspath(directory)
        name = "exengine" if name is None else name
        if not isinstance(name, str) or not name or os.sep in name:
            raise ValueError(f"name must be a plain folder name, got {name!r}")
        check_writable(directory)
        n = 1
        while os.path.exists(os.path.join(directory, f"{name}_{n}.ome.zarr")):
            n += 1
        self.path = os.path.join(directory, f"{name}_{n}.ome.zarr")
        self._group = zarr.open_group(self.path, mode="w-", zarr_format=3)
        self._pixel = float(pixel_size_um)
        self._compressors: Any = "auto" if compress else None
        self._array: Any = None
        self._extent: tuple[int, ...] = ()  # the acquired extent along each axis
        self._axes: list[str] = []
        self._values: dict[str, list[Any]] = {}
        self._positions: dict[DataCoordinates, tuple[int, ...]] = {}
        self._metadata: dict[DataCoordinates, Any] = {}
        self._metadata_file = open(os.path.join(self.path, "frame_metadata.jsonl"), "a")  # noqa: SIM115

    def get_data(self, data_coordinates: CoordinatesLike) -> np.ndarray:
        return self._array[self._positions[self._known(data_coordinates)]]

    def get_metadata(self, data_coordinates: CoordinatesLike) -> Any:
        return self._metadata[self._known(data_coordinates)]

    def _check_frame(self, coords: DataCoordinates, data: np.ndarray) -> np.ndarray:
        if data.ndim != 2 or data.dtype.kind not in "uif":
            raise TypeError(f"OME-Zarr stores 2-D numeric frames; data at {dict(coords)} is {data.shape} {data.dtype}")
        if self._array is not None and (set(coords) != set(self._axes) or data.shape != self._array.shape[-2:]
                                        or data.dtype != self._array.dtype):
            raise ValueError(
                f"Frames of one OME-Zarr array share axes {self._axes}, shape {self._array.shape[-2:]} and dtype "
                f"{self._array.dtype}; data at {dict(coords)} is {data.shape} {data.dtype}")
        return data

    def _write(self, coords: DataCoordinates, data: np.ndarray, metadata: dict[str, Any]) -> None:
        if self._array is None:
            self._create(coords, data)
        position = tuple(self._position(axis, coords[axis]) for axis in self._axes)
        self._extent = tuple(max(size, i + 1) for size, i in zip(self._extent, position, strict=True))
        capacity = self._array.shape[:-2]
        if any(i >= size for i, size in zip(position, capacity, strict=True)):
            # grow geometrically (few metadata rewrites); finish() trims to the acquired extent
            grown = tuple(size if i < size else max(2 * size, i + 1)
                          for size, i in zip(capacity, position, strict=True))
            self._array.resize(grown + self._array.shape[-2:])
        self._write_chunk(position, data)
        self._positions[coords] = position
        self._metadata[coords] = metadata
        self._metadata_file.write(json.dumps({"coords": dict(coords), "metadata": metadata}) + "\n")
        self._metadata_file.flush()

    def _write_chunk(self, position: tuple[int, ...], data: np.ndarray) -> None:
        if self._compressors is not None:
            self._array[position] = data
            return
        # Uncompressed chunks are the frame's little-endian bytes (zarr v3 "bytes" codec); writing the
        # file directly, at the key zarr's own chunk-key encoding gives, avoids zarr's async round trip.
        key = self._array.metadata.encode_chunk_key((*position, 0, 0))
        target = os.path.join(self.path, "0", *key.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes())

    def _create(self, coords: DataCoordinates, data: np.ndarray) -> None:
        others = [a for a in coords if a not in _NGFF_ORDER]
        self._axes = others + [a for a in _NGFF_ORDER if a in coords]
        self._values = {a: [] for a in self._axes}
        leading = (1,) * len(self._axes)
        self._extent = (0,) * len(self._axes)
        self._array = self._group.create_array(
            "0", shape=leading + data.shape, chunks=leading + data.shape, dtype=data.dtype, fill_value=0,
            compressors=self._compressors)
        self._write_attributes()

    def _position(self, axis: str, value: Any) -> int:
        values = self._values[axis]
        if isinstance(value, int) and axis != "channel":
            if value < 0:
                raise ValueError(f"OME-Zarr needs non-negative indices; axis {axis!r} got {value}")
            return value
        if value not in values:
            values.append(value)
            self._write_attributes()
        return values.index(value)

    def _write_attributes(self) -> None:
        axes = [{"name": a, "type": _AXIS_TYPES.get(a, "custom")} for a in self._axes]
        axes += [{"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}]
        scale = [1.0] * len(self._axes) + [self._pixel, self._pixel]
        attributes: dict[str, Any] = {
            "ome": {"version": "0.5", "multiscales": [{
                "name": os.path.basename(self.path), "axes": axes,
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
            }]},
            "exengine": {"axis_values": {a: v for a, v in self._values.items() if v},
                         "summary_metadata": self._summary},
        }
        if self._values.get("channel"):
            attributes["ome"]["omero"] = {"channels": [{"label": str(c), "active": True}
                                                       for c in self._values["channel"]]}
        self._group.attrs.update(attributes)

    def _finish(self) -> None:
        if self._array is not None and self._array.shape[:-2] != self._extent:
            self._array.resize(self._extent + self._array.shape[-2:])
        self._metadata_file.close()

    def close(self) -> None:
        self.finish()

    def __repr__(self) -> str:
        return f"OMEZarrStorage({self.path!r})"
