"""npe2 writer: image layers saved as NDTiff datasets.

Coordinate names come from the layer's axis labels (labels that are not identifiers become
``axis0``, ``axis1``...); the axis order and scale are recorded in the summary metadata.

Data types, lossless or refused: uint8 and uint16 are written as they are; bool becomes uint8;
other integer data becomes uint16 when every value fits in 0..65535; float data becomes uint16 when
every value is a whole number in that range. Anything else (negative, fractional, too large, RGB) is
refused with the reason. An existing path is never overwritten.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from exengine.storage.ndtiff import NDTiffStorage


def lossless_frames(data: Any) -> np.ndarray:
    """``data`` as uint8/uint16 without losing information, or ``TypeError``/``ValueError`` saying
    why."""
    array = np.asarray(data)
    if array.dtype in (np.uint8, np.uint16):
        return array
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind not in "iuf":
        raise TypeError(
            f"NDTiff stores uint8/uint16 images; {array.dtype} data cannot be converted"
        )
    if array.size:
        low, high = array.min(), array.max()
        if (array.dtype.kind == "f" and not np.all(np.isfinite(array))) or not np.array_equal(
            array, np.round(array)
        ):
            raise ValueError(
                f"NDTiff stores integer images; this {array.dtype} layer has fractional values. "
                f"Scale and convert it first, e.g. layer.data.astype(np.uint16)"
            )
        if low < 0 or high > 65535:
            raise ValueError(
                f"Values span {low}..{high}; NDTiff stores 0..65535. Rescale the layer first"
            )
    return array.astype(np.uint16)


def _axis_names(labels: Any, ndim: int) -> list[str]:
    labels = list(labels or [])[-ndim:] if labels else []
    names = []
    for i in range(ndim - 2):
        label = str(labels[i]) if i < len(labels) else ""
        name = label if label.isidentifier() and label not in ("y", "x") else f"axis{i}"
        names.append(name if name not in names else f"{name}{i}")
    return names


def write_ndtiff(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write one image layer to a new NDTiff dataset at ``path``; returns ``[path]``."""
    if attributes.get("rgb"):
        raise ValueError("NDTiff writing of RGB layers is not supported; split the channels first")
    if attributes.get("multiscale"):
        data = data[0]
    frames = lossless_frames(data)
    if frames.ndim < 2:
        raise ValueError(f"An image layer needs at least 2 dimensions, got shape {frames.shape}")
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        raise FileExistsError(
            f"{path!r} already exists; choose a new name (datasets are never overwritten)"
        )
    axes = _axis_names(attributes.get("axis_labels"), frames.ndim)
    scale = list(attributes.get("scale") or [1.0] * frames.ndim)
    summary: dict[str, Any] = {
        "Software": "napari-exengine",
        "AxisOrder": axes,
        "AxisScales": dict(zip(axes, (float(s) for s in scale[:-2]), strict=False)),
        "PixelSize_um": float(scale[-1]),
        "LayerName": attributes.get("name", ""),
    }
    if "z" in axes:
        summary["z-step_um"] = float(scale[axes.index("z")])
    leading = frames.reshape((-1, *frames.shape[-2:])) if frames.ndim > 2 else frames[None]
    storage = NDTiffStorage.at_path(path, summary_metadata=summary)
    with storage:
        for flat, frame in enumerate(leading):
            index = np.unravel_index(flat, frames.shape[:-2]) if axes else ()
            coords = {axis: int(i) for axis, i in zip(axes, index, strict=True)} or {"time": 0}
            storage.put(coords, frame, {"PixelSizeUm": float(scale[-1])})
    return [path]
