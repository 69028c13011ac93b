"""An example plan plugin for napari-exengine: a square spiral tile scan around the current stage
position.

Written only against exengine's public API. The npe2 command ``exengine-spiral-plan.spiral`` (menu
``napari-exengine/plans``) returns :func:`spiral_scan`, whose keyword settings ``turns`` and
``overlap`` become the plan's settings form in the Acquisition panel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from numbers import Integral, Real
from typing import Any

from exengine import ExecutionEngine
from exengine.base_classes import ExecutorEvent
from exengine.data import DataCoordinates, DataHandler
from exengine.device_types import Detector, DoubleAxisPositioner
from exengine.events import ReadoutData, SetPosition2DEvent, StartCapture
from exengine.plans import LazyPlan, field_of_view_um

__all__ = ["spiral_offsets", "spiral_scan", "spiral_scan_plan"]


def spiral_offsets(turns: int) -> Iterator[tuple[int, int]]:
    """Tile offsets (columns, rows) of a square spiral: the centre, then counter-clockwise ring
    after ring, each tile beside the previous one, until every tile within ``turns`` of the centre
    is visited."""
    total = (2 * turns + 1) ** 2
    x = y = 0
    yield x, y
    visited, length, direction = 1, 1, 0
    while visited < total:
        for _ in range(2):  # legs of 1, 1, 2, 2, 3, 3, ... tiles, turning left after each
            dx, dy = ((1, 0), (0, 1), (-1, 0), (0, -1))[direction % 4]
            for _ in range(length):
                if visited == total:
                    return
                x, y = x + dx, y + dy
                visited += 1
                yield x, y
            direction += 1
        length += 1


def _device(device: Any, kind: type, role: str) -> Any:
    """``device`` as a ``kind``: the object, its registered name, or (``None``) the only one
    registered."""
    if device is None:
        found = [d for d in ExecutionEngine.get_devices().values() if isinstance(d, kind)]
        if len(found) != 1:
            raise ValueError(f"No {role} given and {len(found)} are registered; pass one")
        return found[0]
    if isinstance(device, str):
        device = ExecutionEngine.get_device(device)
    if not isinstance(device, kind):
        raise TypeError(f"The {role} must be a {kind.__name__}, got {device!r}")
    return device


def spiral_scan(
    turns: int = 2,
    overlap: float = 0.1,
    *,
    data_handler: DataHandler | None = None,
    camera: Any = None,
    xy_device: Any = None,
) -> LazyPlan:
    """A square spiral of tiles around the current stage position, ``turns`` rings out
    ((2 turns + 1)² tiles), neighbours overlapping by ``overlap`` (a fraction of the field of view);
    frames at the axis ``tile`` (0 is the centre)."""
    if isinstance(turns, bool) or not isinstance(turns, Integral) or turns < 0:
        raise ValueError(f"turns must be an int >= 0, got {turns!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, Real) or not 0 <= overlap <= 0.9:
        raise ValueError(f"overlap must be a number from 0 to 0.9, got {overlap!r}")
    turns, overlap = int(turns), float(overlap)
    camera = _device(camera, Detector, "camera")
    stage = _device(xy_device, DoubleAxisPositioner, "xy stage")
    width, height = field_of_view_um(camera)
    step_x, step_y = width * (1 - overlap), height * (1 - overlap)
    x0, y0 = stage.get_position()

    def events() -> Iterator[ExecutorEvent]:
        for tile, (i, j) in enumerate(spiral_offsets(turns)):
            yield SetPosition2DEvent(stage, (x0 + i * step_x, y0 + j * step_y))
            yield StartCapture(num_images=1, detector=camera)
            yield ReadoutData(
                [DataCoordinates(tile=tile)],
                detector=camera,
                data_handler=data_handler,
                num_images=1,
            )

    # The stage's limits are per axis: the two opposite corners of the square are the extremes
    # to check.
    corners = [
        SetPosition2DEvent(stage, (x0 + k * turns * step_x, y0 + k * turns * step_y))
        for k in (-1, 1)
    ]
    return LazyPlan(events, (2 * turns + 1) ** 2, corners)


def spiral_scan_plan() -> Callable[..., LazyPlan]:
    """The npe2 command: returns the plan callable."""
    return spiral_scan
