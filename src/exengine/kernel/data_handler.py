"""``DataHandler``: the thread-safe, memory-bounded bridge from data-producing events to storage.

A frame travels: producer ``put`` -> (processor thread ->) storage thread -> ``DataStorage.put`` ->
``DataStoredNotification``. Frames stay readable from memory until the storage holds them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

import numpy as np

from .data_coords import CoordinatesLike, DataCoordinates, as_coordinates
from .data_storage_base import DataStorage, PlannedData
from .executor import ExecutionEngine
from .frame_stage import FrameStage
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
Listener = Callable[[FrameStage, DataCoordinates | None], Any]

_FINISH = object()


class DataProcessor:
    """Wraps a processing function ``fn(coords, data, metadata)`` run on the handler's processing
    thread.

    ``fn`` returns one ``(coords, data, metadata)`` tuple, a list of them, or None to discard the
    frame (or to accumulate it for a later call). When outputs of one call share coordinates, a
    later output whose metadata names another channel than the earlier one (``metadata["Channel"]``,
    as Micro-Manager does) is stored at that ``channel`` coordinate: returning a derived image with
    ``metadata2["Channel"] = "Ratio"`` adds a "Ratio" channel. Outputs that still collide are a
    duplicate-coordinates error (the first is kept).

    ``flush`` (optional) is called with no arguments when the handler finishes and returns what the
    processor still holds, in the same forms as ``fn``: an accumulating processor emits its partial
    results there (marked ``metadata["Partial"] = True``) instead of losing them silently.

    ``stateful`` says whether ``fn`` keeps state between frames (accumulates, averages, counts).
    Stateless processors may run on many workers at once (see :mod:`exengine.dask_processing`);
    stateful ones always see frames one at a time, in acquisition order. Left undeclared (``None``)
    a processor is treated as stateful, the safe choice; ``stateful_declared`` tells the two apart.
    """

    #: False for processors that compute on the handler's thread. True for ones that hand frames to
    #: other workers (see ``DaskProcessor``): they have ``max_in_flight`` (frames handed over at
    #: once) and ``max_batch`` (frames per hand-over), ``submit_batch(frames)`` returning a handle
    #: whose ``result()`` gives, for each frame, its outputs or the exception it raised, and
    #: ``submit_flush()`` returning a handle whose ``result()`` gives the flushed outputs.
    pipelined: bool = False

    def __init__(
        self,
        process_function: ProcessFunction,
        flush: Callable[[], Any] | None = None,
        *,
        stateful: bool | None = None,
    ) -> None:
        if not callable(process_function):
            raise TypeError(
                f"DataProcessor needs a callable (coords, data, metadata), got {process_function!r}"
            )
        if flush is not None and not callable(flush):
            raise TypeError(
                f"DataProcessor flush must be a callable taking no arguments, got {flush!r}"
            )
        if stateful is not None and not isinstance(stateful, bool):
            raise TypeError(f"DataProcessor stateful must be True, False or None, got {stateful!r}")
        self.process_function = process_function
        self.flush_function = flush
        self.stateful_declared = stateful is not None
        self.stateful = True if stateful is None else stateful

    def process(self, coords: DataCoordinates, data: np.ndarray, metadata: Any) -> list[Frame]:
        """Run the function on one frame and return its outputs as a list of frames."""
        return self._outputs(self.process_function(coords, data, metadata))

    def flush(self) -> list[Frame]:
        """Return (and forget) what the processor still holds; called once when the handler
        finishes."""
        if self.flush_function is None:
            return []
        return self._outputs(self.flush_function())

    def close(self) -> None:
        """Release what the processor holds beyond frames (a cluster connection); called after
        ``flush``."""

    def check_plan(
        self, axes_sizes: Mapping[str, int | None], frame_shape: tuple[int, ...] | None = None
    ) -> list[str]:
        """Raise ``ValueError`` (one line) when a setting cannot fit a plan of ``axes_sizes`` (axis
        -> number of values, ``None`` when unknown); return notes on what will happen, e.g. a
        partial last average."""
        return []

    def derive_from_plan(self, axes_sizes: Mapping[str, int | None]) -> None:
        """Fill settings left to ``None`` ("from the plan") from ``axes_sizes``."""

    def output_axes(self, axes_sizes: Mapping[str, int | None]) -> dict[str, int | None]:
        """The axes (and sizes) of the frames this processor emits for a plan of ``axes_sizes``."""
        return dict(axes_sizes)

    def _outputs(self, result: Any) -> list[Frame]:
        if result is None:
            return []
        if isinstance(result, tuple) and len(result) == 3 and isinstance(result[0], Mapping):
            return [_as_frame(result, self.process_function)]
        if isinstance(result, list):
            return _separate_channels([_as_frame(item, self.process_function) for item in result])
        raise TypeError(
            f"Processor {_name(self.process_function)} returned {type(result).__name__}; expected "
            "a (coords, data, metadata) tuple, a list of them, or None"
        )

    def __repr__(self) -> str:
        return f"DataProcessor({_name(self.process_function)})"


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _as_frame(item: Any, fn: Any) -> Frame:
    if not (isinstance(item, tuple) and len(item) == 3):
        raise TypeError(
            f"Processor {_name(fn)} returned {item!r}; each output must be (coords, data, metadata)"
        )
    coords, data, metadata = item
    if not isinstance(data, np.ndarray):
        raise TypeError(
            f"Processor {_name(fn)} returned data of type {type(data).__name__}; expected a numpy "
            "array"
        )
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


#: How long pipeline threads wait on a condition before they look again (no wait is unbounded).
_POLL_S = 0.5


class DataHandler:
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
        self._bytes_in_flight = 0
        self._output_bytes = 0  # processor outputs waiting for the storage
        self._peak_bytes = 0
        self._error: BaseException | None = None
        self._finish_requested = False
        self._finished = threading.Event()
        self._planned: PlannedData | None = None
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
        self._storage_queue: SimpleQueue[Any] = SimpleQueue()
        self._process_queue: SimpleQueue[Any] | None = (
            SimpleQueue() if processor is not None else None
        )
        self._threads = [_start_thread(self._run_storage, f"{name}-storage")]
        if processor is not None and processor.pipelined:
            max_in_flight = int(getattr(processor, "max_in_flight", 1))
            self._slots = threading.BoundedSemaphore(max(1, max_in_flight))
            self._pending: SimpleQueue[Any] = SimpleQueue()
            self._threads.append(_start_thread(self._run_submitter, f"{name}-processor"))
            self._threads.append(_start_thread(self._run_collector, f"{name}-collector"))
        elif processor is not None:
            self._threads.append(_start_thread(self._run_processor, f"{name}-processor"))

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
                raise KeyError(
                    f"No data at {dict(coords)} in memory or in {type(self._storage).__name__}"
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

    def _wait_for_output_room(self) -> None:
        """Backpressure on the processor: while the frames in flight exceed the budget and some of
        them are outputs the storage will drain, wait (never on raw frames only, which only we can
        drain)."""
        with self._cond:
            while (
                self._bytes_in_flight > self._budget
                and self._output_bytes > 0
                and self._error is None
            ):
                self._cond.wait(_POLL_S)

    def _accept_outputs(
        self,
        coords: DataCoordinates | None,
        data: np.ndarray | None,
        outputs: list[Frame],
        future: ExecutionFuture | None,
    ) -> None:
        """Swap an input frame (None for flushed outputs) for the processor's outputs and queue
        them."""
        with self._cond:
            if coords is not None and data is not None:
                self._raw.pop(coords, None)
                self._bytes_in_flight -= data.nbytes
            for out_coords, out_data, out_metadata in outputs:
                self._processed[out_coords] = (out_data, out_metadata)
                self._add_bytes(out_data.nbytes)
                self._output_bytes += out_data.nbytes
            self._cond.notify_all()
        for out_coords, out_data, out_metadata in outputs:
            self._storage_queue.put((out_coords, out_data, out_metadata, future))
            if future is not None:
                future._notify_data(out_coords, out_data, out_metadata, processed=True)
            if self._listeners:
                self._notify_listeners(FrameStage.PROCESSED, out_coords)

    def _finish_processor(self, flushed: Callable[[], list[Frame]]) -> None:
        """Store what the processor still holds, release it, then let the storage finish."""
        assert self._processor is not None
        try:
            self._wait_for_output_room()
            self._accept_outputs(None, None, flushed(), None)
        except BaseException as e:  # recorded, published and raised by await_completion
            self._record_failure(e, None, None, "processor flush")
        try:
            self._processor.close()
        except BaseException as e:
            self._record_failure(e, None, None, "processor close")
        self._storage_queue.put(_FINISH)

    def _run_processor(self) -> None:
        assert self._process_queue is not None and self._processor is not None
        get = self._process_queue.get
        processor = self._processor
        process = processor.process
        while True:
            item = get()
            if item is _FINISH:
                self._finish_processor(processor.flush)
                return
            coords, data, metadata, future = item
            if self._listeners:
                self._notify_listeners(FrameStage.ACQUIRED, coords)
            if self._readers_waiting:
                self._no_readers.wait(READER_PRIORITY_S)
            if self._bytes_in_flight > self._budget:
                self._wait_for_output_room()
            try:
                outputs = process(coords, data, metadata)
            except BaseException as e:  # recorded, published and raised to the producer
                self._record_failure(e, future, coords)
                continue
            self._accept_outputs(coords, data, outputs, future)

    def _run_submitter(self) -> None:
        """Pipelined processors: hand frames over in order, at most ``max_in_flight`` at once.
        Frames already waiting go together, up to ``max_batch`` frames and 1/16 of the memory
        budget, so that a fast producer pays one hop per batch and a batch's outputs stay a small
        part of the budget."""
        assert self._process_queue is not None and self._processor is not None
        queue = self._process_queue
        processor: Any = self._processor
        max_batch = max(1, int(getattr(processor, "max_batch", 1)))
        max_batch_bytes = self._budget // 16
        carry: Any = None  # taken from the queue but left for the next batch
        while True:
            item, carry = (carry if carry is not None else queue.get()), None
            if item is _FINISH:
                break
            while not self._slots.acquire(timeout=_POLL_S):
                pass
            batch, nbytes = [item], item[1].nbytes
            while len(batch) < max_batch and not queue.empty():
                item = queue.get()
                if (
                    item is _FINISH
                    or nbytes + item[1].nbytes > max_batch_bytes
                    or not self._slots.acquire(blocking=False)
                ):
                    carry = item
                    break
                batch.append(item)
                nbytes += item[1].nbytes
            if self._listeners:
                for coords, *_ in batch:
                    self._notify_listeners(FrameStage.ACQUIRED, coords)
            try:
                handle = processor.submit_batch(
                    [(coords, data, metadata) for coords, data, metadata, _ in batch]
                )
            except BaseException as e:  # recorded, published and raised to the producers
                for coords, _, _, future in batch:
                    self._slots.release()
                    self._record_failure(e, future, coords)
                continue
            self._pending.put(
                ([(coords, data, future) for coords, data, _, future in batch], handle)
            )
        try:
            flush_handle = processor.submit_flush()
        except BaseException as e:
            flush_handle = _Failed(e)
        self._pending.put(_FINISH)
        self._pending.put(flush_handle)

    def _run_collector(self) -> None:
        """Pipelined processors: take results back in submission order, within the memory budget."""
        get = self._pending.get
        while True:
            item = get()
            if item is _FINISH:
                flush_handle = get()
                self._finish_processor(flush_handle.result)
                return
            frames, handle = item
            try:
                self._wait_for_output_room()
                results = handle.result()
                if len(results) != len(frames):
                    raise RuntimeError(
                        f"{self._processor!r} gave {len(results)} results for {len(frames)} frames"
                    )
            except BaseException as e:  # the whole batch failed (e.g. the cluster went away)
                results = [e] * len(frames)
            for (coords, data, future), result in zip(frames, results, strict=True):
                self._slots.release()
                if isinstance(result, BaseException):
                    self._record_failure(result, future, coords)
                else:
                    self._accept_outputs(coords, data, result, future)

    def _run_storage(self) -> None:
        width = max(1, int(getattr(self._storage, "max_writes_in_flight", 1)))
        if width > 1:
            self._run_concurrent_storage(width)
            return
        get = self._storage_queue.get
        storage = self._storage
        processing = self._processor is not None
        while True:
            item = get()
            if item is _FINISH:
                self._finish_storage()
                return
            coords, data, metadata, future = item
            if not processing and self._listeners:
                self._notify_listeners(FrameStage.ACQUIRED, coords)
            if self._readers_waiting:
                self._no_readers.wait(READER_PRIORITY_S)
            try:
                with self._storage_lock:
                    storage.put(coords, data, metadata)
            except BaseException as e:  # recorded, published and raised to the producer
                self._storage_failed(e, coords, data, future)
                continue
            self._stored_one(coords, data, metadata, future)

    def _run_concurrent_storage(self, width: int) -> None:
        """Storages that write several frames at once (``max_writes_in_flight``): keep up to
        ``width`` ``start_put`` writes going; their completions come back through the same queue,
        and each frame is reported stored when its own write is done."""
        get = self._storage_queue.get
        storage = self._storage
        processing = self._processor is not None
        waiting: deque[Any] = deque()
        writing = 0
        finishing = False
        while True:
            item = get()
            if item is _FINISH:
                finishing = True
            elif type(item) is _Written:
                writing -= 1
                if item.error is None:
                    self._stored_one(item.coords, item.data, item.metadata, item.future)
                else:
                    self._storage_failed(item.error, item.coords, item.data, item.future)
            else:
                waiting.append(item)
            while waiting and writing < width:
                coords, data, metadata, future = waiting.popleft()
                if not processing and self._listeners:
                    self._notify_listeners(FrameStage.ACQUIRED, coords)
                if self._readers_waiting:
                    self._no_readers.wait(READER_PRIORITY_S)
                done = _Written(self._storage_queue, coords, data, metadata, future)
                try:
                    with self._storage_lock:
                        storage.start_put(coords, data, metadata, done)
                except BaseException as e:  # refused before anything was written
                    self._storage_failed(e, coords, data, future)
                    continue
                writing += 1
            if finishing and not waiting and not writing:
                self._finish_storage()
                return

    def _storage_failed(
        self,
        error: BaseException,
        coords: DataCoordinates,
        data: np.ndarray,
        future: ExecutionFuture | None,
    ) -> None:
        """Record a frame the storage could not take; it stays readable in memory."""
        if self._processor is not None:
            with self._cond:  # no longer waiting for the storage
                self._output_bytes -= data.nbytes
                self._cond.notify_all()
        self._record_failure(error, future, coords, "storage")

    def _stored_one(
        self,
        coords: DataCoordinates,
        data: np.ndarray,
        metadata: Any,
        future: ExecutionFuture | None,
    ) -> None:
        """A frame is stored: release it from memory and the budget, and tell its future and
        listeners."""
        processing = self._processor is not None
        with self._cond:
            (self._processed if processing else self._raw).pop(coords, None)
            self._bytes_in_flight -= data.nbytes
            if processing:
                self._output_bytes -= data.nbytes
            self._stored += 1
            self._cond.notify_all()
        if future is not None:
            future._notify_data(coords, data, metadata, stored=True)
        engine = ExecutionEngine._instance
        if engine is not None and engine.has_subscribers:
            engine.publish_notification(DataStoredNotification(coords))
        if self._listeners:
            self._notify_listeners(FrameStage.STORED, coords)

    def _finish_storage(self) -> None:
        try:
            with self._storage_lock:
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
            self._finished.set()
            self._notify_listeners(FrameStage.FINISHED, None)


class _Written:
    """A ``start_put`` completion: called with the write's outcome (on the storage's thread), it
    queues itself for the storage thread, which reports the frame."""

    __slots__ = ("coords", "data", "error", "future", "metadata", "queue")

    def __init__(
        self,
        queue: SimpleQueue[Any],
        coords: DataCoordinates,
        data: np.ndarray,
        metadata: Any,
        future: ExecutionFuture | None,
    ) -> None:
        self.queue, self.coords, self.data, self.metadata, self.future = (
            queue,
            coords,
            data,
            metadata,
            future,
        )
        self.error: BaseException | None = None

    def __call__(self, error: BaseException | None) -> None:
        self.error = error
        self.queue.put(self)


class _Failed:
    """A result handle that raises the error met while submitting."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def result(self) -> list[Frame]:
        raise self.error


def _publish(notification: Notification) -> None:
    engine = ExecutionEngine._instance
    if engine is not None:
        engine.publish_notification(notification)


def _start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread._exengine_spawned = False  # type: ignore[attr-defined] - pipeline threads reroute device calls
    thread.start()
    return thread
