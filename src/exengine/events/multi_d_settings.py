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

import pydantic
import useq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..kernel.device import Device
from .multi_d_arguments import (
    MAX_LISTED,
    MAX_Z_PLANES,
    SettingError,
    channel_list,
    round_value,
    stage_positions,
    time_plan,
    z_plan,
)

__all__ = [
    "AXIS_NAMES",
    "MAX_Z_PLANES",
    "MultiDSettings",
    "SettingError",
    "ZPlanes",
    "plan_interval_s",
    "time_starts",
    "z_planes",
]

#: Coordinate axis of each useq-schema axis letter.
AXIS_NAMES = {"t": "time", "p": "position", "c": "channel", "z": "z"}


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
            raise SettingError(
                "sequence",
                "Hardware-triggered axes are t (time), c (channel) or z, each once, got "
                f"{value!r} (positions are not hardware-triggered here)",
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MultiDSettings:
        axes = self.axis_order  # raises when an axis in use is missing from the order
        if self.until_stopped and axes[0] != "t":
            raise SettingError(
                "order",
                "An open-ended time-lapse needs time as the outermost axis; the axis order is "
                f"{''.join(axes)!r}",
            )
        plan = self.sequence.time_plan
        if plan is not None:
            try:
                plan.num_timepoints()
            except ZeroDivisionError:
                raise ValueError(
                    f"The time plan does not define its time points: {plan!r}"
                ) from None
        labels = self.position_labels
        if len(set(labels)) != len(labels):
            repeated = sorted({str(label) for label in labels if labels.count(label) > 1})
            raise SettingError(
                "position_labels",
                f"Each stage position name can be used once; repeated: {repeated}",
            )
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
            raise SettingError(
                "order",
                f"The axis order {''.join(order)!r} leaves out {_axis_words(missing)} although "
                "it is set",
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
            return round_value(plan_interval_s(plan))
        starts = time_starts(plan)
        gaps = [round_value(b - a) for a, b in itertools.pairwise(starts)]
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
        return planes[0], planes[len(planes) - 1], round_value(planes[1] - planes[0])

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
        times = time_plan(num_time_points, time_interval_s)
        if times is not None:
            fields["time_plan"] = times
        positions = stage_positions(xy_positions, xyz_positions, position_labels)
        if positions:
            fields["stage_positions"] = positions
        channel_settings = channel_list(channel_group, channels, channel_exposures_ms)
        if channel_settings:
            fields["channels"] = channel_settings
        planes = z_plan(z_start, z_end, z_step, relative=xyz_positions is not None)
        if planes is not None:
            fields["z_plan"] = planes
        if not isinstance(order, str):
            raise SettingError(
                "order", f"The axis order must be text such as 'tpcz', got {order!r}"
            )
        axes = order.lower()
        if len(set(axes)) != len(axes) or set(axes) - set("tpcz"):
            raise SettingError(
                "order",
                "The axis order lists each of t (time), p (position), c (channel) and z at most "
                f"once, got {order!r}",
            )
        used = {"t": times is not None, "p": bool(positions), "c": bool(channel_settings)}
        used["z"] = planes is not None
        missing = [axis for axis, on in used.items() if on and axis not in axes]
        if missing:
            raise SettingError(
                "order",
                f"The axis order {order!r} leaves out {_axis_words(missing)}, which has settings",
            )
        fields["axis_order"] = tuple(axes)
        if sequence and not isinstance(sequence, str):
            raise SettingError(
                "sequence",
                f"Hardware-triggered axes are named like 'z' or 'cz', got {sequence!r}",
            )
        try:
            return cls(
                sequence=useq.MDASequence(**fields),
                until_stopped=until_stopped,
                hardware_sequenced=sequence or "",
            )
        except pydantic.ValidationError as e:
            raise _refusal(e, "sequence") from None

    @classmethod
    def from_sequence(cls, sequence: useq.MDASequence | Mapping[str, Any]) -> MultiDSettings:
        """The settings of a useq-schema ``MDASequence`` (an object or its fields as a mapping);
        a ``ValueError`` names the first invalid field."""
        if isinstance(sequence, Mapping):
            try:
                sequence = useq.MDASequence.model_validate(sequence)
            except pydantic.ValidationError as e:
                raise _refusal(e, "MDASequence") from None
        try:
            return cls(sequence=sequence)
        except pydantic.ValidationError as e:
            raise _refusal(e, "MDASequence") from None

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
        if count > MAX_LISTED:
            raise ValueError(f"The time plan has {count:,} time points; at most {MAX_LISTED:,}")
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
        raise ValueError(f"The time plan does not define its time points: {plan!r}") from None


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
            f"The z plan makes {count:.3g} z planes; at most {MAX_Z_PLANES:,} (take a larger z "
            f"step): {plan!r}"
        )
    if plan.go_up:
        return ZPlanes(float(start), float(step), count)
    return ZPlanes(float(start + (count - 1) * step), -float(step), count)


def _check_hardware_sequence(settings: MultiDSettings, axes: list[str]) -> None:
    seq_axes = list(settings.hardware_sequenced)
    if not seq_axes:
        return
    unused = [axis for axis in seq_axes if axis not in axes]
    if unused:
        raise SettingError(
            "sequence",
            f"The hardware-triggered axes {settings.hardware_sequenced!r} include "
            f"{_axis_words(unused)}, which this acquisition does not use (it uses "
            f"{_axis_words(axes)})",
        )
    if axes[len(axes) - len(seq_axes) :] != seq_axes:
        raise SettingError(
            "sequence",
            f"The hardware-triggered axes {settings.hardware_sequenced!r} must be the innermost "
            f"ones of the axis order {''.join(axes)!r}",
        )
    if "t" in seq_axes:
        if settings.until_stopped:
            raise SettingError(
                "sequence", "An open-ended time-lapse cannot run as one hardware sequence"
            )
        if settings.time_interval_s != 0:
            raise SettingError(
                "time_interval_s",
                "Time points run as one hardware sequence back to back: the time interval must "
                f"be 0 s, not {settings.time_interval_s} s",
            )
    exposures = settings.channel_exposures_ms
    if "c" in seq_axes and exposures is not None and len(set(exposures)) > 1:
        raise SettingError(
            "channel_exposures_ms",
            "Channels run as one hardware sequence need one exposure for all, got "
            f"{', '.join(f'{e:g}' for e in exposures)} ms",
        )


def _axis_words(axes: list[str]) -> str:
    """Axis letters in words: ``['t', 'z']`` -> ``"time and z"``."""
    words = [AXIS_NAMES.get(axis, axis) for axis in axes]
    return " and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " and " + words[-1]


def _refusal(error: pydantic.ValidationError, what: str) -> ValueError:
    """The first error of ``error`` as one line; a :class:`SettingError` when a check of ours
    named the setting."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or what
    message = first["msg"].removeprefix("Value error, ")
    if where != what:
        message = f"Invalid {what}: {where}: {message}"
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, SettingError):
        return SettingError(cause.setting, message)
    return ValueError(message)
