"""Reading back the OME-TIFF files :class:`~exengine.storage.ometiff.OMETiffStorage` writes, from
their pages' records (:data:`~exengine.storage.ometiff.RECORD_TAG`): finished or not (a file a
crash cut off, or one still being written, has no OME-XML yet but every whole page carries its
frame's coordinates and metadata).

Only the pages' tags are read when a file is opened; each frame's bytes are read when asked for
(uncompressed, one strip: one ``pread``).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from .ndtiff_reader import positive_number
from .ometiff import PLACEHOLDER, RECORD_TAG, tifffile

__all__ = ["OMETiffDataset", "written_by_exengine"]

_SUMMARY_NAMESPACE = "napari-exengine/summary"


def _key(coords: dict[str, Any]) -> frozenset[tuple[str, Any]]:
    return frozenset(coords.items())


class OMETiffDataset:
    """An OME-TIFF written by napari-exengine, opened for reading (frames read on demand).

    ``ValueError`` when the file is a TIFF without napari-exengine's frame records (an OME-TIFF
    from other software) or not a TIFF at all.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            tiff = tifffile.TiffFile(self.path)
        except (tifffile.TiffFileError, ValueError) as error:
            raise ValueError(f"{self.path!r} is not a TIFF file: {error}") from None
        with tiff:
            first = tiff.pages.first
            if RECORD_TAG not in first.tags:
                raise ValueError(
                    f"{self.path!r} is a TIFF without napari-exengine's frame records (written by "
                    "other software); only OME-TIFFs napari-exengine wrote are read"
                )
            head = json.loads(first.tags[RECORD_TAG].value)
            #: False while the file has no OME-XML (being written, or its writer was killed)
            self.finished = first.description != PLACEHOLDER
            self.frame_shape: tuple[int, int] = (int(first.shape[0]), int(first.shape[1]))
            self.dtype = np.dtype(first.dtype).newbyteorder("=")  #: the frames' (native order)
            self._entries = self._read_records(tiff)
            self.summary_metadata: dict[str, Any] = dict(head.get("summary") or {})
            if self.finished:
                self.summary_metadata.update(self._final_summary(tiff.ome_metadata))
        self._pixel = positive_number(head, ("pixel_size_um",))
        self._labels = head.get("labels") or {}

    def _read_records(self, tiff: Any) -> dict[frozenset, tuple[dict, int, dict]]:
        """Each whole page's coordinates, data offset and metadata, in page order (a page cut off
        mid-write, or still being written, ends them)."""
        size = os.path.getsize(self.path)
        entries: dict[frozenset, tuple[dict, int, dict]] = {}
        nbytes = int(np.prod(self.frame_shape)) * self.dtype.itemsize
        try:
            for page in tiff.pages:
                if page is None or RECORD_TAG not in page.tags:
                    break
                offset = int(page.dataoffsets[0])
                if offset + nbytes > size:
                    break
                record = json.loads(page.tags[RECORD_TAG].value)
                coords = dict(record["coords"])
                entries[_key(coords)] = (coords, offset, record.get("metadata") or {})
        except (tifffile.TiffFileError, ValueError, KeyError, IndexError, OSError):
            pass  # a page being written: the pages before it are whole
        return entries

    @staticmethod
    def _final_summary(xml: str | None) -> dict[str, Any]:
        """The summary the OME-XML holds (with what ``annotate`` added), else nothing."""
        if not xml:
            return {}
        try:
            root = ET.fromstring(xml)
        except ET.ParseError:
            return {}
        for element in root.iter():
            if element.tag.endswith("CommentAnnotation"):
                if element.get("Namespace") != _SUMMARY_NAMESPACE:
                    continue
                value = next((e for e in element if e.tag.endswith("Value")), None)
                try:
                    summary = json.loads(value.text or "{}") if value is not None else {}
                except ValueError:
                    return {}
                return summary if isinstance(summary, dict) else {}
        return {}

    def __len__(self) -> int:
        return len(self._entries)

    def coordinates(self) -> list[dict[str, Any]]:
        """Every frame's coordinates, in the order they were stored."""
        return [dict(coords) for coords, _, _ in self._entries.values()]

    @property
    def axes(self) -> dict[str, list[Any]]:
        """Each axis's values: integers sorted, names (channels, positions) in the planned order,
        then as they came."""
        found: dict[str, list[Any]] = {}
        for coords, _, _ in self._entries.values():
            for axis, value in coords.items():
                values = found.setdefault(axis, [])
                if value not in values:
                    values.append(value)
        axes = {}
        for axis, values in found.items():
            if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                axes[axis] = sorted(values)
                continue
            planned = [label for label in self._labels.get(axis, ()) if label in values]
            axes[axis] = planned + [v for v in values if v not in planned]
        return axes

    def pixel_size_um(self) -> float | None:
        """The pixel size (µm) the storage used, else the first frame's ``PixelSizeUm``."""
        if self._pixel is None and self._entries:
            first = next(iter(self._entries.values()))[2]
            return positive_number(first, ("PixelSizeUm", "PixelSize_um"))
        return self._pixel

    def z_step_um(self) -> float | None:
        """The z step from the summary metadata, when recorded."""
        return positive_number(self.summary_metadata, ("z-step_um", "z_step_um", "ZStepUm"))

    def read_frame(self, coords: dict[str, Any]) -> np.ndarray:
        """The frame at ``coords``; ``KeyError`` when there is none."""
        _, offset, _ = self._entries[_key(coords)]
        frame = np.empty(self.frame_shape, self.dtype.newbyteorder("<"))  # as written
        with open(self.path, "rb", buffering=0) as file:
            if os.preadv(file.fileno(), [frame], offset) != frame.nbytes:
                raise OSError(f"{self.path} ends inside the frame at {coords}")
        return frame.astype(self.dtype, copy=False)

    def read_metadata(self, coords: dict[str, Any]) -> dict[str, Any]:
        """The metadata of the frame at ``coords``; ``KeyError`` when there is none."""
        return self._entries[_key(coords)][2]

    def __repr__(self) -> str:
        return f"OMETiffDataset({self.path!r}, frames={len(self)}, finished={self.finished})"


def written_by_exengine(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a TIFF whose first page carries napari-exengine's frame record (only
    the first page is read)."""
    try:
        with tifffile.TiffFile(os.fspath(path)) as tiff:
            return RECORD_TAG in tiff.pages.first.tags
    except (tifffile.TiffFileError, ValueError, OSError, IndexError):
        return False
