"""An OME-Zarr dataset of ours, in a local folder or a store, reopened to add frames (an acquisition
resumed).

The frames stored (those with a record in ``frame_metadata.jsonl``) stay untouched and readable;
a record a crash cut short is cut off first (its chunk, if any, is written again). New frames go
into the same images' arrays, which grow as they would while acquiring, and their records are
appended. The layout (axes, labels, images of a collection, pixel size, display windows, codecs)
is read back from the dataset, so new frames land where the plan puts them.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from ..kernel.data_coords import DataCoordinates
from ._frames import LEARNED_WHILE_RUNNING, FrameStorage, check_writable
from ._writer_threads import LOCAL_WRITES_IN_FLIGHT
from .dataset_lock import check_not_in_use
from .omezarr import CHUNKS_AT_ONCE, DEFAULT_WRITES_IN_FLIGHT, OMEZarrStorage, _Image
from .omezarr_reader import RECORD_PREFIX, RECORDS, OMEZarrDataset
from .omezarr_store import DEFAULT_TIMEOUT_S, PARTIAL, RecordObjects, is_store_url, open_store

try:
    import zarr
    from zarr.core.sync import sync
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "OME-Zarr storage needs the 'zarr' package: pip install 'napari-exengine[zarr]'"
    ) from error

__all__ = ["resume_omezarr"]


def resume_omezarr(
    path: str | os.PathLike[str], storage_options: Any = None, store: str | None = None
) -> OMEZarrStorage:
    """The OME-Zarr dataset at ``path`` (a local folder or a store URL we wrote) ready to take more
    frames; ``ValueError`` saying why when it cannot. ``storage_options`` and ``store`` apply to
    store URLs, as for :class:`~exengine.storage.omezarr.OMEZarrStorage`."""
    location = os.fspath(path)
    if is_store_url(location):
        return _resume_in_store(location.rstrip("/"), storage_options, store)
    dataset = OMEZarrDataset(location)
    if dataset.finished is None:
        raise ValueError(f"{location!r} was not written by napari-exengine: it cannot resume")
    check_writable(dataset.path)
    records = os.path.join(dataset.path, RECORDS)
    check_not_in_use(records, dataset.path)
    _cut_partial_record(records)
    _remove_partial_files(dataset.path)
    dataset = OMEZarrDataset(location)  # without the record cut off
    storage = _reopened(dataset, zarr_store=None)
    storage._write_locally(LOCAL_WRITES_IN_FLIGHT)
    return storage


def _resume_in_store(url: str, storage_options: Any, store: str | None) -> OMEZarrStorage:
    """A dataset in a store: its records are objects ``frame_metadata/<n>.json`` (and, once
    finished, all of them in ``frame_metadata.jsonl``, which is taken away until the resumed run
    finishes: readers then read the objects, new ones too). Nothing keeps two processes from
    writing one dataset in a store at once."""
    dataset = OMEZarrDataset(url, storage_options=storage_options, store=store)
    if dataset.finished is None:
        raise ValueError(f"{url!r} was not written by napari-exengine: it cannot resume")
    zarr_store = open_store(url, store, storage_options)
    storage = _reopened(dataset, zarr_store)
    storage.max_writes_in_flight = DEFAULT_WRITES_IN_FLIGHT
    due = max(1, DEFAULT_WRITES_IN_FLIGHT - CHUNKS_AT_ONCE)
    storage._records = RecordObjects(zarr_store, RECORD_PREFIX, storage._timeout, due)

    async def continue_records() -> int:
        names = [key async for key in zarr_store.list_prefix(RECORD_PREFIX)]
        with contextlib.suppress(FileNotFoundError):  # not finished: no such file
            await zarr_store.delete(RECORDS)
        return max((int(k[len(RECORD_PREFIX) :].split(".")[0]) for k in names), default=-1) + 1

    storage._records._started = storage._run(continue_records())
    return storage


def _reopened(dataset: OMEZarrDataset, zarr_store: Any) -> OMEZarrStorage:
    """A storage holding ``dataset``'s frames, writing where it is."""
    storage = OMEZarrStorage.__new__(OMEZarrStorage)
    summary = dataset.summary_metadata
    FrameStorage.__init__(
        storage, {k: v for k, v in summary.items() if k not in LEARNED_WHILE_RUNNING}
    )
    _empty_state(storage, dataset.path, zarr_store)
    if dataset.levels:
        _read_layout(storage, dataset)
    return storage


