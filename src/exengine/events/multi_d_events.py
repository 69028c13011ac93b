"""``multi_d_acquisition_events``: the events of a time / position / channel / z acquisition."""

from __future__ import annotations

import functools
import gc
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

import numpy as np

from ..device_types import Detector, DoubleAxisPositioner, SingleAxisPositioner
from ..kernel.data_coords import DataCoordinates
from ..kernel.data_handler import DataHandler
from ..kernel.device import Device
from ..kernel.ex_event_base import ExecutorEvent
from .detector_events import ReadoutData, StartCapture
from .misc_events import AcquisitionClock, SetTimeEvent
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

AXIS_NAMES = {"t": "time", "p": "position", "c": "channel", "z": "z"}
#: More z planes than any stack a microscope takes (and than a plan's length can count).
_MAX_Z_PLANES = 10**9

_P = ParamSpec("_P")
_R = TypeVar("_R")


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


#: ``num_time_points`` of an open-ended time-lapse: time points until the acquisition is stopped.
UNTIL_STOPPED = math.inf


class MultiDPlan:
    """The events of a multi-dimensional acquisition, made lazily: each event is created just before
    it is taken, so a plan of any length (also an open-ended time-lapse,
    ``num_time_points=math.inf``) costs the same memory. Iterating again makes fresh events. Built
    by
    :func:`multi_d_acquisition_plan`, which checks its arguments at once.
    """

    def __init__(
        self,
        num_time_points: int | float | None = None,
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
        camera: Detector | str | None = None,
        xy_device: DoubleAxisPositioner | str | None = None,
        z_device: SingleAxisPositioner | str | None = None,
        data_handler: DataHandler | None = None,
        channel_property: str = "channel",
    ) -> None:
        values: dict[str, Any] = {}
        times = _time_points(num_time_points, time_interval_s)
        if times is not None:
            values["t"] = times
        positions = _positions(xy_positions, xyz_positions, position_labels)
        if positions:
            values["p"] = positions
        channel_list = _channels(channel_group, channels, channel_exposures_ms)
        if channel_list:
            values["c"] = channel_list
        z_offsets = _z_offsets(z_start, z_end, z_step)
        if z_offsets is not None:
            values["z"] = z_offsets
        self.axes = _active_order(order, values)
        if "t" in values and values["t"].size is None and self.axes[0] != "t":
            raise ValueError(
                f"An open-ended time-lapse needs time as the outermost axis; order is {order!r}"
            )
        self.sequenced = _sequence_axes(sequence, self.axes, time_interval_s, channel_list)
        if "t" in self.sequenced and values["t"].size is None:
            raise ValueError(
                "An open-ended time-lapse cannot run as one hardware sequence ('t' in sequence)"
            )
        self.values = values
        self.camera, self.xy_device, self.z_device = camera, xy_device, z_device
        self.channel_group, self.channel_property = channel_group, channel_property
        self.data_handler = data_handler

    @property
    def axis_sizes(self) -> dict[str, int | None]:
        """Size of each axis by coordinate name, outermost first (``None``: open-ended)."""
        return {
            AXIS_NAMES[a]: (self.values[a].size if a == "t" else len(self.values[a]))
            for a in self.axes
        }

    @property
    def total_frames(self) -> int | None:
        """Frames the plan acquires, or ``None`` for an open-ended time-lapse."""
        sizes = self.axis_sizes.values()
        return None if None in sizes else math.prod(sizes)  # type: ignore[arg-type]

    @property
    def frames_per_time_point(self) -> int:
        """Frames of one time point (all of them when there is no time axis)."""
        return math.prod(size for axis, size in self.axis_sizes.items() if axis != "time")  # type: ignore[misc]

    def validate(self) -> None:
        """Check the events of the first time point, with only the two ends of the z range (every
        position, channel and the extremes of z), against the devices; the rest repeats those
        settings."""
        from ..acquisition import check_event

        values = self._first_time_point_values()
        if "z" in values:
            z = values["z"]
            values["z"] = [z[0], z[len(z) - 1]] if len(z) > 1 else [z[0]]
        for event in self._events(values):
            check_event(event)

    def first_time_point(self) -> Iterator[ExecutorEvent]:
        """The events of the first time point only (every event when there is no time axis)."""
        return self._events(self._first_time_point_values())

    def _first_time_point_values(self) -> dict[str, Any]:
        values = dict(self.values)
        if "t" in values:
            values["t"] = _TimeAxis(1, 0.0)
        return values

    def __iter__(self) -> Iterator[ExecutorEvent]:
        return self._events(self.values)

    def _events(self, values: dict[str, Any]) -> Iterator[ExecutorEvent]:
        axes, seq_axes = self.axes, self.sequenced
        camera, z_device, channel_group = self.camera, self.z_device, self.channel_group
        outer = axes[: len(axes) - len(seq_axes)]
        clock = AcquisitionClock()
        position_of = _position_lookup(values)
        last: dict[str, Any] = {}

        def z_target(indices: dict[str, int]) -> float | None:
            if "z" not in values:
                return None
            base = position_of(indices)[2]
            offset = values["z"][indices["z"]]
            return offset if base is None else base + offset

        def changes(indices: dict[str, int]) -> Iterator[ExecutorEvent]:
            for axis in outer:
                if axis == "t":
                    index = indices["t"]
                    if last.get("t") != index:
                        yield SetTimeEvent(index, values["t"][index], clock)
                        last["t"] = index
                elif axis == "p":
                    _, xy, z = position_of(indices)
                    if last.get("p") != xy:
                        yield SetPosition2DEvent(self.xy_device, xy)
                        last["p"] = xy
                    if z is not None and "z" not in values and last.get("z") != z:
                        yield SetPosition1DEvent(z_device, z)  # an xyz position without a z range
                        last["z"] = z
                elif axis == "c":
                    channel = values["c"][indices["c"]]
                    if last.get("c") != channel:
                        yield SetPropertiesEvent(
                            _channel_settings(channel_group, self.channel_property, camera, channel)
                        )
                        last["c"] = channel
                elif axis == "z":
                    z = z_target(indices)
                    if last.get("z") != z:
                        yield SetPosition1DEvent(z_device, z)
                        last["z"] = z

        def coords_of(indices: dict[str, int]) -> DataCoordinates:
            coords = DataCoordinates()
            for axis in axes:
                if axis == "p":
                    coords["position"] = values["p"][indices["p"]][0]
                elif axis == "c":
                    coords["channel"] = values["c"][indices["c"]][0]
                else:
                    coords[AXIS_NAMES[axis]] = indices[axis]
            return coords

        sizes: list[int | None] = [values[a].size if a == "t" else len(values[a]) for a in outer]
        for outer_indices in _product(sizes):
            indices = dict(zip(outer, outer_indices, strict=False))
            yield from changes(indices)
            if not seq_axes:
                yield StartCapture(num_images=1, detector=camera)
                yield ReadoutData(
                    [coords_of(indices)],
                    detector=camera,
                    data_handler=self.data_handler,
                    num_images=1,
                )
                continue
            inner = [
                dict(indices, **dict(zip(seq_axes, combo, strict=False)))
                for combo in itertools.product(*(range(len(values[a])) for a in seq_axes))
            ]
            stops: list[ExecutorEvent] = []
            if "z" in seq_axes:
                yield SetTriggerable1DPositionsEvent(z_device, [z_target(i) for i in inner])
                stops.append(StopTriggerablePositionSequenceEvent(z_device))
                last.pop("z", None)
            if "c" in seq_axes:
                names = [values["c"][i["c"]][0] for i in inner]
                exposure = values["c"][0][1]
                if exposure is not None:
                    yield SetPropertiesEvent([(camera, "exposure", exposure)])
                yield SetTriggerablePropertySequencesEvent(
                    [(channel_group, self.channel_property, names)]
                )
                stops.append(
                    StopTriggerablePropertySequencesEvent([(channel_group, self.channel_property)])
                )
                last.pop("c", None)
            yield StartCapture(num_images=len(inner), detector=camera)
            yield ReadoutData(
                [coords_of(i) for i in inner],
                detector=camera,
                data_handler=self.data_handler,
                num_images=len(inner),
            )
            yield from stops


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


