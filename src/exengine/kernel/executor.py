"""``ExecutionEngine``: the process-wide engine that runs events on named worker threads."""

from __future__ import annotations

import atexit
import inspect
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

from .ex_event_base import AnonymousCallableEvent, ExecutorEvent
from .ex_future import ExecutionFuture
from .notification_base import (
    EventExecutedNotification,
    Notification,
    NotificationCategory,
    NotificationSubscriberErrorNotification,
)
from .threading_decorator import THREAD_NAME_ATTR

if TYPE_CHECKING:
    from .device import Device

logger = logging.getLogger("exengine")

MAIN_THREAD_NAME = "MainExecutorThread"
ANONYMOUS_THREAD_PREFIX = "AnonymousExecutorThread"
#: ExEngine's names for the two constants above.
_MAIN_THREAD_NAME = MAIN_THREAD_NAME
_ANONYMOUS_THREAD_NAME = ANONYMOUS_THREAD_PREFIX

#: ident -> name of every live executor thread (read lock-free on the device fast path).
EXECUTOR_THREADS: dict[int, str] = {}

_WAKE = object()
_STOP = object()

NotificationFilter = NotificationCategory | type[Notification] | None
Submittable = ExecutorEvent | Callable[[], Any]


class _ExecutorThread:
    """One worker thread with a FIFO queue and a priority lane in front of it."""

    def __init__(self, name: str, engine: ExecutionEngine) -> None:
        self.name = name
        self._engine = engine
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._priority: deque[ExecutorEvent] = deque()
        self._busy = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.execution_engine_thread = True  # type: ignore[attr-defined]
        self.thread.start()

    def submit(self, event: ExecutorEvent, prioritize: bool) -> None:
        if prioritize:
            self._priority.append(event)
            self._queue.put(_WAKE)
        else:
            self._queue.put(event)

    def is_free(self) -> bool:
        return not self._busy and not self._priority and self._queue.empty()

    def stop(self) -> None:
        self._queue.put(_STOP)

    def _run(self) -> None:
        EXECUTOR_THREADS[threading.get_ident()] = self.name
        get = self._queue.get
        priority = self._priority
        execute = self._execute
        try:
            while True:
                item = get()
                while priority:
                    execute(priority.popleft())
                if item is _WAKE:
                    continue
                if item is _STOP:
                    break
                execute(item)
        finally:
            EXECUTOR_THREADS.pop(threading.get_ident(), None)
            self._fail_unrun()

    def _fail_unrun(self) -> None:
        """Fail the future of any event still queued when the thread ends, so no waiter hangs."""
        leftovers = list(self._priority)
        self._priority.clear()
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        for event in leftovers:
            if isinstance(event, ExecutorEvent) and event._future is not None:
                error = RuntimeError(
                    f"{type(event).__name__} was not run: thread {self.name!r} stopped when the "
                    "engine shut down"
                )
                event._future._notify_execution_complete(None, error)

    def run_prioritized(self) -> None:
        """Run the events waiting in the priority lane now (called by long events between their
        steps)."""
        priority = self._priority
        while priority:
            self._execute(priority.popleft())

    def _execute(self, event: ExecutorEvent) -> None:
        was_busy = self._busy
        self._busy = True
        future = event._future
        result = None
        exception = None
        try:
            result = event.execute()
        except BaseException as e:  # every failure belongs to the event's future
            exception = e
        notification = EventExecutedNotification(exception)
        future._notify_of_event_notification(notification)  # type: ignore[union-attr]
        self._engine.publish_notification(notification)
        future._notify_execution_complete(result, exception)  # type: ignore[union-attr]
        self._busy = was_busy


class _NotificationDispatcher:
    """Delivers published notifications to subscribers on its own thread, in publication order."""

    def __init__(self, engine: ExecutionEngine) -> None:
        self._engine = engine
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="ExEngineNotifications", daemon=True)
        self.thread.start()

    def put(self, notification: Notification) -> None:
        self._queue.put(notification)

    def stop(self) -> None:
        self._queue.put(_STOP)
        if threading.current_thread() is not self.thread:
            self.thread.join()

    def _run(self) -> None:
        while True:
            notification = self._queue.get()
            if notification is _STOP:
                return
            for subscriber, wanted in self._engine._subscribers:
                if not _matches(notification, wanted):
                    continue
                try:
                    subscriber(notification)
                except Exception as e:  # a bad subscriber must not stop delivery to the others
                    logger.exception("Notification subscriber %r raised", subscriber)
                    self._engine._subscriber_errors.append(e)
                    if not isinstance(notification, NotificationSubscriberErrorNotification):
                        self._queue.put(NotificationSubscriberErrorNotification(e))


def _matches(notification: Notification, wanted: NotificationFilter) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, NotificationCategory):
        return notification.category == wanted
    return isinstance(notification, wanted)


