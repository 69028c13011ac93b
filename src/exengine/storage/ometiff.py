"""OME-TIFF storage on ``tifffile``: one file ``<directory>/<name>_<n>.ome.tif``, one page per
frame, in the order the frames come.

- Each page is written with ``tifffile.TiffWriter`` (uncompressed, one strip) straight to the OS
  before ``put`` returns: the frame is then readable (``get_data`` reads its bytes back from the
  file) and survives a crash of the process. The frame's coordinates and metadata go with it, as
  JSON in the page's private tag :data:`RECORD_TAG` (the first page's also holds the summary).
- Frames have the axes ``time``, ``channel`` and ``z`` (each optional); every combination of
  values of their other axes (``position``, a tile's ``row`` and ``column``, ...) is a separate
  OME ``Image`` (a series, in the order they first come). Channels are named by their values, in
  the planned order (``prepare``), else as they come; ``time`` and ``z`` take their int values as
  indices, and string values their order of arrival.
- The OME-XML is written when the dataset is finished, the only time its sizes are known (a run
  may stop early or be open-ended; frames may be dropped). It maps each plane (T, C, Z) of each
  image to its page (``TiffData``), names the channels (with a colour by dye), gives
  ``PhysicalSizeX/Y`` from ``pixel_size_um``, else the plan's pixel size, else the first frame's
  ``PixelSizeUm``, ``PhysicalSizeZ`` from the summary's ``z-step_um`` and ``TimeIncrement`` from
  its ``Interval_ms``, each plane's time, exposure and stage position, and the summary (with what
  ``annotate`` added) as JSON in a ``CommentAnnotation``.
- Until then the first page's description is a placeholder: a file cut off by a crash is a plain
  multi-page TIFF whose pages are the frames stored (a frame cut off mid-write is not among them),
  and :func:`repair` rebuilds the OME-XML from the pages' records.
- The file is a classic TIFF when the plan says it fits in 4 GB, else a BigTIFF (``bigtiff``
  chooses). A write that fails (a full disk) is cut off the file; no frame is stored after it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..channel_colors import channel_color
from ..kernel.data_coords import CoordinatesLike, DataCoordinates
from ..kernel.data_storage_base import PlannedData
from ._frames import FrameStorage, check_writable
from ._preallocate import SpaceReserver
from .ndtiff_reader import positive_number
from .omezarr_attributes import axis_scales

try:
    import tifffile
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "OME-TIFF storage needs the 'tifffile' package: pip install 'napari-exengine[ometiff]'"
    ) from error

__all__ = ["PLACEHOLDER", "RECORD_TAG", "OMETiffStorage", "repair"]

#: The private TIFF tag (in the reusable range 65000-65535) holding each page's JSON record:
#: ``{"coords": ..., "metadata": ...}``, and on the first page ``"summary"`` too.
RECORD_TAG = 65000
#: The first page's description until the dataset is finished.
PLACEHOLDER = "exengine OME-TIFF: the OME-XML is written when the dataset is finished"
#: The plane axes, in the OME ``DimensionOrder`` XYZCT's reversed order (tifffile's series axes).
PLANE_AXES = ("time", "channel", "z")
_OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
_PIXEL_TYPES = {
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "int8": "int8", "int16": "int16",
    "int32": "int32", "float32": "float", "float64": "double",
}  # fmt: skip
_LITTLE_ENDIAN = (
    "<|=" if sys.byteorder == "little" else "<|"
)  # dtype byte orders written as they are
_CLASSIC_LIMIT = 2**32 - 64 * 1024**2  # a classic TIFF's offsets, less room for IFDs and OME-XML
_PLANE_FIELDS = (  # frame metadata -> OME Plane attributes (and their units)
    ("ElapsedTime-ms", "DeltaT", "ms"),
    ("Exposure-ms", "ExposureTime", "ms"),
    ("StageX-um", "PositionX", "\N{MICRO SIGN}m"),
    ("StageY-um", "PositionY", "\N{MICRO SIGN}m"),
    ("StageZ-um", "PositionZ", "\N{MICRO SIGN}m"),
)


@dataclass(frozen=True)
class _Plane:
    """Where a frame is: its page (and the page's data offset), its image and its T, C, Z."""

    ifd: int
    offset: int
    image: int
    index: tuple[int, int, int]


class _Layout:
    """How frames map to OME images and planes: images by the values of the non-plane axes, labels
    (channel names, string values) by order."""

    def __init__(self, labels: Mapping[str, Iterable[Any]] | None = None) -> None:
        #: each image's number by its key, and the coordinates that lead to it
        self.images: dict[tuple[Any, ...], tuple[int, dict[str, Any]]] = {}
        self.labels = {a: [str(v) for v in (labels or {}).get(a, ())] for a in PLANE_AXES}
        self.extent = [1, 1, 1]  # per plane axis: the highest index stored, plus one

    def locate(self, coords: Mapping[str, Any]) -> tuple[int, tuple[int, int, int]]:
        """The frame's image and plane index (new images and labels are added)."""
        named = {a: v for a, v in coords.items() if a not in PLANE_AXES}
        key = tuple(sorted(named.items(), key=lambda item: item[0]))
        image, _ = self.images.setdefault(key, (len(self.images), named))
        index = []
        for i, axis in enumerate(PLANE_AXES):
            value = coords.get(axis, 0)
            if axis not in coords or (isinstance(value, int) and axis != "channel"):
                position = value
            else:
                labels = self.labels[axis]
                if str(value) not in labels:
                    labels.append(str(value))
                position = labels.index(str(value))
            self.extent[i] = max(self.extent[i], position + 1)
            index.append(position)
        return image, (index[0], index[1], index[2])


def _color(label: str, index: int) -> str:
    """OME's Color: RGBA as a signed 32-bit int."""
    value = int(channel_color(label, index) + "FF", 16)
    return str(value - 2**32 if value >= 2**31 else value)


def _number(value: float) -> str:
    return repr(float(value))


def _ome_xml(
    planes: Iterable[tuple[_Plane, Mapping[str, Any]]],
    layout: _Layout,
    frame: tuple[tuple[int, int], np.dtype],
    pixel_size_um: float,
    summary: Mapping[str, Any],
    path: str,
) -> bytes:
    """The OME-XML (ASCII bytes) of the file ``path``: its ``planes`` (each with its frame's
    metadata) laid out by ``layout``, frames of ``frame``'s shape and dtype."""
    planes = list(planes)
    name = os.path.basename(path).removesuffix(".ome.tif")
    (height, width), dtype = frame
    scales = axis_scales(summary, pixel_size_um)
    sizes, channels = layout.extent, layout.labels["channel"]
    root = ET.Element("OME", {
        "xmlns": _OME_NS, "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
        "xsi:schemaLocation": f"{_OME_NS} {_OME_NS}/ome.xsd",
        "UUID": f"urn:uuid:{uuid.uuid4()}", "Creator": "napari-exengine (tifffile)",
    })  # fmt: skip
    for number, coords in layout.images.values():
        title = ", ".join(f"{a}={v}" for a, v in coords.items()) or name
        image = ET.SubElement(root, "Image", ID=f"Image:{number}", Name=title)
        pixels = ET.SubElement(image, "Pixels", {
            "ID": f"Pixels:{number}", "DimensionOrder": "XYZCT", "Type": _PIXEL_TYPES[dtype.name],
            "SizeX": str(width), "SizeY": str(height), "SizeZ": str(sizes[2]),
            "SizeC": str(sizes[1]), "SizeT": str(sizes[0]), "BigEndian": "false",
            "Interleaved": "false", "PhysicalSizeX": _number(scales["x"]),
            "PhysicalSizeY": _number(scales["y"]),
        })  # fmt: skip
        if "z" in scales:
            pixels.set("PhysicalSizeZ", _number(scales["z"]))
        if "time" in scales:
            pixels.set("TimeIncrement", _number(scales["time"]))
            pixels.set("TimeIncrementUnit", "s")
        for c in range(sizes[1]):
            label = channels[c] if c < len(channels) else str(c)
            ET.SubElement(pixels, "Channel", ID=f"Channel:{number}:{c}", Name=label,
                          SamplesPerPixel="1", Color=_color(label, c))  # fmt: skip
        mine = [(p, m) for p, m in planes if p.image == number]
        for plane, _ in mine:
            t, c, z = plane.index
            ET.SubElement(pixels, "TiffData", IFD=str(plane.ifd), FirstT=str(t), FirstC=str(c),
                          FirstZ=str(z), PlaneCount="1")  # fmt: skip
        for plane, metadata in mine:
            t, c, z = plane.index
            element = ET.SubElement(pixels, "Plane", TheZ=str(z), TheT=str(t), TheC=str(c))
            for key, attribute, unit in _PLANE_FIELDS:
                value = metadata.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    element.set(attribute, _number(value))
                    element.set(f"{attribute}Unit", unit)
    annotations = ET.SubElement(root, "StructuredAnnotations")
    comment = ET.SubElement(annotations, "CommentAnnotation", ID="Annotation:0",
                            Namespace="napari-exengine/summary")  # fmt: skip
    ET.SubElement(comment, "Value").text = json.dumps(dict(summary))
    text = ET.tostring(root, encoding="unicode")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + text.encode("ascii", "xmlcharrefreplace")


class _DirectFile(io.FileIO):
    """The TIFF, written straight to the OS (no buffer: every byte of a page is in the file when
    ``write`` returns); a write completes or raises."""

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        written = 0
        while written < len(view):
            count = super().write(view[written:])
            if not count:
                raise OSError(errno.EIO, f"Writing {self.name!r} made no progress")
            written += count
        return written


def _claim(directory: str, name: str) -> tuple[str, _DirectFile]:
    """Create and open the first free ``<directory>/<name>_<n>.ome.tif`` (atomic: ``O_EXCL``)."""
    n = 1
    while True:
        path = os.path.join(directory, f"{name}_{n}.ome.tif")
        try:
            return path, _DirectFile(path, "x")
        except FileExistsError:
            n += 1


class OMETiffStorage(FrameStorage):
    """Frames written to ``<directory>/<name>_<n>.ome.tif``, an OME-TIFF once finished.

    Frames are 2-D, of one shape and dtype (8-32 bit integers, float32 or float64). ``name``
    defaults to ``"exengine"``. The pixel size (µm) is ``pixel_size_um``, else the plan's
    (``prepare``), else the first frame's ``PixelSizeUm``, else 1. ``bigtiff`` (None: a BigTIFF
    unless the plan fits a classic TIFF's 4 GB) chooses the format. The file is in :attr:`path`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        name: str | None = None,
        summary_metadata: Mapping[str, Any] | None = None,
        pixel_size_um: float | None = None,
        bigtiff: bool | None = None,
    ) -> None:
        super().__init__(summary_metadata)
        directory = os.fspath(directory)
        name = "exengine" if name is None else name
        if (
            not isinstance(name, str)
            or not name
            or {"/", os.sep} & set(name)
            or name in (".", "..")
        ):
            raise ValueError(f"name must be a plain file name, got {name!r}")
        if bigtiff is not None and not isinstance(bigtiff, bool):
            raise TypeError(f"bigtiff must be True, False or None (from the plan), got {bigtiff!r}")
        self._pixel = None if pixel_size_um is None else float(pixel_size_um)
        if self._pixel is not None and not 0 < self._pixel < float("inf"):
            raise ValueError(f"pixel_size_um must be a positive number, got {pixel_size_um!r}")
        check_writable(directory)
        self._bigtiff = bigtiff
        self._planned: PlannedData | None = None
        self._layout = _Layout()
        self._frame: tuple[tuple[int, int], np.dtype] | None = None
        self._axes: frozenset[str] = frozenset()
        self._kinds: dict[str, type] = {}  # per plane axis: int (indices) or str (labels)
        self._planes: dict[DataCoordinates, _Plane] = {}
        self._metadata: dict[DataCoordinates, dict[str, Any]] = {}
        self._writer: tifffile.TiffWriter | None = None
        self._failed: str | None = None
        self._reserver = SpaceReserver()
        self.path, self._file = _claim(directory, name)
        self._reader = open(self.path, "rb", buffering=0)  # noqa: SIM115 - frames are read back

    # ------------------------------------------------------------------ reading
    def get_data(self, data_coordinates: CoordinatesLike) -> np.ndarray:
        plane = self._planes[self._known(data_coordinates)]
        assert self._frame is not None
        shape, dtype = self._frame
        frame = np.empty(shape, dtype.newbyteorder("<"))
        if os.preadv(self._reader.fileno(), [frame], plane.offset) != frame.nbytes:
            raise OSError(f"{self.path} ends inside the frame at {dict(data_coordinates)}")
        return frame.astype(dtype, copy=False)

    def get_metadata(self, data_coordinates: CoordinatesLike) -> Any:
        return self._metadata[self._known(data_coordinates)]

    # ------------------------------------------------------------------ writing
    def prepare(self, planned: PlannedData) -> None:
        """Before the first frame: channel names in the planned order, the plan's pixel size (unless
        one was given) and, from the planned size, classic TIFF or BigTIFF."""
        self._planned = planned
        if self._pixel is None and planned.pixel_size_um:
            self._pixel = float(planned.pixel_size_um)
        self._layout = _Layout(planned.axis_values)

    def _check_frame(self, coords: DataCoordinates, data: np.ndarray) -> np.ndarray:
        if self._failed is not None:
            raise OSError(f"{self.path} stores no more frames: {self._failed}")
        if self._frame is None:
            if data.ndim != 2 or data.dtype.name not in _PIXEL_TYPES or 0 in data.shape:
                raise TypeError(
                    f"OME-TIFF stores non-empty 2-D frames of 8-32 bit integers or floats; data at "
                    f"{dict(coords)} is {data.shape} {data.dtype}"
                )
        elif (
            data.shape != self._frame[0]
            or data.dtype.char != self._frame[1].char  # either byte order
            or coords.keys() != self._axes
        ):
            raise ValueError(
                f"Frames of one OME-TIFF share axes {sorted(self._axes)}, shape {self._frame[0]} "
                f"and dtype {self._frame[1]}; data at {dict(coords)} is {data.shape} {data.dtype}"
            )
        for axis in PLANE_AXES:
            value = coords.get(axis)
            if value is None:
                continue
            if isinstance(value, int) and value < 0 and axis != "channel":
                raise ValueError(f"OME-TIFF needs non-negative indices; {axis!r} got {value}")
            kind = self._kinds.setdefault(axis, type(value))
            if type(value) is not kind:
                raise ValueError(
                    f"Axis {axis!r} of this OME-TIFF holds {kind.__name__} values; data at "
                    f"{dict(coords)} has the {type(value).__name__} {value!r}: use one kind of "
                    "value per axis"
                )
        if data.flags.c_contiguous and data.dtype.byteorder in _LITTLE_ENDIAN:
            return data
        return np.ascontiguousarray(data, data.dtype.newbyteorder("<"))

    def _write(self, coords: DataCoordinates, data: np.ndarray, metadata: dict[str, Any]) -> None:
        first = self._writer is None
        if first:
            self._start(coords, data, metadata)
        writer = self._writer
        assert writer is not None
        record: dict[str, Any] = {"coords": dict(coords), "metadata": metadata}
        if first:  # what repair() needs besides the pages
            record.update(summary=self._summary, pixel_size_um=self._pixel)
            record["labels"] = self._layout.labels
        text = json.dumps(record)
        state = self._file.tell(), getattr(writer, "_ifdoffset", None)  # where the page starts
        try:
            offset, _ = writer.write(
                data, photometric="minisblack", metadata=None, returnoffset=True,
                description=PLACEHOLDER if first else None,
                extratags=[(RECORD_TAG, "s", 0, text, False)],
            )  # fmt: skip
        except Exception as error:
            code = getattr(error, "errno", None) or self._probe()
            self._cut_off(*state)
            reason = f"{os.strerror(code)} ({error})" if code else str(error)
            self._failed = f"writing the frame at {dict(coords)} failed: {reason}"
            message = f"Cannot store the frame at {dict(coords)} in {self.path}: {reason}"
            raise (OSError(code, message) if code else OSError(message)) from error
        self._reserver.after_write(self._file)
        image, index = self._layout.locate(coords)
        self._planes[coords] = _Plane(len(self._planes), offset, image, index)
        self._metadata[coords] = metadata

    def _start(self, coords: DataCoordinates, data: np.ndarray, metadata: dict[str, Any]) -> None:
        """Open the TIFF for frames like the first."""
        self._frame = ((data.shape[0], data.shape[1]), data.dtype)
        self._axes = frozenset(coords)
        if self._pixel is None:
            self._pixel = positive_number(metadata, ("PixelSizeUm", "pixel_size_um")) or 1.0
        bigtiff = self._bigtiff
        if bigtiff is None:
            sizes = self._planned.axis_sizes.values() if self._planned is not None else [None]
            frames = None if None in sizes else int(np.prod(list(sizes), dtype=np.int64))
            bigtiff = frames is None or frames * (data.nbytes + 4096) > _CLASSIC_LIMIT
        self._writer = tifffile.TiffWriter(self._file, bigtiff=bigtiff, byteorder="<", ome=False)

    def _probe(self) -> int | None:
        """Why the file cannot grow (numpy's short writes lose the OS's errno): one byte more."""
        fd = self._file.fileno()
        try:
            os.pwrite(fd, b"\0", os.fstat(fd).st_size)
        except OSError as error:
            return error.errno
        return None

    def _cut_off(self, end: int, ifd_pointer: int | None) -> None:
        """Take a failed page off the file: the previous page is the last again."""
        assert self._writer is not None
        fd = self._file.fileno()
        pointer = struct.pack("<Q" if self._writer.tiff.is_bigtiff else "<I", 0)
        try:
            if ifd_pointer is not None:
                os.pwrite(fd, pointer, ifd_pointer)
            os.ftruncate(fd, end)
            self._file.seek(end)
        except OSError:  # readers stop at the broken page; repair() cuts it off
            pass

    def _finish(self) -> None:
        try:
            if not self._planes:  # no frame: no TIFF
                self._file.close()
                os.unlink(self.path)
                return
            assert self._frame is not None and self._pixel is not None
            planes = [(p, self._metadata[c]) for c, p in self._planes.items()]
            xml = _ome_xml(planes, self._layout, self._frame, self._pixel, self._summary, self.path)
            self._writer.overwrite_description(xml)  # appended; the first page points at it
            self._writer.close()
            fd = self._file.fileno()
            os.ftruncate(fd, os.fstat(fd).st_size)  # frees the space reserved ahead (ext4, XFS)
            os.fsync(fd)
        except Exception as error:
            raise OSError(f"Cannot finish {self.path}: {error}") from error
        finally:
            self._file.close()

    def close(self) -> None:
        try:
            self.finish()
        finally:
            self._reader.close()

    def __repr__(self) -> str:
        return f"OMETiffStorage({self.path!r})"


def repair(path: str | os.PathLike[str]) -> int:
    """Write the OME-XML of an OME-TIFF a crash left unfinished, from its pages' records; returns
    the number of frames. A page cut off mid-write is taken off the file first. A finished file is
    left as it is."""
    path = os.fspath(path)
    planes: list[tuple[_Plane, Mapping[str, Any]]] = []
    end = 0
    with tifffile.TiffFile(path) as tiff:
        first, form = tiff.pages.first, tiff.tiff
        if first.description != PLACEHOLDER:
            return len(tiff.pages)
        head = json.loads(first.tags[RECORD_TAG].value)
        layout = _Layout(head.get("labels"))
        for number, page in enumerate(tiff.pages):
            if RECORD_TAG not in page.tags:  # its IFD was not written: cut off mid-write
                break
            record = json.loads(page.tags[RECORD_TAG].value)
            image, index = layout.locate(record["coords"])
            planes.append((_Plane(number, page.dataoffsets[0], image, index), record["metadata"]))
            end = max(end, page.dataoffsets[0] + page.databytecounts[0])
            last = page.offset
        frame = ((first.shape[0], first.shape[1]), first.dtype.newbyteorder("="))
    pixel = head.get("pixel_size_um") or 1.0
    xml = _ome_xml(planes, layout, frame, pixel, head.get("summary", {}), path)
    with open(path, "r+b") as file:
        file.seek(last)
        (entries,) = struct.unpack(form.tagnoformat, file.read(form.tagnosize))
        file.seek(last + form.tagnosize + entries * form.tagsize)
        file.write(struct.pack(form.offsetformat, 0))  # the last whole page ends the chain
        file.truncate(end)
    tifffile.tiffcomment(path, xml)
    return len(planes)
