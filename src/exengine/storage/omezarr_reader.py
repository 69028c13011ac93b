"""Reading OME-Zarr images (``OMEZarrDataset``), from a folder or a store URL: ours with their
coordinates, axis values and per-frame metadata (also after a crash: the records written so far),
any other NGFF 0.4/0.5 image with index-valued axes (channel names from ``omero``). A
bioformats2raw collection of images (ours: one per position or tile) or an HCS plate reads as one
dataset with the axes that pick its images first (a ``position`` axis over the images of others,
labelled with their paths). The frame records ome-writers (also through pymmcore-plus) keeps in
each image's ``ome_writers`` attributes give their frames and metadata. The zarr array of
pymmcore-plus's ``TensorStoreHandler`` (no OME metadata) opens with its MDA sequence's axes.
"""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..kernel.data_coords import DataCoordinates
from .omezarr_attributes import LAYOUT
from .omezarr_store import (
    DEFAULT_TIMEOUT_S,
    bounded,
    first_line,
    is_store_url,
    local_path,
    open_store,
)

try:
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "OME-Zarr storage needs the 'zarr' package: pip install 'napari-exengine[zarr]'"
    ) from error

__all__ = ["RECORDS", "RECORD_PREFIX", "OMEZarrDataset"]

#: The frames' records of a finished dataset (one JSON object per line) ...
RECORDS = "frame_metadata.jsonl"
#: ... and, in a store, of one still being written (``<n>.json`` objects).
RECORD_PREFIX = "frame_metadata/"


async def members(group: Any) -> list[str]:
    with warnings.catch_warnings():  # our frame_metadata files are no zarr nodes, and zarr says so
        warnings.simplefilter("ignore")
        return [name async for name in group.keys()]  # noqa: SIM118 - an AsyncGroup, not a dict


