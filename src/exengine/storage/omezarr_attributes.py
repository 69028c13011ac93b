"""The group attributes of an OME-Zarr dataset we write: OME-NGFF 0.5 ``multiscales`` (axes and
their scale), ``omero`` channel labels, and ``exengine``'s axis values, summary metadata and
whether the dataset is finished."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: The NGFF axes this storage knows, in NGFF order (other axes come first, typed ``custom``).
NGFF_ORDER = ("time", "channel", "z")
AXIS_TYPES = {"time": "time", "channel": "channel", "z": "space"}


def ngff_attributes(
    name: str,
    axes: Sequence[str],
    values: Mapping[str, Sequence[Any]],
    summary: Mapping[str, Any],
    pixel_size_um: float,
    finished: bool,
) -> dict[str, Any]:
    """The attributes of a dataset ``name`` with array axes ``axes`` (then y and x), the labels of
    its labelled axes ``values``, its ``summary`` metadata (its ``z-step_um`` scales z) and pixel
    size."""
    described = [{"name": a, "type": AXIS_TYPES.get(a, "custom")} for a in axes]
    described += [
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    z_step = summary.get("z-step_um")
    z_step = float(z_step) if isinstance(z_step, (int, float)) and z_step > 0 else 1.0
    scale = [z_step if a == "z" else 1.0 for a in axes] + [pixel_size_um, pixel_size_um]
    transformations = [{"type": "scale", "scale": scale}]
    attributes: dict[str, Any] = {
        "ome": {
            "version": "0.5",
            "multiscales": [
                {
                    "name": name,
                    "axes": described,
                    "datasets": [{"path": "0", "coordinateTransformations": transformations}],
                }
            ],
        },
        "exengine": {
            "axis_values": {a: list(v) for a, v in values.items() if v},
            "summary_metadata": dict(summary),
            "finished": finished,
        },
    }
    if values.get("channel"):
        attributes["ome"]["omero"] = {
            "channels": [{"label": str(c), "active": True} for c in values["channel"]]
        }
    return attributes
