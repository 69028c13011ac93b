"""NDTiff (on disk) and NDRAM (in memory) storage on the ``ndstorage`` package (extra
``ndstorage``).

Guards the adapter adds around ``ndstorage`` 0.1.18:

- NDTiff frames must be 2-D uint8 or uint16, all of one shape, with at least one pixel; NDRAM frames
  numeric, at least 2-D and not empty. Anything else is refused with a clear error before anything
  is written. Non-contiguous arrays are copied to C order (lossless).
- Each axis takes ints or strs, not both (ndstorage's rule), and no axis is named ``self``
  (ndstorage could not read it back): refused, naming the axis, before anything is written.
- Metadata may hold numpy scalars and arrays; they are converted to JSON numbers and lists.
- A failed write leaves no phantom frame behind; writing the same coordinates twice is an error
  that keeps the first frame.
- A dataset is never overwritten: each one gets a new numbered folder ``<name>_<n>``.
- Reads right after writes see the new bytes (ndstorage's buffered readers are refreshed).
- Image files and the index are written straight to the OS, so every frame reported stored survives
  a crash of the process. A write that fails (a full disk) is cut off and the writer rolled back:
  the files hold whole frames and whole index entries only, and the dataset still opens and
  finishes.
- On ext4 and XFS, disk space is reserved 64 MB at a time ahead of the writer, which makes each
  frame's write much cheaper; finishing the dataset trims the file to its data.
- Through a ``DataHandler`` (``start_put``), frames of 2 MB and more are written two at a time,
  into two image files side by side (``ndtiff_files``): that fills fresh memory 1.65 times as fast
  as one writer here.
- What was learned while acquiring (``annotate``: frames the cameras dropped and their
  coordinates) is written beside the TIFFs, whose summary was written at the start, as the summary
  metadata in :data:`RUN_SUMMARY`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ..kernel.data_coords import CoordinatesLike, DataCoordinates
from ._frame_index import FrameIndex
from ._frames import (
    LEARNED_WHILE_RUNNING,
    LISTED,
    FrameStorage,
    check_writable,
    json_safe,
    write_atomically,
)
from ._writer_threads import LOCAL_WRITES_IN_FLIGHT, WriterThreads
from .dataset_lock import check_not_in_use, lock_for_writing
from .ndtiff_files import (
    PARTIAL,
    DirectFile,
    ImageFile,
    ImageFiles,
    Unkept,
    free_prefix,
    tidy_image_files,
)
from .ndtiff_reader import INDEX_NAME, RUN_SUMMARY, NDTiffReader

try:
    import ndstorage
    from ndstorage.ndtiff_file import SingleNDTiffWriter
    from ndstorage.ndtiff_index import NDTiffIndexEntry
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "NDTiff/NDRAM storage needs the 'ndstorage' package: pip install "
        "'napari-exengine[ndstorage]'"
    ) from error

__all__ = ["RUN_SUMMARY", "NDRAMStorage", "NDTiffStorage", "json_safe"]

NDTIFF_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def _refuse_empty(backend: str, coords: DataCoordinates, data: np.ndarray) -> None:
    """Raise ``ValueError`` for a frame without pixels (a 0 x 512 frame makes the NDTiff index
    unreadable)."""
    if data.size == 0:
        raise ValueError(
            f"{backend} cannot store a frame without pixels; data at {dict(coords)} has shape "
            f"{data.shape} (every dimension must be at least 1)"
        )


class _NDStorage(FrameStorage):
    """What NDTiff and NDRAM storage share: an ``ndstorage`` dataset underneath."""

    def __init__(self, dataset: Any, summary_metadata: Mapping[str, Any] | None) -> None:
        super().__init__(summary_metadata)
        self._dataset = dataset
        dataset.initialize(self._summary)
        self._axis_kinds: dict[
            str, type
        ] = {}  # int or str: ndstorage keeps one kind of value per axis

    def _check_axes(self, coords: DataCoordinates) -> None:
        """Refuse, naming the axis, coordinates ndstorage would refuse (with a bare RuntimeError) or
        not read back."""
        kinds = self._axis_kinds
        for axis, value in coords.items():
            kind = kinds.get(axis)
            if kind is not None and type(value) is not kind:
                raise ValueError(
                    f"Axis {axis!r} holds {kind.__name__} values in this dataset; data at "
                    f"{dict(coords)} has the {type(value).__name__} {value!r}. Each axis takes "
                    "ints or strs, not both"
                )
        if "self" in coords:
            raise ValueError(
                f"Data at {dict(coords)}: ndstorage cannot read back an axis named 'self'; rename "
                "it"
            )

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

    def _write(self, coords: DataCoordinates, data: np.ndarray, metadata: Any) -> Any:
        """Write one frame; ``metadata`` is a dict, or (NDTiff) its JSON already encoded."""
        self._dataset.put_image(dict(coords), data, metadata)
        if not coords.keys() <= self._axis_kinds.keys():
            for axis, value in coords.items():
                self._axis_kinds.setdefault(axis, type(value))

    def _finish(self) -> None:
        self._dataset.finish()


class _Ints:
    """The sorted int values of an axis, as runs of consecutive values (what ndstorage keeps in a
    ``SortedSet``: one entry per value)."""

    def __init__(self) -> None:
        self._runs: list[list[int]] = []  # [first, last], sorted, apart

    def add(self, value: int) -> None:
        runs = self._runs
        if runs and runs[-1][1] + 1 == value:  # the usual case: the next time point
            runs[-1][1] = value
            return
        if value in self:
            return
        runs.append([value, value])
        runs.sort()
        merged = [runs[0]]
        for first, last in runs[1:]:
            if first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        self._runs = merged

    def __contains__(self, value: object) -> bool:
        return any(first <= value <= last for first, last in self._runs)  # type: ignore[operator]

    def __iter__(self) -> Iterator[int]:
        for first, last in self._runs:
            yield from range(first, last + 1)

    def __len__(self) -> int:
        return sum(last - first + 1 for first, last in self._runs)


class _IndexView:
    """ndstorage's index of a dataset being written, kept in the storage's frame index (as a
    compact tuple) instead of a dict of every entry."""

    def __init__(self, frames: FrameIndex) -> None:
        self._frames = frames

    def __contains__(self, key: object) -> bool:
        return isinstance(key, frozenset) and DataCoordinates(dict(key)) in self._frames

    def __getitem__(self, key: frozenset) -> Any:
        record = self._frames.get(DataCoordinates(dict(key)))
        if record is None:
            raise KeyError(key)
        return NDTiffIndexEntry(key, *record)

    def __setitem__(self, key: frozenset, entry: Any) -> None:
        record = (
            entry.pixel_type,
            entry.pix_offset,
            entry.image_width,
            entry.image_height,
            entry.metadata_offset,
            entry.metadata_length,
            entry.filename,
        )
        self._frames.add(DataCoordinates(dict(key)), record)

    def pop(self, key: frozenset, default: Any = None) -> Any:
        return self._frames.pop(DataCoordinates(dict(key)), default)

    def keys(self) -> list[frozenset]:
        return [frozenset(c.items()) for c in self._frames]

    def values(self) -> list[Any]:
        return [self[key] for key in self.keys()]

    def __len__(self) -> int:
        return len(self._frames)


class _NDTiffDataset(ndstorage.NDTiffDataset):
    """ndstorage's writable NDTiff dataset, writing its image files (``image_files``, up to
    ``at_once`` of them at a time) and index through :class:`DirectFile`. An image is written in
    three steps, so that several can be written at once: ``begin_image``, ``ImageFile.write`` and
    ``end_image``. Resumed (``append_as``), new image files are named after it, and the index is
    appended to."""

    def __init__(self, *args: Any, at_once: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.append_as: str | None = None
        self.image_files = ImageFiles(self._open_image_writer, at_once)

    @property
    def _index_file(self) -> DirectFile | None:
        return self.__dict__.get("_direct_index_file")

    @_index_file.setter
    def _index_file(self, file: Any) -> None:
        if file is not None:
            file = DirectFile(file)
            lock_for_writing(file.fileno(), os.path.normpath(self.path))
        self.__dict__["_direct_index_file"] = file

    def _open_image_writer(self) -> Any:
        """A new image file, ``NDTiffStack.tif`` then ``NDTiffStack_<k>.tif`` (after the dataset's
        name or ``append_as``); the index is opened with the first. Readers open every ``.tif`` in
        the folder, so the file gets its name once its header is written."""
        prefix = self.append_as or self.name
        base = "NDTiffStack.tif" if self.file_index == 0 else f"NDTiffStack_{self.file_index}.tif"
        name = base if prefix is None else f"{prefix}_{base}"
        partial = os.path.join(self.path, name + PARTIAL)
        try:
            writer = SingleNDTiffWriter(self.path, name + PARTIAL, self._summary_metadata)
            writer.file = DirectFile(writer.file)  # writes the header
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise
        writer.filename = writer.file.name = os.path.join(self.path, name)
        os.replace(partial, writer.filename)
        writer.index_map = Unkept()  # never read; the frame index has every entry
        self.file_index += 1
        if self._index_file is None:
            mode = "ab" if self.append_as else "wb"
            self._index_file = open(os.path.join(self.path, INDEX_NAME), mode)  # noqa: SIM115
        return writer

    def begin_image(self, coordinates: dict[str, Any], image: Any, metadata: bytes) -> None:
        """Before an image is written: readable as pending, and its axes known."""
        self._write_pending_images[frozenset(coordinates.items())] = (image, metadata)
        self._update_axes(coordinates)
        self._update_channel_names(coordinates)
        self._infer_image_properties(image)
        self._new_image_event.set()

    def end_image(self, entry: Any) -> None:
        """After an image is written: in the index, in memory and in its file (or in neither)."""
        self.add_index_entry(entry, new_image_updates=False)
        try:
            self._index_file.write(entry.as_byte_buffer().getvalue())  # type: ignore[union-attr]
        except BaseException:
            self.index.pop(entry.axes_key, None)
            raise
        del self._write_pending_images[entry.axes_key]

    def _update_axes(self, image_coordinates: Any) -> None:
        for axis, value in image_coordinates.items():
            if axis not in self.axes and isinstance(value, int):
                self.axes[axis] = _Ints()  # a time axis's values: a few runs, not one per frame
        super()._update_axes(image_coordinates)

    def finish(self) -> None:
        try:
            self.image_files.finish()
        finally:
            if self._index_file is not None:  # opened with the first image
                self._index_file.close()
            self._finished_event.set()


class NDTiffStorage(_NDStorage):
    """Frames saved as an NDTiff dataset in a new folder ``<directory>/<name>_<n>``.

    ``name`` defaults to ``"exengine"``; :meth:`at_path` writes to an exact, new folder instead.
    Frames must be 2-D uint8 or uint16. The folder is in :attr:`path`. ``writes_in_flight`` is how
    many frames a ``DataHandler`` writes at once (``start_put``), each into an image file of its
    own; frames under 2 MB are written one at a time whatever it says.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        name: str | None = None,
        summary_metadata: Mapping[str, Any] | None = None,
        *,
        writes_in_flight: int = LOCAL_WRITES_IN_FLIGHT,
        _exact: bool = False,
    ) -> None:
        directory = os.fspath(directory)
        name = "exengine" if name is None else name
        if not isinstance(name, str) or not name or os.sep in name or name in (".", ".."):
            raise ValueError(f"name must be a plain folder name, got {name!r}")
        _check_writes_in_flight(writes_in_flight)
        check_writable(directory)
        if _exact:
            target = os.path.join(directory, name)
            if os.path.exists(target):
                raise FileExistsError(
                    f"{target!r} already exists; NDTiff datasets are never overwritten"
                )
            os.makedirs(target)
            dataset = _NDTiffDataset(target, writable=True, at_once=writes_in_flight)
        else:
            dataset = _NDTiffDataset(directory, name=name, writable=True, at_once=writes_in_flight)
        self._open(dataset, summary_metadata, resumed=False)

    def _open(
        self, dataset: _NDTiffDataset, summary: Mapping[str, Any] | None, resumed: bool
    ) -> None:
        """Write ``dataset`` (new, or reopened to resume), its index kept in the frame index."""
        super().__init__(dataset, summary)
        dataset.index = _IndexView(self._frames)
        self._frame_kind: tuple[tuple[int, ...], np.dtype] | None = None
        self._stale_readers = False
        self._resumed = resumed
        self.path = os.path.normpath(dataset.path)
        self.max_writes_in_flight = dataset.image_files.at_once
        #: The storage's lock: the dataset's bookkeeping, and writes ending (``_writing``).
        self._idle = threading.Condition()
        self._writing: set[DataCoordinates] = set()
        self._threads = WriterThreads(self.max_writes_in_flight, "ndtiff-images")

    @classmethod
    def at_path(
        cls,
        path: str | os.PathLike[str],
        summary_metadata: Mapping[str, Any] | None = None,
        *,
        writes_in_flight: int = LOCAL_WRITES_IN_FLIGHT,
    ) -> NDTiffStorage:
        """A dataset in exactly the folder ``path``, which must not exist yet."""
        path = os.path.abspath(os.fspath(path))
        return cls(
            os.path.dirname(path),
            os.path.basename(path),
            summary_metadata,
            writes_in_flight=writes_in_flight,
            _exact=True,
        )

    @classmethod
    def resume(
        cls, path: str | os.PathLike[str], *, writes_in_flight: int = LOCAL_WRITES_IN_FLIGHT
    ) -> NDTiffStorage:
        """The NDTiff dataset in ``path`` reopened to add frames (an acquisition resumed): the
        frames stored stay untouched and readable; new frames go to new image files
        (``resume<k>_NDTiffStack*.tif``), their entries appended to the index, after cutting off
        a last entry a crash left incomplete. The summary loses what the interrupted run learned
        (``FramesDropped``: those frames are acquired again)."""
        reader = NDTiffReader(path)
        try:
            if reader.multiresolution:
                raise ValueError(f"{reader.path!r} is a multi-resolution dataset: it cannot resume")
            entries = dict(reader.entries)
            complete = reader.complete_index_bytes
            summary = {
                k: v for k, v in reader.summary_metadata.items() if k not in LEARNED_WHILE_RUNNING
            }
        finally:
            reader.close()
        folder = os.path.normpath(reader.path)
        check_writable(folder)
        index = os.path.join(folder, INDEX_NAME)
        check_not_in_use(index, folder)
        if os.path.getsize(index) > complete:
            os.truncate(index, complete)
        tidy_image_files(folder, entries.values())
        _check_writes_in_flight(writes_in_flight)
        dataset = _NDTiffDataset(folder, writable=True, at_once=writes_in_flight)
        dataset.append_as = free_prefix(folder)
        storage = cls.__new__(cls)
        storage._open(dataset, summary, resumed=True)
        for key, entry in entries.items():
            dataset.add_index_entry(
                NDTiffIndexEntry(
                    key,
                    entry.pixel_type,
                    entry.pixel_offset,
                    entry.width,
                    entry.height,
                    entry.metadata_offset,
                    entry.metadata_length,
                    entry.filename,
                )
            )
            for axis, value in key:
                storage._axis_kinds.setdefault(axis, type(value))
        first = next(iter(entries.values()), None)
        if first is not None:
            storage._frame_kind = (first.shape, first.dtype)
        return storage

    def _check_frame(self, coords: DataCoordinates, data: np.ndarray) -> np.ndarray:
        if data.dtype not in NDTIFF_DTYPES:
            raise TypeError(
                f"NDTiff stores uint8 or uint16 frames; data at {dict(coords)} is {data.dtype}. "
                f"Convert it first (e.g. data.astype(np.uint16)) or use NDRAMStorage"
            )
        if data.ndim != 2:
            raise ValueError(
                f"NDTiff stores 2-D frames; data at {dict(coords)} has shape {data.shape}"
            )
        _refuse_empty("NDTiff", coords, data)
        self._check_axes(coords)
        if self._frame_kind is None:
            self._frame_kind = (data.shape, data.dtype)
        elif (data.shape, data.dtype) != self._frame_kind:
            shape, dtype = self._frame_kind
            raise ValueError(
                f"All frames of an NDTiff dataset share one shape and dtype ({shape}, {dtype}); "
                f"data at {dict(coords)} is {data.shape}, {data.dtype}"
            )
        return np.ascontiguousarray(data)

    def _write(self, coords: DataCoordinates, data: np.ndarray, metadata: dict[str, Any]) -> Any:
        encoded = _encode(coords, metadata)
        self._store(coords, data, encoded, self._begin(coords, data, encoded))
        return LISTED  # by the dataset's index (an _IndexView)

    def start_put(
        self,
        data_coordinates: CoordinatesLike,
        data: np.ndarray,
        metadata: Any,
        on_done: Callable[[BaseException | None], None],
    ) -> None:
        """Start writing the frame and return: on a writer thread, into an image file no other
        write is using (at once for a frame under 2 MB). ``on_done`` is called from there once the
        frame and its index entry are written, or with the error (the frame is then absent)."""
        coords, data, metadata = self._accept(data_coordinates, data, metadata)
        encoded = _encode(coords, metadata)
        file = self._begin(coords, data, encoded)
        written = self._threads.start(data.nbytes, lambda: self._store(coords, data, encoded, file))
        written.add_done_callback(lambda finished: on_done(finished.exception()))

    def _begin(self, coords: DataCoordinates, data: np.ndarray, encoded: bytes) -> ImageFile:
        """Claim the frame's coordinates and an image file for it (refused, naming them, when they
        are stored or being stored)."""
        self._claim(coords)
        try:
            with self._idle:
                self._check_axes(coords)  # again: another thread may have put a new axis since
                for axis, value in coords.items():
                    self._axis_kinds.setdefault(axis, type(value))
        except ValueError:
            self._written(coords)
            raise
        file = None
        try:
            file = self._dataset.image_files.take(data, encoded)
            with self._idle:
                self._dataset.begin_image(dict(coords), data, encoded)
        except BaseException:
            self._dataset._write_pending_images.pop(frozenset(coords.items()), None)
            if file is not None:
                self._dataset.image_files.give_back(file)
            self._written(coords)
            raise
        return file

    def _store(
        self, coords: DataCoordinates, data: np.ndarray, encoded: bytes, file: ImageFile
    ) -> None:
        """Write the frame into ``file``, then index it; a write that fails leaves no phantom."""
        key = frozenset(coords.items())

        def index(entry: Any) -> None:
            with self._idle:
                self._dataset.end_image(entry)
                self._stale_readers = True

        try:
            file.write(key, data, encoded, index)
        except BaseException:
            with self._idle:
                self._dataset._write_pending_images.pop(key, None)
            raise
        finally:
            self._dataset.image_files.give_back(file)
            self._written(coords)

    def _written(self, coords: DataCoordinates) -> None:
        with self._idle:
            self._writing.discard(coords)
            self._idle.notify_all()

    def get_data(self, data_coordinates: CoordinatesLike) -> np.ndarray:
        with self._idle:
            self._refresh_readers()
            return super().get_data(data_coordinates)

    def get_metadata(self, data_coordinates: CoordinatesLike) -> Any:
        with self._idle:
            self._refresh_readers()
            return super().get_metadata(data_coordinates)

    def _refresh_readers(self) -> None:
        # ndstorage reads through buffered files; a buffer filled before later writes
        # would return stale bytes.
        if self._stale_readers:
            self._stale_readers = False
            for reader in self._dataset._readers_by_filename.values():
                reader.file.seek(0, os.SEEK_END)

    def annotate(self, metadata: Mapping[str, Any]) -> None:
        super().annotate(metadata)
        if self._resumed:  # at once: a resume killed later is still recorded
            write_atomically(os.path.join(self.path, RUN_SUMMARY), json.dumps(self._summary))

    def _finish(self) -> None:
        try:
            with self._idle:  # start_put's writes end first (a DataHandler waits for them anyway)
                self._idle.wait_for(lambda: not self._writing)
            super()._finish()
        finally:
            self._threads.close()
        if self._annotated:  # the TIFF's summary was written at the start: the rest beside it
            write_atomically(os.path.join(self.path, RUN_SUMMARY), json.dumps(self._summary))

    def close(self) -> None:
        self.finish()
        self._dataset.close()

    def __repr__(self) -> str:
        return f"NDTiffStorage({self.path!r})"


