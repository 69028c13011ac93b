"""The events of a multi-D plan made from useq-schema's own ``MDASequence.iter_events``.

:class:`~exengine.events.multi_d_events.MultiDPlan` makes the events of plain sequences (time,
positions, channels, z) itself, fast; sequences with what only useq-schema's iteration knows how to
order (grid plans, sub-sequences per position, channels with ``do_stack``, ``acquire_every`` or
``z_offset``, autofocus, position properties, well plates, positions without x or y) come here:
each ``MDAEvent`` becomes the events that move to it and take its frame, so frames, their order and
the stage positions are useq-schema's.

What differs from ``iter_events``, as on a microscope (and as pymmcore-plus's engine runs it):

- Offsets with nothing to be relative to (a relative grid or z plan where the position has no x, y
  or z, or there are no positions) refer to the stage's position when the plan is first checked or
  run; a position without x or y keeps the stage where it is on that axis.
- A grid plan without a field of view takes the camera's (its roi times its pixel size), as
  pymmcore-plus does; useq-schema alone would step by 1 µm.
- An autofocus event runs the :class:`~exengine.device_types.Autofocus`; the z it moved by is added
  to that position's later z moves (:mod:`~exengine.events.autofocus_events`).
- ``keep_shutter_open`` needs nothing: the engine never closes a shutter between frames (there is
  no auto-shutter), so light sources stay as set on every axis.

Frames get the coordinates ``time``, ``position``, ``row`` and ``column`` (a grid's tile; ``grid``,
the tile's index, when a plan has points without rows, such as ``RandomPoints``), ``channel`` and
``z``, outermost first as the sequence orders them; an axis a frame lacks (a position without the
grid others have) is 0 there, a missing channel ``"none"``.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import useq

from ..device_types import Detector, DoubleAxisPositioner, SingleAxisPositioner
from ..kernel.data_coords import DataCoordinates
from ..kernel.ex_event_base import ExecutorEvent
from ._devices import resolve_device
from .autofocus_events import AutofocusEvent, CorrectedZEvent, FocusCorrections
from .detector_events import ReadoutData, StartCapture
from .misc_events import AcquisitionClock, SetTimeEvent
from .plan_checks import PlanChecks
from .positioner_events import SetPosition1DEvent, SetPosition2DEvent
from .property_events import SetPropertiesEvent

if TYPE_CHECKING:
    from .multi_d_events import MultiDPlan

__all__ = ["UseqEvents", "needs_useq_iteration", "refuse_unrunnable"]

_PASSES = itertools.count(1)
#: The coordinate a frame has when it lacks the channel axis other frames have.
NO_CHANNEL = "none"
#: The most frames a sequence iterated by useq-schema may have: counting them is one pass of
#: ``iter_events`` (about 48 µs an event), so a million takes a minute; more are refused at once.
MAX_ITERATED_FRAMES = 1_000_000
_INDEX_AXES = {"t": "time", "z": "z"}


def needs_useq_iteration(seq: useq.MDASequence) -> bool:
    """True when ``seq`` holds what only useq-schema's iteration orders (see the module)."""
    if seq.grid_plan is not None or seq.autofocus_plan is not None or seq.setup is not None:
        return True
    if isinstance(seq.stage_positions, useq.WellPlatePlan):
        return True
    for position in seq.stage_positions:
        if position.sequence is not None or position.properties:
            return True
        if position.x is None or position.y is None:
            return True
    return any(not c.do_stack or c.acquire_every != 1 or c.z_offset != 0.0 for c in seq.channels)


def refuse_unrunnable(seq: useq.MDASequence) -> None:
    """Refuse (``ValueError``), by name, a setup event that sets an SLM image or a roi: nothing
    here runs those."""
    setup = seq.setup
    if setup is not None and (setup.slm_image is not None or setup.roi is not None):
        raise ValueError("setup sets an slm_image or a roi, which cannot run here")


def _positions(seq: useq.MDASequence) -> list[useq.Position]:
    return list(seq.stage_positions)