def multi_d_acquisition_plan(
    num_time_points: int | float | None = None, **kwargs: Any
) -> MultiDPlan:
    """The lazy counterpart of :func:`multi_d_acquisition_events`: the same events in the same
    order, created as they are taken. ``num_time_points=math.inf`` (:data:`UNTIL_STOPPED`) makes an
    open-ended time-lapse that runs until the acquisition is stopped. Arguments are checked at
    once."""
    return MultiDPlan(num_time_points, **kwargs)


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
    camera: Detector | str | None = None,
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
    sequence. Devices are objects, registered names, or None for the only one of their kind. Frames
    go to ``data_handler``. :func:`multi_d_acquisition_plan` makes the same events lazily.
    """
    if num_time_points == math.inf:
        raise ValueError(
            "A time-lapse until stopped has no list of events: use "
            "multi_d_acquisition_plan(num_time_points=math.inf)"
        )
    return list(
        MultiDPlan(
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
            camera,
            xy_device,
            z_device,
            data_handler,
            channel_property,
        )
    )


def _channel_settings(
    group: Any, prop: str, camera: Any, channel: tuple[str, float | None]
) -> list[tuple]:
    name, exposure = channel
    settings: list[tuple] = [(group, prop, name)]
    if exposure is not None:
        settings.append((camera if camera is not None else _only_detector(), "exposure", exposure))
    return settings


def _only_detector() -> Detector:
    from ._devices import resolve_device

    return resolve_device(None, Detector, "camera")


class _TimeAxis:
    """Start times (s after the acquisition's start, ``None``: as soon as possible) of ``size`` time
    points (``None``: open-ended), from one interval or one interval per point."""

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


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def finite_number(value: Any, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``name`` when it is not a finite number
    within [``low``, ``high``] (a setting of a plan)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not low <= number <= high:
        raise ValueError(f"{name} must be within [{low:g}, {high:g}], got {value!r}")
    return number


def _time_points(num: int | float | None, interval: float | Sequence[float]) -> _TimeAxis | None:
    if num is None:
        if not isinstance(interval, (int, float)) or interval:
            raise ValueError("time_interval_s needs num_time_points")
        return None
    if num == math.inf:
        size = None
    elif _is_count(num):
        size = int(num)
    else:
        raise ValueError(
            f"num_time_points must be a positive int (or math.inf: until stopped), got {num!r}"
        )
    if isinstance(interval, (int, float, np.number)) and not isinstance(interval, bool):
        step = finite_number(interval, "time_interval_s")
        if step < 0:
            raise ValueError(f"time_interval_s must be >= 0, got {interval!r}")
        return _TimeAxis(size, step)
    if size is None:
        raise ValueError("An open-ended time-lapse takes one time_interval_s, not a list")
    intervals = [finite_number(v, "time_interval_s") for v in interval]
    if len(intervals) != size:
        raise ValueError(
            f"time_interval_s has {len(intervals)} intervals; num_time_points is {size}"
        )
    if any(v < 0 for v in intervals):
        raise ValueError(f"time_interval_s must be >= 0, got {intervals}")
    starts = np.concatenate([[0.0], np.cumsum(intervals[:-1])]) if intervals else []
    return _TimeAxis(size, 0.0, [float(s) for s in starts])


def _positions(
    xy: Any, xyz: Any, labels: Any
) -> list[tuple[str | int, tuple[float, float], float | None]]:
    if xy is not None and xyz is not None:
        raise ValueError("Pass xy_positions or xyz_positions, not both")
    source = xy if xy is not None else xyz
    if source is None:
        if labels is not None:
            raise ValueError("position_labels needs xy_positions or xyz_positions")
        return []
    width = 2 if xy is not None else 3
    name = "xy_positions" if xy is not None else "xyz_positions"
    try:
        array = np.asarray(source, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a list of {width}-element positions of numbers, got {source!r}"
        ) from None
    if array.ndim != 2 or array.shape[1] != width or len(array) == 0:
        raise ValueError(
            f"{name} must be a non-empty list of {width}-element positions, got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite numbers, got {source!r}")
    if labels is None:
        labels = list(range(len(array)))
    labels = list(labels)
    if len(labels) != len(array):
        raise ValueError(f"position_labels has {len(labels)} labels for {len(array)} positions")
    if len(set(labels)) != len(labels):
        raise ValueError(f"position_labels must be unique, got {labels}")
    return [
        (label, (float(row[0]), float(row[1])), float(row[2]) if width == 3 else None)
        for label, row in zip(labels, array, strict=False)
    ]


def _channels(group: Any, channels: Any, exposures: Any) -> list[tuple[str, float | None]]:
    if channels is None:
        if exposures is not None:
            raise ValueError("channel_exposures_ms needs channels")
        return []
    channels = list(channels)
    if not channels or not all(isinstance(c, str) and c for c in channels):
        raise ValueError(f"channels must be a non-empty list of channel names, got {channels!r}")
    if len(set(channels)) != len(channels):
        raise ValueError(f"channels must be unique, got {channels}")
    if group is None:
        raise ValueError(
            "channels need channel_group: the device (or its name) that selects the channel"
        )
    if exposures is None:
        return [(c, None) for c in channels]
    exposures = [finite_number(e, "channel_exposures_ms") for e in exposures]
    if len(exposures) != len(channels):
        raise ValueError(
            f"channel_exposures_ms has {len(exposures)} values for {len(channels)} channels"
        )
    if any(e < 0 for e in exposures):
        raise ValueError(f"channel_exposures_ms must be >= 0, got {exposures}")
    return list(zip(channels, exposures, strict=False))


class _ZAxis:
    """``count`` z offsets from ``start`` by ``step``, computed when asked (a huge range costs
    nothing)."""

    def __init__(self, start: float, step: float, count: int) -> None:
        self.start, self.step, self.count = start, step, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> float:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return float(self.start + index * self.step)


def _z_offsets(start: float | None, end: float | None, step: float | None) -> _ZAxis | None:
    given = {"z_start": start, "z_end": end, "z_step": step}
    if all(v is None for v in given.values()):
        return None
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(f"A z range needs z_start, z_end and z_step; missing {missing}")
    start, end, step = (finite_number(v, k) for k, v in given.items())
    if step == 0 or (end - start) * step < 0:
        raise ValueError(f"z_step={step} does not lead from z_start={start} to z_end={end}")
    count = int(np.floor((end - start) / step + 1e-9)) + 1
    if count > _MAX_Z_PLANES:
        raise ValueError(
            f"z_start={start:g} to z_end={end:g} by z_step={step:g} makes {count:.3g} z planes; "
            f"at most {_MAX_Z_PLANES:,} (a larger z_step)"
        )
    return _ZAxis(start, step, count)


def _active_order(order: str, values: dict[str, list[Any]]) -> list[str]:
    if not isinstance(order, str):
        raise ValueError(f"order must be a string like 'tpcz', got {order!r}")
    order = order.lower()
    if len(set(order)) != len(order) or set(order) - set("tpcz"):
        raise ValueError(f"order must list each of 't', 'p', 'c', 'z' at most once, got {order!r}")
    missing = [a for a in values if a not in order]
    if missing:
        raise ValueError(f"order {order!r} lacks the axes {missing} that have values")
    return [a for a in order if a in values]


def _sequence_axes(
    sequence: str | None, axes: list[str], interval: Any, channels: list[tuple[str, float | None]]
) -> list[str]:
    if not sequence:
        return []
    seq = list(sequence.lower())
    if set(seq) - set(axes) or len(set(seq)) != len(seq):
        raise ValueError(f"sequence {sequence!r} must name axes in use {axes}, each once")
    if axes[len(axes) - len(seq) :] != seq:
        raise ValueError(
            f"sequence {sequence!r} must be the innermost axes of the order {''.join(axes)!r}"
        )
    if "p" in seq:
        raise ValueError(
            "sequence cannot include positions ('p'); XY moves are not hardware-triggered here"
        )
    if "t" in seq and (not isinstance(interval, (int, float)) or interval):
        raise ValueError("sequence over 't' needs time_interval_s=0 (frames run back to back)")
    if "c" in seq and len({e for _, e in channels}) > 1:
        raise ValueError(
            "sequence over 'c' needs one exposure for all channels (channel_exposures_ms)"
        )
    return seq


def _position_lookup(values: dict[str, list[Any]]) -> Any:
    if "p" not in values:
        return lambda indices: (None, None, None)
    positions = values["p"]
    return lambda indices: positions[indices["p"]]
