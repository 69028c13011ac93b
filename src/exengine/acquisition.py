"""``Acquisition``: run a plan of events as one checked, pausable, stoppable acquisition.

A plan is any iterable of events: a list, or a lazy stream (a generator, possibly endless, or a
plan object such as :func:`~exengine.events.multi_d_acquisition_plan`). Events are taken from it
just before they run, so memory does not grow with the plan's length, and a generator may decide
its next events from the frames already acquired (an adaptive acquisition).

The acquisition alone owns its run state: pause, stop and abort, the time paused, the waits of
time-lapse intervals (``Sleep``, ``SetTimeEvent``: it waits for them itself, so a pause holds them
and a stop ends them), the frames counted and why it finished. :meth:`Acquisition.status` returns
all of it as one frozen :class:`~exengine.acquisition_status.AcquisitionStatus`.

Before anything moves, :meth:`Acquisition.validate` checks every setting the plan holds against what
the devices declare (see :mod:`exengine.events.plan_checks`); a lazy plan is checked as far as it
can be up front (its ``validate()``), and each of its events again just before it runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .acquisition_status import AcquisitionStatus, FinishReason, RunState
from .device_types import Detector
from .events.detector_events import (
    MAX_DROPPED_LISTED,
    ReadoutData,
    StartCapture,
    StartContinuousCapture,
    detectors_of,
)
from .events.misc_events import AcquisitionClock, Wait
from .events.plan_checks import PlanChecks, PlanError, check_event, check_setting
from .kernel.data_handler import DataHandler, DataHandlerError
from .kernel.data_storage_base import PlannedData
from .kernel.ex_event_base import ExecutorEvent
from .kernel.ex_event_capabilities import Abortable, DataProducing, Stoppable
from .kernel.ex_future import ExecutionFuture
from .kernel.executor import ExecutionEngine
from .kernel.notification_base import (
    AcquisitionPausedNotification,
    AcquisitionResumedNotification,
)

__all__ = ["Acquisition", "PlanError", "check_event", "check_setting"]


class _RunPlan(Stoppable, Abortable, ExecutorEvent):
    """Executes a plan's events one after another on one executor thread: checks each lazy event
    before it runs, holds while paused, waits for ``Wait`` events itself, and stops or aborts
    between events (ending the current event's waits). Owns the run state the acquisition reports.
    """

    notification_types = [AcquisitionPausedNotification, AcquisitionResumedNotification]

    def __init__(
        self,
        plan: Iterable[ExecutorEvent],
        checked: bool,
        data_handler: DataHandler | None,
        open_ended: bool = False,
    ) -> None:
        super().__init__()
        self.plan = plan
        self.checked = checked
        self.data_handler = data_handler
        self.events_run = 0
        self.frames_read = 0
        self.frames_dropped = 0
        self.dropped_coordinates: list[dict[str, Any]] = []
        self._in_hand = False  # a capture started and not yet read out
        self.current: ExecutorEvent | None = None
        self.finish_reason: FinishReason | None = None
        self.error: BaseException | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._checks = PlanChecks()
        self._gate = threading.Condition()
        self._pause_requested = False
        self._held_since: float | None = None
        self._paused_s = 0.0
        self._clocks: dict[AcquisitionClock | None, tuple[float, float]] = {}
        self._detectors: set[Detector] = set()
        #: The plan's length is not known: it ends by itself, or is stopped.
        self.open_ended = open_ended

    # --------------------------------------------------------------------------------- running
    def execute(self) -> int:
        engine = ExecutionEngine.get_instance()
        exhausted = False
        try:
            events = self._events()
            for event in events:
                self._hold()
                if self._ended() and not self._reads_frames_in_hand(event):
                    break
                if not self.checked:
                    self._checks.event(event)
                engine.run_prioritized_events()  # prioritized submissions (e.g. a GUI) interleave
                self._prepare(event)
                self.current = event
                # a stop that came before ``current`` was set
                if self._ended() and not self._reads_frames_in_hand(event):
                    break
                self._run(event)
                self.current = None
                self.events_run += 1
            else:
                exhausted = True
        except BaseException as e:
            self.error = e
            self.finish_reason = FinishReason.FAILED
            raise
        finally:
            self._end(exhausted)
        return self.frames_read

    def _events(self) -> Iterator[ExecutorEvent]:
        iterator = iter(self.plan)
        while True:
            try:
                event = next(iterator)
            except StopIteration:
                return
            # a plan's SystemExit or KeyboardInterrupt ends the run as any other error of the plan
            except (Exception, SystemExit, KeyboardInterrupt) as e:
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

    def _run(self, event: ExecutorEvent) -> None:
        """Run one event; wait for a ``Wait`` here; count what a readout read and dropped."""
        if isinstance(event, Wait):
            self._wait(event.deadline(self._clock_start))
            return
        if self.is_stop_requested() and isinstance(event, ReadoutData):
            event._request_stop()  # the frames in hand only
        result = event.execute()
        if isinstance(event, (StartCapture, StartContinuousCapture)):
            self._in_hand = True
        elif isinstance(event, ReadoutData):
            self._in_hand = False
            self.current = None  # its drops now count here (Acquisition.frames_dropped)
            self.frames_read += result or 0
            self.frames_dropped += event.frames_dropped
            room = MAX_DROPPED_LISTED - len(self.dropped_coordinates)
            self.dropped_coordinates.extend(event.dropped_coordinates[: max(room, 0)])

    def _reads_frames_in_hand(self, event: ExecutorEvent) -> bool:
        """Stopped (not aborted) after a capture started: its readout still takes the frames the
        detector holds or is capturing."""
        return self._in_hand and isinstance(event, ReadoutData) and not self.is_abort_requested()

    def _prepare(self, event: ExecutorEvent) -> None:
        """Give a data-producing event without a handler the acquisition's; remember the detectors
        started (to stop them when the run ends early)."""
        if isinstance(event, DataProducing) and event.data_handler is None:
            event.data_handler = self.data_handler
        if isinstance(event, (StartCapture, StartContinuousCapture)):
            for detector in detectors_of(event.detector):
                self._detectors.add(detector)

    def _end(self, exhausted: bool) -> None:
        """The events ended: stop the detectors the run started (whether it was interrupted,
        failed or done: none is left capturing), say why it finished, and let the data handler
        finish storing."""
        self.current = None
        for detector in self._detectors:
            with contextlib.suppress(Exception):  # the run's own outcome is what is reported
                detector.stop()
        if self.finish_reason is None:
            if exhausted and not self._ended():  # a stop during the last readout: stopped
                self.finish_reason = FinishReason.DONE
            else:
                aborted = self.is_abort_requested()
                self.finish_reason = FinishReason.ABORTED if aborted else FinishReason.STOPPED
        with self._gate:
            self.ended_at = time.monotonic()
        if self.data_handler is not None:
            if self.finish_reason is FinishReason.DONE and self.open_ended:
                self.data_handler.annotate({"PlanEnded": True})  # not to be resumed
            if self.frames_dropped:
                self.data_handler.annotate(
                    {
                        "FramesDropped": self.frames_dropped,
                        "DroppedCoordinates": self.dropped_coordinates,
                    }
                )
            with contextlib.suppress(DataHandlerError):  # reported by the status and await
                self.data_handler.finish()

    # ------------------------------------------------------------------------- pause and waits
    def _hold(self) -> float:
        """Block while paused (publishing the pause and the resume); return the seconds held."""
        with self._gate:
            if not self._pause_requested or self._ended():
                return 0.0
            self._held_since = time.monotonic()
        self.publish_notification(AcquisitionPausedNotification(self.frames_read))
        with self._gate:
            self._gate.wait_for(lambda: not self._pause_requested or self._ended())
            held = time.monotonic() - self._held_since
            self._paused_s += held
            self._held_since = None
        if not self._ended():
            self.publish_notification(AcquisitionResumedNotification(held))
        return held

    def _wait(self, deadline: float | None) -> None:
        """Wait until ``deadline`` (monotonic s); a pause holds the wait and moves it on by as long,
        a stop or abort ends it."""
        if deadline is None:
            return
        while True:
            deadline += self._hold()
            with self._gate:
                if self._ended():
                    return
                if self._pause_requested:
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._gate.wait(remaining)

    def _clock_start(self, clock: AcquisitionClock | None, restart: bool) -> float:
        """When ``clock`` started in this run, moved on by the time paused since (so that
        time-lapse intervals count from the resume)."""
        with self._gate:
            now = time.monotonic()
            paused = self.paused_s(now)
            entry = None if restart else self._clocks.get(clock)
            if entry is None:
                entry = self._clocks[clock] = (now, paused)
            start, paused_then = entry
            return start + (paused - paused_then)

    def paused_s(self, now: float) -> float:
        """Seconds held by pauses so far."""
        held = self._held_since
        return self._paused_s + (now - held if held is not None else 0.0)

    # ---------------------------------------------------------------------------- control
    def _ended(self) -> bool:
        return self.is_stop_requested() or self.is_abort_requested()

    def pause(self, paused: bool) -> None:
        with self._gate:
            self._pause_requested = paused
            self._gate.notify_all()

    @property
    def pause_requested(self) -> bool:
        return self._pause_requested

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
    """Runs a plan of events in order, as one event, and reports its status.

    ``events`` is any iterable of events; a lazy one (a generator, possibly endless) is consumed as
    it runs. Events that produce data without a handler of their own put their frames into
    ``data_handler``. ``total_frames`` is the planned frame count when known: counted for a list,
    taken from the plan's ``total_frames`` attribute otherwise, ``None`` for open-ended plans.
    ``planned`` (by default the plan's ``axis_sizes`` and ``axis_values``) is told to the data
    handler's storage before the first frame.

    :meth:`validate` checks the plan against the devices before anything moves; :meth:`start`
    calls it. :meth:`pause` holds the acquisition between events (never in the middle of a readout)
    and :meth:`resume` goes on, time-lapse intervals counting from the resume. :meth:`stop` ends it
    within about a frame (also during a time-lapse interval); :meth:`abort` at once. Either way
    every frame acquired is stored: once its events end, the acquisition finishes the data handler,
    and :meth:`await_completion` waits for the storage. Events submitted with ``prioritize=True``
    while it runs are executed between its steps. :meth:`status` tells where it is.
    """

    def __init__(
        self,
        events: Iterable[ExecutorEvent],
        data_handler: DataHandler | None = None,
        *,
        total_frames: int | None = None,
        planned: PlannedData | None = None,
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
                )
            else:
                total_frames = getattr(events, "total_frames", None)
        self.total_frames: int | None = total_frames
        if planned is None:
            planned = PlannedData(
                axis_sizes=dict(getattr(events, "axis_sizes", None) or {}),
                axis_values=dict(getattr(events, "axis_values", None) or {}),
            )
        #: What the storage and the sinks are told before the first frame.
        self.planned = planned
        self._runner = _RunPlan(events, self._finite, data_handler, open_ended=total_frames is None)
        self._future: ExecutionFuture | None = None

    @property
    def is_open_ended(self) -> bool:
        """True when the plan's length is not known (it runs until it ends itself or is
        stopped)."""
        return self.total_frames is None

    def validate(self) -> None:
        """Check the plan before anything moves; raise :class:`PlanError` naming the first bad
        value and what would be valid. A list is checked event by event; a lazy plan through its
        own ``validate()`` when it has one (its events are checked again just before each runs)."""
        if self._finite:
            checks = PlanChecks()
            for event in self.events:
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
        handler = self.data_handler
        if handler is not None and handler.planned is None and not handler.frames_accepted:
            handler.prepare(self.planned)
        self._runner.started_at = time.monotonic()
        self._future = ExecutionEngine.get_instance().submit(self._runner)  # type: ignore[assignment]
        return self._future  # type: ignore[return-value]

    # ----------------------------------------------------------------------------- counts
    @property
    def frames_stored(self) -> int:
        """Frames stored so far (acquired, without a data handler)."""
        if self.data_handler is not None:
            return self.data_handler.frames_stored
        return self._runner.frames_read

    @property
    def frames_acquired(self) -> int:
        """Frames read out of the detectors so far."""
        if self.data_handler is not None:
            read = self._runner.frames_read - self.data_handler.frames_let_go
            return max(self.data_handler.frames_accepted, read)
        return self._runner.frames_read

    @property
    def frames_dropped(self) -> int:
        """Frames the cameras captured but could not keep (their buffer was full), counted as the
        readouts find them: when a run completes, frames stored plus frames dropped make the frames
        planned (a stopped run also misses the frames it never captured). Their coordinates are
        :attr:`dropped_coordinates` (the first 10,000) and are written into the dataset's
        summary when it is finished."""
        runner = self._runner
        current = runner.current
        reading = current.frames_dropped if isinstance(current, ReadoutData) else 0
        return runner.frames_dropped + reading

    @property
    def dropped_coordinates(self) -> list[dict[str, Any]]:
        """The coordinates of the frames dropped (the first 10,000)."""
        return list(self._runner.dropped_coordinates)

    @property
    def finish_reason(self) -> FinishReason | None:
        """Why the events ended (``None`` while they run)."""
        return self._runner.finish_reason

    def elapsed_s(self) -> float:
        """Seconds spent acquiring: from :meth:`start` until the events ended (or now), pauses
        excluded."""
        runner = self._runner
        if runner.started_at is None:
            return 0.0
        end = runner.ended_at or time.monotonic()
        return max(end - runner.started_at - runner.paused_s(end), 0.0)

    def frames_per_s(self) -> float | None:
        """Frames acquired per second of acquiring so far (None before the first frame)."""
        elapsed, done = self.elapsed_s(), self.frames_acquired
        return done / elapsed if done and elapsed > 0 else None

    def time_left_s(self) -> float | None:
        """Estimated seconds of acquiring left, from the rate so far (None before the first frame
        and for open-ended plans)."""
        done = self.frames_acquired
        if not done or not self.total_frames:
            return None
        return max(self.elapsed_s() / done * (self.total_frames - done), 0.0)

    # ----------------------------------------------------------------------------- state
    def is_running(self) -> bool:
        """True while events are still being executed (also while paused)."""
        return self._future is not None and not self._future.is_execution_complete()

    @property
    def is_paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume` while the events run."""
        return self._runner.pause_requested and self.is_running()

    def status(self) -> AcquisitionStatus:
        """A frozen snapshot: the state, frames acquired, stored and dropped, the rate, the time
        left, and once the events ended why they did (and the error, when it failed)."""
        runner, handler = self._runner, self.data_handler
        reason = runner.finish_reason
        error = runner.error or (handler.error if handler is not None else None)
        if self._future is None:
            state = RunState.READY
        elif self.is_running():
            state = RunState.PAUSED if runner.pause_requested else RunState.RUNNING
        elif handler is not None and not handler.is_finished():
            state = RunState.STORING
        else:
            state = RunState.FINISHED
        if error is not None and reason is not None:
            reason = FinishReason.FAILED
        return AcquisitionStatus(
            state=state,
            frames_planned=self.total_frames,
            frames_acquired=self.frames_acquired,
            frames_stored=self.frames_stored,
            frames_dropped=self.frames_dropped,
            frames_per_s=self.frames_per_s(),
            elapsed_s=self.elapsed_s(),
            time_left_s=None if reason is not None else self.time_left_s(),
            finish_reason=reason,
            error=None if error is None else _one_line(error),
        )

    # ----------------------------------------------------------------------------- control
    def pause(self) -> None:
        """Hold the acquisition before its next event (the event running finishes first)."""
        self._runner.pause(True)

    def resume(self) -> None:
        """Go on after :meth:`pause`; time-lapse intervals count from now."""
        self._runner.pause(False)

    def stop(self) -> None:
        """Stop after the frame in hand (also ends a time-lapse interval being waited for)."""
        self._runner.end(abort=False)

    def abort(self) -> None:
        """Stop at once, abandoning frames not yet read out."""
        self._runner.end(abort=True)

    def await_completion(self, timeout: float | None = None) -> None:
        """Wait for the events to end, then for every acquired frame to be stored; re-raise
        failures. A timeout only stops the waiting (``TimeoutError``): the acquisition goes on."""
        if self._future is None:
            raise RuntimeError("The acquisition has not been started")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._future.await_execution(timeout)
        finally:
            if self.data_handler is not None and self._future.is_execution_complete():
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                self.data_handler.await_completion(remaining)


def _one_line(error: BaseException) -> str:
    """The first line of an error's message, with its type when the message does not say it."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, (PlanError, DataHandlerError)):
        return message
    return f"{type(error).__name__}: {message}"
