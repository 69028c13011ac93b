"""What the layer sink and the mosaic share: slider axes (their order, their values by index, and
their alignment with the viewer's other layers), frame contrast, pixel size and stage position."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from exengine.storage.ndtiff_reader import positive_number

_AXIS_PRIORITY = {"position": 0, "row": 1, "column": 2, "time": 3, "z": 100}
#: Axes along which frames are taken at other stage positions: shown as tiles of a mosaic.
TILE_AXES = frozenset({"position", "row", "column", "grid", "tile"})
#: Metadata keys of the stage's x and y (µm): ours and Micro-Manager's.
_STAGE_KEYS = (("StageX-um", "XPositionUm"), ("StageY-um", "YPositionUm"))


def sort_axes(axes: list[str]) -> list[str]:
    """Order axes for display: position/row/column, time, custom axes (in arrival order), z."""
    return sorted(axes, key=lambda a: (_AXIS_PRIORITY.get(a, 50), axes.index(a)))


class AxisIndex:
    """Maps each axis value (int or str) to a slider index, growing as values arrive.

    While the values are non-negative ints each is its own index and the values are ``range(n)``, so
    an axis such as an open-ended time-lapse's costs the same memory after a million time points as
    after one.
    """

    def __init__(self) -> None:
        self._size = 0
        self._values: list[Any] | None = None  # set when a value is not its own index
        self._index: dict[Any, int] = {}

    @property
    def values(self) -> Sequence[Any]:
        """The value at each slider index."""
        return range(self._size) if self._values is None else self._values

    def add(self, value: Any) -> int:
        if self._values is None:
            if type(value) is int and value >= 0:
                if value >= self._size:
                    self._size = value + 1
                return value
            self._values = list(range(self._size))
            self._index = {v: v for v in self._values}
        index = self._index.get(value)
        if index is None:
            index = self._index[value] = len(self._values)
            self._values.append(value)
        return index

    def __len__(self) -> int:
        return self._size if self._values is None else len(self._values)


def aligned_axes(viewer: Any, axes: Sequence[str], own: Iterable[Any] = ()) -> list[str]:
    """``axes`` lined up with the slider axes of the viewer's layers but ``own``: napari aligns the
    axes of layers from the right whatever their names, so a layer of ``(row, column)`` after one
    of ``(time,)`` would share the time slider with ``column``. The axes the others have and
    ``axes`` lack are added where needed (each a slider of one index for this layer), in the
    others' order and place; the axes only ``axes`` have come first."""
    own_ids = {id(layer) for layer in own}
    slots: list[str | None] = []  # the others' slider labels, right-aligned
    for layer in viewer.layers:
        if id(layer) in own_ids:
            continue
        labels = list(getattr(layer, "axis_labels", ()))[:-2]
        if len(labels) > len(slots):
            slots = [None] * (len(labels) - len(slots)) + slots
        offset = len(slots) - len(labels)
        for i, label in enumerate(labels):
            if slots[offset + i] is None and not label.lstrip("-").isdigit():
                slots[offset + i] = label
    if not any(slots):
        return list(axes)
    tail = [label or str(i - len(slots) - 2) for i, label in enumerate(slots)]
    lined_up = [a for a in axes if a not in tail] + tail
    while lined_up and lined_up[0] not in axes:  # napari lines up the rest from the right
        lined_up.pop(0)
    return lined_up


def layer_name(dataset: str, channel: Any = None) -> str:
    """The name of a dataset's layer: the dataset's, with the channel's after it when there is
    one (a Micro-Manager dataset's unnamed channel ``""`` adds nothing)."""
    return " ".join(
        part
        for part in (str(dataset).strip(), ("" if channel is None else str(channel)).strip())
        if part
    )


def contrast_limits(frame: np.ndarray) -> tuple[float, float]:
    """Contrast limits spanning ``frame`` (a flat frame gets a range of 1)."""
    low, high = float(frame.min()), float(frame.max())
    if high <= low:
        high = low + 1.0
    return low, high


def pixel_size_um(metadata: Any, default: float = 1.0) -> float:
    """The pixel size a frame's metadata records (``PixelSizeUm``), else ``default``."""
    pixel = positive_number(metadata, ("PixelSizeUm", "pixel_size_um"))
    return default if pixel is None else pixel


def stage_xy_um(metadata: Any) -> tuple[float, float] | None:
    """The stage's x and y (µm) a frame's metadata records, else ``None``."""
    if not isinstance(metadata, Mapping):
        return None
    found = []
    for keys in _STAGE_KEYS:
        value = next((metadata[k] for k in keys if k in metadata), None)
        try:
            found.append(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    return (found[0], found[1]) if all(np.isfinite(found)) else None


def frame_corner_um(
    stage: tuple[float, float], frame_shape: Sequence[int], pixel: float
) -> tuple[float, float]:
    """The world (y, x) in µm of a frame's top-left corner: the frame is centred on the stage
    position (Micro-Manager's convention)."""
    height, width = frame_shape[-2:]
    return stage[1] - height * pixel / 2, stage[0] - width * pixel / 2
