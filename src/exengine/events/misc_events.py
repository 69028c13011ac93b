"""Timing events: ``Sleep`` and ``SetTimeEvent``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from ..kernel.ex_event_base import ExecutorEvent
from ..kernel.ex_event_capabilities import Abortable, Stoppable


class AcquisitionClock:
    """The shared start time of one acquisition; it starts the first time it is read."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._lock = threading.Lock()

    def start_time(self) -> float:
        """The monotonic time the acquisition started (now, on the first call)."""
        with self._lock:
            if self._start is None:
                self._start = time.monotonic()
            return self._start

    def delay(self, seconds: float) -> None:
        """Move the start later by ``seconds`` (after a pause), so that later time points keep their
        intervals from the resume instead of catching up in a burst."""
        with self._lock:
            if self._start is not None:
                self._start += seconds

    def restart(self) -> None:
        """Forget the start time; the next read starts the clock again."""
        with self._lock:
            self._start = None


_default_clock = AcquisitionClock()


def _wait_until(deadline: float, event: Stoppable) -> None:
    """Wait until ``deadline`` (monotonic s), ending early when ``event`` is stopped or aborted. An
    acquisition may give the event a ``_pause_hold`` callable: it holds while paused and returns the
    seconds it held, which move the deadline on (the wait counts from the resume)."""
    hold = getattr(event, "_pause_hold", None)
    while True:
        if hold is not None:
            deadline += hold()
        remaining = deadline - time.monotonic()
        if remaining <= 0 or event.is_stop_requested() or event.is_abort_requested():  # type: ignore[attr-defined]
            return
        time.sleep(min(remaining, 0.05))


@dataclass(eq=False)
class Sleep(Stoppable, Abortable, ExecutorEvent):
    """Wait ``time_s`` seconds (ends early when stopped or aborted)."""

    time_s: float

    def execute(self) -> None:
        if self.time_s < 0:
            raise ValueError(f"Sleep takes a non-negative time_s, got {self.time_s}")
        _wait_until(time.monotonic() + self.time_s, self)


@dataclass(eq=False)
class SetTimeEvent(Stoppable, Abortable, ExecutorEvent):
    """Mark time point ``time_index``; waits until ``min_start_time`` s after the acquisition
    started.

    The acquisition's start is its ``clock`` (shared by the events of one acquisition); without one,
    a process-wide clock that restarts at ``time_index == 0``. Returns the time the point started,
    in seconds since the acquisition started.
    """

    time_index: int
    min_start_time: float | None = None
    clock: AcquisitionClock | None = field(default=None, repr=False)

    def execute(self) -> float:
        clock = self.clock
        if clock is None:
            clock = _default_clock
            if self.time_index == 0:
                clock.restart()
        start = clock.start_time()
        if self.min_start_time is not None:
            _wait_until(start + self.min_start_time, self)
        return time.monotonic() - start
