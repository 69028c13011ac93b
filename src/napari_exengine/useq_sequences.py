"""useq-schema ``MDASequence`` files to and from the arguments of ``multi_d_acquisition_events``.

pymmcore-widgets' MDA widget saves and opens these files (YAML or JSON); the Acquisition panel and
``exengine acquire --file`` read them through this module. No Qt here; ``useq`` is imported on use.

What maps (useq-schema → ``exengine.events.multi_d_acquisition_events``):

* ``time_plan`` (any kind, also multi-phase) → ``num_time_points`` and ``time_interval_s`` (a
  number, or one interval per time point when the intervals differ);
* ``z_plan`` with uniform steps → ``z_start``, ``z_end``, ``z_step``. Relative plans
  (``ZRangeAround``, ``ZAboveBelow``, ``ZRelativePositions``) refer to each stage position's z: they
  become ``xyz_positions`` with offsets. Where no position gives a z they refer to ``current_z`` (0
  by default, as ``useq.MDASequence.iter_events`` does; pass the z stage's position for
  pymmcore-plus's "current z" meaning). Absolute plans (``ZTopBottom``, ``ZAbsolutePositions``) give
  absolute z;
* ``channels`` → ``channels`` (their ``config`` names) and ``channel_exposures_ms``.
  ``Channel.group`` is not an argument: the caller chooses the channel device (the simulated one is
  named ``Channel``, useq-schema's default group); channels from different groups are refused;
* ``stage_positions`` → ``xy_positions`` or ``xyz_positions`` and ``position_labels`` (their names);
* ``axis_order`` → ``order`` (``g`` dropped: grids are refused).

Anything else that would change the acquisition (``grid_plan``, ``autofocus_plan``,
``keep_shutter_open_across``, ``setup``, per-position sub-sequences or properties, a channel's
``do_stack``, ``acquire_every``, ``z_offset`` or ``camera``, non-uniform z steps, a plan whose axis
is missing from ``axis_order``) raises a ``ValueError`` that names the field and its value.
``metadata`` (free-form notes, e.g. pymmcore-widgets' version) is not part of the acquisition and is
not read.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import useq

#: The ``multi_d_acquisition_events`` arguments a sequence describes.
EVENT_ARGUMENTS = (
    "num_time_points",
    "time_interval_s",
    "z_start",
    "z_end",
    "z_step",
    "channels",
    "channel_exposures_ms",
    "xy_positions",
    "xyz_positions",
    "position_labels",
    "order",
)
#: Arguments that choose devices and the data handler: not part of a sequence, ignored when saving
#: (a ``channel_group`` name becomes the channels' ``group``).
DEVICE_ARGUMENTS = (
    "camera",
    "xy_device",
    "z_device",
    "channel_group",
    "channel_property",
    "data_handler",
)
_DIGITS = 9  # decimals kept of µm and s: hides float noise such as np.arange's 0.30000000000000004
_AXIS_FIELDS = {"t": "time_plan", "p": "stage_positions", "c": "channels", "z": "z_plan"}


def sequence_to_event_arguments(
    sequence: useq.MDASequence | dict | str | os.PathLike, *, current_z: float = 0.0
) -> dict[str, Any]:
    """The ``multi_d_acquisition_events`` keyword arguments of a useq-schema ``MDASequence`` (an
    object, a dict, or a YAML/JSON file); devices are left to the caller. Raises ``ValueError``
    naming any field the arguments cannot represent."""
    seq = _as_sequence(sequence)
    _refuse_unrepresentable(seq)
    kwargs: dict[str, Any] = {}
    kwargs.update(_time_arguments(seq.time_plan))
    positions = list(seq.stage_positions)
    offsets = _z_offsets(seq.z_plan)
    relative = seq.z_plan is not None and seq.z_plan.is_relative
    position_z = [p.z for p in positions]
    if offsets and relative and any(z is not None for z in position_z):
        references = [current_z if z is None else z for z in position_z]
        kwargs["xyz_positions"] = [
            [p.x, p.y, _round(z)] for p, z in zip(positions, references, strict=True)
        ]
    elif positions:
        if not offsets and any(
            z is not None for z in position_z
        ):  # no z plan: each position sets z
            missing = [i for i, z in enumerate(position_z) if z is None]
            if missing:
                raise ValueError(
                    f"stage_positions[{missing[0]}].z is None while other positions have a z: "
                    "give every position a z or none"
                )
            kwargs["xyz_positions"] = [[p.x, p.y, p.z] for p in positions]
        else:  # absolute z plans ignore the positions' z, as useq-schema does
            kwargs["xy_positions"] = [[p.x, p.y] for p in positions]
    if offsets:
        base = 0.0 if "xyz_positions" in kwargs or not relative else current_z
        kwargs.update(_z_range([base + o for o in offsets], seq.z_plan))
    if positions:
        names = [p.name for p in positions]
        if any(name is not None for name in names):
            labels = [f"Pos{i}" if name is None else name for i, name in enumerate(names)]
            if len(set(labels)) != len(labels):
                raise ValueError(f"stage_positions names must be unique, got {labels}")
            kwargs["position_labels"] = labels
    if seq.channels:
        kwargs.update(_channel_arguments(seq.channels))
    order = "".join(axis for axis in seq.axis_order if axis in "tpcz")
    for axis, field in _AXIS_FIELDS.items():
        used = {
            "t": "num_time_points",
            "p": "xy_positions" if "xy_positions" in kwargs else "xyz_positions",
            "c": "channels",
            "z": "z_start",
        }[axis] in kwargs
        if used and axis not in order:
            raise ValueError(
                f"axis_order {''.join(seq.axis_order)!r} lacks {axis!r} although {field} is set "
                "(useq-schema would skip it)"
            )
    kwargs["order"] = order
    return kwargs


def event_arguments_to_sequence(kwargs: dict[str, Any]) -> useq.MDASequence:
    """The useq-schema ``MDASequence`` of ``multi_d_acquisition_events`` keyword arguments (device
    arguments are ignored). Raises ``ValueError`` for arguments useq-schema cannot express."""
    import useq

    unknown = sorted(set(kwargs) - set(EVENT_ARGUMENTS) - set(DEVICE_ARGUMENTS) - {"sequence"})
    if unknown:
        raise ValueError(f"Not multi_d_acquisition_events arguments: {unknown}")
    if kwargs.get("sequence"):
        raise ValueError(
            f"sequence={kwargs['sequence']!r} (hardware-triggered axes) has no useq-schema field"
        )
    fields: dict[str, Any] = {"axis_order": tuple(str(kwargs.get("order", "tpcz")).lower())}
    count = kwargs.get("num_time_points")
    if count:
        fields["time_plan"] = _time_plan(int(count), kwargs.get("time_interval_s", 0))
    xyz = kwargs.get("xyz_positions")
    xy = kwargs.get("xy_positions")
    rows = [list(map(float, p)) for p in (xyz if xyz is not None else xy or [])]
    if rows:
        labels = kwargs.get("position_labels")
        if labels is not None and list(labels) == list(range(len(rows))):
            labels = None  # the default labels: positions without names
        names = [None] * len(rows) if labels is None else [str(label) for label in labels]
        fields["stage_positions"] = [
            useq.Position(x=r[0], y=r[1], z=r[2] if len(r) > 2 else None, name=name)
            for r, name in zip(rows, names, strict=True)
        ]
    z_range = [kwargs.get(k) for k in ("z_start", "z_end", "z_step")]
    if any(v is not None for v in z_range):
        if any(v is None for v in z_range):
            raise ValueError(f"A z range needs z_start, z_end and z_step, got {z_range}")
        fields["z_plan"] = _z_plan(*map(float, z_range), relative=xyz is not None)
    channels = kwargs.get("channels")
    if channels:
        group = kwargs.get("channel_group")
        group = group if isinstance(group, str) else getattr(group, "name", None) or "Channel"
        exposures = kwargs.get("channel_exposures_ms")
        exposures = [None] * len(channels) if exposures is None else [float(e) for e in exposures]
        for name, exposure in zip(channels, exposures, strict=True):
            if exposure is not None and exposure <= 0:
                raise ValueError(
                    f"channel_exposures_ms: useq-schema needs exposures above 0 ms, got {exposure} "
                    f"for {name!r}"
                )
        fields["channels"] = [
            useq.Channel(config=name, group=group, exposure=exposure)
            for name, exposure in zip(channels, exposures, strict=True)
        ]
    return useq.MDASequence(**fields)


def read_sequence(path: str | os.PathLike) -> useq.MDASequence:
    """A useq-schema ``MDASequence`` from a YAML or JSON file (as pymmcore-widgets saves them)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} does not hold an MDASequence (a mapping of its fields)")
    return _as_sequence(data)


