"""``multi_d_acquisition_events``: the events of a time / position / channel / z acquisition.

:class:`MultiDPlan` makes them, lazily, from the one settings model
(:class:`~exengine.events.multi_d_settings.MultiDSettings`); ExEngine's
``multi_d_acquisition_events`` arguments map onto that model. Frames and their coordinates follow
the order of useq-schema's ``MDASequence.iter_events``. For plain sequences (time, positions with
x and y, channels, z) the plan makes its events itself rather than through ``iter_events``: that
builds a pydantic ``MDAEvent`` per frame, 48 µs each here, against 6.5 µs per frame for the whole
plan made this way (a full-speed acquisition of 512x512 frames takes about 300 µs per frame in
all). Sequences with grids, sub-sequences, autofocus or channels that skip frames follow
``iter_events`` itself (:mod:`~exengine.events.multi_d_useq`).
"""

from __future__ import annotations

import functools
import gc
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, ParamSpec, TypeVar

import useq

from ..device_types import Detector, DoubleAxisPositioner, SingleAxisPositioner
from ..kernel.data_coords import DataCoordinates
from ..kernel.data_handler import DataHandler
from ..kernel.device import Device
from ..kernel.ex_event_base import ExecutorEvent
from ._devices import resolve_device
from .detector_events import Detectors, ReadoutData, StartCapture, camera_names
from .misc_events import AcquisitionClock, SetTimeEvent
from .multi_d_settings import AXIS_NAMES, MultiDSettings, plan_interval_s, time_starts, z_planes
from .multi_d_useq import UseqEvents, needs_useq_iteration, refuse_unrunnable
from .plan_checks import check_event
from .positioner_events import (
    SetPosition1DEvent,
    SetPosition2DEvent,
    SetTriggerable1DPositionsEvent,
    StopTriggerablePositionSequenceEvent,
)
from .property_events import (
    SetPropertiesEvent,
    SetTriggerablePropertySequencesEvent,
    StopTriggerablePropertySequencesEvent,
)

