"""ExecutionEngine, futures and notifications."""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass

import pytest

from exengine import ExecutionEngine, on_thread
from exengine.base_classes import ExecutorEvent, Notification, NotificationCategory
from exengine.events import Sleep
from exengine.notifications import EventExecutedNotification


class Add(ExecutorEvent):
    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def execute(self):
        return self.a + self.b


class Boom(ExecutorEvent):
    def execute(self):
        raise ZeroDivisionError("boom inside execute")


@dataclass
class Progress(Notification[int]):
    category = NotificationCategory.Event
    description = "progress"


class Reporting(ExecutorEvent):
    notification_types = [Progress]

    def execute(self):
        self.publish_notification(Progress(payload=7))


def test_singleton_and_get_instance(engine):
    assert ExecutionEngine() is engine
    assert ExecutionEngine.get_instance() is engine


def test_constructing_again_keeps_subscribers_and_devices(engine):
    received = []
    engine.subscribe_to_notifications(received.append)
    from exengine.devices.simulated import SimulatedXYStage

    stage = SimulatedXYStage("XY")
    assert ExecutionEngine() is engine
    assert ExecutionEngine.get_device("XY") is stage
    engine.submit(lambda: None).await_execution(5)
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    assert received


def test_shutdown_drains_and_a_new_engine_starts_fresh(engine):
    done = []
    for i in range(20):
        engine.submit(lambda i=i: done.append(i))
    engine.shutdown()
    assert done == list(range(20))
    with pytest.raises(RuntimeError, match="shut down"):
        engine.submit(lambda: None)
    fresh = ExecutionEngine()
    assert fresh is not engine
    assert fresh.submit(lambda: 3).await_execution(5) == 3


def test_submit_event_callable_and_mixed_list(engine):
    assert engine.submit(Add(1, 2)).await_execution(5) == 3
    assert engine.submit(lambda: "x").await_execution(5) == "x"
    futures = engine.submit([Add(2, 2), lambda: 5])
    assert isinstance(futures, tuple) and len(futures) == 2
    assert [f.await_execution(5) for f in futures] == [4, 5]


def test_submit_rejects_bad_items_naming_them(engine):
    with pytest.raises(TypeError, match="item 1"):
        engine.submit([Add(1, 1), 42])
    with pytest.raises(TypeError, match="requires"):
        engine.submit(lambda x: x)
    with pytest.raises(TypeError):
        engine.submit("not an event")


def test_submitting_same_event_twice_is_an_error(engine):
    event = Add(1, 1)
    engine.submit(event).await_execution(5)
    with pytest.raises(RuntimeError, match="already submitted"):
        engine.submit(event)
    other = Add(1, 1)
    with pytest.raises(RuntimeError, match="already submitted"):
        engine.submit([other, other])


def test_exception_reaches_future_with_traceback_and_engine_survives(engine):
    future = engine.submit(Boom())
    with pytest.raises(ZeroDivisionError, match="boom inside execute") as info:
        future.await_execution(5)
    assert "execute" in "".join(traceback.format_tb(info.value.__traceback__))
    assert engine.submit(Add(1, 1)).await_execution(5) == 2


def test_await_execution_timeout(engine):
    future = engine.submit(Sleep(time_s=0.5))
    with pytest.raises(TimeoutError):
        future.await_execution(timeout=0.05)
    assert future.await_execution(5) is None


def test_thread_name_prioritize_and_free_thread(engine):
    names = []
    engine.submit(
        lambda: names.append(threading.current_thread().name), thread_name="Worker"
    ).await_execution(5)
    assert names == ["Worker"]
    gate = threading.Event()
    order = []
    engine.submit(lambda: gate.wait(5))
    engine.submit(lambda: order.append("normal"))
    engine.submit(lambda: order.append("urgent"), prioritize=True)
    free = engine.submit(lambda: threading.current_thread().name, use_free_thread=True)
    assert free.await_execution(5) != "MainExecutorThread"
    gate.set()
    engine.submit(lambda: None).await_execution(5)
    assert order == ["urgent", "normal"]


def test_on_thread_event_class(engine):
    @on_thread("Special")
    class Where(ExecutorEvent):
        def execute(self):
            return threading.current_thread().name

    assert engine.submit(Where()).await_execution(5) == "Special"
    assert engine.submit(Where(), thread_name="Other").await_execution(5) == "Other"


def test_await_notification_class_instance_and_already_happened(engine):
    future = engine.submit(Reporting())
    future.await_execution(5)
    got = future.await_notification(Progress, timeout=1)
    assert isinstance(got, Progress) and got.payload == 7
    assert future.await_notification(got, timeout=1) is got
    assert isinstance(
        future.await_notification(EventExecutedNotification, timeout=1), EventExecutedNotification
    )
    with pytest.raises(TimeoutError):
        engine.submit(Add(1, 1)).await_notification(Progress, timeout=0.2)


def test_notification_types_merge_bases():
    assert Reporting.notification_types == [EventExecutedNotification, Progress]

    class Child(Reporting):
        notification_types = []

    assert Child.notification_types == [EventExecutedNotification, Progress]


def test_dataclass_notifications_are_hashable_and_distinct():
    a, b = Progress(payload=1), Progress(payload=1)
    assert hash(a) != hash(b) and a != b and a == a
    assert len({a, b}) == 2
    assert a.category is NotificationCategory.Event and a.timestamp is not None


def _collect(received, n, timeout=5):
    deadline = time.monotonic() + timeout
    while len(received) < n and time.monotonic() < deadline:
        time.sleep(0.005)


