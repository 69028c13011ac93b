"""Hardware autofocus events: run an :class:`~exengine.device_types.Autofocus` and correct the focus
moves after it, as pymmcore-plus's MDA engine does: the z the autofocus moved by is kept per
position and added to that position's later z moves."""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import SupportsFloat

from ..device_types import Autofocus, SingleAxisPositioner
from ..kernel.ex_event_base import EventChecks, ExecutorEvent
from ..kernel.executor import ExecutionEngine
from ._devices import resolve_device
from .plan_checks import PlanError
from .positioner_events import SetPosition1DEvent

__all__ = ["AutofocusEvent", "CorrectedZEvent", "FocusCorrections", "find_autofocus"]


class FocusCorrections:
    """The focus corrections (µm) autofocus found, by key (a position's index, ``None`` without
    positions); shared by the events of one pass over a plan."""

    def __init__(self) -> None:
        self._by_key: dict[Hashable, float] = {}

    def get(self, key: Hashable) -> float:
        """The correction of ``key`` (0 until autofocus ran there)."""
        return self._by_key.get(key, 0.0)

    def add(self, key: Hashable, delta: float) -> None:
        """Add ``delta`` µm to the correction of ``key``."""
        self._by_key[key] = self.get(key) + float(delta)


def find_autofocus(name: str | Autofocus | None) -> Autofocus:
    """The autofocus device: ``name`` as an object, a registered device of that name, the one whose
    ``autofocus_device_name`` it is, else (as pymmcore-plus takes the core's autofocus device,
    ``name`` being its offset motor) the only registered autofocus."""
    if isinstance(name, Autofocus):
        return name
    found = [d for d in ExecutionEngine.get_devices().values() if isinstance(d, Autofocus)]
    named = [d for d in found if name is not None and name in (d.name, d.autofocus_device_name)]
    if named:
        return named[0]
    if len(found) == 1:
        return found[0]
    listed = [d.name for d in found]
    wanted = f"named {name!r} " if name is not None else ""
    raise ValueError(
        f"No autofocus {wanted}to run: {len(found)} registered Autofocus devices {listed}"
    )


class AutofocusEvent(ExecutorEvent):
    """Run the autofocus ``device`` (see :func:`find_autofocus`), first setting its ``offset`` when
    given; up to ``max_retries`` attempts. The z it moved the focus drive ``z_device`` by is added
    to ``corrections`` at ``key``. Returns the new z, or ``None`` (with a warning) when it found no
    focus: the acquisition goes on, as pymmcore-plus's does."""

    def __init__(
        self,
        device: str | Autofocus | None,
        z_device: SingleAxisPositioner | str | None,
        *,
        offset: float | None = None,
        max_retries: int = 3,
        corrections: FocusCorrections | None = None,
        key: Hashable = None,
    ) -> None:
        super().__init__()
        self.device, self.z_device = device, z_device
        self.offset = None if offset is None else float(offset)
        self.max_retries = max(int(max_retries), 1)
        self.corrections, self.key = corrections, key

    def execute(self) -> float | None:
        autofocus = find_autofocus(self.device)
        if self.offset is not None:
            autofocus.offset = self.offset
        stage = resolve_device(self.z_device, SingleAxisPositioner, "z stage")
        before = float(stage.get_position())
        error: RuntimeError | None = None
        for _ in range(self.max_retries):
            try:
                autofocus.run()
            except RuntimeError as e:
                error = e
                continue
            after = float(stage.get_position())
            if self.corrections is not None:
                self.corrections.add(self.key, after - before)
            return after
        warnings.warn(f"Autofocus failed: {error}", RuntimeWarning, stacklevel=2)
        return None

    def check(self, checks: EventChecks) -> None:
        try:
            autofocus = find_autofocus(self.device)
        except ValueError as e:
            raise PlanError(str(e)) from None
        if self.offset is not None:
            checks.setting(autofocus, "offset", self.offset)
        checks.device(self.z_device, SingleAxisPositioner, "z stage")


class CorrectedZEvent(SetPosition1DEvent):
    """Move the focus drive to ``position`` plus the autofocus correction at ``key``."""

    def __init__(
        self,
        device: SingleAxisPositioner | str | None,
        position: SupportsFloat,
        corrections: FocusCorrections,
        key: Hashable,
    ) -> None:
        super().__init__(device, position)
        self.corrections, self.key = corrections, key

    def execute(self) -> None:
        target = self.position + self.corrections.get(self.key)
        resolve_device(self.device, SingleAxisPositioner, "positioner").set_position(target)
