"""OME-Zarr storage (zarr v3 format, OME-NGFF 0.5 ``multiscales`` metadata) on ``zarr`` (extra
``zarr``), in a local folder or in an object store (``s3://bucket/prefix``; extra ``s3``).

Frames stream into one array ``0`` of shape (axes..., y, x), one chunk per frame. Told the plan
(``prepare``), the array is made at its planned size, with channel names and other labels in the
planned order; otherwise, and along open-ended axes, it grows in doubling steps while acquiring
(unwritten frames read as zeros). ``finish`` trims it to the acquired extent (a run stopped early).
Axes are ``time``, ``channel`` and ``z`` when present (in the NGFF order t, c, z) preceded by any
other axes (e.g. ``position``, typed ``custom``). String coordinate values map to indices kept in
the group attributes (``exengine.axis_values``); channel names are also written as ``omero`` channel
labels. Each frame's coordinates and metadata are a JSON record.

Where the bytes go:

- **A local folder.** Uncompressed chunks are the frame's little-endian bytes (zarr v3 ``bytes``
  codec), written straight to the file at zarr's own chunk key, through a temporary file renamed
  into place: a chunk is complete or absent, also when the disk fills up. Records are appended to
  ``frame_metadata.jsonl``; a record that cannot be written whole is cut off again, with its chunk.
- **A store URL.** Through zarr's own stores: ``zarr.storage.ObjectStore`` on obstore (the default,
  the faster here) or ``zarr.storage.FsspecStore`` on fsspec/s3fs (``store="fsspec"``). A frame's
  chunk is written, then its record (in ``frame_metadata/<n>.json``, with the records of other
  frames whose chunks arrived meanwhile), and ``put`` returns once both are in the store, so a frame
  is reported stored only when it is, and no record claims a chunk that is not there. A
  ``DataHandler`` keeps ``writes_in_flight`` frames going at once (``start_put``; a store serves
  many requests at once, each after a network round trip) and reports each frame stored when both of
  its writes are done. A stalled network holds those writes; the handler's memory budget then blocks
  the producer (backpressure) instead of queueing frames. ``finish`` adds every record as
  ``frame_metadata.jsonl``. Endpoint, region and credentials come from ``storage_options`` or, as
  for the AWS tools, from ``AWS_*`` environment variables (``AWS_ENDPOINT_URL`` too) and the AWS
  config and credentials files.

A new dataset never replaces one: it gets the first free ``<name>_<n>.ome.zarr``, claimed atomically
(``mkdir`` locally; a create-only write of its ``zarr.json`` in a store).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..kernel.data_coords import CoordinatesLike, DataCoordinates
from ..kernel.data_storage_base import PlannedData
from ._frames import FrameStorage, check_writable
from .ndtiff_reader import positive_number
from .omezarr_attributes import NGFF_ORDER, ngff_attributes
from .omezarr_reader import RECORD_PREFIX, RECORDS
from .omezarr_store import (
    DEFAULT_TIMEOUT_S,
    bounded,
    children,
    claim,
    first_line,
    is_store_url,
    local_path,
    open_store,
    options_dict,
)

try:
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import _get_loop, sync
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

_GROUP_DOCUMENT = b'{"zarr_format": 3, "node_type": "group", "attributes": {}}'


def _fits(planned: PlannedData, axes: list[str], frame_shape: tuple[int, ...]) -> bool:
    """Whether a first frame with ``axes`` and ``frame_shape`` is as ``planned``."""
    shape = planned.frame_shape
    return set(planned.axis_sizes) == set(axes) and (shape is None or tuple(shape) == frame_shape)


class OMEZarrStorage(FrameStorage):
    """Frames written to ``<directory>/<name>_<n>.ome.zarr``; readable by any OME-Zarr tool.

    ``directory`` is a folder or a store URL (``s3://bucket/prefix``). Chunks are uncompressed
    unless ``compress`` (zarr's default codec, zstd), which saves space at about half the write
    speed. ``storage_options`` (a mapping or a JSON object) and ``store`` (``"obstore"`` or
    ``"fsspec"``) apply to store URLs; ``timeout_s`` bounds each frame's write to a store, and
    ``writes_in_flight`` is how many frames a ``DataHandler`` writes to a store at once
    (``start_put``). The y and x scale is ``pixel_size_um``, else the plan's pixel size
    (``prepare``), else the first frame's ``PixelSizeUm`` metadata, else 1 µm.
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
        writes_in_flight: int = DEFAULT_WRITES_IN_FLIGHT,
    ) -> None:
        super().__init__(summary_metadata)
        location = os.fspath(directory)
        name = "exengine" if name is None else name
        if not isinstance(name, str) or not name or "/" in name or os.sep in name:
            raise ValueError(f"name must be a plain folder name, got {name!r}")
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if (
            isinstance(writes_in_flight, bool)
            or not isinstance(writes_in_flight, int)
            or writes_in_flight < 1
        ):
            raise ValueError(
                f"writes_in_flight must be a whole number >= 1, got {writes_in_flight!r}"
            )
        # None: the plan's, else the first frame's PixelSizeUm, else 1.0
        self._pixel: float | None = None if pixel_size_um is None else float(pixel_size_um)
        self._compressors: Any = "auto" if compress else None
        self._timeout = float(timeout_s)
        self._array: Any = None
        self._planned: PlannedData | None = None
        self._extent: tuple[int, ...] = ()  # the acquired extent along each axis
        self._axes: list[str] = []
        self._values: dict[str, list[Any]] = {}
        self._positions: dict[DataCoordinates, tuple[int, ...]] = {}
        self._metadata: dict[DataCoordinates, Any] = {}
        self._labelled: dict[
            str, bool
        ] = {}  # per axis: string labels (True) or int indices (False)
        self._records_fd: int | None = None
        self._records_size = 0
        self._records_started = 0  # record objects in a store (the loop's own)
        self._records_waiting: list[
            tuple[bytes, Any]
        ] = []  # (a record, its asyncio future) for the next one
        self._records_writer: Any = None  # the task writing record objects
        self._chunks_writing = 0  # chunks being written to the store (the loop's own)
        self._chunk_slots: asyncio.Semaphore | None = None
        # frames whose writes to the store are under way
        self._writing: set[DataCoordinates] = set()
        self._idle = threading.Condition()
        if is_store_url(location):
            url = location.rstrip("/")
            dataset = self._claim_in_store(open_store(url, store, storage_options), url, name)
            self.path = f"{url}/{dataset}"
            # rooted at the dataset
            self._store: Any = open_store(self.path, store, storage_options)
            self._group = self._run(
                zarr.api.asynchronous.open_group(store=self._store, mode="r+", zarr_format=3)
            )
            self.max_writes_in_flight = writes_in_flight
            # records per object, when busy
            self._records_due = max(1, writes_in_flight - CHUNKS_AT_ONCE)
        else:
            if store not in (None, "") or options_dict(storage_options):
                raise ValueError(
                    f"store and storage_options apply to store URLs such as 's3://bucket/prefix'; "
                    f"{location!r} is a local folder"
                )
            self._store = None
            self.path = self._claim_folder(local_path(location), name)
            self._group = self._run(
                zarr.api.asynchronous.open_group(store=self.path, mode="w-", zarr_format=3)
            )
            self._records_fd = os.open(
                os.path.join(self.path, RECORDS), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666
            )

    @staticmethod
    def _claim_folder(directory: str, name: str) -> str:
        check_writable(directory)
        n = 1
        while True:
            path = os.path.join(directory, f"{name}_{n}.ome.zarr")
            try:
                os.mkdir(path)  # atomic: a dataset that exists (or is being made) is never reused
            except FileExistsError:
                n += 1
                continue
            return path

    def _claim_in_store(self, parent: Any, url: str, name: str) -> str:
        try:
            taken = self._run(children(parent))
            n = 1
            while True:
                dataset = f"{name}_{n}.ome.zarr"
                if dataset not in taken and self._run(claim(parent, dataset, _GROUP_DOCUMENT)):
                    return dataset
                n += 1
        except Exception as error:
            raise OSError(f"Cannot create a dataset in {url!r}: {first_line(error)}") from error

    # ------------------------------------------------------------------ reading
    def get_data(self, data_coordinates: CoordinatesLike) -> np.ndarray:
        return self._run(self._array.getitem(self._positions[self._known(data_coordinates)]))

    def get_metadata(self, data_coordinates: CoordinatesLike) -> Any:
        return self._metadata[self._known(data_coordinates)]

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
        if self._array is not None and (
            set(coords) != set(self._axes)
            or data.shape != self._array.shape[-2:]
            or data.dtype != self._array.dtype
        ):
            raise ValueError(
                f"Frames of one OME-Zarr array share axes {self._axes}, shape "
                f"{self._array.shape[-2:]} and dtype "
                f"{self._array.dtype}; data at {dict(coords)} is {data.shape} {data.dtype}"
            )
        self._labelled.update(kinds)
        return data

    def _write(self, coords: DataCoordinates, data: np.ndarray, metadata: dict[str, Any]) -> None:
        try:
            position, record = self._locate(coords, data, metadata)
            if self._store is None:
                self._write_local(position, data, record)
            else:
                sync(self._store_frame(position, data, record))  # each of its writes is bounded
        except Exception as error:
            raise self._failure(coords, error) from error
        self._commit(coords, position, metadata)

    def start_put(
        self,
        data_coordinates: CoordinatesLike,
        data: np.ndarray,
        metadata: Any,
        on_done: Callable[[BaseException | None], None],
    ) -> None:
        """In a store: start the frame's writes on zarr's I/O loop and return; ``on_done`` is called
        from that loop once its chunk and its record are in the store, or with the error (the frame
        is then not stored, though its chunk may stay in the store). Locally, as ``put``."""
        if self._store is None:
            super().start_put(data_coordinates, data, metadata, on_done)
            return
        coords, data, metadata = self._accept(data_coordinates, data, metadata)
        # checked again with the writes' completions held off: one write per frame, ever
        with self._idle:
            if self._finished:
                raise RuntimeError(f"{self!r} is finished; no more data can be added")
            if coords in self._index or coords in self._writing:
                raise ValueError(
                    f"Data at {dict(coords)} is already stored or being stored; the first frame is "
                    "kept"
                )
            self._writing.add(coords)
        try:
            position, record = self._locate(coords, data, metadata)
        except Exception as error:
            self._written(coords, stored=False)
            raise self._failure(coords, error) from error

        def done(finished: Any) -> None:
            cancelled = finished.cancelled()
            error = (
                OSError(errno.ECANCELED, "the write was cancelled")
                if cancelled
                else finished.exception()
            )
            try:
                if error is None:
                    self._commit(coords, position, metadata)
            finally:
                self._written(coords, stored=error is None)
                if error is None:
                    on_done(None)
                else:
                    failure = self._failure(coords, error)
                    failure.__cause__ = error
                    on_done(failure)

        asyncio.run_coroutine_threadsafe(
            self._store_frame(position, data, record), _get_loop()
        ).add_done_callback(done)

    def _written(self, coords: DataCoordinates, stored: bool) -> None:
        """A write started by ``start_put`` ended: the frame is listed if ``stored``, and no longer
        writing."""
        with self._idle:
            if stored:
                self._index.add(coords)
                self._coordinates.append(coords)
            self._writing.discard(coords)
            self._idle.notify_all()

    def prepare(self, planned: PlannedData) -> None:
        """Before the first frame: the array will be made at the planned size (open-ended axes
        start at one and grow), with labelled axes' values in the planned order, if the first frame
        has the planned axes and shape; the plan's pixel size scales y and x unless one was
        given."""
        self._planned = planned
        if self._pixel is None and planned.pixel_size_um:
            self._pixel = float(planned.pixel_size_um)

    def _locate(
        self, coords: DataCoordinates, data: np.ndarray, metadata: dict[str, Any]
    ) -> tuple[tuple[int, ...], bytes]:
        """The frame's array position (creating or growing the array, adding labels) and its
        record."""
        if self._array is None:
            if self._pixel is None:
                self._pixel = positive_number(metadata, ("PixelSizeUm", "pixel_size_um")) or 1.0
            self._create(coords, data)
        position = tuple(self._position(axis, coords[axis]) for axis in self._axes)
        capacity = self._array.shape[:-2]
        if any(i >= size for i, size in zip(position, capacity, strict=True)):
            # grow geometrically (few metadata rewrites: a request each in a store):
            # index axes 4x, labelled
            # ones (channels: a few values) 2x; finish() trims to the acquired extent
            grown = tuple(
                size if i < size else max((2 if self._labelled[axis] else 4) * size, i + 1)
                for axis, size, i in zip(self._axes, capacity, position, strict=True)
            )
            self._run(self._array.resize(grown + self._array.shape[-2:]))
        return position, (
            json.dumps({"coords": dict(coords), "metadata": metadata}) + "\n"
        ).encode()

    def _commit(
        self, coords: DataCoordinates, position: tuple[int, ...], metadata: dict[str, Any]
    ) -> None:
        """A frame is stored: make it readable."""
        self._extent = tuple(
            max(size, i + 1) for size, i in zip(self._extent, position, strict=True)
        )
        self._positions[coords] = position
        self._metadata[coords] = metadata

    def _failure(self, coords: DataCoordinates, error: BaseException) -> OSError:
        message = f"Cannot store the frame at {dict(coords)} in {self.path}: {first_line(error)}"
        code = error.errno if isinstance(error, OSError) else None
        return OSError(message) if code is None else OSError(code, message)

    def _chunk_key(self, position: tuple[int, ...]) -> str:
        return "0/" + self._array.metadata.encode_chunk_key((*position, 0, 0))

    def _write_local(self, position: tuple[int, ...], data: np.ndarray, record: bytes) -> None:
        assert self._records_fd is not None
        target = os.path.join(self.path, *self._chunk_key(position).split("/"))
        if self._compressors is not None:
            # zarr's LocalStore: a temporary file, renamed
            self._run(self._array.setitem(position, data))
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            partial = target + ".partial"
            try:
                with open(partial, "wb") as f:
                    f.write(np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).data)
                os.replace(partial, target)  # a chunk is complete or absent
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
                raise
        try:
            written = 0
            while written < len(record):
                written += os.write(self._records_fd, record[written:])
        except BaseException:
            # cut a partial record off again and take the chunk back: the frame is
            # absent, not half there
            with contextlib.suppress(OSError):
                os.ftruncate(self._records_fd, self._records_size)
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise
        self._records_size += len(record)

    async def _store_frame(
        self, position: tuple[int, ...], data: np.ndarray, record: bytes
    ) -> None:
        """Write a frame's chunk, then its record (``_add_record``); if the chunk fails, take it
        back."""
        chunk_key = self._chunk_key(position)
        self._chunks_writing += 1
        try:
            if self._chunk_slots is None:
                self._chunk_slots = asyncio.Semaphore(CHUNKS_AT_ONCE)
            async with self._chunk_slots:
                if self._compressors is not None:
                    await bounded(self._array.setitem(position, data), self._timeout)
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
            self._chunks_writing -= 1
            self._write_records_when_due()
            try:  # best effort: a chunk no record names is never read, but costs space
                await asyncio.wait_for(self._store.delete(chunk_key), min(self._timeout, 5.0))
            except Exception as error:
                logger.warning(
                    "Could not take back the partial chunk %s of %s: %s",
                    chunk_key,
                    self.path,
                    first_line(error),
                )
            raise
        # Once the chunk is there it stays, even if its record fails: a record whose write
        # timed out may
        # still land, and must not name a chunk that was taken back.
        await self._add_record(record)

    async def _add_record(self, record: bytes) -> None:
        """Return once ``record`` is in the store. Records of frames whose chunks arrive while one
        record object is being written go together in the next (``frame_metadata/<n>.json``, a line
        each): a request per frame, not two, when many frames are in flight."""
        waiter = asyncio.get_running_loop().create_future()
        self._records_waiting.append((record, waiter))
        self._chunks_writing -= 1
        self._write_records_when_due()
        await waiter

    def _write_records_when_due(self) -> None:
        """Start writing the waiting records when all the frames in flight but ``CHUNKS_AT_ONCE``
        wait for theirs, or no chunk is being written: a request costs a store about as much for a
        record as for a frame's chunk, so few record objects leave it the most for the chunks."""
        if self._records_are_due() and (
            self._records_writer is None or self._records_writer.done()
        ):
            self._records_writer = asyncio.ensure_future(self._write_records())

    def _records_are_due(self) -> bool:
        return bool(self._records_waiting) and (
            not self._chunks_writing or len(self._records_waiting) >= self._records_due
        )

    async def _write_records(self) -> None:
        prototype = default_buffer_prototype()
        while self._records_are_due():
            batch, self._records_waiting = self._records_waiting, []
            key = f"{RECORD_PREFIX}{self._records_started:09d}.json"
            self._records_started += 1
            try:
                await bounded(
                    self._store.set(
                        key, prototype.buffer.from_bytes(b"".join(r for r, _ in batch))
                    ),
                    self._timeout,
                )
            except BaseException as error:
                # a record that failed names chunks that are there: it may stay if deleting it fails
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._store.delete(key), min(self._timeout, 5.0))
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(error)
            else:
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_result(None)
        # records not yet due: the next chunk to arrive (or fail) starts the next record object

    def _run(self, awaitable: Any, timeout: float | None = None) -> Any:
        """Run a zarr or store coroutine on zarr's I/O loop; ``TimeoutError`` after
        ``timeout_s``."""
        return sync(bounded(awaitable, self._timeout if timeout is None else timeout))

    def _create(self, coords: DataCoordinates, data: np.ndarray) -> None:
        others = [a for a in coords if a not in NGFF_ORDER]
        axes = others + [a for a in NGFF_ORDER if a in coords]
        planned = self._planned
        if planned is not None and not _fits(planned, axes, data.shape):
            planned = None
        sizes = planned.axis_sizes if planned is not None else {}
        values = planned.axis_values if planned is not None else {}
        self._array = self._run(
            self._group.create_array(
                "0",
                shape=tuple(sizes.get(a) or 1 for a in axes) + data.shape,
                chunks=(1,) * len(axes) + data.shape,
                dtype=data.dtype,
                fill_value=0,
                compressors=self._compressors,
            )
        )
        self._axes = axes
        # labels in the planned order (ints of other axes are their own positions)
        self._values = {
            a: [v for v in values.get(a, ()) if a == "channel" or not isinstance(v, int)]
            for a in axes
        }
        self._extent = (0,) * len(axes)
        self._write_attributes()

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
        name = self.path.replace(os.sep, "/").rstrip("/").rsplit("/", 1)[-1]
        attributes = ngff_attributes(
            name, self._axes, self._values, self._summary, self._pixel or 1.0, finished
        )
        self._run(self._group.update_attributes(attributes))

    def _finish(self) -> None:
        # writes started with start_put complete first (a DataHandler waits for them
        # anyway): a chunk, its
        # turn for a record object and the record, each within timeout_s
        with self._idle:
            if not self._idle.wait_for(lambda: not self._writing, 3 * self._timeout):
                raise OSError(
                    errno.ETIMEDOUT,
                    f"Cannot finish {self.path}: {len(self._writing)} frames were still "
                    f"being written after {3 * self._timeout:g} s",
                )
        try:
            if self._array is not None:
                if self._array.shape[:-2] != self._extent:
                    # every chunk is inside the extent: skip zarr's deletes of
                    # the (absent) ones outside
                    self._run(
                        self._array.resize(
                            self._extent + self._array.shape[-2:], delete_outside_chunks=False
                        )
                    )
                # planned labels beyond the extent (channels a stopped run never reached)
                for axis, size in zip(self._axes, self._extent, strict=True):
                    del self._values[axis][size:]
                self._write_attributes(finished=True)
            if self._store is not None:
                records = "".join(
                    json.dumps({"coords": dict(c), "metadata": self._metadata[c]}) + "\n"
                    for c in self._coordinates
                ).encode()
                self._run(
                    self._store.set(RECORDS, default_buffer_prototype().buffer.from_bytes(records))
                )
        except Exception as error:
            raise OSError(f"Cannot finish {self.path}: {first_line(error)}") from error
        finally:
            if self._records_fd is not None:
                os.close(self._records_fd)
                self._records_fd = None

    def close(self) -> None:
        self.finish()

    def __repr__(self) -> str:
        return f"OMEZarrStorage({self.path!r})"
