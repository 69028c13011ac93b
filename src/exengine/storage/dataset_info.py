"""Summaries of saved datasets, NDTiff, OME-Zarr (in a folder or a store) or OME-TIFF (a file
napari-exengine wrote), for ``exengine info``."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DatasetSummary", "allocated_bytes", "summarise_dataset"]

#: ``delta_t``: seconds since the start, as ome-writers (and pymmcore-plus through it) records
#: it; ``runner_time_ms``: pymmcore-plus's own frame metadata
_TIMESTAMP_KEYS = (
    "ReceivedTime",
    "TimeReceivedByCore",
    "Time",
    "ElapsedTime-ms",
    "runner_time_ms",
    "delta_t",
)


@dataclass
class DatasetSummary:
    """What ``exengine info`` prints about a dataset."""

    path: str
    format: str
    frames: int
    frame: str = ""  #: frame shape and dtype, e.g. ``512 x 512 uint16``
    axes: dict[str, list[Any]] = field(default_factory=dict)
    pixel_size_um: float | None = None
    z_step_um: float | None = None
    size_bytes: int = 0
    size_where: str = "on disk"  #: "on disk" (allocated blocks) or "in the store" (object sizes)
    timestamps: tuple[str, str] | None = None  #: first and last
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The summary as lines of text."""
        lines = [f"Dataset: {self.path}", f"Format: {self.format}", f"Frames: {self.frames}"]
        if self.frame:
            lines.append(f"Frame: {self.frame}")
        if self.pixel_size_um or self.z_step_um:
            pixel = f"{self.pixel_size_um:g} µm" if self.pixel_size_um else "not recorded"
            z_step = f"{self.z_step_um:g} µm" if self.z_step_um else "not recorded"
            lines.append(f"Pixel size: {pixel}; z step: {z_step}")
        if self.axes:
            lines.append("Axes:")
            for axis, values in self.axes.items():
                shown = ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")
                lines.append(f"  {axis}: {len(values)} ({shown})")
        lines.append(f"Size {self.size_where}: {self.size_bytes / 1024**2:.1f} MB")
        if self.timestamps:
            lines.append(f"First/last timestamps: {self.timestamps[0]} / {self.timestamps[1]}")
        lines += self.notes
        return "\n".join(lines) + "\n"


def allocated_bytes(path: str) -> int:
    """Bytes a file or folder really occupies on disk: allocated blocks (``st_blocks`` x 512).

    Not the apparent size: sparse and preallocated files would count space never written.
    """
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except FileNotFoundError:  # removed meanwhile (a dataset still being written)
                continue
    return total


def _timestamp(metadata: Any) -> str | None:
    if not isinstance(metadata, dict):
        return None
    for key in _TIMESTAMP_KEYS:
        if key in metadata:
            value = metadata[key]
            if key == "delta_t" and isinstance(value, (int, float)):
                return f"{value * 1000:.3f} ms"
            if key == "runner_time_ms" and isinstance(value, (int, float)):
                return f"{value:.3f} ms"
            return f"{value} ms" if key == "ElapsedTime-ms" else str(value)
    return None


def _timestamps(first: Any, last: Any) -> tuple[str, str] | None:
    stamps = (_timestamp(first), _timestamp(last))
    return (stamps[0], stamps[1]) if stamps[0] is not None and stamps[1] is not None else None


def _is_omezarr(location: str) -> bool:
    from .store_url import is_store_url

    if is_store_url(location):
        return True
    folder = os.path.dirname(location) if os.path.basename(location) == "zarr.json" else location
    return os.path.isfile(os.path.join(folder, "zarr.json")) or os.path.isfile(
        os.path.join(folder, ".zattrs")
    )


def summarise_dataset(
    location: str | os.PathLike[str], storage_options: Any = None
) -> DatasetSummary:
    """Summarise the NDTiff, OME-Zarr or OME-TIFF dataset at ``location`` (a folder, an
    ``NDTiff.index``, a store URL or a ``.ome.tif`` file); ``ValueError`` naming it when it is none
    of them."""
    location = os.fspath(location)
    if _is_omezarr(location):
        return _summarise_omezarr(location, storage_options)
    if location.lower().endswith((".ome.tif", ".ome.tiff")) and os.path.isfile(location):
        return _summarise_ometiff(location)
    from .ndtiff_reader import NDTiffReader, find_dataset_root

    if find_dataset_root(location) is None:
        raise ValueError(
            f"{location!r} is not a dataset: expected an NDTiff dataset folder (or its "
            "NDTiff.index), an OME-Zarr folder or store URL (e.g. s3://bucket/run_1.ome.zarr) or "
            "an OME-TIFF file (run_1.ome.tif)"
        )
    reader = NDTiffReader(location)
    try:
        levels = " (multi-resolution)" if reader.multiresolution else ""
        summary = DatasetSummary(
            path=reader.path,
            format=f"NDTiff v{reader.version}{levels}",
            frames=len(reader.entries),
            size_bytes=allocated_bytes(reader.path),
        )
        summary.notes += _dropped_note(reader.summary_metadata)
        truncated = reader.truncated()
        if truncated:
            files = ", ".join(f"{name} ({count})" for name, count in sorted(truncated.items()))
            summary.notes.append(
                f"Truncated: {sum(truncated.values())} of {len(reader.entries)} frames lie past "
                f"the end of their file, which was cut short, and cannot be read: {files}"
            )
        if reader.entries:
            first = reader.first_entry()
            summary.frame = (
                f"{' x '.join(map(str, first.shape))} {first.dtype}{' RGB' if first.rgb else ''}"
            )
            summary.z_step_um = reader.z_step_um()
            summary.axes = reader.axes
            with contextlib.suppress(OSError, ValueError):  # a truncated file: noted above
                summary.pixel_size_um = reader.pixel_size_um()
                first_coords, *_, last_coords = reader.coordinates() * 2
                summary.timestamps = _timestamps(
                    reader.read_metadata(first_coords), reader.read_metadata(last_coords)
                )
        return summary
    finally:
        reader.close()


