"""Events that move positioners, one position at a time or as hardware-triggered sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import SupportsFloat

import numpy as np

from ..device_types import (
    DoubleAxisPositioner,
    SingleAxisPositioner,
    TriggerableDoubleAxisPositioner,
    TriggerableSingleAxisPositioner,
)
from ..kernel.ex_event_base import EventChecks, ExecutorEvent
from ._devices import resolve_device


class SetPosition2DEvent(ExecutorEvent):
    """Move a two-axis positioner (object, registered name, or None for the only one) to
    ``position``."""

    def __init__(
        self, device: DoubleAxisPositioner | str | None, position: Sequence[SupportsFloat]
    ) -> None:
        super().__init__()
        if len(position) != 2:
            raise ValueError(f"SetPosition2DEvent takes an (x, y) position, got {position!r}")
        self.device = device
        self.position = (float(position[0]), float(position[1]))

    def execute(self) -> None:
        resolve_device(self.device, DoubleAxisPositioner, "xy positioner").set_position(
            *self.position
        )

    def check(self, checks: EventChecks) -> None:
        stage = checks.device(self.device, DoubleAxisPositioner, "xy positioner")
        for axis, value in zip("xy", self.position, strict=True):
            checks.position(stage, axis, value, axis)


class SetPosition1DEvent(ExecutorEvent):
    """Move a single-axis positioner (object, registered name, or None for the only one) to
    ``position``."""

    def __init__(self, device: SingleAxisPositioner | str | None, position: SupportsFloat) -> None:
        super().__init__()
        self.device = device
        self.position = float(position)

    def execute(self) -> None:
        resolve_device(self.device, SingleAxisPositioner, "positioner").set_position(self.position)

    def check(self, checks: EventChecks) -> None:
        stage = checks.device(self.device, SingleAxisPositioner, "positioner")
        checks.position(stage, "position", self.position, "position")


class SetTriggerable1DPositionsEvent(ExecutorEvent):
    """Load a sequence of positions that a single-axis positioner steps through on triggers."""

    def __init__(
        self,
        device: TriggerableSingleAxisPositioner | str | None,
        positions: Sequence[float] | np.ndarray,
    ) -> None:
        super().__init__()
        self.device = device
        self.positions = np.asarray(positions, dtype=float)

    def execute(self) -> None:
        device = resolve_device(
            self.device, TriggerableSingleAxisPositioner, "triggerable positioner"
        )
        limit = device.get_triggerable_position_sequence_max_length()
        if len(self.positions) > limit:
            raise ValueError(
                f"{device.name} takes sequences of at most {limit} positions, got "
                f"{len(self.positions)}"
            )
        device.set_position_sequence(self.positions)

    def check(self, checks: EventChecks) -> None:
        stage = checks.device(self.device, SingleAxisPositioner, "positioner")
        for position in self.positions:
            checks.position(stage, "position", float(position), "position")


class SetTriggerable2DPositionsEvent(ExecutorEvent):
    """Load a sequence of (x, y) positions that a two-axis positioner steps through on triggers."""

    def __init__(
        self,
        device: TriggerableDoubleAxisPositioner | str | None,
        positions: Sequence[tuple[float, float]] | np.ndarray,
    ) -> None:
        super().__init__()
        self.device = device
        self.positions = np.asarray(positions, dtype=float).reshape(-1, 2)

    def execute(self) -> None:
        device = resolve_device(
            self.device, TriggerableDoubleAxisPositioner, "triggerable xy positioner"
        )
        limit = device.get_triggerable_position_sequence_max_length()
        if len(self.positions) > limit:
            raise ValueError(
                f"{device.name} takes sequences of at most {limit} positions, got "
                f"{len(self.positions)}"
            )
        device.set_position_sequence(self.positions)

    def check(self, checks: EventChecks) -> None:
        stage = checks.device(self.device, DoubleAxisPositioner, "xy positioner")
        for x, y in self.positions:
            checks.position(stage, "x", float(x), "x")
            checks.position(stage, "y", float(y), "y")


class StopTriggerablePositionSequenceEvent(ExecutorEvent):
    """Stop the running position sequence of a triggerable positioner."""

    def __init__(
        self, device: TriggerableSingleAxisPositioner | TriggerableDoubleAxisPositioner | str
    ) -> None:
        super().__init__()
        self.device = device

    def execute(self) -> None:
        kinds = (TriggerableSingleAxisPositioner, TriggerableDoubleAxisPositioner)
        resolve_device(self.device, kinds, "triggerable positioner").stop_position_sequence()