def _has_axes(seq: useq.MDASequence | None) -> bool:
    return seq is not None and any(
        (seq.time_plan, seq.stage_positions, seq.grid_plan, seq.channels, seq.z_plan)
    )


@dataclass
class _Shape:
    """The axes of the frames a sequence takes, by one pass over its events."""

    axes: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    channels: dict[str, None] = field(default_factory=dict)
    frames: int = 0


class UseqEvents:
    """The events, axes and frame count of ``plan`` (a :class:`MultiDPlan`) from useq-schema's
    iteration of its sequence; each pass iterates a fresh copy (autofocus plans keep state)."""

    def __init__(self, plan: MultiDPlan) -> None:
        self.plan = plan
        self._sequence: useq.MDASequence | None = None
        self._positions: list[useq.Position] | None = None
        self._shape: _Shape | None = None
        self._references: dict[str, float] = {}
        self._tiles: dict[int, list[tuple[int, int]]] = {}
        self._tiles_have_rows = all(_rows_of(g) for g in _grid_plans(plan.settings.sequence))

    # ------------------------------------------------------------------ the sequence and axes
    def sequence(self) -> useq.MDASequence:
        """The plan's sequence, grid plans without a field of view given the camera's; refused
        (``ValueError``) when it may hold more than ``MAX_ITERATED_FRAMES`` frames."""
        if self._sequence is None:
            seq = _with_fov(self.plan.settings.sequence, self._camera_fov)
            bound = _frames_at_most(seq)
            if bound > MAX_ITERATED_FRAMES:
                raise ValueError(
                    f"This sequence may hold up to {bound:.3g} frames; a sequence with grids, "
                    f"sub-sequences or autofocus may have at most {MAX_ITERATED_FRAMES:,} "
                    "(fewer time points, tiles or z planes)"
                )
            self._sequence = seq
        return self._sequence

    def positions(self) -> list[useq.Position]:
        """The sequence's stage positions (of a well plate plan: its wells' points)."""
        if self._positions is None:
            self._positions = _positions(self.sequence())
        return self._positions

    def events(self) -> Iterator[useq.MDAEvent]:
        """useq-schema's events of the sequence, from a fresh copy: useq-schema caches a sequence's
        positions by equality, with the state of their autofocus plans, so each copy is made
        unequal by a pass number in its metadata."""
        seq = self.sequence()
        metadata = {**seq.metadata, "exengine_pass": next(_PASSES)}
        return seq.model_copy(deep=True, update={"metadata": metadata}).iter_events()

    def _camera_fov(self) -> tuple[float, float]:
        camera = self.plan.camera
        camera = camera[0] if isinstance(camera, (list, tuple)) else camera
        device = resolve_device(camera, Detector, "camera")
        roi = getattr(device, "roi", None)
        width, height = (roi[2], roi[3]) if roi is not None else (512, 512)
        pixel = float(getattr(device, "pixel_size_um", 1.0) or 1.0)
        return width * pixel, height * pixel

    def shape(self) -> _Shape:
        """Axes (outermost first), their sizes, the channels and the frames, counted once."""
        if self._shape is None:
            shape = _Shape()
            labels = self.plan.settings.position_labels
            for event in self.events():
                if isinstance(event.action, useq.HardwareAutofocus):
                    continue
                shape.frames += 1
                names = []
                for name, value in self._frame_values(event):
                    names.append(name)
                    if name == "channel":
                        shape.channels.setdefault(str(value), None)
                    elif name != "position":
                        shape.sizes[name] = max(shape.sizes.get(name, 0), int(value) + 1)
                _merge_order(shape.axes, names)
            if "position" in shape.axes:
                shape.sizes["position"] = len(labels)
            if "channel" in shape.axes:
                shape.sizes["channel"] = len(shape.channels)
            self._shape = shape
        return self._shape

    @property
    def axis_sizes(self) -> dict[str, int]:
        """Each axis's size, outermost first."""
        shape = self.shape()
        return {axis: shape.sizes[axis] for axis in shape.axes}

    @property
    def axis_values(self) -> dict[str, tuple[str | int, ...]]:
        """The position labels and channel names of the axes that have them."""
        shape, values = self.shape(), {}
        if "position" in shape.axes:
            values["position"] = tuple(self.plan.settings.position_labels)
        if "channel" in shape.axes:
            values["channel"] = tuple(shape.channels)
        return values

    # ------------------------------------------------------------------------- the events
    def __iter__(self) -> Iterator[ExecutorEvent]:
        maker = _EventMaker(self)
        setup = self.sequence().setup
        if setup is not None:
            yield from maker.moves(setup)
        for event in self.events():
            yield from maker.moves(event)
            yield from maker.action(event)

    def first_time_point(self) -> Iterator[ExecutorEvent]:
        """The events up to the first frame of the second time point."""
        maker = _EventMaker(self)
        for event in self.events():
            if event.index.get("t", 0) > 0:
                return
            yield from maker.moves(event)
            yield from maker.action(event)

    def validate(self) -> None:
        """Check every event against the devices (each setting and position once)."""
        checks = PlanChecks()
        for event in self:
            checks.event(event)

    def reference(self, axis: str) -> float:
        """The stage's position on ``axis`` ('x', 'y' or 'z') that offsets without a position refer
        to, read once."""
        if axis not in self._references:
            plan = self.plan
            if axis == "z":
                stage = resolve_device(plan.z_device, SingleAxisPositioner, "z stage")
                self._references["z"] = float(stage.get_position())
            else:
                xy = resolve_device(plan.xy_device, DoubleAxisPositioner, "xy stage")
                self._references["x"], self._references["y"] = map(float, xy.get_position())
        return self._references[axis]

    # --------------------------------------------------------------------- per event
    def anchored(self, event: useq.MDAEvent) -> dict[str, bool]:
        """Per axis ('x', 'y', 'z'): whether ``event``'s value is an offset with nothing to be
        relative to (useq-schema then adds 0)."""
        seq = self.sequence()
        p = event.index.get("p")
        position = self.positions()[p] if p is not None else None
        sub = position.sequence if position is not None and _has_axes(position.sequence) else None
        grid = sub.grid_plan if sub is not None and sub.grid_plan is not None else seq.grid_plan
        z_plan = sub.z_plan if sub is not None and sub.z_plan is not None else seq.z_plan

        def loose(axis: str) -> bool:
            return position is None or getattr(position, axis) is None

        tiled = "g" in event.index and grid is not None and grid.is_relative
        stacked = "z" in event.index and z_plan is not None and z_plan.is_relative
        return {"x": tiled and loose("x"), "y": tiled and loose("y"), "z": stacked and loose("z")}

    def tile(self, event: useq.MDAEvent) -> tuple[int, int] | None:
        """``(row, column)`` of ``event``'s grid tile, or ``None`` when it has none."""
        g = event.index.get("g")
        if g is None:
            return None
        seq = self.sequence()
        p = event.index.get("p")
        sub = self.positions()[p].sequence if p is not None else None
        grid = sub.grid_plan if _has_axes(sub) and sub.grid_plan is not None else seq.grid_plan
        tiles = self._tiles.get(id(grid))
        if tiles is None:
            tiles = self._tiles[id(grid)] = _tiles(grid)
        return tiles[g] if g < len(tiles) else (g, 0)

    def _frame_values(self, event: useq.MDAEvent) -> list[tuple[str, str | int]]:
        """The coordinates of ``event``'s frame, in its index's order."""
        values: list[tuple[str, str | int]] = []
        labels = self.plan.settings.position_labels
        for axis, index in event.index.items():
            if axis == "p":
                values.append(("position", labels[index]))
            elif axis == "c":
                values.append(("channel", event.channel.config if event.channel else NO_CHANNEL))
            elif axis == "g":
                if self._tiles_have_rows:
                    row, column = self.tile(event) or (0, 0)
                    values += [("row", row), ("column", column)]
                else:
                    values.append(("grid", index))
            elif axis in _INDEX_AXES:
                values.append((_INDEX_AXES[axis], index))
        return values

    def coordinates(self, event: useq.MDAEvent) -> DataCoordinates:
        """``event``'s frame coordinates, with every axis of the plan (see the module)."""
        given = dict(self._frame_values(event))
        coords = DataCoordinates()
        for axis in self.shape().axes:
            coords[axis] = given.get(axis, NO_CHANNEL if axis == "channel" else 0)
        return coords


