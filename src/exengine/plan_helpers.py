"""What a plan is made of: the public helpers and validators for writing plans (see
``docs/plans.rst``), used by the built-in plans and by plan plugins alike.

A plan is a callable (a :data:`PlanFunction`) that takes keyword settings and returns an iterable of
events; it may also take any of :data:`PLAN_ARGUMENTS` (the data handler and the devices in their
roles), which the panel and the command line fill in. Return a :class:`LazyPlan` to say the frame
count, the size of each axis and what to check before anything moves.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from .device_types import Detector
from .events._devices import resolve_device
from .events.detector_events import ReadoutData, StartCapture, camera_names
from .events.plan_checks import PlanError, check_event, finite_number, whole_number
from .kernel.data_coords import DataCoordinates
from .kernel.data_handler import DataHandler
from .kernel.ex_event_base import ExecutorEvent

__all__ = [
    "PLAN_ARGUMENTS",
    "LazyPlan",
    "PlanError",
    "PlanFunction",
    "check_plan_settings",
    "field_of_view_um",
    "finite_number",
    "frame_dtype",
    "frame_shape",
    "one_camera",
    "resolve_device",
    "snap",
    "whole_number",
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

#: What makes a plan: keyword settings (and any of :data:`PLAN_ARGUMENTS`) in, events out.
PlanFunction = Callable[..., Iterable[ExecutorEvent]]


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
        axis_sizes: Mapping[str, int | None] | None = None,
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


def snap(
    camera: Any, coords: Mapping[str, Any], data_handler: DataHandler | None = None
) -> Iterator[ExecutorEvent]:
    """The events of one frame from ``camera`` at ``coords`` (``data_handler`` ``None``: the
    acquisition's)."""
    one_camera(camera)
    yield StartCapture(num_images=1, detector=camera)
    yield ReadoutData(
        [DataCoordinates(coords)], detector=camera, data_handler=data_handler, num_images=1
    )


def one_camera(camera: Any) -> None:
    """Refuse (``ValueError``) several cameras, or a device that drives several (Micro-Manager's
    Multi Camera), for a plan that reads its frames one at a time."""
    names = camera_names(camera)
    if names:
        raise ValueError(
            f"This plan takes its frames from one camera; {', '.join(names)} capture together: "
            "choose one of them"
        )


def frame_dtype(camera: Any) -> np.dtype | None:
    """The pixel type of a camera's frames from its ``bit_depth``; ``None`` when it has none."""
    bits = getattr(camera, "bit_depth", None)
    if not isinstance(bits, int) or isinstance(bits, bool):
        return None
    return np.dtype(np.uint8 if bits <= 8 else np.uint16)


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


def check_plan_settings(plan: PlanFunction, settings: Mapping[str, Any]) -> None:
    """Raise :class:`PlanError` when ``settings`` name no setting of ``plan``."""
    accepted = inspect.signature(plan).parameters
    unknown = [name for name in settings if name not in accepted or name in PLAN_ARGUMENTS]
    if unknown:
        valid = [name for name in accepted if name not in PLAN_ARGUMENTS]
        raise PlanError(
            f"{getattr(plan, '__name__', plan)} has no setting {', '.join(map(repr, unknown))}; "
            f"its settings: {', '.join(valid)}"
        )
