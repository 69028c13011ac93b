"""OME-Zarr storage (zarr v3, OME-NGFF 0.5) on ``zarr`` (extra ``zarr``), in a local folder or
an object store (``s3://bucket/prefix``; extra ``s3``).

Frames stream into an image's array ``0`` (time, channel, z, y, x: those the frames have), a chunk
per frame. Frames with other axes (``position``, a tile's ``row`` and ``column``) go to one image
per combination of their values, in a bioformats2raw collection, as NGFF allows 2-5 axes. Told
the plan (``prepare``), arrays are made at their planned size, labels in the planned order;
otherwise they grow while acquiring. ``finish`` gives every image the acquired extent. Attributes
(scales, units, colours, windows): ``omezarr_attributes``. A JSON record per frame.

Locally, a chunk is written through a temporary file renamed into place (complete or absent, also
on a full disk) and records are appended to ``frame_metadata.jsonl`` (a record that cannot be
written whole is cut off, with its chunk); a ``DataHandler`` writes ``writes_in_flight`` frames at
once (``omezarr_local``). In a store (obstore, or s3fs with ``store="fsspec"``),
a frame's chunk is written, then its record (``frame_metadata/<n>.json``); the frame is reported
stored once both are there, and up to ``writes_in_flight`` frames are in flight (``start_put``).
Credentials: ``storage_options``, else the ``AWS_*`` variables and files. A new dataset claims the
first free ``<name>_<n>.ome.zarr`` atomically (never replacing one).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..kernel.data_coords import CoordinatesLike, DataCoordinates
from ..kernel.data_storage_base import PlannedData
from ._frames import LISTED, FrameStorage
from ._writer_threads import LOCAL_WRITES_IN_FLIGHT
from .ndtiff_reader import positive_number
from .omezarr_attributes import (
    NGFF_ORDER,
    axis_scales,
    collection_attributes,
    display_window,
    exengine_attributes,
    group_document,
    image_attributes,
    image_name,
    series_documents,
)
from .omezarr_local import FrameFiles
from .omezarr_reader import RECORD_PREFIX, RECORDS
from .omezarr_store import (
    DEFAULT_TIMEOUT_S,
    RecordObjects,
    bounded,
    claim_folder,
    claim_in_store,
    first_line,
    is_store_url,
    local_path,
    open_store,
    options_dict,
    put_documents,
    write_files,
)

try:
    import zarr
    from zarr.core.array import AsyncArray
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import _get_loop, sync
    from zarr.storage import StorePath
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "OME-Zarr storage needs the 'zarr' package: pip install 'napari-exengine[zarr]'"
    ) from error

logger = logging.getLogger(__name__)

__all__ = ["CHUNKS_AT_ONCE", "DEFAULT_WRITES_IN_FLIGHT", "OMEZarrStorage"]

#: Frames in flight to a store at once: a store answers each request after a network round trip, and
#: serves many at once. Of those, at most ``CHUNKS_AT_ONCE`` send their chunk at a time; the others
#: wait for it, or for their record (``benchmarks/bench_s3.py``).
DEFAULT_WRITES_IN_FLIGHT = 32
CHUNKS_AT_ONCE = 8


@dataclass
class _Image:
    """One image of the dataset: its group (``""``: the root), its array and, in a collection, the
    values of the frames' other axes that lead to it."""

    group: str
    array: Any  # zarr AsyncArray
    coords: dict[str, Any]

    @property
    def array_path(self) -> str:
        return f"{self.group}/0" if self.group else "0"


_Where = tuple[_Image, tuple[int, ...]]  # a frame's image and its index in the image's array


def _fits(planned: PlannedData, axes: list[str], frame_shape: tuple[int, ...]) -> bool:
    """Whether a first frame with ``axes`` and ``frame_shape`` is as ``planned``."""
    shape = planned.frame_shape
    return set(planned.axis_sizes) == set(axes) and (shape is None or tuple(shape) == frame_shape)


