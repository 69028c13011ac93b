"""``DataHandler``: the thread-safe, memory-bounded bridge from data-producing events to storage.

A frame travels: producer ``put`` -> (processor thread ->) storage thread -> ``DataStorage.put`` ->
``DataStoredNotification``. Frames stay readable from memory until the storage holds them, and the
newest few stored frames a while longer (what a display reads next).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

import numpy as np

from .data_coords import CoordinatesLike, DataCoordinates, as_coordinates
from .data_pipeline import FINISH, DataPipeline, start_thread
from .data_processor import DataProcessor, ProcessFunction
from .data_storage_base import DataStorage, PlannedData
from .executor import ExecutionEngine
from .frame_stage import FrameStage
from .notification_base import DataHandlerErrorNotification, Notification

if TYPE_CHECKING:
    from .ex_future import ExecutionFuture

logger = logging.getLogger("exengine")

#: Default bytes of frames allowed in flight (accepted but not yet stored) before ``put`` blocks.
DEFAULT_MEMORY_BUDGET_BYTES = 2 * 1024**3
Listener = Callable[[FrameStage, DataCoordinates | None], Any]


class DataHandlerError(RuntimeError):
    """Raised by ``put``/``finish``/``await_completion`` after processing or storage failed."""


class DataHandler(DataPipeline):
    """Moves frames from producers through an optional processor into a ``DataStorage``.

    ``put`` never drops a frame: when ``memory_budget_bytes`` of frames are in flight it blocks
    until the storage catches up. Frames in flight are the accepted frames not yet processed (also
    while a cluster processes them) plus the processor's outputs not yet stored; when the outputs
    fill the budget the processor waits for the storage too, so in flight never exceeds the budget
    plus one frame's outputs (a single frame larger than the budget still passes; with a pipelined
    processor such as ``DaskProcessor``, one batch's outputs, a batch being at most 1/16 of the
    budget or one frame). Processing and storage run on their own threads. When the handler
    finishes, the processor's ``flush`` emits what it still holds. A failure in either stage, any
    ``BaseException`` (``SystemExit`` and ``KeyboardInterrupt`` raised by a processor included), is
    recorded, published as ``DataHandlerErrorNotification``, fails the producing event's future and
    is raised by the next ``put``, ``finish`` and ``await_completion``; accepted frames stay
    readable. Exceptions that are not ``Exception`` subclasses are recorded wrapped in a
    ``DataHandlerError``, so they never stop the caller's program.
    """

    def __init__(
        self,
        storage: DataStorage,
        process_fn: DataProcessor | ProcessFunction | None = None,
        *,
        process_function: DataProcessor | ProcessFunction | None = None,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
        name: str = "DataHandler",
    ) -> None:
        if not isinstance(storage, DataStorage):
            raise TypeError(
                "DataHandler needs a DataStorage (e.g. NDTiffStorage), got "
                f"{type(storage).__name__}"
            )
        if process_fn is not None and process_function is not None:
            raise TypeError("Pass the processor once: either process_fn or process_function")
        processor = process_fn if process_fn is not None else process_function
        if processor is not None and not isinstance(processor, DataProcessor):
            processor = DataProcessor(processor)
        if not isinstance(memory_budget_bytes, int) or memory_budget_bytes <= 0:
            raise ValueError(
                f"memory_budget_bytes must be a positive int, got {memory_budget_bytes!r}"
            )
        self._storage = storage
        self._processor: DataProcessor | None = processor
        self._budget = memory_budget_bytes
        self._cond = threading.Condition(threading.Lock())
        self._raw: dict[DataCoordinates, tuple[np.ndarray, Any]] = {}
        self._processed: dict[DataCoordinates, tuple[np.ndarray, Any]] = {}
        self._recent: OrderedDict[DataCoordinates, tuple[np.ndarray, Any]] = OrderedDict()
        self._recent_bytes = 0
        self._kept_raw: OrderedDict[DataCoordinates, tuple[np.ndarray, Any]] = OrderedDict()
        self._keep_raw = 0
        self._bytes_in_flight = 0
        self._output_bytes = 0  # processor outputs waiting for the storage
        self._peak_bytes = 0
        self._error: BaseException | None = None
        self._finish_requested = False
        self._finished = threading.Event()
        self._planned: PlannedData | None = None
        self._annotations: dict[str, Any] = {}
        self._listeners: tuple[Listener, ...] = ()
        self._storage_lock = threading.Lock()
        # Readers (the display) go before the pipeline threads' next frame: those threads take their
        # locks back before a waiting reader wakes up, which kept it waiting for whole
        # bursts of frames.
        self._readers_lock = threading.Lock()
        self._readers_waiting = 0
        self._no_readers = threading.Event()
        self._no_readers.set()
        self._accepted = 0
        self._stored = 0
        self._skipped: frozenset[DataCoordinates] = frozenset()
        self._let_go = 0
        self._storage_queue: SimpleQueue[Any] = SimpleQueue()
        self._process_queue: SimpleQueue[Any] | None = (
            SimpleQueue() if processor is not None else None
        )
        self._threads = [start_thread(self._run_storage, f"{name}-storage")]
        if processor is not None and processor.pipelined:
            max_in_flight = int(getattr(processor, "max_in_flight", 1))
            self._slots = threading.BoundedSemaphore(max(1, max_in_flight))
            self._pending: SimpleQueue[Any] = SimpleQueue()
            self._threads.append(start_thread(self._run_submitter, f"{name}-processor"))
            self._threads.append(start_thread(self._run_collector, f"{name}-collector"))
        elif processor is not None:
            self._threads.append(start_thread(self._run_processor, f"{name}-processor"))

    # ------------------------------------------------------------------ public
    @property
    def storage(self) -> DataStorage:
        """The storage frames end up in."""
        return self._storage

    @property
    def processor(self) -> DataProcessor | None:
        """The attached processor, if any."""
        return self._processor

    @property
    def has_processor(self) -> bool:
        """True when a processor is attached."""
        return self._processor is not None

    @property
    def error(self) -> BaseException | None:
        """The first processing or storage failure, if any."""
        return self._error

    @property
    def bytes_in_flight(self) -> int:
        """Bytes of frames accepted, or produced by the processor, and not yet stored."""
        return self._bytes_in_flight

    @property
    def peak_bytes_in_flight(self) -> int:
        """The most bytes that were ever in flight at once."""
        return self._peak_bytes

    @property
    def memory_budget_bytes(self) -> int:
        """The most bytes of frames in flight before ``put`` blocks."""
        return self._budget

    @property
    def frames_accepted(self) -> int:
        """Number of frames accepted by ``put``."""
        return self._accepted

    @property
    def frames_stored(self) -> int:
        """Number of frames the storage has accepted."""
        return self._stored

    @property
    def planned(self) -> PlannedData | None:
        """What the acquisition told the handler it will store (see :meth:`prepare`)."""
        return self._planned

    def prepare(self, planned: PlannedData) -> None:
        """Before the first frame: tell the storage what will come (``DataStorage.prepare``) and
        keep it for sinks (:attr:`planned`)."""
        with self._cond:
            if self._accepted:
                raise RuntimeError("prepare() comes before the first frame")
            self._planned = planned
        with self._storage_lock:
            self._storage.prepare(planned)

    def annotate(self, metadata: Mapping[str, Any]) -> None:
        """Add ``metadata`` (what was learned while acquiring) to the dataset's summary when the
        storage is finished (``DataStorage.annotate``)."""
        with self._cond:
            self._annotations.update(metadata)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(stage, coords)`` as frames move: ``stage`` is a :class:`FrameStage`
        (``FINISHED`` with coords ``None``). Called on pipeline threads: keep it quick."""
        with self._cond:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        with self._cond:
            self._listeners = tuple(
                existing for existing in self._listeners if existing != listener
            )

    def put(
        self,
        coords: CoordinatesLike,
        data: np.ndarray,
        metadata: Any,
        execution_future: ExecutionFuture | None = None,
        timeout: float | None = None,
    ) -> None:
        """Accept one frame; blocks while the memory budget is full (``TimeoutError`` after
        ``timeout``)."""
        coords = as_coordinates(coords)
        if not isinstance(data, np.ndarray):
            raise TypeError(
                f"Data at {dict(coords)} must be a numpy array, got {type(data).__name__}"
            )
        if coords in self._skipped:
            self._let_go += 1
            return
        nbytes = data.nbytes
        with self._cond:
            self._raise_if_unusable()
            if coords in self._raw or coords in self._processed:
                raise ValueError(f"Data at {dict(coords)} was already put and is not stored yet")
            if self._bytes_in_flight and self._bytes_in_flight + nbytes > self._budget:
                deadline = None if timeout is None else time.monotonic() + timeout
                while self._bytes_in_flight and self._bytes_in_flight + nbytes > self._budget:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(
                            f"No room for data at {dict(coords)} within {timeout} s: "
                            f"{self._bytes_in_flight} of {self._budget} bytes in flight"
                        )
                    self._cond.wait(remaining)
                    self._raise_if_unusable()
            self._add_bytes(nbytes)
            self._raw[coords] = (data, metadata)
            self._accepted += 1
        item = (coords, data, metadata, execution_future)
        (self._process_queue or self._storage_queue).put(item)
        if execution_future is not None:
            execution_future._notify_data(coords, data, metadata)

    def get(
        self,
        coords: CoordinatesLike,
        return_data: bool = True,
        return_metadata: bool = True,
        processed: bool | None = None,
    ) -> Any | None:
        """Return ``(data, metadata)`` (or the one asked for) from memory while in flight, else from
        storage.

        ``processed=False`` prefers the raw frame, ``True`` the processed one, ``None`` either. With
        ``processed=True``, a frame still waiting for the processor gives ``None`` (as in ExEngine).
        Raises ``KeyError`` naming the coordinates when there is no such frame.
        """
        coords = as_coordinates(coords)
        with self._reading():
            with self._cond:
                if processed is False:
                    frame = self._raw.get(coords) or self._processed.get(coords)
                else:
                    frame = self._processed.get(coords)
                    if frame is None and coords in self._raw:
                        if processed:
                            return None
                        frame = self._raw[coords]
                if frame is None:
                    frame = self._recent.get(coords) or self._kept_raw.get(coords)
            if frame is None:
                frame = self._read_from_storage(coords)
        data, metadata = frame
        if return_data and return_metadata:
            return data, metadata
        if return_data:
            return data
        return metadata if return_metadata else None

    @property
    def frames_let_go(self) -> int:
        """Frames put at coordinates stored already (see :meth:`skip_stored`), not stored again."""
        return self._let_go

    def skip_stored(self, coordinates: Iterable[CoordinatesLike]) -> None:
        """Frames at ``coordinates`` are stored already (a resumed dataset): a ``put`` there lets
        the frame go instead of storing it twice."""
        added = (
            coordinates
            if isinstance(coordinates, frozenset)  # of coordinates already: not copied again
            else frozenset(as_coordinates(c) for c in coordinates)
        )
        self._skipped = self._skipped | added if self._skipped else added

    def keep_raw_frames(self, count: int) -> None:
        """Keep the newest ``count`` frames that the processor turned into other frames (a
        projection, an average) readable with ``get`` until the handler finishes: a plan that
        reads back what it acquired calls this first, so that its reads work whatever the
        processors do."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be a whole number >= 0, got {count!r}")
        with self._cond:
            self._keep_raw = max(self._keep_raw, count)

    def finish(self) -> None:
        """Signal that no more frames will be put; raises a recorded failure. Idempotent."""
        self._request_finish()
        self._raise_if_failed()

    def await_completion(self, timeout: float | None = None) -> None:
        """Finish (if not yet), then block until every accepted frame is stored and the storage
        finished."""
        self._request_finish()
        if not self._finished.wait(timeout):
            raise TimeoutError(
                f"Storage did not finish within {timeout} s ({self._stored} of {self._accepted} "
                "frames stored)"
            )
        self._raise_if_failed()

    def is_finished(self) -> bool:
        """True once the storage holds every frame and has been finished."""
        return self._finished.is_set()

    # --------------------------------------------------------------- internals
    def _add_bytes(self, nbytes: int) -> None:
        """Count ``nbytes`` more in flight; call with ``self._cond`` held."""
        self._bytes_in_flight += nbytes
        if self._bytes_in_flight > self._peak_bytes:
            self._peak_bytes = self._bytes_in_flight

    def _request_finish(self) -> None:
        with self._cond:
            if self._finish_requested:
                return
            self._finish_requested = True
            self._cond.notify_all()
        (self._process_queue or self._storage_queue).put(FINISH)

    def _raise_if_unusable(self) -> None:
        self._raise_if_failed()
        if self._finish_requested:
            raise RuntimeError("This DataHandler is finished; create a new one for more data")

    def _raise_if_failed(self) -> None:
        error = self._error
        if error is not None:
            raise DataHandlerError(f"Processing or storing data failed: {error!r}") from error

    def _read_from_storage(self, coords: DataCoordinates) -> tuple[np.ndarray, Any]:
        with self._storage_lock:
            if coords not in self._storage:
                processed = (
                    f"; the processor {self._processor!r} may have turned it into other frames "
                    "(a plan that reads back what it acquired calls keep_raw_frames first)"
                    if self._processor is not None
                    else ""
                )
                raise KeyError(
                    f"No data at {dict(coords)} in memory or in "
                    f"{type(self._storage).__name__}{processed}"
                )
            return self._storage.get_data(coords), self._storage.get_metadata(coords)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Mark a reader as waiting, so that the pipeline threads let it go first."""
        with self._readers_lock:
            self._readers_waiting += 1
            self._no_readers.clear()
        try:
            yield
        finally:
            with self._readers_lock:
                self._readers_waiting -= 1
                if not self._readers_waiting:
                    self._no_readers.set()

    def _notify_listeners(self, stage: FrameStage, coords: DataCoordinates | None) -> None:
        for listener in self._listeners:
            try:
                listener(stage, coords)
            except Exception:  # a listener never breaks the pipeline
                logger.exception("DataHandler listener %r raised", listener)

    def _record_failure(
        self,
        error: BaseException,
        future: ExecutionFuture | None,
        coords: DataCoordinates | None,
        stage: str = "processing",
    ) -> None:
        where = f"at {dict(coords)}" if coords is not None else "when finishing"
        # SystemExit, KeyboardInterrupt, ...: never re-raised as such
        if not isinstance(error, Exception):
            wrapped = DataHandlerError(
                f"The {stage} {where} raised {type(error).__name__}: {error!r}"
            )
            wrapped.__cause__ = error
            error = wrapped
        logger.error("DataHandler %s failed %s: %r", stage, where, error)
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()
        if future is not None:
            future._fail(error)
        _publish(DataHandlerErrorNotification(error))
        if coords is not None:
            self._notify_listeners(FrameStage.FAILED, coords)

    def _finish_storage(self) -> None:
        try:
            with self._storage_lock:
                if self._annotations:
                    self._storage.annotate(dict(self._annotations))
                self._storage.finish()
        except BaseException as e:  # recorded and raised by await_completion
            logger.error("Finishing %s failed: %r", type(self._storage).__name__, e)
            if not isinstance(e, Exception):
                wrapped = DataHandlerError(
                    f"Finishing the storage raised {type(e).__name__}: {e!r}"
                )
                wrapped.__cause__ = e
                e = wrapped
            with self._cond:
                if self._error is None:
                    self._error = e
            _publish(DataHandlerErrorNotification(e))
        finally:
            with self._cond:  # the storage holds every frame: reads go there from now on
                self._recent.clear()
                self._recent_bytes = 0
                self._kept_raw.clear()
            self._finished.set()
            self._notify_listeners(FrameStage.FINISHED, None)


def _publish(notification: Notification) -> None:
    engine = ExecutionEngine._instance
    if engine is not None:
        engine.publish_notification(notification)