class _EventMaker:
    """Turns one pass of useq-schema events into engine events, moving only what changed."""

    def __init__(self, source: UseqEvents) -> None:
        self.source, self.plan = source, source.plan
        self.clock = AcquisitionClock()
        self.last: dict[str, Any] = {}
        seq = source.sequence()
        focusing = seq.autofocus_plan is not None or any(
            p.sequence is not None and p.sequence.autofocus_plan is not None
            for p in _positions(seq)
        )
        self.corrections = FocusCorrections() if focusing else None

    def moves(self, event: useq.MDAEvent) -> Iterator[ExecutorEvent]:
        """The events that set what ``event`` asks for: time, x/y, properties, z, channel and
        exposure."""
        plan, last, source = self.plan, self.last, self.source
        t = event.index.get("t")
        if event.reset_event_timer and "t" in last:
            self.clock = AcquisitionClock()
        if t is not None and (t != last.get("t") or event.reset_event_timer):
            yield SetTimeEvent(t, event.min_start_time, self.clock)
            last["t"] = t
        loose = source.anchored(event)
        x, y = event.x_pos, event.y_pos
        if x is not None or y is not None:
            here = last.get("xy") or (source.reference("x"), source.reference("y"))
            x = here[0] if x is None else x + (source.reference("x") if loose["x"] else 0.0)
            y = here[1] if y is None else y + (source.reference("y") if loose["y"] else 0.0)
            if last.get("xy") != (x, y):
                yield SetPosition2DEvent(plan.xy_device, (x, y))
                last["xy"] = (x, y)
        if event.properties:
            yield SetPropertiesEvent([tuple(p) for p in event.properties])
        if event.z_pos is not None:
            z = event.z_pos + (source.reference("z") if loose["z"] else 0.0)
            key = event.index.get("p") if self.corrections is not None else None
            if last.get("z") != (z, key):
                yield self._z_move(z, key)
                last["z"] = (z, key)
        settings: list[tuple[Any, str, Any]] = []
        channel = event.channel
        if channel is not None and last.get("channel") != (channel.group, channel.config):
            device = plan.channel_group if plan.channel_group is not None else channel.group
            settings.append((device, plan.channel_property, channel.config))
            last["channel"] = (channel.group, channel.config)
        if event.exposure is not None and last.get("exposure") != event.exposure:
            settings += [(camera, "exposure", float(event.exposure)) for camera in _cameras(plan)]
            last["exposure"] = event.exposure
        if settings:
            yield SetPropertiesEvent(settings)

    def _z_move(self, z: float, key: Hashable) -> ExecutorEvent:
        if self.corrections is None:
            return SetPosition1DEvent(self.plan.z_device, z)
        return CorrectedZEvent(self.plan.z_device, z, self.corrections, key)

    def action(self, event: useq.MDAEvent) -> Iterator[ExecutorEvent]:
        """Run ``event``'s autofocus, or take its frame (of each camera)."""
        plan = self.plan
        action = event.action
        if isinstance(action, useq.HardwareAutofocus):
            yield AutofocusEvent(
                action.autofocus_device_name,
                plan.z_device,
                offset=action.autofocus_motor_offset,
                max_retries=action.max_retries,
                corrections=self.corrections,
                key=event.index.get("p"),
            )
            self.last.pop("z", None)  # the autofocus moved it
            return
        coords = self.source.coordinates(event)
        frames = (
            [DataCoordinates({**coords, "camera": name}) for name in plan.cameras]
            if plan.cameras
            else [coords]
        )
        yield StartCapture(num_images=1, detector=plan.camera)
        yield ReadoutData(
            frames, detector=plan.camera, data_handler=plan.data_handler, num_images=len(frames)
        )


