"""ExEngine's ``multi_d_acquisition_events`` arguments, checked and turned into useq-schema's time
plan, stage positions, channels and z plan.

A refused argument raises :class:`SettingError`: a ``ValueError`` in plain words with units, with
the offending value and what would be valid, and the argument's name as ``setting`` (so that a form
can show the error beside that setting).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import useq

from .plan_checks import is_count

__all__ = [
    "MAX_LISTED",
    "MAX_Z_PLANES",
    "SettingError",
    "channel_list",
    "round_value",
    "stage_positions",
    "time_plan",
    "z_plan",
]

#: More z planes than any stack a microscope takes (and than a plan's length can count).
MAX_Z_PLANES = 10**9
#: At most this many listed values (z planes of a list, time points of a multi-phase plan).
MAX_LISTED = 10**6
_DIGITS = 9  # decimals kept of µm and s: hides float noise such as 0.30000000000000004
_Z_WORDS = {"z_start": "z start", "z_end": "z end", "z_step": "z step"}


class SettingError(ValueError):
    """A refused setting: the message in plain words; ``setting``, the argument's name."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


def round_value(value: float) -> float:
    """``value`` without float noise (9 decimals of µm or s), and never -0.0."""
    return round(float(value), _DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0


def _number(value: Any, setting: str, words: str, unit: str) -> float:
    """``value`` as a finite float, else a :class:`SettingError` in words with the unit."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingError(setting, f"{words} must be a number of {unit}, got {value!r}") from None
    if not math.isfinite(number):
        raise SettingError(setting, f"{words} must be a finite number of {unit}, got {value!r}")
    return number


def _count(number: int, noun: str) -> str:
    """``3 channels``, ``1 channel``."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def time_plan(num: int | float | None, interval: float | Sequence[float]) -> Any:
    """The useq-schema time plan of ``num`` time points (``math.inf``: until stopped) every
    ``interval`` seconds (one number, or one per time point)."""
    if num is None:
        if not isinstance(interval, (int, float)) or interval:
            raise SettingError(
                "time_interval_s",
                f"A time interval ({interval!r} s) needs a number of time points",
            )
        return None
    if num == math.inf:
        count = None
    elif is_count(num):
        count = int(num)
    else:
        raise SettingError(
            "num_time_points",
            "The number of time points must be a whole number of at least 1 (or math.inf: until "
            f"stopped), got {num!r}",
        )
    if isinstance(interval, (int, float, np.number)) and not isinstance(interval, bool):
        step = _number(interval, "time_interval_s", "The time interval", "seconds")
        if step < 0:
            raise SettingError(
                "time_interval_s", f"The time interval must be 0 s or more, got {step:g} s"
            )
        return useq.TIntervalLoops(interval=step, loops=count or 1)
    if count is None:
        raise SettingError(
            "time_interval_s", "An open-ended time-lapse takes one time interval, not a list"
        )
    gaps = [_number(v, "time_interval_s", "Each time interval", "seconds") for v in interval]
    if len(gaps) != count:
        raise SettingError(
            "time_interval_s",
            f"{_count(len(gaps), 'time interval')} for {_count(count, 'time point')}: give one "
            "per time point",
        )
    if min(gaps) < 0:
        raise SettingError(
            "time_interval_s", f"Time intervals must be 0 s or more, got {min(gaps):g} s"
        )
    gaps = gaps[: count - 1]  # the last interval follows the last time point: never waited
    if not gaps or max(gaps) - min(gaps) <= 1e-9:
        return useq.TIntervalLoops(interval=gaps[0] if gaps else 0.0, loops=count)
    phases: list[list[float]] = []  # runs of equal intervals: [interval, loops]
    for gap in gaps:
        if phases and abs(phases[-1][0] - gap) <= 1e-9:
            phases[-1][1] += 1
        else:
            phases.append([gap, 2])
    return useq.MultiPhaseTimePlan(
        phases=[useq.TIntervalLoops(interval=g, loops=int(n)) for g, n in phases]
    )


def stage_positions(xy: Any, xyz: Any, labels: Any) -> list[useq.Position]:
    """useq-schema positions of ``xy`` or ``xyz`` positions (µm), named by ``labels``."""
    if xy is not None and xyz is not None:
        raise SettingError("xyz_positions", "Give xy positions or xyz positions, not both")
    source = xy if xy is not None else xyz
    if source is None:
        if labels is not None:
            raise SettingError("position_labels", "Position labels need positions")
        return []
    width = 2 if xy is not None else 3
    name, words = (
        ("xy_positions", "xy position") if xy is not None else ("xyz_positions", "xyz position")
    )
    axes = "x, y" if width == 2 else "x, y, z"
    try:
        array = np.asarray(source, dtype=float)
    except (TypeError, ValueError):
        array = np.empty((0, 0))
    if array.ndim != 2 or array.shape[1] != width or len(array) == 0:
        raise SettingError(
            name, f"Each {words} must be {width} numbers of µm ({axes}), got {source!r}"
        )
    if not np.isfinite(array).all():
        raise SettingError(name, f"Each {words} must be finite numbers of µm, got {source!r}")
    names: list[str | None] = [None] * len(array)
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(array):
            raise SettingError(
                "position_labels",
                f"{_count(len(labels), 'position label')} for {_count(len(array), 'position')}: "
                "give one per position",
            )
        repeated = sorted({str(label) for label in labels if labels.count(label) > 1})
        if repeated:
            raise SettingError(
                "position_labels", f"Each position label can be used once; repeated: {repeated}"
            )
        if labels != list(range(len(array))):  # the default labels: positions without names
            names = [str(label) for label in labels]
    return [
        useq.Position(
            x=float(row[0]), y=float(row[1]), z=float(row[2]) if width == 3 else None, name=label
        )
        for label, row in zip(names, array, strict=True)
    ]


def channel_list(group: Any, channels: Any, exposures: Any) -> list[useq.Channel]:
    """useq-schema channels of ``channels`` (names) of the device ``group``, with their
    ``exposures`` (ms) if given."""
    if channels is None:
        if exposures is not None:
            raise SettingError("channel_exposures_ms", "Channel exposures need channels")
        return []
    if not isinstance(channels, str):
        channels = list(channels)
    named = not isinstance(channels, str) and all(isinstance(c, str) and c for c in channels)
    if not named or not channels:
        raise SettingError(
            "channels", f"Channels must be a non-empty list of channel names, got {channels!r}"
        )
    repeated = sorted({c for c in channels if channels.count(c) > 1})
    if repeated:
        raise SettingError("channels", f"Each channel can be listed once; repeated: {repeated}")
    if group is None:
        raise SettingError(
            "channel_group", "Channels need the device (or its name) that selects the channel"
        )
    group_name = group if isinstance(group, str) else getattr(group, "name", None)
    if not isinstance(group_name, str) or not group_name:
        raise SettingError(
            "channel_group",
            f"The device that selects the channel must be a device or its name, got {group!r}",
        )
    if exposures is None:
        return [useq.Channel(config=c, group=group_name) for c in channels]
    values = [_number(e, "channel_exposures_ms", "Each channel exposure", "ms") for e in exposures]
    if len(values) != len(channels):
        raise SettingError(
            "channel_exposures_ms",
            f"{_count(len(values), 'exposure')} for {_count(len(channels), 'channel')}: give one "
            "per channel",
        )
    for name, exposure in zip(channels, values, strict=True):
        if exposure <= 0:
            raise SettingError(
                "channel_exposures_ms",
                f"The exposure of channel {name!r} must be above 0 ms, got {exposure:g} ms",
            )
    return [
        useq.Channel(config=c, group=group_name, exposure=e)
        for c, e in zip(channels, values, strict=True)
    ]


def z_plan(start: Any, end: Any, step: Any, relative: bool) -> Any:
    """The z plan visiting ``start``, ``start + step``, ... up to ``end`` (µm, included when the
    step reaches it): a range useq-schema users know (top and bottom, above and below, around),
    else the listed planes."""
    given = {"z_start": start, "z_end": end, "z_step": step}
    if all(v is None for v in given.values()):
        return None
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise SettingError(
            missing[0],
            "A z range needs a start, an end and a step (µm); missing: "
            + ", ".join(_Z_WORDS[k] for k in missing),
        )
    first, last, by = (_number(v, k, f"The {_Z_WORDS[k]}", "µm") for k, v in given.items())
    if by == 0:
        raise SettingError("z_step", "The z step must not be 0 µm")
    if (last - first) * by < 0:
        raise SettingError(
            "z_step",
            f"The z step of {by:g} µm does not lead from {first:g} µm to {last:g} µm; a step of "
            f"{-by:g} µm does",
        )
    count = int(np.floor((last - first) / by + 1e-9)) + 1
    if count > MAX_Z_PLANES:
        raise SettingError(
            "z_step",
            f"A z range from {first:g} µm to {last:g} µm in steps of {by:g} µm makes {count:.3g} "
            f"z planes; at most {MAX_Z_PLANES:,} (take a larger z step)",
        )
    last = round_value(first + (count - 1) * by)
    first = round_value(first)
    low, high, spacing, up = min(first, last), max(first, last), abs(by), by > 0
    if count == 1:
        spacing = 0.0 if relative else abs(by)
    if not relative:
        return useq.ZTopBottom(bottom=low, top=high, step=spacing, go_up=up)
    if math.isclose(low, -high, abs_tol=1e-9):
        return useq.ZRangeAround(range=round_value(high - low), step=spacing, go_up=up)
    if low <= 0 <= high:
        return useq.ZAboveBelow(above=high, below=round_value(-low), step=spacing, go_up=up)
    if count > MAX_LISTED:
        raise SettingError(
            "z_step",
            f"A z range around each position that leaves out the position's z is listed plane by "
            f"plane: {count:,} planes, at most {MAX_LISTED:,} (take a larger z step)",
        )
    return useq.ZRelativePositions(
        relative=[round_value(first + k * by) for k in range(count)], go_up=True
    )
