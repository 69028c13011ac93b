"""``ResumedPlan``: the same plan again, without the frames a dataset already holds.

Resuming an interrupted acquisition runs its plan from the start, rebuilt from the dataset's
summary, but leaves out every capture whose frames are all stored. What those left-out steps set
(stage positions, channels, the time point) is not replayed step by step: before the first capture
that runs, only the last setting of each kind is made (the last stage position, the last channel,
...); other events (an autofocus, loading a sequence) run as the plan yields them, and waits between
left-out captures are skipped. A capture whose frames are only partly stored (a hardware sequence,
several cameras) runs whole; the handler lets the stored frames go (``DataHandler.skip_stored``).

Time-lapse intervals restart at the resume: the first time point still to acquire starts at once,
and each later one at the plan's interval from it (the original clock has run on while nothing was
acquired; following it would leave a gap or rush the next time points).

An adaptive plan runs its own code again: what it reads back (``data_handler.get``) comes from the
stored frames, so it chooses what it chose before and goes on from there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from .events.detector_events import ReadoutData, StartCapture, StartContinuousCapture
from .events.misc_events import AcquisitionClock, SetTimeEvent, Sleep
from .events.property_events import SetPropertiesEvent
from .kernel.data_coords import DataCoordinates, as_coordinates
from .kernel.ex_event_base import ExecutorEvent

__all__ = ["ResumedPlan"]


class ResumedPlan:
    """``plan``'s events without the captures of frames at ``stored`` coordinates.

    ``total_frames`` is what is left to acquire (``None`` for an open-ended plan); ``axis_sizes``,
    ``axis_values`` and ``validate`` are the plan's own.
    """

    def __init__(self, plan: Iterable[ExecutorEvent], stored: Collection[DataCoordinates]) -> None:
        self.plan = plan
        self.stored = (
            stored
            if isinstance(stored, frozenset)  # of coordinates already: not copied again
            else frozenset(as_coordinates(c) for c in stored)
        )
        total = getattr(plan, "total_frames", None)
        self.total_frames: int | None = None if total is None else max(total - len(self.stored), 0)
        self.axis_sizes = dict(getattr(plan, "axis_sizes", None) or {})
        self.axis_values = dict(getattr(plan, "axis_values", None) or {})

    def validate(self) -> None:
        """The plan's own checks."""
        validate = getattr(self.plan, "validate", None)
        if callable(validate):
            validate()

    def __iter__(self) -> Iterator[ExecutorEvent]:
        return _Resumer(self.stored).events(iter(self.plan))


class _Resumer:
    """Walks a plan's events, leaving out captures of stored frames."""

    def __init__(self, stored: frozenset[DataCoordinates]) -> None:
        self.stored = stored
        #: The last setting of each kind made by left-out steps, made before the next capture.
        self.settings: dict[Any, ExecutorEvent] = {}
        #: Events since the last capture (run before the next capture if it runs).
        self.pending: list[ExecutorEvent] = []
        self.clocks: dict[AcquisitionClock | None, tuple[AcquisitionClock, float]] = {}

    def events(self, events: Iterator[ExecutorEvent]) -> Iterator[ExecutorEvent]:
        for event in events:
            if not isinstance(event, (StartCapture, StartContinuousCapture)):
                self.pending.append(event)
                continue
            readout = next(events, None)
            if isinstance(readout, ReadoutData) and self._all_stored(readout):
                self._leave_out()
                continue
            yield from self._settings_then_pending()
            yield event
            if readout is not None:
                yield self._restarted(readout)  # a capture's readout, or what came next
        yield from self._settings_then_pending()

    def _all_stored(self, readout: ReadoutData) -> bool:
        coordinates = readout.data_coordinate_iterator
        if not coordinates.is_finite() or not len(coordinates):
            return False  # an open-ended readout: it runs
        return all(c in self.stored for c in coordinates)

    def _leave_out(self) -> None:
        """The capture is left out: what its steps set is kept as settings (the last of each
        kind); its waits are skipped; other events wait for the next capture that runs."""
        for event in self.pending:
            if isinstance(event, Sleep):
                continue
            key = _setting_key(event)
            self.settings.pop(key, None)  # the latest of each kind, in the order they came
            self.settings[key] = event
        self.pending = []

    def _settings_then_pending(self) -> Iterator[ExecutorEvent]:
        """The settings kept (those the next steps do not set again), then the next steps."""
        again = {_setting_key(event) for event in self.pending}
        kept = [event for key, event in self.settings.items() if key not in again]
        events = [*kept, *self.pending]
        self.settings, self.pending = {}, []
        for event in events:
            yield self._restarted(event)

    def _restarted(self, event: ExecutorEvent) -> ExecutorEvent:
        """A time point's start moved to the resume: intervals count from the first time point
        still to acquire, on a new clock."""
        if not isinstance(event, SetTimeEvent):
            return event
        clock, offset = self.clocks.setdefault(
            event.clock, (AcquisitionClock(), event.min_start_time or 0.0)
        )
        start = event.min_start_time
        return dataclasses.replace(
            event,
            min_start_time=None if start is None else max(start - offset, 0.0),
            clock=clock,
        )


def _setting_key(event: ExecutorEvent) -> Any:
    """What ``event`` does to which devices: a later event of the same key makes it moot (the
    last stage position, channel, time point, sequence loaded...). Events that name no device are
    their own key."""
    if isinstance(event, SetTimeEvent):
        return ("time", id(event.clock))
    if isinstance(event, SetPropertiesEvent):
        return (
            SetPropertiesEvent,
            tuple((_name(d), prop) for d, prop, _ in event.devices_prop_names_values),
        )
    if hasattr(event, "property_sequences"):
        return (type(event), tuple((_name(d), prop) for d, prop, *_ in event.property_sequences))
    for attribute in ("device", "detector"):
        if hasattr(event, attribute):
            return (type(event), _names(getattr(event, attribute)))
    return id(event)


def _name(device: Any) -> Any:
    return getattr(device, "name", device)


def _names(devices: Any) -> Any:
    """A hashable name for a device, or the devices (and properties) of a list."""
    if isinstance(devices, (list, tuple)):
        return tuple(_names(d) for d in devices)
    name = _name(devices)
    return name if isinstance(name, (str, int, type(None))) else id(name)