class ExecutionEngine:
    """The process-wide execution engine.

    ``ExecutionEngine()`` and ``ExecutionEngine.get_instance()`` return the live engine, creating it
    when none exists. Events run on named worker threads (created on demand); the main one is
    ``MainExecutorThread``. ``shutdown()`` drains queued events and joins the threads; a later
    ``ExecutionEngine()`` starts a fresh engine.
    """

    _instance: ExecutionEngine | None = None
    _instance_lock = threading.RLock()

    def __new__(cls) -> ExecutionEngine:
        with cls._instance_lock:
            instance = cls._instance
            if instance is None:
                instance = super().__new__(cls)
                instance._setup()
                cls._instance = instance
            return instance

    def _setup(self) -> None:
        self._lock = threading.RLock()
        self._threads: dict[str, _ExecutorThread] = {}
        self._devices: dict[str, Device] = {}
        self._subscribers: tuple[tuple[Callable[[Notification], Any], NotificationFilter], ...] = ()
        self._subscriber_errors: list[BaseException] = []
        self._dispatcher: _NotificationDispatcher | None = None
        self._shut_down = False
        self._threads[MAIN_THREAD_NAME] = _ExecutorThread(MAIN_THREAD_NAME, self)

    @classmethod
    def get_instance(cls) -> ExecutionEngine:
        """Return the live engine, creating one if none exists."""
        return cls._instance or cls()

    # ------------------------------------------------------------------ devices
    @classmethod
    def register_device(cls, name: str, device: Device) -> None:
        """Register ``device`` under ``name`` (called automatically when a device is created)."""
        engine = cls.get_instance()
        with engine._lock:
            existing = engine._devices.get(name)
            if existing is not None and existing is not device:
                raise ValueError(
                    f"A device named {name!r} is already registered ({type(existing).__name__}); "
                    f"choose another name or call ExecutionEngine.unregister_device({name!r}) first"
                )
            engine._devices[name] = device

    @classmethod
    def unregister_device(cls, name: str) -> None:
        """Forget the device registered under ``name``."""
        engine = cls.get_instance()
        with engine._lock:
            if name not in engine._devices:
                raise ValueError(
                    f"No device named {name!r}; registered devices: {sorted(engine._devices)}"
                )
            del engine._devices[name]

    @classmethod
    def get_device(cls, device_name: str) -> Device:
        """Return the device registered under ``device_name``."""
        engine = cls.get_instance()
        try:
            return engine._devices[device_name]
        except (KeyError, TypeError):
            raise ValueError(
                f"No device named {device_name!r}; registered devices: {sorted(engine._devices)}"
            ) from None

    @classmethod
    def get_devices(cls) -> dict[str, Device]:
        """Return a copy of the name -> device registry."""
        engine = cls.get_instance()
        with engine._lock:
            return dict(engine._devices)

    # ---------------------------------------------------------------- threads
    @staticmethod
    def on_any_executor_thread() -> bool:
        """True when called from one of the engine's worker threads."""
        return threading.get_ident() in EXECUTOR_THREADS

    def run_prioritized_events(self) -> None:
        """From inside a long-running event: run the prioritized events waiting for this thread now.

        Lets ``submit(..., prioritize=True)`` calls (e.g. a user changing a setting) interleave with
        an acquisition that runs as one event.
        """
        name = EXECUTOR_THREADS.get(threading.get_ident())
        thread = self._threads.get(name) if name is not None else None
        if thread is not None:
            thread.run_prioritized()

    @staticmethod
    def on_main_executor_thread() -> bool:
        """True when called from the main worker thread."""
        return EXECUTOR_THREADS.get(threading.get_ident()) == MAIN_THREAD_NAME

    def _thread(self, name: str) -> _ExecutorThread:
        thread = self._threads.get(name)
        if thread is None:
            with self._lock:
                self._check_running()
                thread = self._threads.get(name)
                if thread is None:
                    thread = self._threads[name] = _ExecutorThread(name, self)
        return thread

    def _free_thread(self) -> _ExecutorThread:
        with self._lock:
            main = self._threads[MAIN_THREAD_NAME]
            if main.is_free():
                return main
            anonymous = [
                t for n, t in self._threads.items() if n.startswith(ANONYMOUS_THREAD_PREFIX)
            ]
            for thread in anonymous:
                if thread.is_free():
                    return thread
            return self._thread(f"{ANONYMOUS_THREAD_PREFIX}{len(anonymous)}")

    # ---------------------------------------------------------------- submit
    def submit(
        self,
        event_or_events: Submittable | Iterable[Submittable],
        thread_name: str | None = None,
        prioritize: bool = False,
        use_free_thread: bool = False,
    ) -> ExecutionFuture | tuple[ExecutionFuture, ...]:
        """Queue events (or zero-argument callables) for execution.

        Returns one future for one event, a tuple of futures for a list. ``thread_name`` picks the
        worker thread (else the event's ``@on_thread`` thread, else the main one); ``prioritize``
        runs the events before others already queued on that thread; ``use_free_thread`` runs them
        on an idle thread, creating one if needed.
        """
        self._check_running()
        if isinstance(event_or_events, ExecutorEvent):
            events = [event_or_events]
            single = True
        elif callable(event_or_events) and not isinstance(event_or_events, type):
            events = [_as_event(event_or_events, None)]
            single = True
        elif isinstance(event_or_events, Iterable) and not isinstance(
            event_or_events, (str, bytes, dict)
        ):
            events = [_as_event(item, i) for i, item in enumerate(event_or_events)]
            single = False
        else:
            raise TypeError(
                "submit takes an ExecutorEvent, a zero-argument callable or a list of them, got "
                f"{event_or_events!r}"
            )
        seen: set[int] = set()
        for event in events:
            if event._future is not None or id(event) in seen:
                raise RuntimeError(
                    f"{type(event).__name__} {event!r} was already submitted; create a new event "
                    "to run it again"
                )
            seen.add(id(event))
        futures = []
        # Checking for shutdown and queueing happen under the lock ``shutdown()`` takes to
        # set its flag,
        # so every event is queued before the threads' stop marker or refused: none is left unrun.
        with self._lock:
            self._check_running()
            for event in events:
                future = ExecutionFuture(event, self)
                event._future = future
                if use_free_thread:
                    thread = self._free_thread()
                else:
                    name = thread_name or getattr(event, THREAD_NAME_ATTR, None) or MAIN_THREAD_NAME
                    thread = self._threads.get(name) or self._thread(name)
                thread.submit(event, prioritize)
                futures.append(future)
        return futures[0] if single else tuple(futures)

    def _check_running(self) -> None:
        if self._shut_down:
            raise RuntimeError(
                "This ExecutionEngine has been shut down (or is shutting down) and accepts no "
                "more events; submit to a new engine from ExecutionEngine()"
            )

    # ---------------------------------------------------------- notifications
    def subscribe_to_notifications(
        self, subscriber: Callable[[Notification], Any], type_or_category: NotificationFilter = None
    ) -> None:
        """Call ``subscriber(notification)`` for every notification, or those of a class or
        category."""
        if not callable(subscriber):
            raise TypeError(f"A subscriber must be callable, got {subscriber!r}")
        if not (
            type_or_category is None
            or isinstance(type_or_category, NotificationCategory)
            or (isinstance(type_or_category, type) and issubclass(type_or_category, Notification))
        ):
            raise TypeError(
                "Filter by a Notification subclass or a NotificationCategory, got "
                f"{type_or_category!r}"
            )
        with self._lock:
            if self._dispatcher is None:
                self._dispatcher = _NotificationDispatcher(self)
            self._subscribers = (*self._subscribers, (subscriber, type_or_category))

    def unsubscribe_from_notifications(self, subscriber: Callable[[Notification], Any]) -> None:
        """Stop delivering notifications to ``subscriber`` (every subscription it has)."""
        with self._lock:
            remaining = tuple(s for s in self._subscribers if s[0] != subscriber)
            if len(remaining) == len(self._subscribers):
                raise ValueError(f"{subscriber!r} is not subscribed")
            self._subscribers = remaining

    @property
    def has_subscribers(self) -> bool:
        """True when anyone subscribed to notifications (publishers may skip building them
        otherwise)."""
        return bool(self._subscribers)

    def publish_notification(self, notification: Notification) -> None:
        """Deliver ``notification`` to subscribers (asynchronously, in order)."""
        dispatcher = self._dispatcher
        if dispatcher is not None and self._subscribers:
            dispatcher.put(notification)

    def check_exceptions(self) -> None:
        """Raise the first exception a notification subscriber raised since the last check."""
        errors, self._subscriber_errors = self._subscriber_errors, []
        if errors:
            raise errors[0]

    # -------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Run every queued event, stop and join the worker threads, and forget this engine."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
            threads = list(self._threads.values())
        for thread in threads:
            thread.stop()
        current = threading.current_thread()
        for thread in threads:
            if thread.thread is not current:
                thread.thread.join()
        if self._dispatcher is not None:
            self._dispatcher.stop()
        with ExecutionEngine._instance_lock:
            if ExecutionEngine._instance is self:
                ExecutionEngine._instance = None
        self._devices.clear()

    def __repr__(self) -> str:
        return f"<ExecutionEngine threads={list(self._threads)} devices={list(self._devices)}>"


def _as_event(item: Any, index: int | None) -> ExecutorEvent:
    where = "" if index is None else f" (item {index})"
    if isinstance(item, ExecutorEvent):
        return item
    if callable(item) and not isinstance(item, type):
        try:
            signature = inspect.signature(item)
        except (TypeError, ValueError):
            return AnonymousCallableEvent(item)
        required = [
            p
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if required:
            raise TypeError(
                f"Callables submitted to the engine take no arguments; {item!r}{where} requires "
                f"{[p.name for p in required]}"
            )
        return AnonymousCallableEvent(item)
    raise TypeError(
        f"submit takes ExecutorEvents or zero-argument callables; got {type(item).__name__} "
        f"{item!r}{where}"
    )


def _shutdown_at_exit() -> None:
    engine = ExecutionEngine._instance
    if engine is not None:
        engine.shutdown()


atexit.register(_shutdown_at_exit)
