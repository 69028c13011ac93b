"""Acquisition plans: lazy streams of events, the built-ins and how to write your own.

A plan is a callable that takes keyword settings (typed, with defaults) and returns an iterable of
events for a ``DataHandler``; :class:`~exengine.acquisition.Acquisition` runs it. It may also take
any of :data:`PLAN_ARGUMENTS` (the data handler and the devices in their roles), which the panel and
the command line fill in. A generator plan is adaptive for free: it runs between events, so it can
read the frames already acquired (``data_handler.get``) and decide what to yield next.

Plugins contribute plans as npe2 commands listed in the menu ``napari-exengine/plans``; the
command returns the plan callable (see the ``*_plan`` factories below, which register the
built-ins).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from .acquisition import PlanError, check_event
from .device_types import Detector, DoubleAxisPositioner, SingleAxisPositioner
from .events._devices import resolve_device
from .events.detector_events import ReadoutData, StartCapture
from .events.misc_events import AcquisitionClock, SetTimeEvent
from .events.multi_d_events import MultiDPlan, finite_number, multi_d_acquisition_plan
from .events.positioner_events import SetPosition1DEvent, SetPosition2DEvent
from .kernel.data_coords import DataCoordinates
from .kernel.data_handler import DataHandler
from .kernel.ex_event_base import ExecutorEvent

__all__ = [
    "PLAN_ARGUMENTS",
    "LazyPlan",
    "acquire_until",
    "field_of_view_um",
    "frame_shape",
    "grid_scan",
    "multi_d",
    "overview_then_zoom",
]

#: Arguments a plan may take that are not settings: filled in from the acquisition's devices and
#: handler.
PLAN_ARGUMENTS = (
    "data_handler",
    "camera",
    "z_device",
    "xy_device",
    "channel_group",
    "channel_property",
)

Plan = Callable[..., Iterable[ExecutorEvent]]


class LazyPlan:
    """Events made by ``make()`` each time it is iterated, with what is known up front: the frame
    count (``None``: not known), the events to check before anything moves (``checked``), and the
    size of each axis (``axis_sizes``, for fitting processors to the plan; ``None`` where not
    known)."""

    def __init__(
        self,
        make: Callable[[], Iterator[ExecutorEvent]],
        total_frames: int | None,
        checked: Iterable[ExecutorEvent] = (),
        axis_sizes: dict[str, int | None] | None = None,
    ) -> None:
        self._make = make
        self.total_frames = total_frames
        self._checked = list(checked)
        self.axis_sizes = dict(axis_sizes or {})

    def validate(self) -> None:
        """Check the plan's settings that are known before it runs."""
        for event in self._checked:
            check_event(event)

    def __iter__(self) -> Iterator[ExecutorEvent]:
        return self._make()


def frame_shape(camera: Any) -> tuple[int, int] | None:
    """The (height, width) of a camera's frames from its ``roi`` and ``binning``; ``None`` when it
    has no roi."""
    roi = getattr(camera, "roi", None)
    if not (isinstance(roi, (tuple, list)) and len(roi) == 4):
        return None
    binning = int(getattr(camera, "binning", 1) or 1)
    return int(roi[3]) // binning, int(roi[2]) // binning


def field_of_view_um(camera: Any = None) -> tuple[float, float]:
    """The width and height (µm) a camera frame covers: its roi (or 512 px) times its pixel size.
    ``camera`` is a detector, its registered name, or ``None`` for the only one."""
    camera = resolve_device(camera, Detector, "camera")
    roi = getattr(camera, "roi", None)
    width, height = (roi[2], roi[3]) if roi is not None else (512, 512)
    pixel = float(getattr(camera, "pixel_size_um", 1.0) or 1.0)
    return width * pixel, height * pixel


def _count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _snap(
    camera: Any, coords: dict[str, Any], data_handler: DataHandler | None
) -> Iterator[ExecutorEvent]:
    yield StartCapture(num_images=1, detector=camera)
    yield ReadoutData(
        [DataCoordinates(coords)], detector=camera, data_handler=data_handler, num_images=1
    )


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
    rows, columns = _count(rows, "rows"), _count(columns, "columns")
    overlap = finite_number(overlap, "overlap", 0.0, 0.9)
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
            yield from _snap(camera, {"row": row, "column": column}, data_handler)

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
    if data_handler is None:
        raise ValueError("overview_then_zoom reads the overview back: it needs a data_handler")
    tiles = _grid(rows, columns, overlap, camera, xy_device)
    z_range = finite_number(z_range_um, "z_range_um", 0.0)
    z_step = finite_number(z_step_um, "z_step_um", 1e-6)
    planes = math.floor(z_range / z_step + 1e-9) + 1
    stage = resolve_device(z_device, SingleAxisPositioner, "z stage")
    z0 = stage.get_position()
    z_positions = [z0 - z_range / 2 + k * z_step for k in range(planes)]

    def events() -> Iterator[ExecutorEvent]:
        for row, column, x, y in tiles:
            yield SetPosition2DEvent(xy_device, (x, y))
            yield from _snap(
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
            yield from _snap(
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
    *,
    data_handler: DataHandler | None = None,
    camera: Any = None,
) -> LazyPlan:
    """An adaptive time-lapse that stops itself when the mean intensity of the latest frame crosses
    ``threshold``: falls below it (``below``) or rises above it; ``relative``: as a fraction of the
    first frame's mean. Ends after ``max_time_points`` at the latest."""
    if data_handler is None:
        raise ValueError("acquire_until measures the frames: it needs a data_handler")
    threshold = finite_number(threshold, "threshold", 0.0)
    limit = _count(max_time_points, "max_time_points")
    interval = finite_number(time_interval_s, "time_interval_s", 0.0)

    def events() -> Iterator[ExecutorEvent]:
        clock = AcquisitionClock()
        first: float | None = None
        for t in range(limit):
            yield SetTimeEvent(t, t * interval if interval else None, clock)
            yield from _snap(camera, {"time": t}, data_handler)
            value = float(np.mean(data_handler.get({"time": t}, return_metadata=False)))
            first = value if first is None else first
            level = value / first if relative and first else value
            if (level < threshold) if below else (level > threshold):
                return

    return LazyPlan(events, None, axis_sizes={"time": None})


def _contributed(plan: Plan) -> Callable[[], Plan]:
    def factory() -> Plan:
        return plan

    factory.__doc__ = f"The plan {plan.__name__} (an npe2 command returns the plan callable)."
    return factory


multi_d_plan = _contributed(multi_d)
grid_scan_plan = _contributed(grid_scan)
overview_then_zoom_plan = _contributed(overview_then_zoom)
acquire_until_plan = _contributed(acquire_until)


def check_plan_settings(plan: Plan, settings: dict[str, Any]) -> None:
    """Raise :class:`~exengine.acquisition.PlanError` when ``settings`` name no setting of
    ``plan``."""
    import inspect

    accepted = inspect.signature(plan).parameters
    unknown = [name for name in settings if name not in accepted or name in PLAN_ARGUMENTS]
    if unknown:
        valid = [name for name in accepted if name not in PLAN_ARGUMENTS]
        raise PlanError(
            f"{getattr(plan, '__name__', plan)} has no setting {', '.join(map(repr, unknown))}; "
            f"its settings: {', '.join(valid)}"
        )