def _cameras(plan: MultiDPlan) -> list[Any]:
    camera = plan.camera
    if isinstance(camera, (list, tuple)):
        return list(camera)
    return [camera if camera is not None else resolve_device(None, Detector, "camera")]


def _merge_order(axes: list[str], names: list[str]) -> None:
    """Add the axes of ``names`` that ``axes`` lacks, each after the axis before it in ``names``."""
    for i, name in enumerate(names):
        if name not in axes:
            axes.insert(axes.index(names[i - 1]) + 1 if i else 0, name)


def _frames_at_most(seq: useq.MDASequence) -> float:
    """An upper bound of ``seq``'s frames, from the sizes of its plans (nothing iterated)."""
    from .multi_d_settings import z_planes

    def count(plan: Any) -> float:
        if plan is None:
            return 1.0
        if isinstance(plan, useq.MultiPhaseTimePlan):
            return sum(count(phase) for phase in plan.phases)
        for size in ("loops", "rows", "num_points"):
            value = getattr(plan, size, None)
            if isinstance(value, int | float):
                return float(value) * float(getattr(plan, "columns", 1) or 1)
        try:
            return float(plan.num_timepoints() if hasattr(plan, "num_timepoints") else len(plan))
        except (TypeError, ValueError):
            return 1.0

    each = len(z_planes(seq.z_plan) or [0]) * max(1, len(seq.channels))
    each *= count(seq.time_plan) * count(seq.grid_plan)
    positions = seq.stage_positions
    if isinstance(positions, useq.WellPlatePlan):
        return each * len(positions) * count(positions.well_points_plan)
    inner = [_frames_at_most(p.sequence) if p.sequence is not None else 1.0 for p in positions]
    return each * max(1.0, sum(inner))


