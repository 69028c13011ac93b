"""``MultiDSettings``: the one model of a multi-dimensional acquisition's settings.

It is a useq-schema ``MDASequence`` (the field's standard model: time plan, stage positions,
channels, z plan, axis order), with the two things useq-schema has no field for: time points until
the acquisition is stopped, and inner axes run as one hardware-triggered sequence. Every front end
fills it: the Acquisition panel, ``exengine acquire`` (its options and files), useq-schema files
(:meth:`MultiDSettings.load`, as pymmcore-widgets writes them) and ExEngine's
``multi_d_acquisition_events`` arguments (:meth:`MultiDSettings.from_event_arguments`);
:class:`~exengine.events.multi_d_events.MultiDPlan` consumes it.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import useq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..kernel.device import Device
from .plan_checks import finite_number, is_count

__all__ = [
    "AXIS_NAMES",
    "MAX_Z_PLANES",
    "MultiDSettings",
    "ZPlanes",
    "plan_interval_s",
    "time_starts",
    "z_planes",
]

#: Coordinate axis of each useq-schema axis letter.
AXIS_NAMES = {"t": "time", "p": "position", "c": "channel", "z": "z"}
#: More z planes than any stack a microscope takes (and than a plan's length can count).
MAX_Z_PLANES = 10**9
#: At most this many listed values (z planes of a list, time points of a multi-phase plan).
_MAX_LISTED = 10**6
_DIGITS = 9  # decimals kept of µm and s: hides float noise such as 0.30000000000000004


class MultiDSettings(BaseModel):
    """What a multi-dimensional acquisition does: ``sequence`` (a useq-schema ``MDASequence``),
    ``until_stopped`` (time points until the acquisition is stopped, every ``time_plan`` interval;
    the time plan's count is then ignored) and ``hardware_sequenced`` (inner axes, such as ``"z"``
    or ``"cz"``, run as one hardware-triggered sequence). Frozen; checked when made."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sequence: useq.MDASequence = Field(default_factory=useq.MDASequence)
    until_stopped: bool = False
    hardware_sequenced: str = ""

    @field_validator("sequence", mode="before")
    @classmethod
    def _sequence_from_mapping(cls, value: Any) -> Any:
        return useq.MDASequence.model_validate(value) if isinstance(value, Mapping) else value

    @field_validator("hardware_sequenced")
    @classmethod
    def _axes_letters(cls, value: str) -> str:
        value = value.lower()
        if set(value) - set("tcz") or len(set(value)) != len(value):
            raise ValueError(
                f"hardware_sequenced names inner axes 't', 'c' or 'z', each once, got {value!r} "
                "(positions are not hardware-triggered here)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MultiDSettings:
        axes = self.axis_order  # raises when an axis in use is missing from the order
        if self.until_stopped and axes[0] != "t":
            raise ValueError(
                "An open-ended time-lapse needs time as the outermost axis; the axis order is "
                f"{''.join(axes)!r}"
            )
        plan = self.sequence.time_plan
        if plan is not None:
            try:
                plan.num_timepoints()
            except ZeroDivisionError:
                raise ValueError(f"time_plan={plan!r} does not define its time points") from None
        labels = self.position_labels
        if len(set(labels)) != len(labels):
            raise ValueError(f"stage_positions names must be unique, got {labels}")
        _check_hardware_sequence(self, axes)
        return self

    # ---------------------------------------------------------------------------- the axes
    @property
    def axis_order(self) -> list[str]:
        """The axes in use ('t', 'p', 'c', 'z'), outermost first."""
        seq = self.sequence
        used = {
            "t": seq.time_plan is not None or self.until_stopped,
            "p": bool(seq.stage_positions),
            "c": bool(seq.channels),
            "z": seq.z_plan is not None,
        }
        order = [str(axis) for axis in seq.axis_order]
        missing = [axis for axis, on in used.items() if on and axis not in order]
        if missing:
            raise ValueError(
                f"axis_order {''.join(order)!r} lacks {', '.join(map(repr, missing))} although "
                "that axis is set"
            )
        return [axis for axis in order if used.get(axis)]

    @property
    def time_points(self) -> int | None:
        """The number of time points (1 without a time plan; ``None`` until stopped)."""
        if self.until_stopped:
            return None
        plan = self.sequence.time_plan
        return 1 if plan is None else int(plan.num_timepoints())

    @property
    def time_interval_s(self) -> float | list[float]:
        """Seconds between time points: one number, or one interval per time point when they
        differ (the last repeats the one before)."""
        plan = self.sequence.time_plan
        if plan is None:
            return 0.0
        if not isinstance(plan, useq.MultiPhaseTimePlan):
            return _round(plan_interval_s(plan))
        starts = time_starts(plan)
        gaps = [_round(b - a) for a, b in itertools.pairwise(starts)]
        if not gaps or max(gaps) - min(gaps) <= 1e-9:
            return gaps[0] if gaps else 0.0
        return [*gaps, gaps[-1]]

    @property
    def channel_names(self) -> list[str]:
        """The channels' names (their ``config``), in order."""
        return [channel.config for channel in self.sequence.channels]

    @property
    def channel_exposures_ms(self) -> list[float] | None:
        """Each channel's exposure (ms), or ``None`` when they keep the camera's."""
        exposures = [channel.exposure for channel in self.sequence.channels]
        return None if all(e is None for e in exposures) else [float(e or 0) for e in exposures]

    @property
    def position_labels(self) -> list[str | int]:
        """The position axis's values: each position's name, or its index when none has one."""
        positions = self.sequence.stage_positions
        if all(p.name is None for p in positions):
            return list(range(len(positions)))
        return [f"Pos{i}" if p.name is None else p.name for i, p in enumerate(positions)]

    def z_range(self) -> tuple[float, float, float] | None:
        """``(start, end, step)`` of the z planes (µm, end included; relative to each position's z,
        or the current z, when :attr:`z_is_relative`), or ``None`` without a z plan."""
        planes = z_planes(self.sequence.z_plan)
        if planes is None:
            return None
        if len(planes) == 1:
            step = abs(float(getattr(self.sequence.z_plan, "step", 0) or 0)) or 1.0
            return planes[0], planes[0], step
        return planes[0], planes[len(planes) - 1], _round(planes[1] - planes[0])

    @property
    def z_is_relative(self) -> bool:
        """True when z planes are offsets from each position's z (or from the current z)."""
        plan = self.sequence.z_plan
        return plan is not None and plan.is_relative

    @property
    def total_frames(self) -> int | None:
        """Frames of the acquisition (``None``: until stopped): every time point, position, channel
        and z plane; a sequence with grids, sub-sequences or channels that skip frames takes what
        its :class:`~exengine.events.multi_d_events.MultiDPlan`'s ``total_frames`` counts (a grid's
        size may depend on the camera)."""
        if self.until_stopped:
            return None
        seq = self.sequence
        counts = [
            self.time_points or 1,
            len(seq.stage_positions) or 1,
            len(seq.channels) or 1,
            len(z_planes(seq.z_plan) or [0]),
        ]
        return math.prod(counts)

    # --------------------------------------------------------------------------- making it
    @classmethod
    def from_event_arguments(
        cls,
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
    ) -> MultiDSettings:
        """The settings of ExEngine's ``multi_d_acquisition_events`` arguments (see there), checked
        at once: a ``ValueError`` names the argument and what would be valid."""
        fields: dict[str, Any] = {}
        until_stopped = num_time_points == math.inf
        time_plan = _time_plan(num_time_points, time_interval_s)
        if time_plan is not None:
            fields["time_plan"] = time_plan
        positions = _positions(xy_positions, xyz_positions, position_labels)
        if positions:
            fields["stage_positions"] = positions
        channel_list = _channels(channel_group, channels, channel_exposures_ms)
        if channel_list:
            fields["channels"] = channel_list
        z_plan = _z_plan(z_start, z_end, z_step, relative=xyz_positions is not None)
        if z_plan is not None:
            fields["z_plan"] = z_plan
        if not isinstance(order, str):
            raise ValueError(f"order must be a string like 'tpcz', got {order!r}")
        axes = order.lower()
        if len(set(axes)) != len(axes) or set(axes) - set("tpcz"):
            raise ValueError(
                f"order must list each of 't', 'p', 'c', 'z' at most once, got {order!r}"
            )
        used = {"t": time_plan is not None, "p": bool(positions), "c": bool(channel_list)}
        used["z"] = z_plan is not None
        missing = [axis for axis, on in used.items() if on and axis not in axes]
        if missing:
            raise ValueError(f"order {order!r} lacks the axes {missing} that have values")
        fields["axis_order"] = tuple(axes)
        if sequence and not isinstance(sequence, str):
            raise ValueError(f"sequence must name inner axes like 'z' or 'cz', got {sequence!r}")
        try:
            return cls(
                sequence=useq.MDASequence(**fields),
                until_stopped=until_stopped,
                hardware_sequenced=sequence or "",
            )
        except pydantic.ValidationError as e:
            raise ValueError(_validation_message(e, "sequence")) from None

    @classmethod
    def from_sequence(cls, sequence: useq.MDASequence | Mapping[str, Any]) -> MultiDSettings:
        """The settings of a useq-schema ``MDASequence`` (an object or its fields as a mapping);
        a ``ValueError`` names the first invalid field."""
        if isinstance(sequence, Mapping):
            try:
                sequence = useq.MDASequence.model_validate(sequence)
            except pydantic.ValidationError as e:
                raise ValueError(_validation_message(e, "MDASequence")) from None
        try:
            return cls(sequence=sequence)
        except pydantic.ValidationError as e:
            raise ValueError(_validation_message(e, "MDASequence")) from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MultiDSettings:
        """The settings of a useq-schema ``MDASequence`` file (YAML or JSON, as pymmcore-widgets
        writes them)."""
        path = Path(path)
        text = path.read_text()
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(
                f"{str(path)!r} does not hold an MDASequence (a mapping of its fields)"
            )
        return cls.from_sequence(data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the sequence as a useq-schema file, as pymmcore-widgets does: YAML (``.yaml``,
        ``.yml``, the default without a suffix) or JSON (``.json``). Returns the path. Settings
        useq-schema has no field for are refused."""
        if self.until_stopped:
            raise ValueError(
                "A time-lapse until stopped has no MDASequence equivalent; set a number of time "
                "points"
            )
        if self.hardware_sequenced:
            raise ValueError(
                f"sequence={self.hardware_sequenced!r} (hardware-triggered axes) has no "
                "useq-schema field"
            )
        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(".yaml")
        suffix = path.suffix.lower()
        if suffix not in (".yaml", ".yml", ".json"):
            raise ValueError(f"Save a sequence as .yaml, .yml or .json, not {path.suffix!r}")
        seq = self.sequence
        if suffix == ".json":
            text = seq.model_dump_json(exclude_unset=True, exclude_defaults=True, indent=2)
        else:
            text = seq.yaml(exclude_unset=True, exclude_defaults=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def as_json(self) -> dict[str, Any]:
        """The settings as JSON values (for a dataset's summary metadata)."""
        return {
            "sequence": self.sequence.model_dump(mode="json", exclude_defaults=True),
            "until_stopped": self.until_stopped,
            "hardware_sequenced": self.hardware_sequenced,
        }


# ------------------------------------------------------------------------------ reading plans
def time_starts(plan: Any) -> list[float]:
    """Start times (s) of a time plan's points; unlike useq-schema, a one-loop ``TDurationLoops``
    is one time point."""
    phases = getattr(plan, "phases", None)
    if phases is None:
        if getattr(plan, "loops", None) == 1:
            return [0.0]
        count = int(plan.num_timepoints())
        if count > _MAX_LISTED:
            raise ValueError(f"time_plan has {count:,} time points; at most {_MAX_LISTED:,}")
        interval = plan_interval_s(plan)
        return [k * interval for k in range(count)]
    starts, offset = [0.0], 0.0
    for phase in phases:
        phase_starts = time_starts(phase)
        starts.extend(offset + s for s in phase_starts[1:])
        offset += phase_starts[-1]
    return starts


def plan_interval_s(plan: Any) -> float:
    """Seconds between the points of a single-phase time plan."""
    if getattr(plan, "loops", None) == 1 and "interval" not in type(plan).model_fields:
        return 0.0
    try:
        return float(plan.interval.total_seconds())
    except ZeroDivisionError:
        raise ValueError(f"time_plan={plan!r} does not define its time points") from None


class ZPlanes:
    """``count`` z positions (µm) from ``first`` by ``step``, computed when asked: a z range of any
    size costs nothing."""

    def __init__(self, first: float, step: float, count: int) -> None:
        self.first, self.step, self.count = first, step, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> float:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return float(self.first + index * self.step)


def z_planes(plan: Any) -> ZPlanes | list[float] | None:
    """The z positions a useq-schema z plan visits, in order (offsets when relative), as
    ``useq.MDASequence.iter_events`` visits them; ``None`` without a plan. Ranges are not listed,
    so their size costs nothing; more than :data:`MAX_Z_PLANES` planes are refused."""
    if plan is None:
        return None
    if isinstance(plan, (useq.ZAbsolutePositions, useq.ZRelativePositions)):
        planes = [float(z) for z in plan.positions()]
        return planes if plan.go_up else planes[::-1]
    start, _, step = plan._start_stop_step()
    if step == 0:
        return [float(start)]
    count = plan.num_positions()
    if count > MAX_Z_PLANES:
        raise ValueError(
            f"z_plan={plan!r} makes {count:.3g} z planes; at most {MAX_Z_PLANES:,} (a larger step)"
        )
    if plan.go_up:
        return ZPlanes(float(start), float(step), count)
    return ZPlanes(float(start + (count - 1) * step), -float(step), count)


# ---------------------------------------------------------------- ExEngine's arguments, checked
def _time_plan(num: int | float | None, interval: float | Sequence[float]) -> Any:
    if num is None:
        if not isinstance(interval, (int, float)) or interval:
            raise ValueError("time_interval_s needs num_time_points")
        return None
    if num == math.inf:
        count = None
    elif is_count(num):
        count = int(num)
    else:
        raise ValueError(
            f"num_time_points must be a positive int (or math.inf: until stopped), got {num!r}"
        )
    if isinstance(interval, (int, float, np.number)) and not isinstance(interval, bool):
        step = finite_number(interval, "time_interval_s")
        if step < 0:
            raise ValueError(f"time_interval_s must be >= 0, got {interval!r}")
        return useq.TIntervalLoops(interval=step, loops=count or 1)
    if count is None:
        raise ValueError("An open-ended time-lapse takes one time_interval_s, not a list")
    gaps = [finite_number(v, "time_interval_s") for v in interval]
    if len(gaps) != count:
        raise ValueError(f"time_interval_s has {len(gaps)} intervals; num_time_points is {count}")
    if any(v < 0 for v in gaps):
        raise ValueError(f"time_interval_s must be >= 0, got {gaps}")
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


def _positions(xy: Any, xyz: Any, labels: Any) -> list[useq.Position]:
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
    names: list[str | None] = [None] * len(array)
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(array):
            raise ValueError(f"position_labels has {len(labels)} labels for {len(array)} positions")
        if len(set(labels)) != len(labels):
            raise ValueError(f"position_labels must be unique, got {labels}")
        if labels != list(range(len(array))):  # the default labels: positions without names
            names = [str(label) for label in labels]
    return [
        useq.Position(
            x=float(row[0]), y=float(row[1]), z=float(row[2]) if width == 3 else None, name=label
        )
        for label, row in zip(names, array, strict=True)
    ]


def _channels(group: Any, channels: Any, exposures: Any) -> list[useq.Channel]:
    if channels is None:
        if exposures is not None:
            raise ValueError("channel_exposures_ms needs channels")
        return []
    if isinstance(channels, str):
        raise ValueError(f"channels must be a list of channel names, got {channels!r}")
    channels = list(channels)
    if not channels or not all(isinstance(c, str) and c for c in channels):
        raise ValueError(f"channels must be a non-empty list of channel names, got {channels!r}")
    if len(set(channels)) != len(channels):
        raise ValueError(f"channels must be unique, got {channels}")
    if group is None:
        raise ValueError(
            "channels need channel_group: the device (or its name) that selects the channel"
        )
    group_name = group if isinstance(group, str) else getattr(group, "name", None)
    if not isinstance(group_name, str) or not group_name:
        raise ValueError(f"channel_group must be a device or its name, got {group!r}")
    if exposures is None:
        return [useq.Channel(config=c, group=group_name) for c in channels]
    values = [finite_number(e, "channel_exposures_ms") for e in exposures]
    if len(values) != len(channels):
        raise ValueError(
            f"channel_exposures_ms has {len(values)} values for {len(channels)} channels"
        )
    for name, exposure in zip(channels, values, strict=True):
        if exposure <= 0:
            raise ValueError(
                f"channel_exposures_ms must be above 0 ms, got {exposure:g} for {name!r}"
            )
    return [
        useq.Channel(config=c, group=group_name, exposure=e)
        for c, e in zip(channels, values, strict=True)
    ]


def _z_plan(start: Any, end: Any, step: Any, relative: bool) -> Any:
    """The z plan visiting ``start``, ``start + step``, ... up to ``end`` (included when the step
    reaches it): a range useq-schema users know (top and bottom, above and below, around), else
    the listed planes."""
    given = {"z_start": start, "z_end": end, "z_step": step}
    if all(v is None for v in given.values()):
        return None
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(f"A z range needs z_start, z_end and z_step; missing {missing}")
    first, last, by = (finite_number(v, k) for k, v in given.items())
    if by == 0 or (last - first) * by < 0:
        raise ValueError(f"z_step={by} does not lead from z_start={first} to z_end={last}")
    count = int(np.floor((last - first) / by + 1e-9)) + 1
    if count > MAX_Z_PLANES:
        raise ValueError(
            f"z_start={first:g} to z_end={last:g} by z_step={by:g} makes {count:.3g} z planes; "
            f"at most {MAX_Z_PLANES:,} (a larger z_step)"
        )
    last = _round(first + (count - 1) * by)
    first = _round(first)
    low, high, spacing, up = min(first, last), max(first, last), abs(by), by > 0
    if count == 1:
        spacing = 0.0 if relative else abs(by)
    if not relative:
        return useq.ZTopBottom(bottom=low, top=high, step=spacing, go_up=up)
    if math.isclose(low, -high, abs_tol=1e-9):
        return useq.ZRangeAround(range=_round(high - low), step=spacing, go_up=up)
    if low <= 0 <= high:
        return useq.ZAboveBelow(above=high, below=_round(-low), step=spacing, go_up=up)
    if count > _MAX_LISTED:
        raise ValueError(
            f"A relative z range of {count:,} planes that leaves out the position's z; at most "
            f"{_MAX_LISTED:,}"
        )
    return useq.ZRelativePositions(
        relative=[_round(first + k * by) for k in range(count)], go_up=True
    )


def _check_hardware_sequence(settings: MultiDSettings, axes: list[str]) -> None:
    seq_axes = list(settings.hardware_sequenced)
    if not seq_axes:
        return
    if set(seq_axes) - set(axes):
        raise ValueError(
            f"sequence {settings.hardware_sequenced!r} must name axes in use {axes}, each once"
        )
    if axes[len(axes) - len(seq_axes) :] != seq_axes:
        raise ValueError(
            f"sequence {settings.hardware_sequenced!r} must be the innermost axes of the order "
            f"{''.join(axes)!r}"
        )
    if "t" in seq_axes:
        if settings.until_stopped:
            raise ValueError(
                "An open-ended time-lapse cannot run as one hardware sequence ('t' in sequence)"
            )
        if settings.time_interval_s != 0:
            raise ValueError("sequence over 't' needs time_interval_s=0 (frames run back to back)")
    exposures = settings.channel_exposures_ms
    if "c" in seq_axes and exposures is not None and len(set(exposures)) > 1:
        raise ValueError(
            "sequence over 'c' needs one exposure for all channels (channel_exposures_ms)"
        )


def _validation_message(error: pydantic.ValidationError, what: str) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or what
    message = first["msg"].removeprefix("Value error, ")
    return f"Invalid {what}: {where}: {message}" if where != what else message


def _round(value: float) -> float:
    return round(float(value), _DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0
