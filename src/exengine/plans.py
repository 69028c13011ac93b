"""The built-in acquisition plans: multi-D, a grid scan, and two adaptive plans.

A plan is a callable that takes keyword settings (typed, with defaults) and returns an iterable of
events; :class:`~exengine.acquisition.Acquisition` runs it. What plans are made of (``LazyPlan``,
``snap``, the validators, :data:`~exengine.plan_helpers.PLAN_ARGUMENTS`) is in
:mod:`exengine.plan_helpers`. A generator plan is adaptive for free: it runs between events, so it
can read the frames already acquired (``data_handler.get``) and decide what to yield next.

Plugins contribute plans as npe2 commands listed in the menu ``napari-exengine/plans``; the
command returns the plan callable (see the ``*_plan`` factories below, which register the
built-ins).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .device_types import DoubleAxisPositioner, SingleAxisPositioner
from .events.misc_events import AcquisitionClock, SetTimeEvent
from .events.multi_d_events import MultiDPlan, multi_d_acquisition_plan
from .events.positioner_events import SetPosition1DEvent, SetPosition2DEvent
from .kernel.data_handler import DataHandler
from .kernel.ex_event_base import ExecutorEvent
from .plan_helpers import (
    LazyPlan,
    PlanFunction,
    field_of_view_um,
    finite_number,
    one_camera,
    resolve_device,
    snap,
    whole_number,
)

__all__ = [
    "acquire_until",
    "grid_scan",
    "multi_d",
    "overview_then_zoom",
]

#: The most tiles a grid of a built-in plan may have (a 1,000 x 1,000 slide scan).
MAX_TILES = 1_000_000
#: The most z planes of ``overview_then_zoom``'s zoom stack.
MAX_ZOOM_PLANES = 100_000


def multi_d(
    num_time_points: int = 1,
    time_interval_s: float = 0.0,
    until_stopped: bool = False,
    z_start: float | None = None,
    z_end: float | None = None,
    z_step: float | None = None,
    channels: list[str] | None = None,
    channel_exposures_ms: list[float] | None = None,
    xy_positions: list[list[float]] | None = None,
    position_labels: list[str] | None = None,
    order: str = "tpcz",
    *,
    data_handler: DataHandler | None = None,
    camera: Any = None,
    z_device: Any = None,
    xy_device: Any = None,
    channel_group: Any = None,
    channel_property: str = "channel",
) -> MultiDPlan:
    """Time points, positions, channels and z, as :func:`~exengine.events.multi_d_acquisition_plan`
    (``until_stopped``: time points until the acquisition is stopped)."""
    return multi_d_acquisition_plan(
        math.inf if until_stopped else num_time_points,
        time_interval_s=time_interval_s,
        z_start=z_start,
        z_end=z_end,
        z_step=z_step,
        channel_group=channel_group if channels else None,
        channels=channels or None,
        channel_exposures_ms=channel_exposures_ms,
        xy_positions=xy_positions or None,
        position_labels=position_labels if xy_positions else None,
        order=order,
        camera=camera,
        xy_device=xy_device,
        z_device=z_device,
        data_handler=data_handler,
        channel_property=channel_property,
    )


def _grid(
    rows: int, columns: int, overlap: float, camera: Any, xy_device: Any
) -> list[tuple[int, int, float, float]]:
    """(row, column, x, y) of every tile of a grid centred on the stage's current position, row by
    row."""
    rows, columns = whole_number(rows, "rows"), whole_number(columns, "columns")
    if rows * columns > MAX_TILES:
        raise ValueError(
            f"A grid of {rows:,} rows by {columns:,} columns makes {rows * columns:,} tiles; at "
            f"most {MAX_TILES:,}"
        )
    overlap = finite_number(overlap, "overlap", 0.0, 0.9)
    one_camera(camera)
    stage = resolve_device(xy_device, DoubleAxisPositioner, "xy stage")
    width, height = field_of_view_um(camera)
    step_x, step_y = width * (1 - overlap), height * (1 - overlap)
    x0, y0 = stage.get_position()
    return [
        (r, c, x0 + (c - (columns - 1) / 2) * step_x, y0 + (r - (rows - 1) / 2) * step_y)
        for r in range(rows)
        for c in range(columns)
    ]


def grid_scan(
    rows: int = 3,
    columns: int = 3,
    overlap: float = 0.1,
    *,
    data_handler: DataHandler | None = None,
    camera: Any = None,
    xy_device: Any = None,
) -> LazyPlan:
    """A rows x columns grid of tiles around the current stage position, overlapping by ``overlap``
    (a fraction of the field of view); frames at the axes ``row`` and ``column``."""
    tiles = _grid(rows, columns, overlap, camera, xy_device)

    def events() -> Iterator[ExecutorEvent]:
        for row, column, x, y in tiles:
            yield SetPosition2DEvent(xy_device, (x, y))
            yield from snap(camera, {"row": row, "column": column}, data_handler)

    return LazyPlan(
        events,
        len(tiles),
        [SetPosition2DEvent(xy_device, (x, y)) for _, _, x, y in tiles],
        {"row": rows, "column": columns},
    )


def overview_then_zoom(
    rows: int = 3,
    columns: int = 3,
    overlap: float = 0.0,
    z_range_um: float = 8.0,
    z_step_um: float = 2.0,
    *,
    data_handler: DataHandler | None = None,
    camera: Any = None,
    xy_device: Any = None,
    z_device: Any = None,
) -> LazyPlan:
    """An adaptive plan: a coarse grid of tiles (``scan='overview'``), then a z-stack of
    ``z_range_um`` around the current z at the brightest tile (``scan='zoom'``). The tiles are read
    back from the data handler as soon as the overview is acquired; the chosen tile's ``row`` and
    ``column`` are the zoom frames' coordinates."""
    tiles = _grid(rows, columns, overlap, camera, xy_device)
    z_range = finite_number(z_range_um, "z_range_um", 0.0)
    z_step = finite_number(z_step_um, "z_step_um", 0.0)
    if z_step <= 0:
        raise ValueError(f"z_step_um must be above 0 µm, got {z_step_um!r}")
    planes = math.floor(z_range / z_step + 1e-9) + 1
    if planes > MAX_ZOOM_PLANES:
        raise ValueError(
            f"A zoom stack of {z_range:g} µm in steps of {z_step:g} µm makes {planes:,} z planes; "
            f"at most {MAX_ZOOM_PLANES:,} (take a larger z step)"
        )
    stage = resolve_device(z_device, SingleAxisPositioner, "z stage")
    z0 = stage.get_position()
    z_positions = [z0 - z_range / 2 + k * z_step for k in range(planes)]

    def events() -> Iterator[ExecutorEvent]:
        if data_handler is None:
            raise ValueError("overview_then_zoom reads the overview back: it needs a data_handler")
        data_handler.keep_raw_frames(len(tiles))  # whatever the processors make of the tiles
        for row, column, x, y in tiles:
            yield SetPosition2DEvent(xy_device, (x, y))
            yield from snap(
                camera, {"scan": "overview", "row": row, "column": column, "z": 0}, data_handler
            )
        brightness = {
            (row, column): float(
                np.mean(
                    data_handler.get(
                        {"scan": "overview", "row": row, "column": column, "z": 0},
                        return_metadata=False,
                    )
                )
            )
            for row, column, _, _ in tiles
        }
        best_row, best_column = max(brightness, key=brightness.__getitem__)
        _, _, x, y = next(t for t in tiles if t[:2] == (best_row, best_column))
        yield SetPosition2DEvent(xy_device, (x, y))
        for k, z in enumerate(z_positions):
            yield SetPosition1DEvent(z_device, z)
            yield from snap(
                camera,
                {"scan": "zoom", "row": best_row, "column": best_column, "z": k},
                data_handler,
            )
        yield SetPosition1DEvent(z_device, z0)

    checked = [SetPosition2DEvent(xy_device, (x, y)) for _, _, x, y in tiles]
    checked += [SetPosition1DEvent(z_device, z) for z in (z_positions[0], z_positions[-1])]
    return LazyPlan(
        events, len(tiles) + planes, checked, {"row": rows, "column": columns, "z": planes}
    )