class OMEZarrDataset:
    """An OME-Zarr image opened for reading, from a folder or a store URL.

    Ours come with their coordinates, axis values and per-frame metadata (also after a crash: the
    records written so far); any other NGFF 0.4/0.5 image opens with index-valued axes.
    """

    def __init__(
        self,
        location: str | os.PathLike[str],
        storage_options: Any = None,
        store: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        location = os.fspath(location)
        self._timeout = timeout_s
        self._open(location, store, storage_options)
        self.summary_metadata: dict[str, Any] = {}
        #: True/False for ours (False: the writer stopped before ``finish``), None for other
        #: datasets
        self.finished: bool | None = None
        self.version = ""  #: the OME-NGFF version
        #: True for the zarr array (no OME metadata) of pymmcore-plus's ``TensorStoreHandler``
        self.mda_array = False
        self.levels: list[Any] = []
        self.axis_names: list[str] = []  # every axis, those that pick an image and y and x included
        #: The axes whose values pick an image of a collection (none for one image).
        self.image_axes: list[str] = []
        self.channel_axis: str | None = None
        self.scale: dict[str, float] = {}
        self._labels: dict[str, list[Any]] = {}
        self._images: dict[tuple[Any, ...], str] = {(): ""}  # image axes' values -> image group
        self._arrays: dict[tuple[str, int], Any] = {}  # (image group, level) -> AsyncArray
        self._paths: list[str] = []  # each level's array path in an image
        self.records: dict[DataCoordinates, Any] = {}
        try:
            group = self._sync(zarr.api.asynchronous.open_group(store=self._store, mode="r"))
            attributes = dict(group.attrs)
        except Exception as error:
            if self._open_mda_array():
                return
            raise ValueError(
                f"{location!r} is not an OME-Zarr dataset: {first_line(error)}"
            ) from error
        self._group = group
        ome = attributes.get("ome", attributes)
        ome = ome if isinstance(ome, dict) else {}
        exengine = attributes.get("exengine") or {}
        self.summary_metadata = exengine.get("summary_metadata") or {}
        self.finished = exengine.get("finished")
        labels = exengine.get("axis_values") or {}
        if LAYOUT in ome or "plate" in ome:
            self.records, images = self._read_records()
            first = self._collection(exengine, labels, images, ome.get("plate"))
            if first is None:
                return  # no image yet
            attributes = dict(self._sync(group.getitem(first)).attrs)
            ome = attributes.get("ome", attributes)
        else:
            first = ""
        multiscales = ome.get("multiscales")
        if not multiscales:
            if self._sync(members(group)):
                raise ValueError(
                    f"{location!r} is a zarr group without OME-Zarr 'multiscales' metadata"
                )
            return  # one of ours before its first frame
        names = self._read_image(ome, first, labels)
        if first == "":
            self.records = self._read_records()[0]
        if not self.records and not exengine:
            self.records = self._their_records(first, attributes, names[:-2])

    def _read_image(
        self, ome: Mapping[str, Any], first: str, labels: Mapping[str, Any]
    ) -> list[str]:
        """Take the levels, axes, scales and labels from the (first) image's ``multiscales``;
        return its axis names."""
        multiscale = ome["multiscales"][0]
        self.version = str(ome.get("version") or multiscale.get("version") or "")
        self._paths = [d["path"] for d in multiscale["datasets"]]
        self.levels = [self._array(first, level) for level in range(len(self._paths))]
        ndim = self.levels[0].ndim
        axes = multiscale.get("axes") or ["t", "c", "z", "y", "x"][-ndim:]
        names = [a["name"] if isinstance(a, dict) else str(a) for a in axes]
        self.axis_names = [*self.image_axes, *names]
        channel_axes = [
            a["name"] for a in axes if isinstance(a, dict) and a.get("type") == "channel"
        ]
        self.channel_axis = channel_axes[0] if channel_axes else None
        transforms = multiscale["datasets"][0].get("coordinateTransformations") or []
        scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), [1.0] * ndim)
        self.scale = {a: float(s) for a, s in zip(names, scale, strict=False)}
        channels = [c.get("label") for c in (ome.get("omero") or {}).get("channels", [])]
        for axis in names[:-2]:
            if axis in labels:
                self._labels[axis] = list(labels[axis])
            elif axis in channel_axes and channels:
                self._labels[axis] = channels
        return names

    def _open(self, location: str, store: str | None, storage_options: Any) -> None:
        """Set ``path``, ``local`` and the read-only zarr store for ``location``."""
        if is_store_url(location):
            self.path = location.rstrip("/")
            self._store: Any = open_store(self.path, store, storage_options, read_only=True)
            self.local = False
            return
        path = os.path.normpath(local_path(location))
        path = os.path.dirname(path) if os.path.basename(path) == "zarr.json" else path
        if not any(os.path.isfile(os.path.join(path, name)) for name in ("zarr.json", ".zattrs")):
            raise ValueError(f"{location!r} is not an OME-Zarr dataset (no zarr.json in it)")
        self.path = path
        self._store = zarr.storage.LocalStore(path, read_only=True)
        self.local = True

    def _collection(
        self,
        exengine: Mapping[str, Any],
        labels: Mapping[str, Any],
        images: dict[Any, str],
        plate: Any = None,
    ) -> str | None:
        """Find the images of a collection: ours by their records, others' by the ``OME`` group's
        ``series`` or a plate's wells (a ``position`` axis labelled with their paths) or as ``0``,
        ``1``, ...; return the first image's group, or None when there is none."""
        axes = exengine.get("image_axes")
        if axes and self.records:
            self.image_axes = list(axes)
            self._labels = {a: list(labels[a]) for a in axes if a in labels}
            self._images = {
                tuple(c[a] for a in axes): images[c] for c in self.records if c in images
            }
            return "0"
        self.image_axes = ["position"]
        if isinstance(plate, Mapping):
            series: Any = self._plate_images(plate)
        else:
            try:
                found = self._sync(self._group.getitem("OME")).attrs
                series = found.get("ome", found).get("series")
            except (KeyError, FileNotFoundError):
                series = None
        if series:
            self._labels["position"] = [str(path) for path in series]
            self._images = {(str(path),): str(path) for path in series}
            return str(series[0])
        count = 0
        while self._sync(self._group.contains(str(count))):
            count += 1
        self._images = {(i,): str(i) for i in range(count)}
        return "0" if count else None

    def _open_mda_array(self) -> bool:
        """Open a zarr array from pymmcore-plus's ``TensorStoreHandler`` (no OME metadata: its
        attributes list each frame's metadata with its MDA event, whose sequence gives the axes);
        False for anything else."""
        try:
            array = self._sync(zarr.api.asynchronous.open_array(store=self._store, mode="r"))
            listed = array.attrs.get("frame_metadatas")
            events = [m["mda_event"] for m in listed]
            import useq

            sequence = useq.MDASequence.model_validate(events[0].get("sequence") or {})
        except Exception:
            return False
        names = [axis for axis, size in sequence.sizes.items() if size]
        if len(names) != array.ndim - 2:
            return False  # positions with sub-sequences of axes the sequence does not have
        channels = [channel.config for channel in sequence.channels]
        self._labels = {"c": channels} if "c" in names else {}
        self.channel_axis = "c" if "c" in names else None
        self.axis_names = [*names, "y", "x"]
        interval = getattr(sequence.time_plan, "interval", None)
        scales = {
            "t": interval.total_seconds() if interval is not None else None,
            "z": getattr(sequence.z_plan, "step", None),
            "y": listed[0].get("pixel_size_um"),
            "x": listed[0].get("pixel_size_um"),
        }
        self.scale = {a: float(s) for a, s in scales.items() if isinstance(s, (int, float)) and s}
        self._paths, self.levels, self.mda_array = [""], [array], True
        self._arrays[("", 0)] = array
        for metadata, event in zip(listed, events, strict=True):
            index = event.get("index") or {}
            coords = {a: index.get(a, 0) for a in names}
            if "c" in coords and coords["c"] < len(channels):
                coords["c"] = channels[coords["c"]]
            self.records[DataCoordinates(coords)] = metadata
        return True

    def _plate_images(self, plate: Mapping[str, Any]) -> list[str]:
        """The image paths of an HCS plate (``row/column/field``), well by well."""
        paths = []
        for well in plate.get("wells") or []:
            path = str(well["path"]).strip("/")
            try:
                found = self._sync(self._group.getitem(path)).attrs
            except (KeyError, FileNotFoundError):
                continue  # a well listed but not written
            fields = found.get("ome", found).get("well", {}).get("images") or []
            paths += [f"{path}/{field['path']}" for field in fields]
        return paths

    def _their_records(
        self, first: str, attributes: Mapping[str, Any], axes: list[str]
    ) -> dict[DataCoordinates, Any]:
        """The frames ome-writers recorded (``ome_writers.frame_metadata``: each frame's metadata
        and ``storage_index`` in its image), by coordinates; none unless every image has them."""
        records: dict[DataCoordinates, Any] = {}
        for key, image in self._images.items():
            if image != first:
                attributes = dict(self._sync(self._group.getitem(image)).attrs)
            listed = (attributes.get("ome_writers") or {}).get("frame_metadata")
            if not listed or not isinstance(listed, list):
                return {}
            for entry in listed:
                index = entry.get("storage_index") if isinstance(entry, dict) else None
                if not isinstance(index, list) or len(index) != len(axes):
                    return {}
                coords = dict(zip(self.image_axes, key, strict=True))
                for axis, i in zip(axes, index, strict=True):
                    labels = self._labels.get(axis)
                    coords[axis] = labels[i] if labels is not None and i < len(labels) else i
                metadata = {k: v for k, v in entry.items() if k != "storage_index"}
                records[DataCoordinates(coords)] = metadata
        return records

    def _array(self, image: str, level: int) -> Any:
        """The AsyncArray of an image's resolution ``level`` (opened once)."""
        key = (image, level)
        if key not in self._arrays:
            path = f"{image}/{self._paths[level]}" if image else self._paths[level]
            self._arrays[key] = self._sync(self._group.getitem(path))
        return self._arrays[key]

    def _sync(self, coroutine: Any) -> Any:
        return sync(bounded(coroutine, self._timeout))

    def _read_records(self) -> tuple[dict[DataCoordinates, Any], dict[DataCoordinates, str]]:
        """Each recorded frame's metadata and, in a collection, its image."""
        prototype = default_buffer_prototype()

        async def fetch() -> list[bytes]:
            whole = await self._store.get(RECORDS, prototype)
            if whole is not None:
                return [whole.to_bytes()]
            # a run that did not finish
            keys = sorted([k async for k in self._store.list_prefix(RECORD_PREFIX)])
            limit = asyncio.Semaphore(32)

            async def one(key: str) -> bytes:
                async with limit:
                    found = await self._store.get(key, prototype)
                    return b"" if found is None else found.to_bytes()

            return list(await asyncio.gather(*(one(k) for k in keys)))

        records: dict[DataCoordinates, Any] = {}
        images: dict[DataCoordinates, str] = {}
        for line in b"".join(self._sync(fetch())).splitlines():
            try:
                record = json.loads(line)
                coords = DataCoordinates(record["coords"])
            except (ValueError, KeyError, TypeError):
                continue  # a record cut short by a crash
            records[coords] = record.get("metadata", {})
            if "image" in record:
                images[coords] = str(record["image"])
        return records, images

    @property
    def array(self) -> Any:
        """The full-resolution ``zarr.Array`` (axes..., y, x) of the (first) image."""
        return zarr.Array(self.levels[0])

    def position(self, coords: Mapping[str, Any]) -> tuple[int, ...]:
        """The array index of the frame at ``coords``; ``KeyError`` for a value the dataset does not
        have."""
        index = []
        for axis in self.axis_names[:-2]:
            value, labels = coords[axis], self._labels.get(axis)
            if labels is not None and value in labels:
                index.append(labels.index(value))
            elif labels is None and isinstance(value, (int, np.integer)) and value >= 0:
                index.append(int(value))
            else:
                raise KeyError(
                    f"No {axis} {value!r} in {self.path}" + (f"; it has {labels}" if labels else "")
                )
        return tuple(index)

    @property
    def extent(self) -> tuple[int, ...]:
        """The acquired extent along each leading axis (from the records, else the array's
        shape)."""
        if not self.levels:
            return ()
        if not self.records:
            return (len(self._images),) * len(self.image_axes) + tuple(self.array.shape[:-2])
        positions = [self.position(c) for c in self.records]
        return tuple(max(p[i] for p in positions) + 1 for i in range(len(self.axis_names) - 2))

    @property
    def axes(self) -> dict[str, list[Any]]:
        """Each leading axis with its values: labels for labelled axes, else the indices."""
        values: dict[str, list[Any]] = {}
        for axis, size in zip(self.axis_names[:-2], self.extent, strict=True):
            labels = self._labels.get(axis)
            if labels is not None:
                values[axis] = labels[:size]
            elif self.records:
                values[axis] = sorted({c[axis] for c in self.records})
            else:
                values[axis] = list(range(size))
        return values

    def coordinates(self) -> list[DataCoordinates]:
        """The coordinates of every frame: those recorded, else every index of the array."""
        if self.records or not self.levels:
            return list(self.records)
        import itertools

        axes = self.axes
        return [
            DataCoordinates(dict(zip(axes, combo, strict=True)))
            for combo in itertools.product(*axes.values())
        ]

    def read_frame(self, coords: Mapping[str, Any], level: int = 0) -> np.ndarray:
        """The frame at ``coords`` (zeros where its image's array does not reach: a frame never
        written); ``KeyError`` for a value the dataset does not have."""
        index = self.position(coords)[len(self.image_axes) :]
        key = tuple(coords[axis] for axis in self.image_axes)
        if key not in self._images:
            raise KeyError(f"No image for {dict(coords)} in {self.path}")
        array = self._array(self._images[key], level)
        if any(i >= size for i, size in zip(index, array.shape, strict=False)):
            return np.zeros(array.shape[-2:], array.dtype)
        return np.asarray(self._sync(array.getitem(index)))

    def read_metadata(self, coords: Mapping[str, Any]) -> Any:
        """The metadata recorded with the frame at ``coords`` (``{}`` for datasets without
        records)."""
        return self.records.get(DataCoordinates(dict(coords)), {})

    def stored_bytes(self) -> int:
        """Bytes of every object under the dataset in its store (for folders, see
        ``allocated_bytes``)."""
        fs = getattr(self._store, "fs", None)
        if fs is not None and hasattr(fs, "_du"):
            return int(self._sync(fs._du(self._store.path, total=True)))
        return int(self._sync(self._store.getsize_prefix("")))

    def __repr__(self) -> str:
        return f"OMEZarrDataset({self.path!r})"