def _grid_plans(seq: useq.MDASequence) -> list[Any]:
    plans = [seq.grid_plan] if seq.grid_plan is not None else []
    for position in _positions(seq):
        if _has_axes(position.sequence) and position.sequence.grid_plan is not None:
            plans.append(position.sequence.grid_plan)
    return plans


def _rows_of(grid: Any) -> bool:
    """True when a grid plan's points have rows and columns (tiles, not scattered points)."""
    return not isinstance(grid, useq.RandomPoints)


def _tiles(grid: Any) -> list[tuple[int, int]]:
    return [
        (int(p.grid_row or 0), int(p.grid_col or 0)) if _rows_of(grid) else (i, 0)
        for i, p in enumerate(grid)
    ]


def _with_fov(seq: useq.MDASequence, fov: Any) -> useq.MDASequence:
    """``seq`` with the camera's field of view (``fov()``: width, height in µm) in its grid plans
    that have none (also those of sub-sequences)."""

    def filled(grid: Any) -> Any:
        if grid is None or (grid.fov_width is not None and grid.fov_height is not None):
            return grid
        width, height = fov()
        return grid.model_copy(
            update={
                "fov_width": grid.fov_width if grid.fov_width is not None else width,
                "fov_height": grid.fov_height if grid.fov_height is not None else height,
            }
        )

    updates: dict[str, Any] = {}
    if seq.grid_plan is not None:
        updates["grid_plan"] = filled(seq.grid_plan)
    if not isinstance(seq.stage_positions, useq.WellPlatePlan):
        positions = []
        for position in seq.stage_positions:
            sub = position.sequence
            if sub is not None and sub.grid_plan is not None:
                sub = sub.model_copy(update={"grid_plan": filled(sub.grid_plan)})
                position = position.model_copy(update={"sequence": sub})
            positions.append(position)
        updates["stage_positions"] = tuple(positions)
    return seq.model_copy(update=updates) if updates else seq
