"""The ``DataHandler``'s threads: processing (on the handler's own thread, or handed to other
workers by a pipelined processor such as ``DaskProcessor``) and storage (one write at a time, or
several in flight for storages that wait on a network). ``DataHandler`` holds the frames, the
budget and the bookkeeping; this is how frames move.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

import numpy as np

from .data_coords import DataCoordinates
from .data_processor import DataProcessor, Frame
from .data_storage_base import DataStorage
from .executor import ExecutionEngine
from .frame_stage import FrameStage
from .notification_base import DataStoredNotification

if TYPE_CHECKING:
    from .ex_future import ExecutionFuture

__all__ = [
    "FINISH",
    "READER_PRIORITY_S",
    "RECENT_BYTES",
    "RECENT_FRAMES",
    "DataPipeline",
    "start_thread",
]

#: Longest the pipeline threads let a reader (``get``) go first before their next frame.
READER_PRIORITY_S = 0.05
#: How long pipeline threads wait on a condition before they look again (no wait is unbounded).
POLL_S = 0.5
#: The newest stored frames kept readable from memory until the handler finishes (at most
#: ``RECENT_FRAMES``, and no more than ``RECENT_BYTES`` unless one frame is larger): a display shows
#: the newest frame of each layer just after it is stored, and reading it back from storage cost it
#: ~6 ms a 2048x2048 frame (fresh memory) on the GUI thread.
RECENT_FRAMES = 8
RECENT_BYTES = 128 * 1024**2
#: Queued after the last frame: the stage finishes.
FINISH = object()


class DataPipeline:
    """The thread loops of a ``DataHandler``, which sets up the state they share (below) and
    provides ``_record_failure``, ``_notify_listeners``, ``_add_bytes`` and ``_finish_storage``."""

    _storage: DataStorage
    _processor: DataProcessor | None
    _budget: int
    _cond: threading.Condition
    _raw: dict[DataCoordinates, tuple[np.ndarray, Any]]
    _processed: dict[DataCoordinates, tuple[np.ndarray, Any]]
    _recent: OrderedDict[DataCoordinates, tuple[np.ndarray, Any]]
    _recent_bytes: int
    _kept_raw: OrderedDict[DataCoordinates, tuple[np.ndarray, Any]]
    _keep_raw: int
    _bytes_in_flight: int
    _output_bytes: int
    _error: BaseException | None
    _listeners: tuple[Callable[[FrameStage, DataCoordinates | None], Any], ...]
    _storage_lock: threading.Lock
    _readers_waiting: int
    _no_readers: threading.Event
    _stored: int
    _storage_queue: SimpleQueue[Any]
    _process_queue: SimpleQueue[Any] | None
    _slots: threading.BoundedSemaphore
    _pending: SimpleQueue[Any]

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
                self._cond.wait(POLL_S)

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
                raw = self._raw.pop(coords, None)
                self._bytes_in_flight -= data.nbytes
                if self._keep_raw and raw is not None and all(c != coords for c, _, _ in outputs):
                    self._kept_raw[coords] = raw  # readable for a plan (keep_raw_frames)
                    while len(self._kept_raw) > self._keep_raw:
                        self._kept_raw.popitem(last=False)
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
        self._storage_queue.put(FINISH)

    def _run_processor(self) -> None:
        assert self._process_queue is not None and self._processor is not None
        get = self._process_queue.get
        processor = self._processor
        process = processor.process
        while True:
            item = get()
            if item is FINISH:
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
            if item is FINISH:
                break
            while not self._slots.acquire(timeout=POLL_S):
                pass
            batch, nbytes = [item], item[1].nbytes
            while len(batch) < max_batch and not queue.empty():
                item = queue.get()
                if (
                    item is FINISH
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
        self._pending.put(FINISH)
        self._pending.put(flush_handle)

    def _run_collector(self) -> None:
        """Pipelined processors: take results back in submission order, within the memory budget."""
        get = self._pending.get
        while True:
            item = get()
            if item is FINISH:
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
            if item is FINISH:
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
            if item is FINISH:
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
            self._keep_recent(coords, data, metadata)
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

    def _keep_recent(self, coords: DataCoordinates, data: np.ndarray, metadata: Any) -> None:
        """Keep a stored frame readable from memory among the newest few (``RECENT_FRAMES``, at
        most ``RECENT_BYTES``); call with ``self._cond`` held."""
        recent = self._recent
        old = recent.pop(coords, None)
        if old is not None:
            self._recent_bytes -= old[0].nbytes
        recent[coords] = (data, metadata)
        self._recent_bytes += data.nbytes
        while len(recent) > 1 and (
            len(recent) > RECENT_FRAMES or self._recent_bytes > RECENT_BYTES
        ):
            _, (dropped, _) = recent.popitem(last=False)
            self._recent_bytes -= dropped.nbytes


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


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread._exengine_spawned = False  # type: ignore[attr-defined] - pipeline threads reroute device calls
    thread.start()
    return thread
