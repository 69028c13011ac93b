"""``Acquisition``: run a plan of events as one checked, pausable, stoppable acquisition with
progress.

A plan is any iterable of events: a list, or a lazy stream (a generator, possibly endless, or a
plan object such as :func:`~exengine.events.multi_d_acquisition_plan`). Events are taken from it
just before they run, so memory does not grow with the plan's length, and a generator may decide
its next events from the frames already acquired (an adaptive acquisition).

Before anything moves, :meth:`Acquisition.validate` checks every setting the plan holds against what
the devices declare (allowed values, limits, read-only properties, finite numbers); a lazy plan is
checked as far as it can be up front (its ``validate()``), and each of its events again just before
it runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from numbers import Real
from typing import Any

from .device_types import Detector, DoubleAxisPositioner, SingleAxisPositioner
from .events._devices import resolve_device
from .events.detector_events import ReadoutData, StartCapture, StartContinuousCapture
from .events.misc_events import AcquisitionClock, SetTimeEvent, Sleep
from .events.positioner_events import (
    SetPosition1DEvent,
    SetPosition2DEvent,
    SetTriggerable1DPositionsEvent,
)
from .events.property_events import SetPropertiesEvent, SetTriggerablePropertySequencesEvent
from .kernel.data_handler import DataHandler
from .kernel.data_storage_base import DataStorage
from .kernel.device import Device
from .kernel.ex_event_base import ExecutorEvent
from .kernel.ex_event_capabilities import Abortable, Stoppable
from .kernel.ex_future import ExecutionFuture
from .kernel.executor import ExecutionEngine
from .kernel.notification_base import AcquisitionPausedNotification, AcquisitionResumedNotification

__all__ = ["Acquisition", "PlanError", "check_event", "check_setting", "dry_run"]


class PlanError(ValueError):
    """A setting of the plan that the devices cannot take; raised before anything moves."""


def check_setting(device: Device, prop: str, value: Any) -> None:
    """Raise :class:`PlanError` when ``device.prop = value`` is refused by what the device declares:
    a read-only property, a value outside the allowed values or the limits, a number that is not
    finite."""
    where = f"{device.name}.{prop}"
    if device.is_property_read_only(prop):
        raise PlanError(f"{where} is read-only")
    allowed = device.get_allowed_property_values(prop)
    if allowed is not None and value not in allowed:
        raise PlanError(
            f"{where} = {value!r} is not allowed; valid: {', '.join(map(repr, allowed))}"
        )
    if isinstance(value, Real) and not isinstance(value, bool):
        _check_number(where, float(value), device.get_property_limits(prop))


def _check_number(
    where: str, value: float, limits: tuple[float | None, float | None] = (None, None)
) -> None:
    if not math.isfinite(value):
        raise PlanError(f"{where} = {value!r} is not a finite number")
    low, high = limits
    if (low is not None and value < low) or (high is not None and value > high):
        raise PlanError(
            f"{where} = {value:g} is outside its limits [{_bound(low)}, {_bound(high)}]"
        )


def _bound(value: float | None) -> str:
    return "-inf" if value is None else f"{value:g}"


class _Checks:
    """Checks of events against their devices, each device lookup and each (device, property, value)
    checked once: a plan repeats the same few settings, and every device query may be a thread
    hop."""

    def __init__(self) -> None:
        self._devices: dict[tuple[Any, type], Any] = {}
        self._done: set[tuple[Any, ...]] = set()

    def device(self, device: Any, kind: type, what: str) -> Any:
        key = (device if device is None or isinstance(device, str) else id(device), kind)
        found = self._devices.get(key)
        if found is None:
            try:
                found = self._devices[key] = resolve_device(device, kind, what)
            except (ValueError, TypeError, KeyError) as e:
                raise PlanError(str(e)) from None
        return found

    def setting(self, device: Device, prop: str, value: Any) -> None:
        key = (
            id(device),
            prop,
            value if isinstance(value, (int, float, str, bool, type(None))) else repr(value),
        )
        if key not in self._done:
            check_setting(device, prop, value)
            self._done.add(key)

    def position(self, stage: Device, what: str, value: float, axis: str) -> None:
        key = (id(stage), axis, value)
        if key not in self._done:
            _check_number(f"{stage.name} {what}", value, stage.get_property_limits(axis))
            self._done.add(key)

    def event(self, event: ExecutorEvent) -> None:
        """Check one standard event (see :func:`check_event`)."""
        if isinstance(event, SetPropertiesEvent):
            for device, prop, value in event.devices_prop_names_values:
                self.setting(self.device(device, Device, "device"), prop, value)
        elif isinstance(event, SetPosition1DEvent):
            stage = self.device(event.device, SingleAxisPositioner, "positioner")
            self.position(stage, "position", event.position, "position")
        elif isinstance(event, SetTriggerable1DPositionsEvent):
            stage = self.device(event.device, SingleAxisPositioner, "positioner")
            for position in event.positions:
                self.position(stage, "position", float(position), "position")
        elif isinstance(event, SetPosition2DEvent):
            stage = self.device(event.device, DoubleAxisPositioner, "xy positioner")
            for axis, value in zip("xy", event.position, strict=True):
                self.position(stage, axis, value, axis)
        elif isinstance(event, SetTriggerablePropertySequencesEvent):
            for device, prop, values in event.property_sequences:
                resolved = self.device(device, Device, "device")
                for value in values:
                    self.setting(resolved, prop, value)
        elif isinstance(event, SetTimeEvent):
            if event.min_start_time is not None:
                _check_number(
                    f"time point {event.time_index} start", event.min_start_time, (0.0, None)
                )
        elif isinstance(event, Sleep):
            _check_number("Sleep time_s", float(event.time_s), (0.0, None))
        elif isinstance(event, (StartCapture, StartContinuousCapture, ReadoutData)):
            camera = self.device(event.detector, Detector, "detector")
            if ("exposure", id(camera)) not in self._done and hasattr(camera, "exposure"):
                check_setting(camera, "exposure", camera.exposure)
                self._done.add(("exposure", id(camera)))
            handler = getattr(event, "data_handler", None)
            if handler is not None and handler.error is not None:
                raise PlanError(
                    f"The data handler has failed, no more frames can be stored: {handler.error!r}"
                )


def check_event(event: ExecutorEvent) -> None:
    """Check one standard event against the devices it drives; raise :class:`PlanError` naming the
    value and what would be valid. Events of other kinds pass (they are checked by running them)."""
    _Checks().event(event)


class _Scratch(DataStorage):
    """The storage of :func:`dry_run`'s handler: holds nothing (a plan being checked stores
    nothing)."""

    def __contains__(self, data_coordinates: Any) -> bool:
        return False

    def get_data(self, data_coordinates: Any) -> Any:
        raise KeyError(f"A plan being checked has no data at {dict(data_coordinates)}")

    get_metadata = get_data

    def put(self, data_coordinates: Any, data: Any, metadata: Any) -> None:
        raise PlanError("A plan being checked cannot store frames")


def dry_run(make_plan: Callable[[DataHandler], Iterable[ExecutorEvent]]) -> Iterable[ExecutorEvent]:
    """Build a plan with a scratch data handler (which stores nothing) and
    :meth:`Acquisition.validate` it: the checks to run before the storage is created and before
    anything moves. Returns the plan (for its ``total_frames`` and ``axis_sizes``); build it again
    with the real handler to run it."""
    scratch = DataHandler(_Scratch())
    try:
        plan = make_plan(scratch)
        Acquisition(plan, scratch).validate()
        return plan
    finally:
        scratch.finish()


class _RunPlan(Stoppable, Abortable, ExecutorEvent):
    """Executes a plan's events one after another on one executor thread; checks each lazy event
    before it runs; pauses, stops and aborts between events (and ends the current event's waits)."""

    notification_types = [AcquisitionPausedNotification, AcquisitionResumedNotification]

    def __init__(self, plan: Iterable[ExecutorEvent], checked: bool) -> None:
        super().__init__()
        self.plan = plan
        self.checked = checked
        self.events_run = 0
        self.frames_read = 0
        self.current: ExecutorEvent | None = None
        self._checks = _Checks()
        self._gate = threading.Condition()
        self._pause_requested = False
        self._clocks: set[AcquisitionClock] = set()
        self._detectors: set[Detector] = set()

    def execute(self) -> int:
        engine = ExecutionEngine.get_instance()
        try:
            for event in self._events():
                self._hold()
                if self._ended():
                    break
                if not self.checked:
                    self._checks.event(event)
                # prioritized submissions (e.g. from a GUI) interleave
                engine.run_prioritized_events()
                self._remember(event)
                if isinstance(event, (SetTimeEvent, Sleep)):
                    event._pause_hold = self._hold  # type: ignore[union-attr] - a pause also holds its wait
                self.current = event
                if self._ended():  # a stop that came before ``current`` was set
                    break
                result = event.execute()
                self.current = None
                self.events_run += 1
                if isinstance(event, ReadoutData):
                    self.frames_read += result or 0
        finally:
            self.current = None
            if self._ended():
                for detector in self._detectors:
                    detector.stop()
        return self.frames_read

    def _events(self) -> Iterator[ExecutorEvent]:
        iterator = iter(self.plan)
        while True:
            try:
                event = next(iterator)
            except StopIteration:
                return
            except Exception as e:
                raise PlanError(
                    f"The plan raised {type(e).__name__}: {e} (after {self.events_run} events, "
                    f"{self.frames_read} frames)"
                ) from e
            if not isinstance(event, ExecutorEvent):
                raise PlanError(
                    f"The plan yielded {event!r}; a plan yields ExecutorEvents "
                    f"(after {self.events_run} events)"
                )
            yield event

    def _remember(self, event: ExecutorEvent) -> None:
        if isinstance(event, SetTimeEvent) and event.clock is not None:
            self._clocks.add(event.clock)
        elif isinstance(event, (StartCapture, StartContinuousCapture)):
            self._detectors.add(self._checks.device(event.detector, Detector, "detector"))

    def _hold(self) -> float:
        """Block while paused (publishing the pause and the resume); return the seconds paused.
        Time-lapse clocks move on by that much, so that intervals count from the resume."""
        with self._gate:
            if not self._pause_requested:
                return 0.0
            self.publish_notification(AcquisitionPausedNotification(self.frames_read))
            paused_at = time.monotonic()
            self._gate.wait_for(lambda: not self._pause_requested or self._ended())
            paused_for = time.monotonic() - paused_at
        for clock in self._clocks:
            clock.delay(paused_for)
        if not self._ended():
            self.publish_notification(AcquisitionResumedNotification(paused_for))
        return paused_for

    def _ended(self) -> bool:
        return self.is_stop_requested() or self.is_abort_requested()

    def pause(self, paused: bool) -> None:
        with self._gate:
            self._pause_requested = paused
            self._gate.notify_all()

    def end(self, abort: bool) -> None:
        """Stop (or abort) between events, and end the current event's waits."""
        if abort:
            self._request_abort()
        else:
            self._request_stop()
        current = self.current
        if abort and isinstance(current, Abortable):
            current._request_abort()
        elif isinstance(current, Stoppable):
            current._request_stop()
        with self._gate:
            self._gate.notify_all()


class Acquisition:
    """Runs a plan of events in order, as one event, and reports progress.

    ``events`` is any iterable of events; a lazy one (a generator, possibly endless) is consumed as
    it runs. ``total_frames`` is the planned frame count when known: counted for a list, taken from
    the plan's ``total_frames`` attribute otherwise, ``None`` for open-ended plans.

    :meth:`validate` checks the plan against the devices before anything moves; :meth:`start` calls
    it. :meth:`pause` holds the acquisition between events (never in the middle of a readout) and
    :meth:`resume` goes on, time-lapse intervals counting from the resume. :meth:`stop` ends it
    within about a frame (also during a time-lapse interval); :meth:`abort` at once. Either way
    every frame acquired is stored: :meth:`await_completion` finishes the data handler and waits for
    the storage. Events submitted with ``prioritize=True`` while it runs are executed between its
    steps.
    """

    def __init__(
        self,
        events: Iterable[ExecutorEvent],
        data_handler: DataHandler | None = None,
        *,
        total_frames: int | None = None,
    ) -> None:
        if isinstance(events, (str, bytes)) or not isinstance(events, Iterable):
            raise TypeError(
                f"Acquisition takes an iterable of events (a list or a generator), got {events!r}"
            )
        self.events = events
        self.data_handler = data_handler
        self._finite = isinstance(events, Sequence)
        if total_frames is None:
            if self._finite:
                total_frames = sum(
                    (e.num_blocks or 0) for e in events if isinstance(e, ReadoutData)
                )  # type: ignore[union-attr]
            else:
                total_frames = getattr(events, "total_frames", None)
        self.total_frames: int | None = total_frames
        self._runner = _RunPlan(events, checked=self._finite)
        self._future: ExecutionFuture | None = None
        self._started_at: float | None = None
        self._paused_at: float | None = None
        self._paused_s = 0.0

    @property
    def is_open_ended(self) -> bool:
        """True when the plan's length is not known (it runs until it ends itself or is stopped)."""
        return self.total_frames is None

    def validate(self) -> None:
        """Check the plan before anything moves; raise :class:`PlanError` naming the first bad value
        and what would be valid. A list is checked event by event; a lazy plan through its own
        ``validate()`` when it has one (its events are checked again just before each runs)."""
        if self._finite:
            checks = _Checks()
            for event in self.events:  # type: ignore[union-attr]
                checks.event(event)
        else:
            validate = getattr(self.events, "validate", None)
            if callable(validate):
                validate()
        if self.data_handler is not None and self.data_handler.error is not None:
            raise PlanError(f"The data handler has already failed: {self.data_handler.error!r}")

    def start(self) -> ExecutionFuture:
        """Validate the plan, then submit the acquisition to the engine; returns its future."""
        if self._future is not None:
            raise RuntimeError("This acquisition was already started")
        self.validate()
        self._started_at = time.monotonic()
        self._future = ExecutionEngine.get_instance().submit(self._runner)  # type: ignore[assignment]
        return self._future  # type: ignore[return-value]

    @property
    def frames_done(self) -> int:
        """Frames stored so far (or acquired, without a data handler)."""
        if self.data_handler is not None:
            return self.data_handler.frames_stored
        return self._runner.frames_read

    @property
    def frames_acquired(self) -> int:
        """Frames read out of the detectors so far."""
        return self._runner.frames_read

    def elapsed_s(self) -> float:
        """Seconds since :meth:`start`, pauses excluded."""
        if self._started_at is None:
            return 0.0
        paused = self._paused_s + (
            time.monotonic() - self._paused_at if self._paused_at is not None else 0.0
        )
        return time.monotonic() - self._started_at - paused

    def frames_per_s(self) -> float | None:
        """Frames done per second of acquiring so far (None before the first frame)."""
        elapsed, done = self.elapsed_s(), self.frames_done
        return done / elapsed if done and elapsed > 0 else None

    def time_left_s(self) -> float | None:
        """Estimated seconds left, from the rate so far (None before the first frame and for
        open-ended plans)."""
        done = self.frames_done
        if not done or not self.total_frames:
            return None
        return max(self.elapsed_s() / done * (self.total_frames - done), 0.0)

    def is_running(self) -> bool:
        """True while events are still being executed (also while paused)."""
        return self._future is not None and not self._future.is_execution_complete()

    @property
    def is_paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused_at is not None

    def pause(self) -> None:
        """Hold the acquisition before its next event (the event running finishes first)."""
        if self._paused_at is None:
            self._paused_at = time.monotonic()
            self._runner.pause(True)

    def resume(self) -> None:
        """Go on after :meth:`pause`; time-lapse intervals count from now."""
        if self._paused_at is not None:
            self._paused_s += time.monotonic() - self._paused_at
            self._paused_at = None
            self._runner.pause(False)

    def stop(self) -> None:
        """Stop after the frame in hand (also ends a time-lapse interval being waited for)."""
        self._runner.end(abort=False)

    def abort(self) -> None:
        """Stop at once, abandoning frames not yet read out."""
        self._runner.end(abort=True)

    def await_completion(self, timeout: float | None = None) -> None:
        """Wait for the events to end, then for every acquired frame to be stored; re-raise
        failures."""
        if self._future is None:
            raise RuntimeError("The acquisition has not been started")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._future.await_execution(timeout)
        finally:
            if self.data_handler is not None:
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                self.data_handler.await_completion(remaining)
