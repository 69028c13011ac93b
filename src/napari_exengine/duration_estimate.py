"""How long a plan should take, from the devices' own timings: each camera's frame interval at
each channel's exposure, the move time a device declares (``move_time_s``: an XY stage, a focus
drive or a channel device), the time-lapse's schedule, and the engine's measured costs per frame,
per device change and per run.

The costs were measured with the simulated microscope in a napari viewer (the Acquisition panel
showing every frame and storing it as NDTiff) on 2 shared cores: a frame cost its camera's
frame interval plus 0.6 ms (headless) to 2.4 ms (several layers or a mosaic to update); a device
change (``SetPosition1DEvent``, ``SetPropertiesEvent``...) about 0.2 ms; a run's start and end
about 50 ms.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from exengine.events import MultiDPlan, MultiDSettings

__all__ = ["plan_duration_s"]

#: What a frame costs beyond its camera's frame interval (s): its capture's start and readout
#: events, storing it and showing it.
FRAME_OVERHEAD_S = 0.0008
#: What an event changing a device costs beyond the move time the device declares (s).
EVENT_OVERHEAD_S = 0.0001
#: What a run costs once (s): its first events, closing its storage.
START_S = 0.04
#: The frame interval assumed for a camera that declares neither a frame interval nor an exposure.
UNKNOWN_INTERVAL_S = 0.01


def plan_duration_s(
    plan: Any, settings: Any, cameras: list[Any], devices: dict[str, Any], total: int
) -> float:
    """Seconds ``plan`` (of ``settings``) should take for its ``total`` frames with ``cameras``
    capturing together; ``devices`` maps the roles ``xy``, ``z`` and ``channel`` to the devices
    the plan changes."""
    if not (
        isinstance(plan, MultiDPlan) and isinstance(settings, MultiDSettings) and plan.values
    ):  # a contributed plan, a resumed one, or one useq-schema iterates: a move per frame
        moved = max((_move_time_s(d) for d in devices.values()), default=0.0)
        frame = _frame_interval_s(cameras, None) + FRAME_OVERHEAD_S + EVENT_OVERHEAD_S + moved
        return START_S + total * frame
    values, axes = plan.values, list(plan.axes)
    sizes = {a: values[a].size if a == "t" else len(values[a]) for a in axes}
    exposures = math.prod(sizes.values())
    channels = values.get("c") or [None]
    frame_s = sum(_frame_interval_s(cameras, c and c.exposure_ms) for c in channels) / len(channels)
    work = exposures * frame_s + total * FRAME_OVERHEAD_S
    outer = axes[: len(axes) - len(plan.sequenced)]
    costs = {"t": 0.0, "p": _move_time_s(devices.get("xy"))}
    costs |= {"c": _move_time_s(devices.get("channel")), "z": _move_time_s(devices.get("z"))}
    for index, axis in enumerate(outer):
        changes = math.prod(sizes[a] for a in outer[: index + 1]) if sizes[axis] > 1 else 1
        work += changes * (EVENT_OVERHEAD_S + costs[axis])
    if "t" not in sizes:
        return START_S + work
    lapses = math.prod(sizes[a] for a in axes[: axes.index("t")])
    per_time_point = work / (lapses * sizes["t"])
    return START_S + lapses * _lapse_s(settings, sizes["t"], per_time_point)


def _lapse_s(settings: MultiDSettings, count: int, work: float) -> float:
    """Seconds a time-lapse of ``count`` time points, each taking ``work`` seconds, lasts: a time
    point starts at its scheduled time, or when the one before ends if that is later."""
    gaps = settings.time_interval_s
    if not isinstance(gaps, list):
        return (count - 1) * max(float(gaps), work) + work
    starts = np.concatenate([[0.0], np.cumsum(gaps[: count - 1])])
    return count * work + float(np.max(starts - np.arange(count) * work))


def _frame_interval_s(cameras: list[Any], exposure_ms: float | None) -> float:
    """Seconds between frames of ``cameras`` capturing together at ``exposure_ms`` (``None``:
    their own exposure), the slowest camera's (see :func:`_camera_interval_s`)."""
    return max((_camera_interval_s(camera, exposure_ms) for camera in cameras), default=0.0)


def _camera_interval_s(camera: Any, exposure_ms: float | None) -> float:
    """Seconds between ``camera``'s frames at ``exposure_ms``: its declared frame interval
    (``frame_interval_s()``, else its exposure) at its own exposure; at a channel's exposure,
    that exposure, or the frame interval if the camera declares one longer than its own exposure
    (its readout limits it)."""
    own = _number(getattr(camera, "exposure", None))
    declared = getattr(camera, "frame_interval_s", None)
    interval = _number(declared() if callable(declared) else declared)
    if interval is None:
        interval = UNKNOWN_INTERVAL_S if own is None else own / 1000.0
    if exposure_ms is None:
        return interval
    readout = interval if own is None or interval > own / 1000.0 else 0.0
    return max(exposure_ms / 1000.0, readout)


def _move_time_s(device: Any) -> float:
    """The seconds a move of ``device`` takes, as it declares (``move_time_s``), else 0."""
    if device is None or isinstance(device, str):
        return 0.0
    return _number(getattr(device, "move_time_s", None)) or 0.0


def _number(value: Any) -> float | None:
    """``value`` as a finite number, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    return float(value) if math.isfinite(value) else None
