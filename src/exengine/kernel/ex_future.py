"""``ExecutionFuture``: the handle returned by ``ExecutionEngine.submit``."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .data_coords import CoordinatesLike, DataCoordinates, as_coordinates
from .ex_event_capabilities import Abortable, DataProducing, Stoppable
from .frame_stage import FrameStage
from .notification_base import Notification

if TYPE_CHECKING:
    from .ex_event_base import ExecutorEvent
    from .executor import ExecutionEngine

ACQUIRED, PROCESSED, STORED = FrameStage.ACQUIRED, FrameStage.PROCESSED, FrameStage.STORED


class _StageState:
    """What one pipeline stage (acquired, processed or stored) has seen for one future."""

    __slots__ = ("awaited", "catchers", "held", "seen")

    def __init__(self) -> None:
        self.seen: set[DataCoordinates] = set()
        self.awaited: dict[DataCoordinates, int] = {}
        self.held: dict[DataCoordinates, tuple[Any, Any]] = {}
        self.catchers: list[list[tuple[DataCoordinates, Any, Any]]] = []


class ExecutionFuture:
    """Tracks one submitted event: its completion, its notifications and the data it produces."""

    __slots__ = (
        "_cond",
        "_done",
        "_engine",
        "_exception",
        "_notifications",
        "_pending_failure",
        "_result",
        "_stages",
        "event",
    )

    def __init__(self, event: ExecutorEvent, engine: ExecutionEngine | None = None) -> None:
        if engine is None:
            from .executor import ExecutionEngine

            engine = ExecutionEngine.get_instance()
        self.event = event
        self._engine = engine
        self._cond = threading.Condition(threading.Lock())
        self._done = False
        self._result: Any = None
        self._exception: BaseException | None = None
        self._pending_failure: BaseException | None = None
        self._notifications: list[Notification] = []
        self._stages: dict[FrameStage, _StageState] | None = None

    # ---------------------------------------------------------------- completion
    def await_execution(self, timeout: float | None = None) -> Any:
        """Block until the event has run; return its result or re-raise its exception.

        Raises ``TimeoutError`` when ``timeout`` seconds pass first.
        """
        with self._cond:
            if not self._done and not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError(f"{self._describe()} did not finish within {timeout} s")
            exception = self._exception
        if exception is not None:
            raise exception
        return self._result

    def is_execution_complete(self) -> bool:
        """True once the event has finished (successfully or not)."""
        return self._done

    def _notify_execution_complete(self, result: Any, exception: BaseException | None) -> None:
        with self._cond:
            if exception is None:
                exception = self._pending_failure
            self._result = result
            self._exception = exception
            self._done = True
            self._cond.notify_all()

    def _fail(self, exception: BaseException) -> None:
        """Fail this future because a later pipeline stage (processing, storage) failed."""
        with self._cond:
            if self._done:
                if self._exception is None:
                    self._exception = exception
            elif self._pending_failure is None:
                self._pending_failure = exception
            self._cond.notify_all()

    # ------------------------------------------------------------- notifications
    def _notify_of_event_notification(self, notification: Notification) -> None:
        with self._cond:
            self._notifications.append(notification)
            self._cond.notify_all()

    def await_notification(
        self, notification: Notification | type[Notification], timeout: float | None = None
    ) -> Notification:
        """Block until the event publishes ``notification`` (a class, or a specific instance);
        return it.

        Returns at once when it was already published; raises ``TimeoutError`` after ``timeout`` s.
        """
        if isinstance(notification, type):
            if not issubclass(notification, Notification):
                raise TypeError(
                    "await_notification takes a Notification class or instance, got "
                    f"{notification!r}"
                )

            def find() -> Notification | None:
                for received in self._notifications:
                    if isinstance(received, notification):
                        return received
                return None
        elif isinstance(notification, Notification):

            def find() -> Notification | None:
                return notification if any(n is notification for n in self._notifications) else None
        else:
            raise TypeError(
                f"await_notification takes a Notification class or instance, got {notification!r}"
            )

        found: list[Notification] = []

        def ready() -> bool:
            hit = find()
            if hit is not None:
                found.append(hit)
                return True
            return False

        with self._cond:
            if not self._cond.wait_for(ready, timeout):
                name = getattr(notification, "__name__", type(notification).__name__)
                raise TimeoutError(f"{self._describe()} published no {name} within {timeout} s")
        return found[0]

    # ------------------------------------------------------------ stop and abort
    def stop(self, await_completion: bool = False) -> None:
        """Ask a ``Stoppable`` event to stop; optionally wait until it has."""
        if not isinstance(self.event, Stoppable):
            raise TypeError(
                f"{type(self.event).__name__} is not Stoppable, so it cannot be stopped"
            )
        self.event._request_stop()
        if await_completion:
            self._await_end()

    def abort(self, await_completion: bool = False) -> None:
        """Abort an ``Abortable`` event at once; optionally wait until it has ended."""
        if not isinstance(self.event, Abortable):
            raise TypeError(
                f"{type(self.event).__name__} is not Abortable, so it cannot be aborted"
            )
        self.event._request_abort()
        if await_completion:
            self._await_end()

    def _await_end(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._done)

    # ---------------------------------------------------------------------- data
    def _stage_states(self) -> dict[FrameStage, _StageState]:
        stages = self._stages
        if stages is None:
            stages = self._stages = {
                stage: _StageState() for stage in (ACQUIRED, PROCESSED, STORED)
            }
        return stages

    def _notify_data(
        self,
        coords: DataCoordinates,
        data: Any,
        metadata: Any,
        processed: bool = False,
        stored: bool = False,
    ) -> None:
        """Called by the data pipeline when a frame reaches a stage."""
        stage = STORED if stored else PROCESSED if processed else ACQUIRED
        with self._cond:
            state = self._stage_states()[stage]
            state.seen.add(coords)
            if coords in state.awaited or getattr(self.event, "data_handler", None) is None:
                state.held[coords] = (data, metadata)
            if state.catchers:
                for catcher in state.catchers:
                    catcher.append((coords, data, metadata))
                state.catchers.clear()
            self._cond.notify_all()

    def await_data(
        self,
        coordinates: CoordinatesLike | list[CoordinatesLike] | tuple | None = None,
        return_data: bool = True,
        return_metadata: bool = False,
        processed: bool = False,
        stored: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Block until the frame(s) at ``coordinates`` reach a stage; optionally return
        data/metadata.

        ``coordinates`` is one ``DataCoordinates``/dict, a list of them, or ``None`` for the next
        frame. The stage is acquisition, or processing with ``processed=True``, or storage with
        ``stored=True``. Returns ``(data, metadata)`` when both are asked for, else the one asked
        for (lists of them for a list of coordinates).
        """
        if not isinstance(self.event, DataProducing):
            raise TypeError(f"{type(self.event).__name__} does not produce data")
        handler = self.event.data_handler
        stage = STORED if stored else PROCESSED if processed else ACQUIRED
        if stage == PROCESSED and (handler is None or not handler.has_processor):
            stage = ACQUIRED
        deadline = None if timeout is None else time.monotonic() + timeout
        if coordinates is None:
            frames = [self._await_next(stage, deadline, timeout)]
            return _package(frames, return_data, return_metadata, single=True)

        single = isinstance(coordinates, Mapping)
        wanted = (
            [as_coordinates(coordinates)] if single else [as_coordinates(c) for c in coordinates]
        )  # type: ignore[union-attr]
        if stage == ACQUIRED:
            iterator = getattr(self.event, "data_coordinate_iterator", None)
            for coords in wanted:
                if iterator is not None and iterator.might_produce_coordinates(coords) is False:
                    raise ValueError(
                        f"{self._describe()} will never produce data at {dict(coords)}"
                    )
        results: dict[int, tuple[DataCoordinates, Any, Any]] = {}
        to_read: list[tuple[int, DataCoordinates]] = []
        registered: list[DataCoordinates] = []
        with self._cond:
            state = self._stage_states()[stage]
            for i, coords in enumerate(wanted):
                if coords in state.held:
                    results[i] = (coords, *state.held[coords])
                elif coords in state.seen:
                    to_read.append((i, coords))
                else:
                    state.awaited[coords] = state.awaited.get(coords, 0) + 1
                    registered.append(coords)
        try:
            for i, coords in to_read:
                if handler is None:
                    raise KeyError(
                        f"Data at {dict(coords)} is no longer held in memory and there is no data "
                        "handler"
                    )
                data, metadata = handler.get(
                    coords, True, True, processed=None if stage == ACQUIRED else True
                )
                results[i] = (coords, data, metadata)
            with self._cond:
                for i, coords in enumerate(wanted):
                    if i in results:
                        continue
                    self._wait_for_coords(state, coords, stage, deadline, timeout)
                    results[i] = (coords, *state.held[coords])
        finally:
            with self._cond:
                for coords in registered:
                    count = state.awaited[coords] - 1
                    if count <= 0:
                        del state.awaited[coords]
                        state.held.pop(coords, None)
                    else:
                        state.awaited[coords] = count
        frames = [results[i] for i in range(len(wanted))]
        return _package(frames, return_data, return_metadata, single=single)

    def _wait_for_coords(
        self,
        state: _StageState,
        coords: DataCoordinates,
        stage: FrameStage,
        deadline: float | None,
        timeout: float | None,
    ) -> None:
        while coords not in state.held:
            self._raise_if_cannot_arrive(coords, stage, state)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(
                    f"Data at {dict(coords)} was not {stage} within {timeout} s "
                    f"({self._describe()})"
                )
            self._cond.wait(remaining)

    def _raise_if_cannot_arrive(
        self, coords: DataCoordinates, stage: FrameStage, state: _StageState
    ) -> None:
        if self._pending_failure is not None:
            raise self._pending_failure
        if self._done and self._exception is not None:
            raise self._exception
        if self._done and stage == ACQUIRED and coords not in state.seen:
            raise KeyError(f"{self._describe()} finished without producing data at {dict(coords)}")

    def _await_next(
        self, stage: FrameStage, deadline: float | None, timeout: float | None
    ) -> tuple:
        catcher: list[tuple[DataCoordinates, Any, Any]] = []
        with self._cond:
            state = self._stage_states()[stage]
            state.catchers.append(catcher)
            try:
                while not catcher:
                    if self._pending_failure is not None:
                        raise self._pending_failure
                    if self._done and (self._exception is not None or stage == ACQUIRED):
                        if self._exception is not None:
                            raise self._exception
                        raise KeyError(f"{self._describe()} finished without producing more data")
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"No data was {stage} within {timeout} s")
                    self._cond.wait(remaining)
            finally:
                if catcher in state.catchers:
                    state.catchers.remove(catcher)
        return catcher[0]

    def _describe(self) -> str:
        return f"Event {type(self.event).__name__}"

    def __repr__(self) -> str:
        state = "done" if self._done else "pending"
        return f"<ExecutionFuture {type(self.event).__name__} {state}>"


def _package(
    frames: list[tuple[Any, Any, Any]], return_data: bool, return_metadata: bool, single: bool
) -> Any:
    if single:
        _, data, metadata = frames[0]
        if return_data and return_metadata:
            return data, metadata
        if return_data:
            return data
        return metadata if return_metadata else None
    datas = [f[1] for f in frames]
    metadatas = [f[2] for f in frames]
    if return_data and return_metadata:
        return datas, metadatas
    if return_data:
        return datas
    return metadatas if return_metadata else None