def _dropped_note(summary_metadata: Any) -> list[str]:
    """A note on the frames the cameras dropped, when the dataset records any."""
    dropped = summary_metadata.get("FramesDropped") if isinstance(summary_metadata, dict) else None
    if not isinstance(dropped, int) or not dropped:
        return []
    listed = summary_metadata.get("DroppedCoordinates") or []
    example = f"; the first at {listed[0]}" if listed else ""
    return [
        f"Dropped by the camera: {dropped} frames (their coordinates are in the summary metadata, "
        f"'DroppedCoordinates'{example})"
    ]


def _summarise_omezarr(location: str, storage_options: Any) -> DatasetSummary:
    try:
        from .omezarr_reader import OMEZarrDataset
    except ImportError as error:
        raise ValueError(f"{location!r} is an OME-Zarr dataset; reading it needs {error}") from None
    dataset = OMEZarrDataset(location, storage_options=storage_options)
    summary = DatasetSummary(
        path=dataset.path,
        format="OME-Zarr",
        frames=0,
        size_where="on disk" if dataset.local else "in the store",
    )
    summary.size_bytes = allocated_bytes(dataset.path) if dataset.local else dataset.stored_bytes()
    if dataset.finished is False:
        summary.notes.append(
            "Not finished: still being written, or its writer stopped (a crash?); every recorded "
            "frame is readable and the array may extend past them with empty frames"
        )
    summary.notes += _dropped_note(dataset.summary_metadata)
    if not dataset.levels:
        return summary
    array = dataset.array
    levels = f", {len(dataset.levels)} resolution levels" if len(dataset.levels) > 1 else ""
    kind = f"OME-Zarr {dataset.version}".strip()
    if dataset.mda_array:
        kind = "zarr array without OME metadata, from pymmcore-plus's TensorStoreHandler"
    summary.format = f"{kind} (zarr v{array.metadata.zarr_format}{levels})"
    coordinates = dataset.coordinates()
    summary.frames = len(coordinates)
    summary.frame = f"{' x '.join(map(str, array.shape[-2:]))} {array.dtype}"
    summary.axes = dataset.axes
    summary.pixel_size_um = dataset.scale.get(dataset.axis_names[-1])
    summary.z_step_um = dataset.scale.get("z") or None
    if dataset.records and coordinates:
        summary.timestamps = _timestamps(
            dataset.read_metadata(coordinates[0]), dataset.read_metadata(coordinates[-1])
        )
    return summary


def _summarise_ometiff(location: str) -> DatasetSummary:
    """An OME-TIFF napari-exengine wrote, from its pages' records (finished or not)."""
    try:
        from .ometiff_reader import OMETiffDataset
    except ImportError as error:
        raise ValueError(f"{location!r} is an OME-TIFF; reading it needs {error}") from None
    dataset = OMETiffDataset(location)
    summary = DatasetSummary(
        path=dataset.path,
        format="OME-TIFF",
        frames=len(dataset),
        frame=f"{' x '.join(map(str, dataset.frame_shape))} {dataset.dtype}",
        axes=dataset.axes,
        pixel_size_um=dataset.pixel_size_um(),
        z_step_um=dataset.z_step_um(),
        size_bytes=allocated_bytes(dataset.path),
    )
    if not dataset.finished:
        summary.notes.append(
            "Not finished: no OME-XML yet; every page written reads (run repair to write it: "
            "exengine.storage.ometiff.repair(path))"
        )
    summary.notes += _dropped_note(dataset.summary_metadata)
    coordinates = dataset.coordinates()
    if coordinates:
        summary.timestamps = _timestamps(
            dataset.read_metadata(coordinates[0]), dataset.read_metadata(coordinates[-1])
        )
    return summary