def _remove_partial_files(folder: str) -> None:
    """Remove the files a crash left half written (``write_file`` writes each chunk as
    ``<chunk>.partial``, renamed once whole): none is a chunk, and the frame whose chunk it was has
    no record, so it is written again."""
    for parent, _, names in os.walk(folder):
        for name in names:
            if name.endswith(PARTIAL):
                os.remove(os.path.join(parent, name))


def _cut_partial_record(records: str) -> None:
    """Cut off a last record without its end of line (a crash while it was written)."""
    if not os.path.isfile(records):
        return
    with open(records, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _empty_state(storage: OMEZarrStorage, path: str, zarr_store: Any) -> None:
    """A new storage's state (``OMEZarrStorage._empty``), writing the dataset at ``path`` (in
    ``zarr_store``, or ``None``: a local folder)."""
    storage._empty(None, None, DEFAULT_TIMEOUT_S)
    storage._store = zarr_store
    storage.path = path
    storage._group = sync(
        zarr.api.asynchronous.open_group(store=zarr_store or path, mode="r+", zarr_format=3)
    )


def _read_layout(storage: OMEZarrStorage, dataset: OMEZarrDataset) -> None:
    """The dataset's layout and frames, as the storage held them while writing."""
    array = dataset.levels[0]
    storage._keys = list(dataset.image_axes)
    storage._axes = dataset.axis_names[len(storage._keys) : -2]
    storage._frame = (tuple(array.shape[-2:]), array.dtype)
    storage._template = array.metadata
    storage._compressors = "auto" if array.compressors else None
    storage._pixel = dataset.scale.get("x") or 1.0
    storage._sizes = tuple(array.shape[:-2])
    labels = dataset.axes
    storage._values = {
        a: [v for v in labels.get(a, ()) if a == "channel" or not isinstance(v, int)]
        for a in [*storage._keys, *storage._axes]
    }
    storage._windows = _windows(dataset)
    storage._extent = (0,) * len(storage._axes)
    for coords, metadata in dataset.records.items():
        storage._labelled.update(
            {a: a == "channel" or not isinstance(v, int) for a, v in coords.items()}
        )
        key = tuple(storage._position(a, coords[a]) for a in storage._keys)
        image = storage._images.get(key) or _image(storage, dataset, key, coords)
        index = tuple(storage._position(a, coords[a]) for a in storage._axes)
        storage._frames.add(
            DataCoordinates(coords), storage._commit(coords, (image, index), metadata)
        )


def _image(
    storage: OMEZarrStorage, dataset: OMEZarrDataset, key: tuple[int, ...], coords: Any
) -> _Image:
    group = str(len(storage._images)) if storage._keys else ""
    found = dataset._images.get(tuple(coords[a] for a in storage._keys))
    group = found if found is not None else group
    path = f"{group}/0" if group else "0"
    image = _Image(group, sync(storage._group.getitem(path)), {a: coords[a] for a in storage._keys})
    storage._images[key] = image
    storage._by_group[group] = image
    return image


def _windows(dataset: OMEZarrDataset) -> dict[str, dict[str, float]]:
    """The channels' display windows, by label, as written."""
    group = dataset._group
    attributes = dict(group.attrs)
    ome = attributes.get("ome") or {}
    if "omero" not in ome and dataset.image_axes:
        first = sync(group.getitem("0"))
        ome = dict(first.attrs).get("ome") or {}
    channels = (ome.get("omero") or {}).get("channels") or []
    return {str(c.get("label")): dict(c.get("window") or {}) for c in channels if "window" in c}