def _encode(coords: DataCoordinates, metadata: dict[str, Any]) -> bytes:
    """``metadata`` as JSON (ndstorage takes the bytes as they are): refused, naming ``coords``,
    before any file is made."""
    try:
        return json.dumps(metadata).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata at {dict(coords)} cannot be saved as JSON: {error}") from None


def _check_writes_in_flight(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"writes_in_flight must be a whole number of 1 or more, got {value!r}")


class NDRAMStorage(_NDStorage):
    """Frames kept in memory (any numeric dtype), readable at once; nothing is written to disk."""

    def __init__(self, summary_metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(ndstorage.NDRAMDataset(), summary_metadata)

    def _check_frame(self, coords: DataCoordinates, data: np.ndarray) -> np.ndarray:
        if data.dtype.kind not in "uifb":
            raise TypeError(f"NDRAM stores numeric frames; data at {dict(coords)} is {data.dtype}")
        if data.ndim < 2:
            raise ValueError(
                f"NDRAM stores frames of 2 or more dimensions; data at {dict(coords)} has shape "
                f"{data.shape}"
            )
        _refuse_empty("NDRAM", coords, data)
        self._check_axes(coords)
        return data

    def close(self) -> None:
        self.finish()

    def __repr__(self) -> str:
        return f"NDRAMStorage({len(self._frames)} frames)"
