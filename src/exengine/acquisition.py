"""``Acquisition``: run a list of events as one stoppable, abortable acquisition with progress."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Optional

from .events.detector_events import ReadoutData
from .kernel.data_handler import DataHandler
from .kernel.ex_event_base import ExecutorEvent
from .kernel.ex_event_capabilities import Abortable, Stoppable
from .kernel.ex_future import ExecutionFuture
from .kernel.executor import ExecutionEngine


class _RunEvents(Stoppable, Abortable, ExecutorEvent):
    """Executes events one after another on one executor thread, checking for stop/abort between them."""

    def __init__(self, events: Sequence[ExecutorEvent]) -> None:
        super().__init__()
        self.events = list(events)
        self.executed = 0

    def execute(self) -> int:
        engine = ExecutionEngine.get_instance()
        for event in self.events:
            if self.is_stop_requested() or self.is_abort_requested():
                break
            engine.run_prioritized_events()  # prioritized submissions (e.g. from a GUI) interleave
            event.execute()
            self.executed += 1
        return self.executed


class Acquisition:
    """Runs the events of an acquisition in order, as one event, and reports progress.

    Events submitted with ``prioritize=True`` while it runs are executed between its steps; other
    submissions to the same thread wait until it ends.

    ``stop()`` ends it after the frame in hand; ``abort()`` also abandons a frame being waited for.
    Either way every frame already acquired is stored: :meth:`await_completion` finishes the data
    handler and waits for the storage.
    """

    def __init__(self, events: Sequence[ExecutorEvent], data_handler: Optional[DataHandler] = None) -> None:
        self._runner = _RunEvents(events)
        self.data_handler = data_handler
        self.total_frames = sum(
            (e.num_blocks or 0) for e in events if isinstance(e, ReadoutData)
        )
        self._future: Optional[ExecutionFuture] = None
        self._started_at: Optional[float] = None

    def start(self) -> ExecutionFuture:
        """Submit the acquisition to the engine; returns its future."""
        if self._future is not None:
            raise RuntimeError("This acquisition was already started")
        self._started_at = time.monotonic()
        self._future = ExecutionEngine.get_instance().submit(self._runner)  # type: ignore[assignment]
        return self._future  # type: ignore[return-value]

    @property
    def frames_done(self) -> int:
        """Frames stored so far (or acquired, without a data handler)."""
        if self.data_handler is not None:
            return self.data_handler.frames_stored
        return sum(1 for e in self._runner.events[: self._runner.executed] if isinstance(e, ReadoutData))

    def elapsed_s(self) -> float:
        """Seconds since :meth:`start`."""
        return 0.0 if self._started_at is None else time.monotonic() - self._started_at

    def time_left_s(self) -> Optional[float]:
        """Estimated seconds left, from the rate so far (None before the first frame)."""
        done = self.frames_done
        if not done or not self.total_frames:
            return None
        return max(self.elapsed_s() / done * (self.total_frames - done), 0.0)

    def is_running(self) -> bool:
        """True while events are still being executed."""
        return self._future is not None and not self._future.is_execution_complete()

    def stop(self) -> None:
        """Stop after the frame in hand."""
        self._runner._request_stop()
        self._stop_readouts()

    def abort(self) -> None:
        """Stop at once, abandoning frames not yet read out."""
        self._runner._request_abort()
        for event in self._runner.events:
            if isinstance(event, ReadoutData):
                event._request_abort()

    def _stop_readouts(self) -> None:
        for event in self._runner.events:
            if isinstance(event, ReadoutData) and event.num_blocks is None:
                event._request_stop()

    def await_completion(self, timeout: Optional[float] = None) -> None:
        """Wait for the events to end, then for every acquired frame to be stored; re-raise failures."""
        if self._future is None:
            raise RuntimeError("The acquisition has not been started")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._future.await_execution(timeout)
        finally:
            if self.data_handler is not None:
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                self.data_handler.await_completion(remaining)