def acquire_until(
    threshold: float = 0.5,
    relative: bool = True,
    below: bool = True,
    max_time_points: int = 100_000,
    time_interval_s: float = 0.0,
    give_up_after: int = 50,
    *,
    data_handler: DataHandler | None = None,
    camera: Any = None,
) -> LazyPlan:
    """An adaptive time-lapse that stops itself when the mean intensity of the latest frame crosses
    ``threshold``: falls below it (``below``) or rises above it; ``relative``: as a fraction of the
    first frame's mean. Ends after ``max_time_points`` at the latest, and gives up earlier when,
    from ``give_up_after`` time points on, the trend of the last ``give_up_after`` means would not
    reach the threshold before ``max_time_points`` (a signal that does not move, as the simulated
    microscope's while ``Light.bleaching`` is 0; ``give_up_after=0``: never gives up)."""
    threshold = finite_number(threshold, "threshold", 0.0)
    one_camera(camera)
    limit = whole_number(max_time_points, "max_time_points")
    interval = finite_number(time_interval_s, "time_interval_s", 0.0)
    window = whole_number(give_up_after, "give_up_after", 0)
    if window == 1:
        raise ValueError(
            "give_up_after must be 0 (never give up) or at least 2 time points (a trend needs "
            "two), got 1"
        )

    def events() -> Iterator[ExecutorEvent]:
        if data_handler is None:
            raise ValueError("acquire_until measures the frames: it needs a data_handler")
        data_handler.keep_raw_frames(1)
        clock = AcquisitionClock()
        first: float | None = None
        recent: deque[float] = deque(maxlen=window or 1)
        for t in range(limit):
            yield SetTimeEvent(t, t * interval if interval else None, clock)
            yield from snap(camera, {"time": t}, data_handler)
            value = float(np.mean(data_handler.get({"time": t}, return_metadata=False)))
            first = value if first is None else first
            level = value / first if relative and first else value
            if (level < threshold) if below else (level > threshold):
                return
            recent.append(level)
            if len(recent) == window and not _reaches(recent, threshold, below, limit - t - 1):
                return

    return LazyPlan(events, None, axis_sizes={"time": None})


def _reaches(levels: Sequence[float], threshold: float, below: bool, remaining: int) -> bool:
    """Whether the straight-line trend of ``levels`` reaches ``threshold`` (from above when
    ``below``) within ``remaining`` more time points."""
    slope = float(np.polyfit(np.arange(len(levels)), np.asarray(levels), 1)[0])
    distance = levels[-1] - threshold if below else threshold - levels[-1]
    rate = -slope if below else slope
    return rate > 0 and distance <= rate * remaining


def _contributed(plan: PlanFunction) -> Callable[[], PlanFunction]:
    def factory() -> PlanFunction:
        return plan

    factory.__doc__ = f"The plan {plan.__name__} (an npe2 command returns the plan callable)."
    return factory


multi_d_plan = _contributed(multi_d)
grid_scan_plan = _contributed(grid_scan)
overview_then_zoom_plan = _contributed(overview_then_zoom)
acquire_until_plan = _contributed(acquire_until)
