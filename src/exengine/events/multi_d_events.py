"""``multi_d_acquisition_events``: the events of a time / position / channel / z acquisition."""

from __future__ import annotations

import functools
import gc
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Optional, ParamSpec, TypeVar, Union

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

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _cyclic_gc_paused(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``function`` with the cyclic garbage collector paused: while a long time-lapse's hundreds of
    thousands of events are built, its collections over all of them took half of the time."""

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


@_cyclic_gc_paused
def multi_d_acquisition_events(
    num_time_points: Optional[int] = None,
    time_interval_s: Union[float, Sequence[float]] = 0,
    z_start: Optional[float] = None,
    z_end: Optional[float] = None,
    z_step: Optional[float] = None,
    channel_group: Union[Device, str, None] = None,
    channels: Optional[Sequence[str]] = None,
    channel_exposures_ms: Optional[Sequence[float]] = None,
    xy_positions: Optional[Sequence[Sequence[float]]] = None,
    xyz_positions: Optional[Sequence[Sequence[float]]] = None,
    position_labels: Optional[Sequence[Union[str, int]]] = None,
    order: str = "tpcz",
    sequence: Optional[str] = None,
    camera: Union[Detector, str, None] = None,
    xy_device: Union[DoubleAxisPositioner, str, None] = None,
    z_device: Union[SingleAxisPositioner, str, None] = None,
    data_handler: Optional[DataHandler] = None,
    channel_property: str = "channel",
) -> list[ExecutorEvent]:
    """Return the events of a multi-dimensional acquisition, one frame per coordinate.

    Axes (coordinate names): ``t`` time (``num_time_points``, ``time_interval_s`` a number or one
    interval per time point), ``p`` position (``xy_positions`` or ``xyz_positions``, optional
    ``position_labels``), ``c`` channel (``channels`` set as ``channel_group.channel_property``, with
    optional ``channel_exposures_ms`` set as the camera's ``exposure``), ``z`` (``z_start`` to
    ``z_end`` inclusive by ``z_step``, relative to the z of ``xyz_positions`` when given). ``order``
    lists the axes outermost first; ``sequence`` names inner axes run as one hardware-triggered
    sequence. Devices are objects, registered names, or None for the only one of their kind. Frames
    go to ``data_handler``.
    """
    times = _time_points(num_time_points, time_interval_s)
    positions = _positions(xy_positions, xyz_positions, position_labels)
    channel_list = _channels(channel_group, channels, channel_exposures_ms)
    z_offsets = _z_offsets(z_start, z_end, z_step)
    values: dict[str, list[Any]] = {}
    if times:
        values["t"] = times
    if positions:
        values["p"] = positions
    if channel_list:
        values["c"] = channel_list
    if z_offsets is not None:
        values["z"] = z_offsets
    axes = _active_order(order, values)
    seq_axes = _sequence_axes(sequence, axes, time_interval_s, channel_list)
    outer = axes[: len(axes) - len(seq_axes)]
    clock = AcquisitionClock()
    position_of = _position_lookup(values)

    events: list[ExecutorEvent] = []
    last: dict[str, Any] = {}

    def z_target(indices: dict[str, int]) -> Optional[float]:
        if "z" not in values:
            return None
        base = position_of(indices)[2]
        offset = values["z"][indices["z"]]
        return offset if base is None else base + offset

    def emit_changes(indices: dict[str, int]) -> None:
        for axis in outer:
            if axis == "t":
                index = indices["t"]
                if last.get("t") != index:
                    events.append(SetTimeEvent(index, values["t"][index], clock))
                    last["t"] = index
            elif axis == "p":
                xy = position_of(indices)[1]
                if last.get("p") != xy:
                    events.append(SetPosition2DEvent(xy_device, xy))
                    last["p"] = xy
            elif axis == "c":
                channel = values["c"][indices["c"]]
                if last.get("c") != channel:
                    settings = _channel_settings(channel_group, channel_property, camera, channel)
                    events.append(SetPropertiesEvent(settings))
                    last["c"] = channel
            elif axis == "z":
                z = z_target(indices)
                if last.get("z") != z:
                    events.append(SetPosition1DEvent(z_device, z))
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

    for outer_indices in itertools.product(*(range(len(values[a])) for a in outer)):
        indices = dict(zip(outer, outer_indices, strict=False))
        emit_changes(indices)
        if not seq_axes:
            events.append(StartCapture(num_images=1, detector=camera))
            events.append(ReadoutData([coords_of(indices)], detector=camera, data_handler=data_handler, num_images=1))
            continue
        inner = [dict(indices, **dict(zip(seq_axes, combo, strict=False)))
                 for combo in itertools.product(*(range(len(values[a])) for a in seq_axes))]
        stops: list[ExecutorEvent] = []
        if "z" in seq_axes:
            events.append(SetTriggerable1DPositionsEvent(z_device, [z_target(i) for i in inner]))
            stops.append(StopTriggerablePositionSequenceEvent(z_device))
            last.pop("z", None)
        if "c" in seq_axes:
            names = [values["c"][i["c"]][0] for i in inner]
            exposure = values["c"][0][1]
            if exposure is not None:
                events.append(SetPropertiesEvent([(camera, "exposure", exposure)]))
            events.append(SetTriggerablePropertySequencesEvent([(channel_group, channel_property, names)]))
            stops.append(StopTriggerablePropertySequencesEvent([(channel_group, channel_property)]))
            last.pop("c", None)
        events.append(StartCapture(num_images=len(inner), detector=camera))
        events.append(ReadoutData([coords_of(i) for i in inner], detector=camera,
                                  data_handler=data_handler, num_images=len(inner)))
        events.extend(stops)
    return events


def _channel_settings(group: Any, prop: str, camera: Any, channel: tuple[str, Optional[float]]) -> list[tuple]:
    name, exposure = channel
    settings: list[tuple] = [(group, prop, name)]
    if exposure is not None:
        settings.append((camera if camera is not None else _only_detector(), "exposure", exposure))
    return settings


def _only_detector() -> Detector:
    from ._devices import resolve_device

    return resolve_device(None, Detector, "camera")


def _time_points(num: Optional[int], interval: Union[float, Sequence[float]]) -> list[Optional[float]]:
    if num is None:
        if not isinstance(interval, (int, float)) or interval:
            raise ValueError("time_interval_s needs num_time_points")
        return []
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 0:
        raise ValueError(f"num_time_points must be a non-negative int, got {num!r}")
    if isinstance(interval, (int, float)):
        if interval < 0:
            raise ValueError(f"time_interval_s must be >= 0, got {interval!r}")
        return [i * interval if interval else None for i in range(num)]
    intervals = [float(v) for v in interval]
    if len(intervals) != num:
        raise ValueError(f"time_interval_s has {len(intervals)} intervals; num_time_points is {num}")
    if any(v < 0 for v in intervals):
        raise ValueError(f"time_interval_s must be >= 0, got {intervals}")
    starts = np.concatenate([[0.0], np.cumsum(intervals[:-1])]) if intervals else []
    return [float(s) for s in starts]


def _positions(xy: Any, xyz: Any, labels: Any) -> list[tuple[Union[str, int], tuple[float, float], Optional[float]]]:
    if xy is not None and xyz is not None:
        raise ValueError("Pass xy_positions or xyz_positions, not both")
    source = xy if xy is not None else xyz
    if source is None:
        if labels is not None:
            raise ValueError("position_labels needs xy_positions or xyz_positions")
        return []
    array = np.asarray(source, dtype=float)
    width = 2 if xy is not None else 3
    name = "xy_positions" if xy is not None else "xyz_positions"
    if array.ndim != 2 or array.shape[1] != width or len(array) == 0:
        raise ValueError(f"{name} must be a non-empty list of {width}-element positions, got shape {array.shape}")
    if labels is None:
        labels = list(range(len(array)))
    labels = list(labels)
    if len(labels) != len(array):
        raise ValueError(f"position_labels has {len(labels)} labels for {len(array)} positions")
    if len(set(labels)) != len(labels):
        raise ValueError(f"position_labels must be unique, got {labels}")
    return [(label, (float(row[0]), float(row[1])), float(row[2]) if width == 3 else None)
            for label, row in zip(labels, array, strict=False)]


def _channels(group: Any, channels: Any, exposures: Any) -> list[tuple[str, Optional[float]]]:
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
        raise ValueError("channels need channel_group: the device (or its name) that selects the channel")
    if exposures is None:
        return [(c, None) for c in channels]
    exposures = [float(e) for e in exposures]
    if len(exposures) != len(channels):
        raise ValueError(f"channel_exposures_ms has {len(exposures)} values for {len(channels)} channels")
    if any(e < 0 for e in exposures):
        raise ValueError(f"channel_exposures_ms must be >= 0, got {exposures}")
    return list(zip(channels, exposures, strict=False))


def _z_offsets(start: Optional[float], end: Optional[float], step: Optional[float]) -> Optional[list[float]]:
    given = {"z_start": start, "z_end": end, "z_step": step}
    if all(v is None for v in given.values()):
        return None
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(f"A z range needs z_start, z_end and z_step; missing {missing}")
    if step == 0 or (end - start) * step < 0:  # type: ignore[operator]
        raise ValueError(f"z_step={step} does not lead from z_start={start} to z_end={end}")
    count = int(np.floor((end - start) / step + 1e-9)) + 1  # type: ignore[operator]
    return [float(start + i * step) for i in range(count)]  # type: ignore[operator]


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


def _sequence_axes(sequence: Optional[str], axes: list[str], interval: Any,
                   channels: list[tuple[str, Optional[float]]]) -> list[str]:
    if not sequence:
        return []
    seq = list(sequence.lower())
    if set(seq) - set(axes) or len(set(seq)) != len(seq):
        raise ValueError(f"sequence {sequence!r} must name axes in use {axes}, each once")
    if axes[len(axes) - len(seq):] != seq:
        raise ValueError(f"sequence {sequence!r} must be the innermost axes of the order {''.join(axes)!r}")
    if "p" in seq:
        raise ValueError("sequence cannot include positions ('p'); XY moves are not hardware-triggered here")
    if "t" in seq and (not isinstance(interval, (int, float)) or interval):
        raise ValueError("sequence over 't' needs time_interval_s=0 (frames run back to back)")
    if "c" in seq and len({e for _, e in channels}) > 1:
        raise ValueError("sequence over 'c' needs one exposure for all channels (channel_exposures_ms)")
    return seq


def _position_lookup(values: dict[str, list[Any]]) -> Any:
    if "p" not in values:
        return lambda indices: (None, None, None)
    positions = values["p"]
    return lambda indices: positions[indices["p"]]
