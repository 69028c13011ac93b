"""The metadata of the OME-Zarr datasets we write (OME-NGFF 0.5): an image's ``multiscales`` (axes
with units; scales from the pixel size, the z step and the time interval) and ``omero`` channels (a
colour by dye, a display window); the bioformats2raw collection that holds one image per position or
tile; and ``exengine``'s own attributes (axis values, summary metadata, whether it is finished)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from ..channel_colors import channel_color

#: The NGFF axes an image has, in NGFF order; frames' other axes (positions, tiles, ...) index the
#: images of a collection.
NGFF_ORDER = ("time", "channel", "z")
AXIS_TYPES = {"time": "time", "channel": "channel", "z": "space"}
UNITS = {"time": "second", "z": "micrometer", "y": "micrometer", "x": "micrometer"}
VERSION = "0.5"
#: The root attribute that makes a group a collection of images (``0``, ``1``, ...).
LAYOUT = "bioformats2raw.layout"


def _dtype_range(dtype: np.dtype) -> tuple[float, float]:
    info = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
    return float(info.min), float(info.max)


def full_window(dtype: np.dtype) -> dict[str, float]:
    """The display window of a channel not seen yet: the dtype's range."""
    low, high = _dtype_range(dtype)
    return {"min": low, "max": high, "start": low, "end": high}


def display_window(data: np.ndarray) -> dict[str, float]:
    """A channel's display window: its frame's range (``start``/``end``) within the dtype's."""
    low, high = _dtype_range(data.dtype)
    values = data if data.dtype.kind in "iu" else data[np.isfinite(data)]
    if values.size and values.max() > values.min():
        return {"min": low, "max": high, "start": float(values.min()), "end": float(values.max())}
    return full_window(data.dtype)


def axis_scales(summary: Mapping[str, Any], pixel_size_um: float) -> dict[str, float]:
    """Each axis's scale: y and x the pixel size (µm), z the summary's ``z-step_um``, time the
    summary's ``Interval_ms`` or else the interval of its plan's ``time_plan`` (s); else 1."""
    scales = {"y": pixel_size_um, "x": pixel_size_um}
    z_step = _positive(summary.get("z-step_um"))
    if z_step:
        scales["z"] = z_step
    interval = _positive(summary.get("Interval_ms"))
    if interval:
        scales["time"] = interval / 1000.0
    else:
        plan = summary.get("Plan")
        settings = plan.get("settings") if isinstance(plan, Mapping) else None
        sequence = settings.get("sequence") if isinstance(settings, Mapping) else None
        times = sequence.get("time_plan") if isinstance(sequence, Mapping) else None
        interval = _positive(times.get("interval")) if isinstance(times, Mapping) else None
        if interval:
            scales["time"] = interval
    return scales


def _positive(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return float(value) if ok else None


def image_attributes(
    name: str,
    axes: Sequence[str],
    channels: Sequence[Any],
    scales: Mapping[str, float],
    dtype: np.dtype,
    windows: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
    """The ``ome`` attributes of an image ``name`` with array axes ``axes`` (then y and x), its
    channels' labels, each axis's scale and each channel's display window (by label)."""
    described: list[dict[str, str]] = []
    for axis in (*axes, "y", "x"):
        described.append({"name": axis, "type": AXIS_TYPES.get(axis, "space")})
        if axis in UNITS:
            described[-1]["unit"] = UNITS[axis]
    scale = [float(scales.get(axis, 1.0)) for axis in (*axes, "y", "x")]
    ome: dict[str, Any] = {
        "version": VERSION,
        "multiscales": [
            {
                "name": name,
                "axes": described,
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
                ],
            }
        ],
    }
    if channels:
        ome["omero"] = {
            "channels": [
                {
                    "label": str(c),
                    "color": channel_color(str(c), i),
                    "window": dict(windows.get(str(c)) or full_window(dtype)),
                    "active": True,
                }
                for i, c in enumerate(channels)
            ]
        }
    return ome


def exengine_attributes(
    values: Mapping[str, Sequence[Any]],
    summary: Mapping[str, Any],
    finished: bool,
    image_axes: Sequence[str],
) -> dict[str, Any]:
    """Our own attributes: the labels of labelled axes, the summary metadata, whether the dataset is
    finished and (in a collection) the axes whose values index its images."""
    attributes: dict[str, Any] = {
        "axis_values": {a: list(v) for a, v in values.items() if v},
        "summary_metadata": dict(summary),
        "finished": finished,
    }
    if image_axes:
        attributes["image_axes"] = list(image_axes)
    return attributes


def group_document(attributes: Mapping[str, Any]) -> bytes:
    """A zarr v3 group's ``zarr.json`` with ``attributes``."""
    document = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    return json.dumps(document).encode()


def collection_attributes() -> dict[str, Any]:
    """The ``ome`` attributes of a collection's root group."""
    return {"version": VERSION, LAYOUT: 3}


def series_attributes(paths: Sequence[str]) -> dict[str, Any]:
    """The ``ome`` attributes of a collection's ``OME`` group: its images' paths, in order."""
    return {"version": VERSION, "series": list(paths)}


_OME_TYPES = {"float32": "float", "float64": "double"}


def image_name(coords: Mapping[str, Any]) -> str:
    """An image's name in a collection: the values that pick it (``position=A``)."""
    return ", ".join(f"{axis}={value}" for axis, value in coords.items())


def series_documents(
    images: Sequence[tuple[str, Mapping[str, Any]]],
    sizes: Mapping[str, int],
    frame_shape: Sequence[int],
    dtype: np.dtype,
    pixel_size_um: float,
) -> dict[str, bytes]:
    """A collection's ``OME`` group: its ``zarr.json`` (the images' paths, ``series``) and its
    ``METADATA.ome.xml``, an OME-XML listing the images (``(path, coords)``; ``sizes`` of their
    time, channel and z axes), by which bioformats2raw readers such as napari-ome-zarr find them."""
    height, width = frame_shape
    pixel_type = _OME_TYPES.get(np.dtype(dtype).name, np.dtype(dtype).name)
    size = {axis: sizes.get(axis, 1) for axis in ("time", "channel", "z")}
    entries = "".join(
        f'<Image ID="Image:{path}" Name={quoteattr(image_name(coords))}><Pixels ID="Pixels:{path}" '
        f'DimensionOrder="XYZCT" Type="{pixel_type}" SizeX="{width}" SizeY="{height}" '
        f'SizeZ="{size["z"]}" SizeC="{size["channel"]}" SizeT="{size["time"]}" '
        f'PhysicalSizeX="{pixel_size_um}" PhysicalSizeY="{pixel_size_um}"><MetadataOnly/>'
        "</Pixels></Image>"
        for path, coords in images
    )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        f"{entries}</OME>"
    )
    return {
        "OME/zarr.json": group_document({"ome": series_attributes([p for p, _ in images])}),
        "OME/METADATA.ome.xml": xml.encode(),
    }