class OMEZarrStorage(FrameStorage):
    """Frames written to ``<directory>/<name>_<n>.ome.zarr``; readable by any OME-Zarr tool.

    ``directory`` is a folder or a store URL (``s3://bucket/prefix``). Chunks are uncompressed
    unless ``compress`` (zarr's default codec, zstd), which saves space at about half the write
    speed. ``storage_options`` (a mapping or a JSON object) and ``store`` (``"obstore"`` or
    ``"fsspec"``) apply to store URLs; ``timeout_s`` bounds each frame's write to a store.
    ``writes_in_flight`` is how many frames a ``DataHandler`` writes at once (``start_put``): by
    default 32 to a store, 2 to a local folder. The y and x scale is ``pixel_size_um``, else the
    plan's pixel size (``prepare``), else the first frame's ``PixelSizeUm`` metadata, else 1 µm.
    """

    accepts_store_urls = True

    def __init__(
        self,
        directory: str | os.PathLike[str],
        name: str | None = None,
        summary_metadata: Mapping[str, Any] | None = None,
        pixel_size_um: float | None = None,
        compress: bool = False,
        storage_options: Any = None,
        store: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        writes_in_flight: int | None = None,
    ) -> None:
        super().__init__(summary_metadata)
        location = os.fspath(directory)
        name = "exengine" if name is None else name
        if not isinstance(name, str) or not name or "/" in name or os.sep in name:
            raise ValueError(f"name must be a plain folder name, got {name!r}")
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if writes_in_flight is not None and (
            isinstance(writes_in_flight, bool)
            or not (isinstance(writes_in_flight, int) and writes_in_flight >= 1)
        ):
            raise ValueError(
                f"writes_in_flight must be a whole number >= 1, got {writes_in_flight!r}"
            )
        self._empty(pixel_size_um, "auto" if compress else None, float(timeout_s))
        if is_store_url(location):
            url = location.rstrip("/")
            dataset = claim_in_store(
                open_store(url, store, storage_options), url, name, self._timeout
            )
            self.path = f"{url}/{dataset}"
            self._store: Any = open_store(self.path, store, storage_options)  # at the dataset
            self._group = self._run(
                zarr.api.asynchronous.open_group(store=self._store, mode="r+", zarr_format=3)
            )
            self.max_writes_in_flight = in_flight = writes_in_flight or DEFAULT_WRITES_IN_FLIGHT
            due = max(1, in_flight - CHUNKS_AT_ONCE)
            self._records = RecordObjects(self._store, RECORD_PREFIX, self._timeout, due)
        else:
            if store not in (None, "") or options_dict(storage_options):
                raise ValueError(
                    f"store and storage_options apply to store URLs such as 's3://bucket/prefix'; "
                    f"{location!r} is a local folder"
                )
            self._store = None
            self.path = claim_folder(local_path(location), name)
            self._group = self._run(
                zarr.api.asynchronous.open_group(store=self.path, mode="w-", zarr_format=3)
            )
            self._write_locally(writes_in_flight or LOCAL_WRITES_IN_FLIGHT)

    def _write_locally(self, writes_in_flight: int) -> None:
        """Write to the local folder ``self.path``: records appended to its ``frame_metadata.jsonl``
        (locked while writing), up to ``writes_in_flight`` frames at once."""
        self._files = FrameFiles(self.path, writes_in_flight)
        self.max_writes_in_flight = writes_in_flight

    def _empty(self, pixel_size_um: float | None, compressors: Any, timeout_s: float) -> None:
        """The state of a dataset without frames (one reopened to resume then reads its own).
        ``pixel_size_um`` ``None``: the plan's, else the first frame's ``PixelSizeUm``, else 1."""
        self._pixel: float | None = None if pixel_size_um is None else float(pixel_size_um)
        self._compressors: Any = compressors
        self._timeout = timeout_s
        self._planned: PlannedData | None = None
        self._frame: tuple[tuple[int, ...], np.dtype] | None = None  # frames' shape and dtype
        self._sizes: tuple[int, ...] = ()  # the images' planned sizes (open-ended axes: 1)
        self._template: Any = None  # the array metadata new images start from
        self._extent: tuple[int, ...] = ()  # the acquired extent along each image axis
        self._axes: list[str] = []  # the images' axes (NGFF's), then y and x
        self._keys: list[str] = []  # the other axes: their values pick the image
        self._images: dict[tuple[int, ...], _Image] = {}
        self._image_ome: dict[str, Any] | None = None  # the images' attributes (a collection)
        self._windows: dict[str, dict[str, float]] = {}  # channels' display windows, by label
        self._values: dict[str, list[Any]] = {}
        self._by_group: dict[str, _Image] = {}  # the images by group (frames' records name it)
        self._labelled: dict[str, bool] = {}  # per axis: labels (True) or indices (False)
        self._files: FrameFiles | None = None  # locally
        self._chunk_slots: asyncio.Semaphore | None = None
        self._writing: set[DataCoordinates] = set()  # frames start_put is writing
        self._idle = threading.Condition()

    # ------------------------------------------------------------------ reading
    def get_data(self, data_coordinates: CoordinatesLike) -> np.ndarray:
        group, index, _ = self._frame_record(data_coordinates)
        return self._run(self._by_group[group].array.getitem(index))

    def get_metadata(self, data_coordinates: CoordinatesLike) -> Any:
        return self._frame_record(data_coordinates)[2]

    # ------------------------------------------------------------------ writing
    def _check_frame(self, coords: DataCoordinates, data: np.ndarray) -> np.ndarray:
        if data.ndim != 2 or data.dtype.kind not in "uif" or 0 in data.shape:
            raise TypeError(
                f"OME-Zarr stores non-empty 2-D numeric frames; data at {dict(coords)} is "
                f"{data.shape} {data.dtype}"
            )
        kinds = {
            axis: axis == "channel" or not isinstance(value, int) for axis, value in coords.items()
        }
        for axis, value in coords.items():
            if not kinds[axis] and value < 0:
                raise ValueError(f"OME-Zarr needs non-negative indices; axis {axis!r} got {value}")
            if self._labelled.get(axis, kinds[axis]) != kinds[axis]:
                held = "labels (strings)" if self._labelled[axis] else "indices (ints)"
                raise ValueError(
                    f"Axis {axis!r} of this OME-Zarr array holds {held}; {value!r} at "
                    f"{dict(coords)} would share an index with one of them: use one kind of value "
                    "per axis"
                )
        if self._frame is not None and (
            set(coords) != {*self._keys, *self._axes} or (data.shape, data.dtype) != self._frame
        ):
            raise ValueError(
                f"Frames of one OME-Zarr array share axes {[*self._keys, *self._axes]}, shape "
                f"{self._frame[0]} and dtype {self._frame[1]}; data at {dict(coords)} is "
                f"{data.shape} {data.dtype}"
            )
        self._labelled.update(kinds)
        return data

    def _write(self, coords: DataCoordinates, data: np.ndarray, metadata: dict[str, Any]) -> Any:
        self._claim(coords)
        record = None
        try:
            where, chunk_record = self._locate(coords, data, metadata)
            if self._files is not None:
                target, by_zarr = self._local_chunk(where, data)
                self._files.write(target, data, chunk_record, by_zarr)
            else:
                sync(self._store_frame(where, data, chunk_record))  # each write is bounded
            record = self._commit(coords, where, metadata)
        except Exception as error:
            raise self._failure(coords, error) from error
        finally:
            self._written(coords, record)
        return LISTED

    def start_put(
        self,
        data_coordinates: CoordinatesLike,
        data: np.ndarray,
        metadata: Any,
        on_done: Callable[[BaseException | None], None],
    ) -> None:
        """Start the frame's writes and return: on a writer thread locally, on zarr's I/O loop in a
        store. ``on_done`` is called from there once its chunk and its record are written, or with
        the error (the frame is then not stored; in a store its chunk may stay)."""
        coords, data, metadata = self._accept(data_coordinates, data, metadata)
        self._claim(coords)
        try:
            where, record = self._locate(coords, data, metadata)
        except Exception as error:
            self._written(coords, None)
            raise self._failure(coords, error) from error

        def done(finished: Any) -> None:
            cancelled = OSError(errno.ECANCELED, "the write was cancelled")
            error = cancelled if finished.cancelled() else finished.exception()
            record = None
            try:
                record = None if error else self._commit(coords, where, metadata)
            finally:
                self._written(coords, record)
                if error is None:
                    on_done(None)
                else:
                    failure = self._failure(coords, error)
                    failure.__cause__ = error
                    on_done(failure)

        if self._files is not None:
            target, by_zarr = self._local_chunk(where, data)
            self._files.start(target, data, record, by_zarr).add_done_callback(done)
        else:
            asyncio.run_coroutine_threadsafe(
                self._store_frame(where, data, record), _get_loop()
            ).add_done_callback(done)

    def _written(self, coords: DataCoordinates, record: Any) -> None:
        """A write of ``start_put`` ended: the frame listed with ``record`` (``None``: failed)."""
        with self._idle:
            if record is not None:
                self._frames.add(coords, record)
            self._writing.discard(coords)
            self._idle.notify_all()

    def prepare(self, planned: PlannedData) -> None:
        """Before the first frame: arrays will be made at the planned size (open-ended axes start at
        one and grow), labels in the planned order, if the first frame has the planned axes and
        shape; the plan's pixel size scales y and x unless one was given."""
        self._planned = planned
        if self._pixel is None and planned.pixel_size_um:
            self._pixel = float(planned.pixel_size_um)

    def _locate(
        self, coords: DataCoordinates, data: np.ndarray, metadata: dict[str, Any]
    ) -> tuple[_Where, bytes]:
        """The frame's image and index in its array (creating the image or growing its array, adding
        labels and a new channel's display window), and its record."""
        if self._frame is None:
            if self._pixel is None:
                self._pixel = positive_number(metadata, ("PixelSizeUm", "pixel_size_um")) or 1.0
            self._create(coords, data)
        key = tuple(self._position(axis, coords[axis]) for axis in self._keys)
        image = self._images.get(key) or self._add_image(key, coords)
        index = tuple(self._position(axis, coords[axis]) for axis in self._axes)
        if "channel" in coords and str(coords["channel"]) not in self._windows:
            self._windows[str(coords["channel"])] = display_window(data)
            self._write_attributes()
        capacity = image.array.shape[:-2]
        if any(i >= size for i, size in zip(index, capacity, strict=True)):
            # grow geometrically (few metadata rewrites): index axes 4x, labels 2x; finish() trims
            grown = tuple(
                size if i < size else max((2 if self._labelled[axis] else 4) * size, i + 1)
                for axis, size, i in zip(self._axes, capacity, index, strict=True)
            )
            self._run(image.array.resize(grown + image.array.shape[-2:]))
        return (image, index), self._record(coords, image, metadata)

    def _record(self, coords: DataCoordinates, image: _Image, metadata: dict[str, Any]) -> bytes:
        record: dict[str, Any] = {"coords": dict(coords), "metadata": metadata}
        if self._keys:
            record["image"] = image.group
        return (json.dumps(record) + "\n").encode()

    def _commit(
        self, coords: DataCoordinates, where: _Where, metadata: dict[str, Any]
    ) -> tuple[str, tuple[int, ...], dict[str, Any]]:
        """A frame is stored: its record in the frame index (image group, index, metadata)."""
        with self._idle:  # writes end on several threads
            self._extent = tuple(
                max(size, i + 1) for size, i in zip(self._extent, where[1], strict=True)
            )
        return where[0].group, where[1], metadata

    def _failure(self, coords: DataCoordinates, error: BaseException) -> OSError:
        message = f"Cannot store the frame at {dict(coords)} in {self.path}: {first_line(error)}"
        code = error.errno if isinstance(error, OSError) else None
        return OSError(message) if code is None else OSError(code, message)

    @staticmethod
    def _chunk_key(where: _Where) -> str:
        image, index = where
        return f"{image.array_path}/{image.array.metadata.encode_chunk_key((*index, 0, 0))}"

    def _local_chunk(
        self, where: _Where, data: np.ndarray
    ) -> tuple[str, Callable[[], object] | None]:
        """A frame's chunk file and, with a codec, how zarr writes it (``FrameFiles.write``)."""
        target = os.path.join(self.path, *self._chunk_key(where).split("/"))
        if self._compressors is None:
            return target, None
        return target, lambda: self._run(where[0].array.setitem(where[1], data))

    async def _store_frame(self, where: _Where, data: np.ndarray, record: bytes) -> None:
        """Write a frame's chunk, then its record; a chunk that fails is taken back."""
        chunk_key = self._chunk_key(where)
        self._records.chunks_writing += 1
        try:
            if self._chunk_slots is None:
                self._chunk_slots = asyncio.Semaphore(CHUNKS_AT_ONCE)
            async with self._chunk_slots:
                if self._compressors is not None:
                    await bounded(where[0].array.setitem(where[1], data), self._timeout)
                else:
                    chunk = (
                        np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<"))
                        .reshape(-1)
                        .view(np.uint8)
                    )
                    await bounded(
                        self._store.set(
                            chunk_key, default_buffer_prototype().buffer.from_array_like(chunk)
                        ),
                        self._timeout,
                    )
        except BaseException:
            self._records.chunk_failed()
            try:  # best effort: a chunk no record names is never read, but costs space
                await asyncio.wait_for(self._store.delete(chunk_key), min(self._timeout, 5.0))
            except Exception as error:
                message = "Could not take back the partial chunk %s of %s: %s"
                logger.warning(message, chunk_key, self.path, first_line(error))
            raise
        # Once the chunk is there it stays, even if its record fails: a record whose write timed out
        # may still land, and must not name a chunk that was taken back.
        await self._records.add(record)

    def _run(self, awaitable: Any, timeout: float | None = None) -> Any:
        """Run a zarr or store coroutine on zarr's I/O loop; ``TimeoutError`` after timeout_s."""
        return sync(bounded(awaitable, self._timeout if timeout is None else timeout))

    def _create(self, coords: DataCoordinates, data: np.ndarray) -> None:
        """Lay the dataset out for frames like the first: its axes, the planned sizes and labels."""
        self._keys = [a for a in coords if a not in NGFF_ORDER]
        self._axes = [a for a in NGFF_ORDER if a in coords]
        planned = self._planned
        if planned is not None and not _fits(planned, [*self._keys, *self._axes], data.shape):
            planned = None
        values = planned.axis_values if planned is not None else {}
        # labels in the planned order (ints of other axes are their own positions)
        self._values = {
            a: [v for v in values.get(a, ()) if a == "channel" or not isinstance(v, int)]
            for a in [*self._keys, *self._axes]
        }
        sizes = planned.axis_sizes if planned is not None else {}
        self._sizes = tuple(sizes.get(a) or 1 for a in self._axes)
        self._frame = (data.shape, data.dtype)
        self._extent = (0,) * len(self._axes)

    def _add_image(self, key: tuple[int, ...], coords: DataCoordinates) -> _Image:
        """A new image, for the frames whose other axes have the values of ``coords``; the first
        array is made by zarr, the others from its metadata."""
        image = _Image(
            str(len(self._images)) if self._keys else "", None, {a: coords[a] for a in self._keys}
        )
        if self._template is None:
            assert self._frame is not None
            parent = self._group
            if image.group:
                parent = self._run(
                    self._group.create_group(image.group, attributes=self._image_attributes(image))
                )
            image.array = self._run(
                parent.create_array(
                    "0",
                    shape=self._sizes + self._frame[0],
                    chunks=(1,) * len(self._axes) + self._frame[0],
                    dtype=self._frame[1],
                    fill_value=0,
                    compressors=self._compressors,
                    dimension_names=[*self._axes, "y", "x"],
                )
            )
            self._template = image.array.metadata
            self._write_attributes()  # once its array is there
        else:
            array = self._template.to_buffer_dict(default_buffer_prototype())["zarr.json"]
            self._put_documents(
                {
                    f"{image.group}/zarr.json": group_document(self._image_attributes(image)),
                    f"{image.group}/0/zarr.json": array.to_bytes(),
                }
            )
            image.array = AsyncArray(self._template, StorePath(self._root, image.array_path))
        self._images[key] = image
        self._by_group[image.group] = image
        return image

    @property
    def _root(self) -> Any:
        return self._group.store_path.store

    def _put_documents(self, documents: dict[str, bytes]) -> None:
        """Write metadata documents (bytes by key) to the store or the folder."""
        if self._store is None:
            write_files(self.path, documents)
        else:
            self._run(put_documents(self._root, documents))

    def _image_attributes(self, image: _Image) -> dict[str, Any]:
        """An image group's attributes in a collection."""
        return {"ome": self._ome(image_name(image.coords)), "exengine": {"coords": image.coords}}

    def _ome(self, name: str) -> dict[str, Any]:
        assert self._frame is not None and self._pixel is not None
        return image_attributes(
            name,
            self._axes,
            self._values.get("channel", ()),
            axis_scales(self._summary, self._pixel),
            self._frame[1],
            self._windows,
        )

    def _position(self, axis: str, value: Any) -> int:
        values = self._values[axis]
        if isinstance(value, int) and axis != "channel":
            return value
        if value not in values:
            values.append(value)
            try:
                self._write_attributes()
            except BaseException:
                values.pop()
                raise
        return values.index(value)

    def _write_attributes(self, finished: bool = False) -> None:
        """Write the root's attributes and, in a collection, the images' when theirs changed."""
        name = self.path.replace(os.sep, "/").rstrip("/").rsplit("/", 1)[-1]
        exengine = exengine_attributes(self._values, self._summary, finished, self._keys)
        if not self._keys:
            self._run(self._group.update_attributes({"ome": self._ome(name), "exengine": exengine}))
            return
        self._run(
            self._group.update_attributes({"ome": collection_attributes(), "exengine": exengine})
        )
        ome = self._ome("")
        if ome != self._image_ome and self._images:
            self._put_documents(
                {
                    f"{image.group}/zarr.json": group_document(self._image_attributes(image))
                    for image in self._images.values()
                }
            )
        self._image_ome = ome

    def _finish(self) -> None:
        try:
            # start_put's writes end first (a chunk, a record object's turn, the record: each within
            # timeout_s; a DataHandler waits for them anyway); one still going then fails, absent
            with self._idle:
                if not self._idle.wait_for(lambda: not self._writing, 3 * self._timeout):
                    raise OSError(
                        errno.ETIMEDOUT,
                        f"Cannot finish {self.path}: {len(self._writing)} frames were still "
                        f"being written after {3 * self._timeout:g} s",
                    )
            self._complete()
        finally:
            if self._files is not None:
                self._files.close()

    def _complete(self) -> None:
        """Trim the images to the acquired extent and write the final metadata."""
        try:
            if self._frame is not None:
                shape = self._extent + self._frame[0]
                for image in self._images.values():
                    if image.array.shape != shape:  # no chunk is outside: skip zarr's deletes
                        self._run(image.array.resize(shape, delete_outside_chunks=False))
                # planned labels beyond the extent (channels a stopped run never reached)
                for axis, size in zip(self._axes, self._extent, strict=True):
                    del self._values[axis][size:]
                self._write_attributes(finished=True)
                if self._keys:
                    images = [(image.group, image.coords) for image in self._images.values()]
                    sizes = dict(zip(self._axes, self._extent, strict=True))
                    self._put_documents(series_documents(images, sizes, *self._frame, self._pixel))
            if self._store is not None:
                records = b"".join(
                    self._record(c, self._by_group[group], metadata)
                    for c in self._frames
                    for group, _, metadata in (self._frames.get(c),)
                )
                self._run(
                    self._store.set(RECORDS, default_buffer_prototype().buffer.from_bytes(records))
                )
        except Exception as error:
            raise OSError(f"Cannot finish {self.path}: {first_line(error)}") from error

    def close(self) -> None:
        self.finish()

    def __repr__(self) -> str:
        return f"OMEZarrStorage({self.path!r})"