__all__ = [
    "UNTIL_STOPPED",
    "MultiDPlan",
    "check_runnable",
    "multi_d_acquisition_events",
    "multi_d_acquisition_plan",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: ``num_time_points`` of an open-ended time-lapse: time points until the acquisition is stopped.
UNTIL_STOPPED = math.inf
#: The arguments of ``multi_d_acquisition_events`` that choose devices and the data handler.
DEVICE_ARGUMENTS = (
    "camera",
    "xy_device",
    "z_device",
    "channel_group",
    "channel_property",
    "data_handler",
)


def _cyclic_gc_paused(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``function`` with the cyclic garbage collector paused: while a long time-lapse's hundreds
    of thousands of events are built, its collections over all of them took half of the time."""

    @functools.wraps(function)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return paused


class _Position(NamedTuple):
    label: str | int
    xy: tuple[float, float]
    z: float | None


class _Channel(NamedTuple):
    name: str
    exposure_ms: float | None


class _TimeAxis:
    """Start times (s after the first time point, ``None``: as soon as possible) of ``size`` time
    points (``None``: open-ended), from one interval or a list of start times."""

    def __init__(
        self, size: int | None, interval: float, starts: list[float] | None = None
    ) -> None:
        self.size, self._interval, self._starts = size, interval, starts

    def __len__(self) -> int:
        if self.size is None:
            raise TypeError("An open-ended time axis has no length")
        return self.size

    def __getitem__(self, index: int) -> float | None:
        if self._starts is not None:
            return self._starts[index]
        return index * self._interval if self._interval else None


class MultiDPlan:
    """The events of a multi-dimensional acquisition, made lazily from ``settings``: each event is
    created just before it is taken, so a plan of any length (also an open-ended time-lapse) costs
    the same memory. Iterating again makes fresh events.

    Devices are objects, registered names, or ``None`` for the only one of their kind; the channel
    device is the channels' ``group`` unless ``channel_group`` is given, and each channel sets its
    ``channel_property``. Relative z planes refer to each position's z, else to the z stage's
    position when the plan is checked or first run. Frames go to ``data_handler`` (``None``: the
    acquisition's). Sequences with grids, sub-sequences per position, autofocus, channels that skip
    frames or positions without x or y run as :mod:`~exengine.events.multi_d_useq` says. Settings
    this plan cannot run are refused by name.
    """

    def __init__(
        self,
        settings: MultiDSettings,
        *,
        camera: Detectors = None,
        xy_device: DoubleAxisPositioner | str | None = None,
        z_device: SingleAxisPositioner | str | None = None,
        channel_group: Device | str | None = None,
        channel_property: str = "channel",
        data_handler: DataHandler | None = None,
    ) -> None:
        if not isinstance(settings, MultiDSettings):
            raise TypeError(f"MultiDPlan takes MultiDSettings, got {type(settings).__name__}")
        check_runnable(settings.sequence)
        self.settings = settings
        self.axes = settings.axis_order
        self.sequenced = list(settings.hardware_sequenced)
        self.camera, self.xy_device, self.z_device = camera, xy_device, z_device
        self.cameras = camera_names(camera)
        self.channel_group = _channel_group(settings, channel_group)
        self.channel_property = channel_property
        self.data_handler = data_handler
        self._useq = UseqEvents(self) if needs_useq_iteration(settings.sequence) else None
        if self._useq is not None and (settings.until_stopped or settings.hardware_sequenced):
            what = "until_stopped" if settings.until_stopped else "hardware_sequenced"
            raise ValueError(
                f"{what} cannot run with a grid, sub-sequences, autofocus, position properties or "
                "channels that skip frames"
            )
        self.values = _axis_values(settings) if self._useq is None else {}
        self._reference_z: float | None = None

    @property
    def axis_sizes(self) -> dict[str, int | None]:
        """Size of each axis by coordinate name, outermost first (``None``: open-ended); with
        several cameras, ``camera`` last."""
        if self._useq is not None:
            sizes: dict[str, int | None] = dict(self._useq.axis_sizes)
            if self.cameras:
                sizes["camera"] = len(self.cameras)
            return sizes
        sizes = {
            AXIS_NAMES[a]: (self.values[a].size if a == "t" else len(self.values[a]))
            for a in self.axes
        }
        if self.cameras:
            sizes["camera"] = len(self.cameras)
        return sizes

    @property
    def axis_values(self) -> dict[str, tuple[str | int, ...]]:
        """The values of the channel and position axes (their names), by coordinate name."""
        values: dict[str, tuple[str | int, ...]] = {}
        if self._useq is not None:
            values = self._useq.axis_values
            return {**values, "camera": tuple(self.cameras)} if self.cameras else values
        if "p" in self.values:
            values["position"] = tuple(position.label for position in self.values["p"])
        if "c" in self.values:
            values["channel"] = tuple(channel.name for channel in self.values["c"])
        if self.cameras:
            values["camera"] = tuple(self.cameras)
        return values

    @property
    def total_frames(self) -> int | None:
        """Frames the plan acquires, or ``None`` for an open-ended time-lapse."""
        if self._useq is not None:
            return self._useq.shape().frames * max(len(self.cameras), 1)
        sizes = self.axis_sizes.values()
        return None if None in sizes else math.prod(sizes)  # type: ignore[arg-type]

    @property
    def frames_per_time_point(self) -> int:
        """Frames of one time point, of every camera (all of them when there is no time axis)."""
        if self._useq is not None:
            return (self.total_frames or 0) // (self.axis_sizes.get("time") or 1)
        sizes = [size for axis, size in self.axis_sizes.items() if axis != "time"]
        return math.prod(size or 1 for size in sizes)

    def validate(self) -> None:
        """Check the events of the first time point, with only the extremes of the z planes (every
        position, channel and the lowest and highest z), against the devices; the rest repeats
        those settings (a sequence that follows ``iter_events``: every event)."""
        if self._useq is not None:
            self._useq.validate()
            return
        values = self._first_time_point_values()
        if "z" in values:
            z = values["z"]
            ends = [z[0], z[len(z) - 1]] if not isinstance(z, list) else [min(z), max(z)]
            values["z"] = ends if ends[0] != ends[1] else ends[:1]
        for event in _EventMaker(self, values):
            check_event(event)

    def first_time_point(self) -> Iterator[ExecutorEvent]:
        """The events of the first time point only (every event when there is no time axis)."""
        if self._useq is not None:
            return self._useq.first_time_point()
        return iter(_EventMaker(self, self._first_time_point_values()))

    def _first_time_point_values(self) -> dict[str, Any]:
        values = dict(self.values)
        if "t" in values:
            values["t"] = _TimeAxis(1, 0.0)
        return values

    def __iter__(self) -> Iterator[ExecutorEvent]:
        if self._useq is not None:
            return iter(self._useq)
        return iter(_EventMaker(self, self.values))

    def reference_z(self) -> float | None:
        """The z that relative z planes refer to when a position has none: the z stage's position,
        read once (``None`` when nothing refers to it)."""
        if not self.settings.z_is_relative:
            return None
        if self._reference_z is None:
            stage = resolve_device(self.z_device, SingleAxisPositioner, "z stage")
            self._reference_z = float(stage.get_position())
        return self._reference_z


class _EventMaker:
    """Makes the events of one pass over a plan's ``values``, outermost axis first."""

    def __init__(self, plan: MultiDPlan, values: dict[str, Any]) -> None:
        self.plan, self.values = plan, values
        self.outer = plan.axes[: len(plan.axes) - len(plan.sequenced)]
        self.clock = AcquisitionClock()
        self.last: dict[str, Any] = {}

    def __iter__(self) -> Iterator[ExecutorEvent]:
        plan, values = self.plan, self.values
        sizes = [values[a].size if a == "t" else len(values[a]) for a in self.outer]
        for outer_indices in _product(sizes):
            indices = dict(zip(self.outer, outer_indices, strict=True))
            yield from self.changes(indices)
            if plan.sequenced:
                yield from self.sequence(indices)
                continue
            frames = self.frame_coords([indices])
            yield StartCapture(num_images=1, detector=plan.camera)
            yield ReadoutData(
                frames, detector=plan.camera, data_handler=plan.data_handler, num_images=len(frames)
            )

    def position(self, indices: dict[str, int]) -> _Position | None:
        return self.values["p"][indices["p"]] if "p" in self.values else None

    def z_target(self, indices: dict[str, int]) -> float | None:
        if "z" not in self.values:
            return None
        plane = self.values["z"][indices["z"]]
        if not self.plan.settings.z_is_relative:
            return plane
        position = self.position(indices)
        base = position.z if position is not None and position.z is not None else None
        return plane + (base if base is not None else self.plan.reference_z() or 0.0)

    def changes(self, indices: dict[str, int]) -> Iterator[ExecutorEvent]:
        """The events that set what changed since the last frame, outermost axis first."""
        plan, last = self.plan, self.last
        for axis in self.outer:
            if axis == "t":
                index = indices["t"]
                if last.get("t") != index:
                    if index == 0 and "t" in last:  # inside another axis: its own time-lapse
                        self.clock = AcquisitionClock()
                    yield SetTimeEvent(index, self.values["t"][index], self.clock)
                    last["t"] = index
            elif axis == "p":
                position = self.values["p"][indices["p"]]
                if last.get("p") != position.xy:
                    yield SetPosition2DEvent(plan.xy_device, position.xy)
                    last["p"] = position.xy
                if (
                    position.z is not None
                    and "z" not in self.values
                    and last.get("z") != position.z
                ):
                    yield SetPosition1DEvent(plan.z_device, position.z)  # a position's own z
                    last["z"] = position.z
            elif axis == "c":
                channel = self.values["c"][indices["c"]]
                if last.get("c") != channel:
                    yield SetPropertiesEvent(self.channel_settings(channel))
                    last["c"] = channel
            elif axis == "z":
                z = self.z_target(indices)
                if last.get("z") != z:
                    yield SetPosition1DEvent(plan.z_device, z)
                    last["z"] = z

    def channel_settings(self, channel: _Channel) -> list[tuple[Any, str, Any]]:
        plan = self.plan
        settings: list[tuple[Any, str, Any]] = [
            (plan.channel_group, plan.channel_property, channel.name)
        ]
        if channel.exposure_ms is not None:
            for camera in _as_cameras(plan.camera):
                settings.append((camera, "exposure", channel.exposure_ms))
        return settings

    def frame_coords(self, frames: list[dict[str, int]]) -> list[DataCoordinates]:
        """The coordinates of ``frames`` (axis indices), of each camera in turn when there are
        several (frame by frame: what a readout of them all takes)."""
        if not self.plan.cameras:
            return [self.coords(indices) for indices in frames]
        return [
            DataCoordinates({**self.coords(indices), "camera": name})
            for indices in frames
            for name in self.plan.cameras
        ]

    def coords(self, indices: dict[str, int]) -> DataCoordinates:
        coords = DataCoordinates()
        for axis in self.plan.axes:
            if axis == "p":
                coords["position"] = self.values["p"][indices["p"]].label
            elif axis == "c":
                coords["channel"] = self.values["c"][indices["c"]].name
            else:
                coords[AXIS_NAMES[axis]] = indices[axis]
        return coords

    def sequence(self, indices: dict[str, int]) -> Iterator[ExecutorEvent]:
        """One hardware-triggered sequence over the inner axes: load, capture, read out, stop."""
        plan, values = self.plan, self.values
        seq_axes = plan.sequenced
        inner = [
            dict(indices, **dict(zip(seq_axes, combo, strict=True)))
            for combo in itertools.product(*(range(len(values[a])) for a in seq_axes))
        ]
        stops: list[ExecutorEvent] = []
        if "z" in seq_axes:
            yield SetTriggerable1DPositionsEvent(plan.z_device, [self.z_target(i) for i in inner])
            stops.append(StopTriggerablePositionSequenceEvent(plan.z_device))
            self.last.pop("z", None)
        if "c" in seq_axes:
            names = [values["c"][i["c"]].name for i in inner]
            exposure = values["c"][0].exposure_ms
            if exposure is not None:
                cameras = _as_cameras(plan.camera)
                yield SetPropertiesEvent([(camera, "exposure", exposure) for camera in cameras])
            yield SetTriggerablePropertySequencesEvent(
                [(plan.channel_group, plan.channel_property, names)]
            )
            stops.append(
                StopTriggerablePropertySequencesEvent([(plan.channel_group, plan.channel_property)])
            )
            self.last.pop("c", None)
        frames = self.frame_coords(inner)
        yield StartCapture(num_images=len(inner), detector=plan.camera)
        yield ReadoutData(
            frames, detector=plan.camera, data_handler=plan.data_handler, num_images=len(frames)
        )
        yield from stops


def _axis_values(settings: MultiDSettings) -> dict[str, Any]:
    """Each axis's values in the form the plan reads them."""
    seq = settings.sequence
    values: dict[str, Any] = {}
    if settings.until_stopped:
        plan = seq.time_plan
        values["t"] = _TimeAxis(None, 0.0 if plan is None else plan_interval_s(plan))
    elif seq.time_plan is not None:
        values["t"] = _time_axis(seq.time_plan)
    if seq.stage_positions:
        labels = settings.position_labels
        values["p"] = [
            _Position(label, (float(p.x), float(p.y)), None if p.z is None else float(p.z))
            for label, p in zip(labels, seq.stage_positions, strict=True)
        ]
    if seq.channels:
        values["c"] = [
            _Channel(c.config, None if c.exposure is None else float(c.exposure))
            for c in seq.channels
        ]
    if seq.z_plan is not None:
        values["z"] = z_planes(seq.z_plan)
    return values


def _time_axis(plan: Any) -> _TimeAxis:
    count = int(plan.num_timepoints())
    if isinstance(plan, useq.MultiPhaseTimePlan):
        starts = time_starts(plan)
        return _TimeAxis(len(starts), 0.0, starts if any(starts) else None)
    if getattr(plan, "loops", None) == 1:
        count = 1
    interval = 0.0 if count == 1 else plan_interval_s(plan)
    return _TimeAxis(count, interval)


def _channel_group(settings: MultiDSettings, given: Device | str | None) -> Device | str | None:
    """The device that selects the channel: ``given``, else the channels' one ``group``."""
    groups = sorted({c.group for c in settings.sequence.channels})
    if given is not None or not groups:
        return given
    if len(groups) > 1:
        raise ValueError(
            f"channels come from config groups {groups}; one channel device sets them all here"
        )
    return groups[0]


def check_runnable(seq: useq.MDASequence) -> None:
    """Refuse (``ValueError``), by name, what an ``MDASequence`` may hold that the multi-D plan
    cannot run: a channel's own ``camera``, a setup event with an SLM image or a roi."""
    refuse_unrunnable(seq)
    channels = [*seq.channels]
    for position in seq.stage_positions:
        if position.sequence is not None:
            channels += position.sequence.channels
    for i, channel in enumerate(channels):
        if channel.camera is not None:
            raise ValueError(
                f"channels[{i}].camera={channel.camera!r} ({channel.config}) cannot run here: "
                "every camera of the plan takes every channel"
            )


def _as_cameras(camera: Detectors) -> list[Detector | str]:
    """The cameras a plan takes frames from (``None``: the only one registered)."""
    if isinstance(camera, (list, tuple)):
        return list(camera)
    return [camera if camera is not None else resolve_device(None, Detector, "camera")]


def _product(sizes: list[int | None]) -> Iterator[tuple[int, ...]]:
    """Every index combination of axes of ``sizes``, last axis fastest, made one at a time (unlike
    ``itertools.product``, which holds its ranges); the first size may be ``None`` (for ever)."""
    if any(size == 0 for size in sizes):
        return
    indices = [0] * len(sizes)
    last = len(sizes) - 1
    while True:
        yield tuple(indices)
        axis = last
        while axis >= 0:
            indices[axis] += 1
            size = sizes[axis]
            if size is None or indices[axis] < size:
                break
            indices[axis] = 0
            axis -= 1
        if axis < 0:
            return


def _split_arguments(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """ExEngine's arguments split into the settings and the devices (with the data handler)."""
    devices = {k: kwargs.pop(k) for k in DEVICE_ARGUMENTS if k in kwargs}
    if "channel_group" in devices:
        kwargs["channel_group"] = devices["channel_group"]
    return kwargs, devices


def multi_d_acquisition_plan(
    num_time_points: int | float | None = None, **kwargs: Any
) -> MultiDPlan:
    """The lazy counterpart of :func:`multi_d_acquisition_events`: the same events in the same
    order, created as they are taken. ``num_time_points=math.inf`` (:data:`UNTIL_STOPPED`) makes an
    open-ended time-lapse that runs until the acquisition is stopped. Arguments are checked at
    once."""
    arguments, devices = _split_arguments(kwargs)
    settings = MultiDSettings.from_event_arguments(num_time_points, **arguments)
    return MultiDPlan(settings, **devices)


@_cyclic_gc_paused
def multi_d_acquisition_events(
    num_time_points: int | None = None,
    time_interval_s: float | Sequence[float] = 0,
    z_start: float | None = None,
    z_end: float | None = None,
    z_step: float | None = None,
    channel_group: Device | str | None = None,
    channels: Sequence[str] | None = None,
    channel_exposures_ms: Sequence[float] | None = None,
    xy_positions: Sequence[Sequence[float]] | None = None,
    xyz_positions: Sequence[Sequence[float]] | None = None,
    position_labels: Sequence[str | int] | None = None,
    order: str = "tpcz",
    sequence: str | None = None,
    camera: Detectors = None,
    xy_device: DoubleAxisPositioner | str | None = None,
    z_device: SingleAxisPositioner | str | None = None,
    data_handler: DataHandler | None = None,
    channel_property: str = "channel",
) -> list[ExecutorEvent]:
    """Return the events of a multi-dimensional acquisition, one frame per coordinate.

    Axes (coordinate names): ``t`` time (``num_time_points``, ``time_interval_s`` a number or one
    interval per time point), ``p`` position (``xy_positions`` or ``xyz_positions``, optional
    ``position_labels``), ``c`` channel (``channels`` set as ``channel_group.channel_property``,
    with optional ``channel_exposures_ms`` set as the camera's ``exposure``), ``z`` (``z_start`` to
    ``z_end`` inclusive by ``z_step``, relative to the z of ``xyz_positions`` when given). ``order``
    lists the axes outermost first; ``sequence`` names inner axes run as one hardware-triggered
    sequence. Devices are objects, registered names, or None for the only one of their kind;
    ``camera`` may list several cameras, which capture together: each frame then has a ``camera``
    coordinate (the camera's name). Frames go to ``data_handler``. :func:`multi_d_acquisition_plan`
    makes the same events lazily; both map the arguments onto
    :class:`~exengine.events.multi_d_settings.MultiDSettings`.
    """
    if num_time_points == math.inf:
        raise ValueError(
            "A time-lapse until stopped has no list of events: use "
            "multi_d_acquisition_plan(num_time_points=math.inf)"
        )
    settings = MultiDSettings.from_event_arguments(
        num_time_points,
        time_interval_s,
        z_start,
        z_end,
        z_step,
        channel_group,
        channels,
        channel_exposures_ms,
        xy_positions,
        xyz_positions,
        position_labels,
        order,
        sequence,
    )
    plan = MultiDPlan(
        settings,
        camera=camera,
        xy_device=xy_device,
        z_device=z_device,
        channel_group=channel_group,
        channel_property=channel_property,
        data_handler=data_handler,
    )
    return list(plan)