def load_sequence(path: str | os.PathLike, *, current_z: float = 0.0) -> dict[str, Any]:
    """The ``multi_d_acquisition_events`` arguments of a useq-schema YAML or JSON file."""
    return sequence_to_event_arguments(read_sequence(path), current_z=current_z)


def save_sequence(kwargs: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save ``multi_d_acquisition_events`` arguments as a useq-schema file the way pymmcore-widgets
    does: YAML (``.yaml``/``.yml``, the default when there is no suffix) or JSON (``.json``).
    Returns the path."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".yaml")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ValueError(f"Save a sequence as .yaml, .yml or .json, not {path.suffix!r}")
    sequence = event_arguments_to_sequence(kwargs)
    if suffix == ".json":
        text = sequence.model_dump_json(exclude_unset=True, exclude_defaults=True, indent=2)
    else:
        text = sequence.yaml(exclude_unset=True, exclude_defaults=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------- helpers
def _as_sequence(sequence: Any) -> useq.MDASequence:
    import pydantic
    import useq

    if isinstance(sequence, useq.MDASequence):
        return sequence
    if isinstance(sequence, (str, os.PathLike)):
        return read_sequence(sequence)
    if not isinstance(sequence, dict):
        raise TypeError(
            f"Expected a useq.MDASequence, a dict or a file path, got {type(sequence).__name__}"
        )
    try:
        return useq.MDASequence.model_validate(sequence)
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "sequence"
        raise ValueError(f"Invalid MDASequence: {where}: {first['msg']}") from None


def _refuse_unrepresentable(seq: useq.MDASequence) -> None:
    import useq

    for field in ("grid_plan", "autofocus_plan", "setup"):
        value = getattr(seq, field)
        if value is not None:
            raise ValueError(
                f"{field}={value!r} cannot be represented: multi_d_acquisition_events has no "
                f"{'tile (grid) axis' if field == 'grid_plan' else 'equivalent'}"
            )
    if seq.keep_shutter_open_across:
        raise ValueError(
            f"keep_shutter_open_across={seq.keep_shutter_open_across!r} cannot be represented"
        )
    if isinstance(seq.stage_positions, useq.WellPlatePlan):
        raise ValueError(
            "stage_positions is a WellPlatePlan, which cannot be represented: list the positions"
        )
    for i, position in enumerate(seq.stage_positions):
        if position.sequence is not None:
            raise ValueError(
                f"stage_positions[{i}].sequence (a sub-sequence for one position) cannot be "
                "represented"
            )
        if position.properties:
            raise ValueError(
                f"stage_positions[{i}].properties={position.properties!r} cannot be represented"
            )
        for axis in ("x", "y"):
            if getattr(position, axis) is None:
                raise ValueError(
                    f"stage_positions[{i}].{axis} is None (the current {axis}): positions need x "
                    "and y"
                )
    defaults = {"do_stack": True, "acquire_every": 1, "z_offset": 0.0, "camera": None}
    for i, channel in enumerate(seq.channels):
        for field, default in defaults.items():
            value = getattr(channel, field)
            if value != default:
                raise ValueError(
                    f"channels[{i}].{field}={value!r} ({channel.config}) cannot be represented: "
                    f"every channel takes every frame of every z stack"
                )


def _time_arguments(plan: Any) -> dict[str, Any]:
    if plan is None:
        return {}
    try:
        starts = _time_starts(plan)
    except ZeroDivisionError:
        raise ValueError(f"time_plan={plan!r} does not define its time points") from None
    intervals = [_round(b - a) for a, b in itertools.pairwise(starts)]
    if not intervals:  # one time point: keep the interval of a TIntervalLoops with loops=1
        interval = plan.__dict__.get("interval")
        return {
            "num_time_points": 1,
            "time_interval_s": _round(interval.total_seconds()) if interval else 0.0,
        }
    if max(intervals) - min(intervals) <= 1e-6:
        return {"num_time_points": len(starts), "time_interval_s": intervals[0]}
    return {"num_time_points": len(starts), "time_interval_s": [*intervals, intervals[-1]]}


def _time_starts(plan: Any) -> list[float]:
    """Start times (s) of a time plan; unlike useq-schema, a one-loop ``TDurationLoops`` is one time
    point."""
    phases = getattr(plan, "phases", None)
    if phases is None:
        if getattr(plan, "loops", None) == 1:
            return [0.0]
        return [td.total_seconds() for td in plan.deltas()]
    starts, offset = [0.0], 0.0
    for phase in phases:
        phase_starts = _time_starts(phase)
        starts.extend(offset + s for s in phase_starts[1:])
        offset += phase_starts[-1]
    return starts


def _time_plan(count: int, interval: float | Sequence[float]) -> Any:
    import useq

    if isinstance(interval, (int, float)):
        return useq.TIntervalLoops(interval=float(interval), loops=count)
    gaps = [float(v) for v in interval][: count - 1]
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


def _z_offsets(plan: Any) -> list[float]:
    return [] if plan is None else [float(z) for z in plan]


def _z_range(positions: list[float], plan: Any) -> dict[str, float]:
    """``z_start``/``z_end``/``z_step`` visiting exactly ``positions`` (evenly spaced)."""
    start = _round(positions[0])
    if len(positions) == 1:
        step = abs(float(getattr(plan, "step", 0.0) or 0.0)) or 1.0
        return {"z_start": start, "z_end": start, "z_step": step}
    steps = [b - a for a, b in itertools.pairwise(positions)]
    step = _round(steps[0])
    if step == 0 or any(abs(s - steps[0]) > 1e-6 * max(1.0, abs(steps[0])) for s in steps):
        raise ValueError(
            f"z_plan={plan!r} does not step evenly (steps {[_round(s) for s in steps]}): "
            "multi_d_acquisition_events takes a z range with one step"
        )
    end = _round(positions[-1])
    count = math.floor((end - start) / step + 1e-9) + 1
    if count != len(positions):  # pragma: no cover - guarded by the even-step check
        raise ValueError(
            f"z_plan={plan!r}: {len(positions)} planes do not fit z {start}..{end} by {step}"
        )
    return {"z_start": start, "z_end": end, "z_step": step}


def _z_plan(start: float, end: float, step: float, relative: bool) -> Any:
    """The plan useq-schema users know best that visits exactly the planes of the z range."""
    import useq

    count = math.floor((end - start) / step + 1e-9) + 1 if step else 0
    if step == 0 or count < 1:
        raise ValueError(f"z_step={step} does not lead from z_start={start} to z_end={end}")
    planes = [_round(start + i * step) for i in range(count)]
    low, high, spacing, up = min(planes), max(planes), abs(step), step > 0
    if relative:
        candidates = [useq.ZRelativePositions(relative=planes)]
        if low <= 0 <= high:
            candidates.insert(
                0, useq.ZAboveBelow(above=high, below=0.0 - low, step=spacing, go_up=up)
            )
        if math.isclose(low, -high, abs_tol=1e-9):
            candidates.insert(0, useq.ZRangeAround(range=high - low, step=spacing, go_up=up))
    else:
        candidates = [
            useq.ZTopBottom(bottom=low, top=high, step=spacing, go_up=up),
            useq.ZAbsolutePositions(absolute=planes),
        ]
    for plan in candidates:
        visited = [float(z) for z in plan]
        if len(visited) == len(planes) and all(
            abs(a - b) <= 1e-9 for a, b in zip(visited, planes, strict=True)
        ):
            return plan
    return candidates[-1]  # pragma: no cover - the explicit list always matches


def _channel_arguments(channels: Sequence[Any]) -> dict[str, Any]:
    names = [c.config for c in channels]
    if len(set(names)) != len(names):
        raise ValueError(f"channels must be unique, got {names}")
    groups = sorted({c.group for c in channels})
    if len(groups) > 1:
        raise ValueError(
            f"channels come from config groups {groups}; one channel device sets them all here"
        )
    exposures = [c.exposure for c in channels]
    if all(e is None for e in exposures):
        return {"channels": names}
    missing = [i for i, e in enumerate(exposures) if e is None]
    if missing:
        raise ValueError(
            f"channels[{missing[0]}].exposure is None ({names[missing[0]]}) while other channels "
            "have one: give every channel an exposure or none"
        )
    return {"channels": names, "channel_exposures_ms": [float(e) for e in exposures]}


def _round(value: float) -> float:
    return round(float(value), _DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0
