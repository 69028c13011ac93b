"""DataHandler and DataProcessor: threading, bounded memory, failures, listeners."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from exengine.base_classes import DataProducing, DataStorage, ExecutorEvent
from exengine.data import DataCoordinates, DataHandler, DataHandlerError, DataProcessor
from exengine.kernel.data_pipeline import RECENT_BYTES, RECENT_FRAMES
from exengine.notifications import DataHandlerErrorNotification, DataStoredNotification
from exengine.storage import NDRAMStorage


class SlowStorage(NDRAMStorage):
    def __init__(self, delay=0.0, fail_at=None):
        super().__init__()
        self.delay, self.fail_at, self.puts, self.finishes = delay, fail_at, 0, 0
        self.threads = set()

    def put(self, coords, data, metadata):
        self.threads.add(threading.current_thread().name)
        if self.fail_at is not None and self.puts == self.fail_at:
            self.puts += 1
            raise OSError("disk full")
        self.puts += 1
        time.sleep(self.delay)
        super().put(coords, data, metadata)

    def finish(self):
        self.finishes += 1
        super().finish()


def frame(value=0, shape=(8, 8)):
    return np.full(shape, value, np.uint16)


def test_put_get_from_memory_then_storage():
    storage = SlowStorage(delay=0.2)
    handler = DataHandler(storage)
    handler.put({"time": 0}, frame(3), {"a": 1})
    data, metadata = handler.get({"time": 0})
    assert data[0, 0] == 3 and metadata == {"a": 1}
    handler.await_completion(5)
    assert {"time": 0} in storage
    assert handler.get(DataCoordinates(time=0), return_metadata=False)[0, 0] == 3
    assert handler.get({"time": 0}, return_data=False) == {"a": 1}
    with pytest.raises(KeyError, match="'time': 9"):
        handler.get({"time": 9})


def test_processor_forms_and_threads():
    seen_threads = set()

    def double(coords, data, metadata):
        seen_threads.add(threading.current_thread().name)
        return [
            (coords, data, metadata),
            ({**coords, "copy": 1}, data * 2, dict(metadata, copy=True)),
        ]

    storage = SlowStorage()
    handler = DataHandler(storage, process_fn=DataProcessor(double))
    for t in range(3):
        handler.put({"time": t}, frame(t + 1), {})
    handler.await_completion(5)
    assert len(storage) == 6
    assert storage.get_data({"time": 2, "copy": 1})[0, 0] == 6
    assert seen_threads and seen_threads.isdisjoint(storage.threads)
    assert threading.current_thread().name not in storage.threads

    discard = DataHandler(SlowStorage(), process_function=lambda c, d, m: None)
    discard.put({"time": 0}, frame(), {})
    discard.await_completion(5)
    assert len(discard.storage) == 0

    single = DataHandler(SlowStorage(), lambda c, d, m: (c, d + 1, m))
    single.put({"time": 0}, frame(1), {})
    single.await_completion(5)
    assert single.storage.get_data({"time": 0})[0, 0] == 2


def test_outputs_sharing_coordinates_are_told_apart_by_their_metadata_channel():
    def ratio_channel(coords, data, metadata):
        return [(coords, data, metadata), (coords, data // 2, {**metadata, "Channel": "Ratio"})]

    storage = NDRAMStorage()
    handler = DataHandler(storage, ratio_channel)
    handler.put({"time": 0}, np.full((2, 2), 8, np.uint16), {})
    handler.put({"time": 1, "channel": "GFP"}, np.full((2, 2), 6, np.uint16), {"Channel": "GFP"})
    handler.await_completion(5)
    assert set(map(frozenset, (c.items() for c in storage.get_coordinates_list()))) == {
        frozenset({"time": 0}.items()),
        frozenset({"time": 0, "channel": "Ratio"}.items()),
        frozenset({"time": 1, "channel": "GFP"}.items()),
        frozenset({"time": 1, "channel": "Ratio"}.items()),
    }
    assert storage.get_data({"time": 1, "channel": "Ratio"})[0, 0] == 3


def test_outputs_that_still_collide_are_a_duplicate_error_that_keeps_the_first():
    def same_twice(coords, data, metadata):
        return [(coords, data, metadata), (coords, data + 1, metadata)]

    storage = NDRAMStorage()
    handler = DataHandler(storage, same_twice)
    handler.put({"time": 0}, np.full((2, 2), 8, np.uint16), {"Channel": "DAPI"})
    with pytest.raises(DataHandlerError, match="already stored"):
        handler.await_completion(5)
    assert storage.get_data({"time": 0})[0, 0] == 8


def test_accumulating_processor_emits_projection():
    stack = []

    def mip(coords, data, metadata):
        stack.append(data)
        if len(stack) < 4:
            return None
        projected = np.max(stack, axis=0)
        stack.clear()
        return {"time": coords["time"]}, projected, {"projected": True}

    handler = DataHandler(SlowStorage(), mip)
    for z in range(4):
        handler.put({"time": 0, "z": z}, frame(z), {})
    handler.await_completion(5)
    assert handler.storage.get_coordinates_list() == [{"time": 0}]
    assert handler.storage.get_data({"time": 0})[0, 0] == 3


class GatedStorage(NDRAMStorage):
    """Logs the order of its writes and reads; the write of frame ``gated`` waits for ``gate``."""

    def __init__(self, gated=1):
        super().__init__()
        self.gated = gated
        self.gate, self.log = threading.Event(), []

    def _write(self, coords, data, metadata):
        if coords["time"] == self.gated:
            assert self.gate.wait(10)
        self.log.append(f"write {coords['time']}")
        super()._write(coords, data, metadata)

    def get_data(self, data_coordinates):
        self.log.append("read starts")
        time.sleep(0.005)
        self.log.append("read ends")
        return super().get_data(data_coordinates)


def test_a_reader_of_stored_frames_goes_before_the_storage_threads_next_frame():
    """A busy storage thread takes its lock back before a waiting reader wakes up, which kept the
    display waiting for whole bursts of frames: a waiting reader now goes first."""
    gated = RECENT_FRAMES + 1  # frame 0 is no longer among the newest stored frames kept in memory
    storage = GatedStorage(gated)
    handler = DataHandler(storage)
    for t in range(gated + 3):
        handler.put({"time": t}, frame(t), {})
    written = [f"write {t}" for t in range(gated)]
    deadline = time.monotonic() + 10
    while storage.log != written and time.monotonic() < deadline:
        time.sleep(0.001)  # frames stored up to the gate, where the next one holds the storage lock
    reader = threading.Thread(target=lambda: handler.get({"time": 0}))
    reader.start()
    time.sleep(0.2)  # the reader now waits for the storage lock
    storage.gate.set()
    reader.join(10)
    handler.await_completion(10)
    assert storage.log == [
        *written,
        f"write {gated}",
        "read starts",
        "read ends",
        f"write {gated + 1}",
        f"write {gated + 2}",
    ]


def test_the_newest_stored_frames_are_read_from_memory():
    """A display reads each layer's newest frame just after it is stored: the newest
    ``RECENT_FRAMES`` stored frames (at most ``RECENT_BYTES``) are read from memory, older ones from
    storage; once the handler finishes, all from storage (no memory held after the run)."""
    storage = GatedStorage(gated=-1)
    handler = DataHandler(storage)
    count = RECENT_FRAMES + 3
    for t in range(count):
        handler.put({"time": t}, frame(t), {})
    _wait_until(lambda: handler.frames_stored == count)
    for t in range(count - RECENT_FRAMES, count):
        assert handler.get({"time": t}, return_metadata=False)[0, 0] == t
    assert "read starts" not in storage.log
    assert handler.get({"time": 0}, return_metadata=False)[0, 0] == 0
    assert storage.log.count("read starts") == 1
    handler.await_completion(10)
    assert handler.get({"time": count - 1}, return_metadata=False)[0, 0] == count - 1
    assert storage.log.count("read starts") == 2
    assert handler._recent_bytes == 0
    big = np.zeros((RECENT_BYTES // 2 // 2 // 1024 + 1, 1024), np.uint16)  # over RECENT_BYTES / 2
    large = DataHandler(GatedStorage(gated=-1))
    for t in range(3):
        large.put({"time": t}, big, {})
    _wait_until(lambda: large.frames_stored == 3)
    assert list(large._recent) == [{"time": 2}]  # two would pass RECENT_BYTES
    assert large._recent_bytes == big.nbytes
    large.await_completion(10)


def _wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_backpressure_bounds_memory_and_drops_nothing():
    storage = SlowStorage(delay=0.01)
    budget = frame().nbytes * 4
    handler = DataHandler(storage, memory_budget_bytes=budget)
    peak = 0
    for t in range(40):
        handler.put({"time": t}, frame(t), {})
        peak = max(peak, handler.bytes_in_flight)
    handler.await_completion(10)
    assert peak <= budget
    assert len(storage) == 40 and handler.frames_stored == 40
    blocked = DataHandler(SlowStorage(delay=1.0), memory_budget_bytes=frame().nbytes)
    blocked.put({"time": 0}, frame(), {})
    with pytest.raises(TimeoutError, match="No room"):
        blocked.put({"time": 1}, frame(), {}, timeout=0.05)
    blocked.await_completion(5)


def test_storage_failure_is_never_silent(engine):
    errors = []
    engine.subscribe_to_notifications(errors.append, DataHandlerErrorNotification)
    storage = SlowStorage(fail_at=2)
    handler = DataHandler(storage)
    for t in range(5):
        handler.put({"time": t}, frame(t), {})
    deadline = time.monotonic() + 5
    while handler.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(DataHandlerError, match="disk full"):
        handler.put({"time": 9}, frame(), {})
    with pytest.raises(DataHandlerError):
        handler.finish()
    with pytest.raises(DataHandlerError):
        handler.await_completion(5)
    assert handler.get({"time": 2}, return_metadata=False)[0, 0] == 2
    assert [{"time": t} for t in (0, 1, 3, 4)] == storage.get_coordinates_list()
    assert storage.finishes == 1
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(errors[0].payload, OSError)


class Producer(DataProducing, ExecutorEvent):
    def __init__(self, n, data_handler):
        super().__init__(
            data_coordinates_iterator=[{"time": t} for t in range(n)], data_handler=data_handler
        )
        self.n = n

    def execute(self):
        for coords in self.data_coordinate_iterator:
            self.put_data(coords, frame(coords["time"]), {"t": coords["time"]})
            time.sleep(0.01)


def test_processor_failure_fails_the_future_and_keeps_the_frame(engine):
    def flaky(coords, data, metadata):
        if coords["time"] == 1:
            raise ValueError("bad pixel map")
        return coords, data, metadata

    handler = DataHandler(SlowStorage(), flaky)
    future = engine.submit(Producer(4, handler))
    with pytest.raises((ValueError, DataHandlerError), match="bad pixel map"):
        future.await_execution(5)
    assert handler.get({"time": 1}, return_metadata=False)[0, 0] == 1
    assert {"time": 1} not in handler.storage


def test_nothing_is_announced_stored_unless_stored(engine):
    stored = []
    engine.subscribe_to_notifications(stored.append, DataStoredNotification)
    handler = DataHandler(SlowStorage(fail_at=0))
    handler.put({"time": 0}, frame(), {})
    handler.put({"time": 1}, frame(), {})
    with pytest.raises(DataHandlerError):
        handler.await_completion(5)
    engine.submit(lambda: None).await_execution(5)
    time.sleep(0.1)
    assert [n.payload for n in stored] == [{"time": 1}]


def test_future_await_data_all_stages(engine):
    handler = DataHandler(SlowStorage(), lambda c, d, m: (c, d + 100, m))
    future = engine.submit(Producer(3, handler))
    data, metadata = future.await_data(
        {"time": 1}, return_data=True, return_metadata=True, timeout=5
    )
    assert data[0, 0] == 1 and metadata == {"t": 1}
    assert future.await_data({"time": 2}, processed=True, timeout=5)[0, 0] == 102
    stored = future.await_data([{"time": 0}, {"time": 2}], stored=True, timeout=5)
    assert [d[0, 0] for d in stored] == [100, 102]
    assert future.await_data({"time": 0}, return_data=True, timeout=5)[0, 0] in (0, 100)
    with pytest.raises(ValueError, match="never produce"):
        future.await_data({"time": 7})
    handler.await_completion(5)


def test_await_next_frame(engine):
    handler = DataHandler(SlowStorage())
    future = engine.submit(Producer(50, handler))
    data = future.await_data(None, timeout=5)
    assert isinstance(data, np.ndarray)
    future.await_execution(5)
    handler.await_completion(5)


def test_listeners_see_every_stage_off_the_producer_thread():
    events = []
    producer = threading.current_thread().name
    handler = DataHandler(SlowStorage(), lambda c, d, m: (c, d, m))
    handler.add_listener(
        lambda stage, coords: events.append((stage, threading.current_thread().name))
    )
    handler.put({"time": 0}, frame(), {})
    handler.await_completion(5)
    stages = [s for s, _ in events]
    assert stages == ["acquired", "processed", "stored", "finished"]
    assert all(name != producer for _, name in events)


def test_finish_is_idempotent_and_put_after_finish_fails():
    storage = SlowStorage()
    handler = DataHandler(storage)
    handler.put({"time": 0}, frame(), {})
    handler.finish()
    handler.finish()
    handler.await_completion(5)
    handler.await_completion(5)
    assert storage.finishes == 1
    with pytest.raises(RuntimeError, match="finished"):
        handler.put({"time": 1}, frame(), {})


def test_bad_arguments():
    with pytest.raises(TypeError, match="DataStorage"):
        DataHandler(object())
    with pytest.raises(TypeError, match="callable"):
        DataProcessor(3)
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        DataHandler(SlowStorage(), memory_budget_bytes=0)
    handler = DataHandler(SlowStorage(), lambda c, d, m: "nope")
    handler.put({"time": 0}, frame(), {})
    with pytest.raises(DataHandlerError, match="returned str"):
        handler.await_completion(5)
    assert isinstance(SlowStorage(), DataStorage)


@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_a_processor_raising_a_base_exception_is_recorded_like_any_failure(engine, raised):
    """SystemExit and friends used to end the processor thread silently: no error, a hang."""

    def exits(coords, data, metadata):
        if coords["time"] == 1:
            raise raised
        return coords, data, metadata

    handler = DataHandler(SlowStorage(), exits)
    future = engine.submit(Producer(4, handler))
    with pytest.raises(DataHandlerError, match=type(raised).__name__):
        future.await_execution(5)
    with pytest.raises(DataHandlerError, match=type(raised).__name__) as info:
        handler.await_completion(5)
    assert isinstance(handler.error, DataHandlerError) and handler.error.__cause__ is raised
    assert info.value.__cause__ is handler.error
    assert handler.get({"time": 1}, return_metadata=False)[0, 0] == 1
    assert {"time": 0} in handler.storage and {"time": 1} not in handler.storage


def test_a_storage_raising_a_base_exception_is_recorded_too():
    class ExitingStorage(SlowStorage):
        def put(self, coords, data, metadata):
            if coords["time"] == 0:
                raise SystemExit("storage gone")
            super().put(coords, data, metadata)

    handler = DataHandler(ExitingStorage())
    handler.put({"time": 0}, frame(), {})
    handler.put({"time": 1}, frame(), {})
    with pytest.raises(DataHandlerError, match="SystemExit"):
        handler.await_completion(5)
    assert handler.storage.get_coordinates_list() == [{"time": 1}]
    assert handler.get({"time": 0}, return_metadata=False).shape == (8, 8)


def test_processor_outputs_count_in_the_budget_and_the_processor_waits_for_the_storage():
    """A processor converting to float64 held 3-4 budgets in flight: outputs count, with
    backpressure."""
    to_float = DataProcessor(lambda c, d, m: (c, d.astype(np.float64), m), stateful=False)
    raw = frame(shape=(32, 32))
    budget = raw.nbytes * 8
    handler = DataHandler(SlowStorage(delay=0.005), to_float, memory_budget_bytes=budget)
    sampled = 0
    for t in range(60):
        handler.put({"time": t}, frame(t, (32, 32)), {})
        sampled = max(sampled, handler.bytes_in_flight)
    handler.await_completion(20)
    one_output = raw.nbytes * 4
    assert sampled <= handler.peak_bytes_in_flight <= budget + one_output
    assert handler.peak_bytes_in_flight > budget // 2  # the bound is what limited it
    assert handler.frames_stored == 60 and handler.bytes_in_flight == 0
    assert handler.storage.get_data({"time": 59}).dtype == np.float64


def test_a_frame_larger_than_the_budget_still_passes_through_a_growing_processor():
    grow = DataProcessor(
        lambda c, d, m: (c, np.concatenate([d, d]).astype(np.float64), m), stateful=False
    )
    handler = DataHandler(SlowStorage(delay=0.01), grow, memory_budget_bytes=64)
    for t in range(3):
        handler.put({"time": t}, frame(t), {}, timeout=5)
    handler.await_completion(5)
    assert handler.frames_stored == 3 and handler.storage.get_data({"time": 2}).shape == (16, 8)


def test_flush_emits_what_the_processor_still_holds_once_at_finish():
    held = []
    calls = []

    def keep(coords, data, metadata):
        held.append((coords, data, metadata))

    def flush():
        calls.append(threading.current_thread().name)
        frames = [(c, d, dict(m, Partial=True)) for c, d, m in held]
        held.clear()
        return frames

    processor = DataProcessor(keep, flush=flush)
    assert processor.stateful and not processor.stateful_declared
    handler = DataHandler(SlowStorage(), processor)
    for t in range(3):
        handler.put({"time": t}, frame(t), {"t": t})
    handler.await_completion(5)
    handler.await_completion(5)
    assert len(calls) == 1 and calls[0] != threading.current_thread().name
    assert [c["time"] for c in handler.storage.get_coordinates_list()] == [0, 1, 2]
    assert handler.storage.get_metadata({"time": 2}) == {"t": 2, "Partial": True}


@pytest.mark.parametrize("raised", [ValueError("cannot flush"), SystemExit("cannot flush")])
def test_a_failing_flush_is_reported(raised):
    def flush():
        raise raised

    handler = DataHandler(SlowStorage(), DataProcessor(lambda c, d, m: (c, d, m), flush=flush))
    handler.put({"time": 0}, frame(), {})
    with pytest.raises(DataHandlerError, match="cannot flush"):
        handler.await_completion(5)
    assert handler.storage.get_coordinates_list() == [{"time": 0}] and handler.storage.finishes == 1


def test_processor_declarations():
    assert DataProcessor(lambda c, d, m: None, stateful=False).stateful is False
    with pytest.raises(TypeError, match="stateful"):
        DataProcessor(lambda c, d, m: None, stateful="yes")
    with pytest.raises(TypeError, match="flush"):
        DataProcessor(lambda c, d, m: None, flush=3)


class ConcurrentStorage(NDRAMStorage):
    """A storage that writes several frames at once (``start_put``), completing them from its own
    threads in reverse order of their start, and failing the frame at ``fail_time``."""

    max_writes_in_flight = 4

    def __init__(self, fail_time=None):
        super().__init__()
        self.fail_time = fail_time
        self.started = []
        self.most_at_once = 0
        self._lock = threading.Lock()
        self._open = []  # (coords, data, metadata, on_done) started and not completed

    def start_put(self, coords, data, metadata, on_done):
        if coords["time"] == -1:
            raise ValueError("refused before anything is written")
        with self._lock:
            self.started.append(coords["time"])
            self._open.append((coords, data, metadata, on_done))
            self.most_at_once = max(self.most_at_once, len(self._open))
            if len(self._open) < self.max_writes_in_flight and coords["time"] < 19:
                return  # complete the writes in groups, the latest first
            group, self._open = self._open, []
        threading.Thread(target=self._complete, args=(group[::-1],)).start()

    def _complete(self, group):
        for coords, data, metadata, on_done in group:
            if coords["time"] == self.fail_time:
                on_done(OSError("the store said no"))
            else:
                self.put(coords, data, metadata)
                on_done(None)

    def finish(self):
        self.stored_at_finish = len(self)
        super().finish()


def test_a_storage_writing_several_frames_at_once_gets_them_in_flight_and_each_reported_when_done(
    engine,
):
    stored = []
    engine.subscribe_to_notifications(stored.append, DataStoredNotification)
    storage = ConcurrentStorage(fail_time=6)
    handler = DataHandler(storage)
    for t in range(20):
        handler.put({"time": t}, frame(t), {"t": t})
    with pytest.raises(DataHandlerError, match="the store said no"):
        handler.await_completion(10)
    assert storage.most_at_once == 4  # never more than the storage's max_writes_in_flight
    assert sorted(storage.started) == list(range(20))
    assert handler.frames_stored == 19 and len(storage) == 19
    assert {"time": 6} not in storage
    assert handler.get({"time": 6}, return_metadata=False)[0, 0] == 6  # kept in memory, not lost
    engine.submit(lambda: None).await_execution(5)
    deadline = time.monotonic() + 5
    while len(stored) < 19 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(n.payload["time"] for n in stored) == [t for t in range(20) if t != 6]
    assert storage.stored_at_finish == 19  # the storage finished once every write had completed


def test_a_frame_refused_by_start_put_fails_alone():
    storage = ConcurrentStorage()
    handler = DataHandler(storage)
    handler.put({"time": -1}, frame(), {})
    for t in range(19, 21):
        handler.put({"time": t}, frame(t), {})
    with pytest.raises(DataHandlerError, match="refused before anything is written"):
        handler.await_completion(10)
    assert sorted(c["time"] for c in storage.get_coordinates_list()) == [19, 20]
