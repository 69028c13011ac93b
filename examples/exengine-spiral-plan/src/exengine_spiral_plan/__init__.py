"""An example plan plugin for napari-exengine: a square spiral tile scan around the current stage
position.

Written only against exengine's public API. The npe2 command ``exengine-spiral-plan.spiral`` (menu
``napari-exengine/plans``) returns :func:`spiral_scan`, whose keyword settings ``turns`` and
``overlap`` become the plan's settings form in the Acquisition panel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from exengine.base_classes import ExecutorEvent
from exengine.data import DataHandler
from exengine.device_types import Detector, DoubleAxisPositioner
from exengine.events import SetPosition2DEvent
from exengine.plan_helpers import (
    LazyPlan,
    field_of_view_um,
    finite_number,
    resolve_device,
    snap,
    whole_number,
)

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
    turns = whole_number(turns, "turns", minimum=0)
    overlap = finite_number(overlap, "overlap", 0.0, 0.9)
    camera = resolve_device(camera, Detector, "camera")
    stage = resolve_device(xy_device, DoubleAxisPositioner, "xy stage")
    width, height = field_of_view_um(camera)
    step_x, step_y = width * (1 - overlap), height * (1 - overlap)
    x0, y0 = stage.get_position()

    def events() -> Iterator[ExecutorEvent]:
        for tile, (i, j) in enumerate(spiral_offsets(turns)):
            yield SetPosition2DEvent(stage, (x0 + i * step_x, y0 + j * step_y))
            yield from snap(camera, {"tile": tile}, data_handler)

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