def test_subscribers_filter_by_class_and_category(engine):
    everything, by_class, by_category = [], [], []
    engine.subscribe_to_notifications(everything.append)
    engine.subscribe_to_notifications(by_class.append, Progress)
    engine.subscribe_to_notifications(by_category.append, NotificationCategory.Data)
    engine.submit(Reporting()).await_execution(5)
    _collect(everything, 2)
    assert {type(n) for n in everything} == {Progress, EventExecutedNotification}
    assert [type(n) for n in by_class] == [Progress]
    assert by_category == []
    engine.unsubscribe_from_notifications(everything.append)
    with pytest.raises(ValueError):
        engine.unsubscribe_from_notifications(print)


def test_raising_subscriber_does_not_stop_delivery(engine):
    received = []

    def bad(notification):
        raise RuntimeError("subscriber bug")

    engine.subscribe_to_notifications(bad)
    engine.subscribe_to_notifications(received.append, Progress)
    engine.submit(Reporting()).await_execution(5)
    _collect(received, 1)
    assert len(received) == 1
    with pytest.raises(RuntimeError, match="subscriber bug"):
        engine.check_exceptions()


def test_stop_abort_need_capabilities(engine):
    future = engine.submit(Add(1, 1))
    with pytest.raises(TypeError, match="not Stoppable"):
        future.stop()
    with pytest.raises(TypeError, match="not Abortable"):
        future.abort()
    with pytest.raises(TypeError, match="does not produce data"):
        future.await_data({"time": 0})


def test_sleep_stops_early(engine):
    future = engine.submit(Sleep(time_s=30))
    time.sleep(0.05)
    started = time.monotonic()
    future.stop(await_completion=True)
    assert time.monotonic() - started < 2


def test_stress_1000_mixed_events_from_8_threads(engine):
    futures, errors = [], []
    lock = threading.Lock()

    def submitter(k):
        try:
            for i in range(125):
                item = [Add(i, k), lambda: k, Sleep(time_s=0), Boom()][i % 4]
                thread = [None, "A", "B"][i % 3]
                f = engine.submit(item, thread_name=thread, prioritize=(i % 7 == 0))
                with lock:
                    futures.append((i % 4, f))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(futures) == 1000
    for kind, f in futures:
        if kind == 3:
            with pytest.raises(ZeroDivisionError):
                f.await_execution(30)
        else:
            f.await_execution(30)
        assert f.is_execution_complete()


def _race_submit_against_shutdown(engine, producers=4):
    """Producers submit until refused while the main thread shuts the engine down; returns (ran,
    futures, refusals)."""
    ran: list[int] = []
    futures: list = []
    refusals: list[BaseException] = []
    lock = threading.Lock()
    ready = threading.Barrier(producers + 1, timeout=10)

    def producer(k):
        ready.wait()
        options = [{}, {"thread_name": "Racer"}, {"prioritize": True}, {"use_free_thread": True}]
        for i in range(100_000):
            try:
                future = engine.submit(lambda i=i: ran.append(i), **options[(i + k) % 4])
            except RuntimeError as e:
                refusals.append(e)
                return
            with lock:
                futures.append(future)

    threads = [threading.Thread(target=producer, args=(k,), daemon=True) for k in range(producers)]
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(0.002)
    engine.shutdown()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a producer kept submitting to a shut-down engine"
    return ran, futures, refusals


@pytest.mark.parametrize("round_", range(15))
def test_submit_racing_shutdown_never_leaves_a_future_unrun(engine, round_):
    ran, futures, refusals = _race_submit_against_shutdown(engine)
    assert len(refusals) == 4, "every producer is refused once shutdown has begun"
    for error in refusals:
        assert "shut down" in str(error) and "ExecutionEngine()" in str(error)
    for future in futures:  # every accepted event ran (shutdown drains), none hangs
        assert future.await_execution(timeout=10) is None
    assert len(ran) == len(futures)


def test_event_refused_by_a_shut_down_engine_can_run_on_the_next(engine):
    engine.shutdown()
    event = Add(2, 3)
    with pytest.raises(RuntimeError, match="shut down"):
        engine.submit(event)
    assert ExecutionEngine().submit(event).await_execution(5) == 5


def test_shutdown_from_inside_an_event_still_runs_what_was_queued(engine):
    gate = threading.Event()
    engine.submit(lambda: gate.wait(5))
    later = engine.submit(lambda: "queued before shutdown")
    stopper = engine.submit(engine.shutdown, thread_name="Stopper")
    gate.set()
    assert later.await_execution(timeout=10) == "queued before shutdown"
    assert stopper.await_execution(timeout=10) is None
    with pytest.raises(RuntimeError, match="shut down"):
        engine.submit(lambda: None)


def test_an_event_queued_behind_a_threads_stop_marker_fails_instead_of_hanging(engine):
    # submit() cannot do this any more (it queues under shutdown's lock); the thread still
    # fails leftovers
    from exengine.kernel.ex_future import ExecutionFuture

    gate = threading.Event()
    engine.submit(lambda: gate.wait(5), thread_name="Leftovers")
    worker = engine._threads["Leftovers"]
    worker.stop()
    late = Add(1, 2)
    late._future = ExecutionFuture(late, engine)
    worker.submit(late, prioritize=False)
    gate.set()
    with pytest.raises(RuntimeError, match="was not run: thread 'Leftovers' stopped"):
        late._future.await_execution(timeout=5)
