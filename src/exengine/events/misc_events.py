"""Timing events: ``Sleep`` and ``SetTimeEvent``.

Both only wait. Run on their own they sleep; inside an
:class:`~exengine.acquisition.Acquisition` the acquisition does the waiting itself (see
:meth:`Wait.deadline`), so that a pause holds the wait and a stop ends it at once.
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from ..kernel.ex_event_base import EventChecks, ExecutorEvent
from ..kernel.ex_event_capabilities import Abortable, Stoppable

#: When a plan's clock started (monotonic s), moved on by the time paused since: given the clock
#: (``None``: the acquisition's own) and whether to start it again now.
ClockStarts = Callable[["AcquisitionClock | None", bool], float]


class AcquisitionClock:
    """The shared start time of one plan's time points; it starts the first time it is read."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._lock = threading.Lock()

    def start_time(self) -> float:
        """The monotonic time the plan's first time point started (now, on the first call)."""
        with self._lock:
            if self._start is None:
                self._start = time.monotonic()
            return self._start

    def restart(self) -> None:
        """Forget the start time; the next read starts the clock again."""
        with self._lock:
            self._start = None


_default_clock = AcquisitionClock()


def _wait_until(deadline: float, event: Stoppable) -> None:
    """Wait until ``deadline`` (monotonic s), ending early when ``event`` is stopped or aborted."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or event.is_stop_requested() or event.is_abort_requested():  # type: ignore[attr-defined]
            return
        time.sleep(min(remaining, 0.05))


class Wait(Stoppable, Abortable, ExecutorEvent):
    """An event that only waits. :meth:`deadline` says until when; the event's own ``execute``
    sleeps until then, an acquisition waits for it itself."""

    @abstractmethod
    def deadline(self, clock_starts: ClockStarts) -> float | None:
        """The monotonic time the wait ends (``None``: no wait), given when clocks started."""


@dataclass(eq=False)
class Sleep(Wait):
    """Wait ``time_s`` seconds (ends early when stopped or aborted)."""

    time_s: float

    def deadline(self, clock_starts: ClockStarts) -> float:
        if self.time_s < 0:
            raise ValueError(f"Sleep takes a non-negative time_s, got {self.time_s}")
        return time.monotonic() + self.time_s

    def execute(self) -> None:
        _wait_until(self.deadline(_standalone_start), self)

    def check(self, checks: EventChecks) -> None:
        checks.number("Sleep time_s", float(self.time_s), 0.0)


@dataclass(eq=False)
class SetTimeEvent(Wait):
    """Mark time point ``time_index``; waits until ``min_start_time`` s after the plan's first time
    point started.

    The start is the event's ``clock`` (shared by the events of one plan); without one, a
    process-wide clock that restarts at ``time_index == 0``. Run on its own, returns the time the
    point started, in seconds since the clock started.
    """

    time_index: int
    min_start_time: float | None = None
    clock: AcquisitionClock | None = field(default=None, repr=False)

    def deadline(self, clock_starts: ClockStarts) -> float | None:
        # the first time point starts the clock, waits or not; without a clock, time point 0
        # starts the process-wide one again
        start = clock_starts(self.clock, self.clock is None and self.time_index == 0)
        return None if self.min_start_time is None else start + self.min_start_time

    def execute(self) -> float:
        deadline = self.deadline(_standalone_start)
        if deadline is not None:
            _wait_until(deadline, self)
        return time.monotonic() - _standalone_start(self.clock, False)

    def check(self, checks: EventChecks) -> None:
        if self.min_start_time is not None:
            checks.number(f"time point {self.time_index} start", self.min_start_time, 0.0)


def _standalone_start(clock: AcquisitionClock | None, restart: bool) -> float:
    """When ``clock`` (``None``: the process-wide one) started, for events run on their own."""
    clock = clock or _default_clock
    if restart:
        clock.restart()
    return clock.start_time()
