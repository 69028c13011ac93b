"""``DataHandler``: the thread-safe, memory-bounded bridge from data-producing events to storage.

A frame travels: producer ``put`` -> (processor thread ->) storage thread -> ``DataStorage.put`` ->
``DataStoredNotification``. Frames stay readable from memory until the storage holds them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from .data_coords import CoordinatesLike, DataCoordinates, as_coordinates
from .data_storage_base import DataStorage
from .executor import ExecutionEngine
from .notification_base import DataHandlerErrorNotification, DataStoredNotification, Notification

if TYPE_CHECKING:
    from .ex_future import ExecutionFuture

logger = logging.getLogger("exengine")

#: Default bytes of frames allowed in flight (accepted but not yet stored) before ``put`` blocks.
DEFAULT_MEMORY_BUDGET_BYTES = 2 * 1024**3
#: Longest the pipeline threads let a reader (``get``) go first before their next frame.
READER_PRIORITY_S = 0.05

Frame = tuple[DataCoordinates, np.ndarray, Any]
ProcessFunction = Callable[[DataCoordinates, np.ndarray, Any], Any]
Listener = Callable[[str, DataCoordinates], Any]

_FINISH = object()


class DataProcessor:
    """Wraps a processing function ``fn(coords, data, metadata)`` run on the handler's processing thread.

    ``fn`` returns one ``(coords, data, metadata)`` tuple, a list of them, or None to discard the frame
    (or to accumulate it for a later call). When outputs of one call share coordinates, a later output
    whose metadata names another channel than the earlier one (``metadata["Channel"]``, as Micro-Manager
    does) is stored at that ``channel`` coordinate: returning a derived image with
    ``metadata2["Channel"] = "Ratio"`` adds a "Ratio" channel. Outputs that still collide are a
    duplicate-coordinates error (the first is kept).
    """

    def __init__(self, process_function: ProcessFunction) -> None:
        if not callable(process_function):
            raise TypeError(f"DataProcessor needs a callable (coords, data, metadata), got {process_function!r}")
        self.process_function = process_function

    def process(self, coords: DataCoordinates, data: np.ndarray, metadata: Any) -> list[Frame]:
        """Run the function on one frame and return its outputs as a list of frames."""
        result = self.process_function(coords, data, metadata)
        if result is None:
            return []
        if isinstance(result, tuple) and len(result) == 3 and isinstance(result[0], Mapping):
            return [_as_frame(result, self.process_function)]
        if isinstance(result, list):
            return _separate_channels([_as_frame(item, self.process_function) for item in result])
        raise TypeError(
            f"Processor {_name(self.process_function)} returned {type(result).__name__}; expected a "
            f"(coords, data, metadata) tuple, a list of them, or None"
        )

    def __repr__(self) -> str:
        return f"DataProcessor({_name(self.process_function)})"


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _as_frame(item: Any, fn: Any) -> Frame:
    if not (isinstance(item, tuple) and len(item) == 3):
        raise TypeError(f"Processor {_name(fn)} returned {item!r}; each output must be (coords, data, metadata)")
    coords, data, metadata = item
    if not isinstance(data, np.ndarray):
        raise TypeError(f"Processor {_name(fn)} returned data of type {type(data).__name__}; expected a numpy array")
    return as_coordinates(coords), data, metadata


def _separate_channels(frames: list[Frame]) -> list[Frame]:
    """Move an output that repeats earlier coordinates to the channel its metadata names, when that
    differs from the channel of the output already there."""
    channels: dict[DataCoordinates, Any] = {}
    separated = []
    for coords, data, metadata in frames:
        named = metadata.get("Channel") if isinstance(metadata, Mapping) else None
        if coords in channels and isinstance(named, str) and named != channels[coords]:
            coords = DataCoordinates({**coords, "channel": named})
        channels.setdefault(coords, coords.get("channel", named))
        separated.append((coords, data, metadata))
    return separated


class DataHandlerError(RuntimeError):
    """Raised by ``put``/``finish``/``await_completion`` after processing or storage failed."""


class DataHandler:
    """Moves frames from producers through an optional processor into a ``DataStorage``.

    ``put`` never drops a frame: when ``memory_budget_bytes`` of frames are in flight it blocks until
    the storage catches up. Processing and storage run on their own threads. A failure in either is
    recorded, published as ``DataHandlerErrorNotification``, fails the producing event's future and
    is raised by the next ``put``, ``finish`` and ``await_completion``; accepted frames stay readable.
    """

    def __init__(
        self,
        storage: DataStorage,
        process_fn: Union[DataProcessor, ProcessFunction, None] = None,
        *,
        process_function: Union[DataProcessor, ProcessFunction, None] = None,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
        name: str = "DataHandler",
    ) -> None:
        if not isinstance(storage, DataStorage):
            raise TypeError(f"DataHandler needs a DataStorage (e.g. NDTiffStorage), got {type(storage).__name__}")
        if process_fn is not None and process_function is not None:
            raise TypeError("Pass the processor once: either process_fn or process_function")
        processor = process_fn if process_fn is not None else process_function
        if processor is not None and not isinstance(processor, DataProcessor):
            processor = DataProcessor(processor)
        if not isinstance(memory_budget_bytes, int) or memory_budget_bytes <= 0:
            raise ValueError(f"memory_budget_bytes must be a positive int, got {memory_budget_bytes!r}")
        self._storage = storage
        self._processor: Optional[DataProcessor] = processor
        self._budget = memory_budget_bytes
        self._cond = threading.Condition(threading.Lock())
        self._raw: dict[DataCoordinates, tuple[np.ndarray, Any]] = {}
        self._processed: dict[DataCoordinates, tuple[np.ndarray, Any]] = {}
        self._bytes_in_flight = 0
        self._error: Optional[BaseException] = None
        self._finish_requested = False
        self._finished = threading.Event()
        self._listeners: tuple[Listener, ...] = ()
        self._storage_lock = threading.Lock()
        # Readers (the display) go before the pipeline threads' next frame: those threads take their
        # locks back before a waiting reader wakes up, which kept it waiting for whole bursts of frames.
        self._readers_lock = threading.Lock()
        self._readers_waiting = 0
        self._no_readers = threading.Event()
        self._no_readers.set()
        self._accepted = 0
        self._stored = 0
        self._storage_queue: SimpleQueue[Any] = SimpleQueue()
        self._process_queue: Optional[SimpleQueue[Any]] = SimpleQueue() if processor is not None else None
        self._threads = [_start_thread(self._run_storage, f"{name}-storage")]
        if processor is not None:
            self._threads.append(_start_thread(self._run_processor, f"{name}-processor"))

    # ------------------------------------------------------------------ public
    @property
    def storage(self) -> DataStorage:
        """The storage frames end up in."""
        return self._storage

    @property
    def has_processor(self) -> bool:
        """True when a processor is attached."""
        return self._processor is not None

    @property
    def error(self) -> Optional[BaseException]:
        """The first processing or storage failure, if any."""
        return self._error

    @property
    def bytes_in_flight(self) -> int:
        """Bytes of frames accepted but not yet stored."""
        return self._bytes_in_flight

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

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(stage, coords)`` as frames move: stage is 'acquired', 'processed', 'stored',
        'failed' or 'finished' (coords ``None``). Called on pipeline threads: keep it quick."""
        with self._cond:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        with self._cond:
            self._listeners = tuple(existing for existing in self._listeners if existing != listener)

    def put(
        self,
        coords: CoordinatesLike,
        data: np.ndarray,
        metadata: Any,
        execution_future: Optional[ExecutionFuture] = None,
        timeout: Optional[float] = None,
    ) -> None:
        """Accept one frame; blocks while the memory budget is full (``TimeoutError`` after ``timeout``)."""
        coords = as_coordinates(coords)
        if not isinstance(data, np.ndarray):
            raise TypeError(f"Data at {dict(coords)} must be a numpy array, got {type(data).__name__}")
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
            self._bytes_in_flight += nbytes
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
        processed: Optional[bool] = None,
    ) -> Optional[Any]:
        """Return ``(data, metadata)`` (or the one asked for) from memory while in flight, else from storage.

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
                frame = self._read_from_storage(coords)
        data, metadata = frame
        if return_data and return_metadata:
            return data, metadata
        if return_data:
            return data
        return metadata if return_metadata else None

    def finish(self) -> None:
        """Signal that no more frames will be put; raises a recorded failure. Idempotent."""
        self._request_finish()
        self._raise_if_failed()

    def await_completion(self, timeout: Optional[float] = None) -> None:
        """Finish (if not yet), then block until every accepted frame is stored and the storage finished."""
        self._request_finish()
        if not self._finished.wait(timeout):
            raise TimeoutError(
                f"Storage did not finish within {timeout} s ({self._stored} of {self._accepted} frames stored)"
            )
        self._raise_if_failed()

    def is_finished(self) -> bool:
        """True once the storage holds every frame and has been finished."""
        return self._finished.is_set()

    # --------------------------------------------------------------- internals
    def _request_finish(self) -> None:
        with self._cond:
            if self._finish_requested:
                return
            self._finish_requested = True
            self._cond.notify_all()
        (self._process_queue or self._storage_queue).put(_FINISH)

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
                raise KeyError(f"No data at {dict(coords)} in memory or in {type(self._storage).__name__}")
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

    def _notify_listeners(self, stage: str, coords: Optional[DataCoordinates]) -> None:
        for listener in self._listeners:
            try:
                listener(stage, coords)  # type: ignore[arg-type]
            except Exception:  # a listener never breaks the pipeline
                logger.exception("DataHandler listener %r raised", listener)

    def _record_failure(self, error: BaseException, future: Optional[ExecutionFuture], coords: DataCoordinates) -> None:
        logger.error("DataHandler failed at %s: %r", dict(coords), error)
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()
        if future is not None:
            future._fail(error)
        _publish(DataHandlerErrorNotification(error))
        self._notify_listeners("failed", coords)

    def _run_processor(self) -> None:
        assert self._process_queue is not None and self._processor is not None
        get = self._process_queue.get
        process = self._processor.process
        while True:
            item = get()
            if item is _FINISH:
                self._storage_queue.put(_FINISH)
                return
            coords, data, metadata, future = item
            if self._listeners:
                self._notify_listeners("acquired", coords)
            if self._readers_waiting:
                self._no_readers.wait(READER_PRIORITY_S)
            try:
                outputs = process(coords, data, metadata)
            except Exception as e:  # recorded, published and raised to the producer
                self._record_failure(e, future, coords)
                continue
            with self._cond:
                self._raw.pop(coords, None)
                self._bytes_in_flight -= data.nbytes
                for out_coords, out_data, out_metadata in outputs:
                    self._processed[out_coords] = (out_data, out_metadata)
                    self._bytes_in_flight += out_data.nbytes
                self._cond.notify_all()
            for out_coords, out_data, out_metadata in outputs:
                self._storage_queue.put((out_coords, out_data, out_metadata, future))
                if future is not None:
                    future._notify_data(out_coords, out_data, out_metadata, processed=True)
                if self._listeners:
                    self._notify_listeners("processed", out_coords)

    def _run_storage(self) -> None:
        get = self._storage_queue.get
        storage = self._storage
        in_memory = self._processed if self._processor is not None else self._raw
        while True:
            item = get()
            if item is _FINISH:
                self._finish_storage()
                return
            coords, data, metadata, future = item
            if self._processor is None and self._listeners:
                self._notify_listeners("acquired", coords)
            if self._readers_waiting:
                self._no_readers.wait(READER_PRIORITY_S)
            try:
                with self._storage_lock:
                    storage.put(coords, data, metadata)
            except Exception as e:  # recorded, published and raised to the producer
                self._record_failure(e, future, coords)
                continue
            with self._cond:
                in_memory.pop(coords, None)
                self._bytes_in_flight -= data.nbytes
                self._stored += 1
                self._cond.notify_all()
            if future is not None:
                future._notify_data(coords, data, metadata, stored=True)
            engine = ExecutionEngine._instance
            if engine is not None and engine.has_subscribers:
                engine.publish_notification(DataStoredNotification(coords))
            if self._listeners:
                self._notify_listeners("stored", coords)

    def _finish_storage(self) -> None:
        try:
            with self._storage_lock:
                self._storage.finish()
        except Exception as e:  # recorded and raised by await_completion
            logger.error("Finishing %s failed: %r", type(self._storage).__name__, e)
            with self._cond:
                if self._error is None:
                    self._error = e
            _publish(DataHandlerErrorNotification(e))
        finally:
            self._finished.set()
            self._notify_listeners("finished", None)


def _publish(notification: Notification) -> None:
    engine = ExecutionEngine._instance
    if engine is not None:
        engine.publish_notification(notification)


def _start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread._exengine_spawned = False  # type: ignore[attr-defined] - pipeline threads reroute device calls
    thread.start()
    return thread
