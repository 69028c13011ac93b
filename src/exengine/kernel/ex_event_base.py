"""``ExecutorEvent``: the unit of work submitted to the ``ExecutionEngine``."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from .notification_base import EventExecutedNotification, Notification

if TYPE_CHECKING:
    from .device import Device
    from .ex_future import ExecutionFuture

_D = TypeVar("_D", bound="Device")


class EventChecks(Protocol):
    """What an event may ask to be checked before anything moves (see ``ExecutorEvent.check``);
    ``exengine.events.plan_checks.PlanChecks`` implements it. Each method raises ``PlanError``
    naming the value and what would be valid."""

    def device(self, device: Any, kind: type[_D], role: str) -> _D:
        """``device`` (an object, its registered name, or ``None`` for the only one) as a
        ``kind``."""
        ...

    def setting(self, device: Device, prop: str, value: Any) -> None:
        """``device.prop = value`` is allowed by what the device declares."""
        ...

    def position(self, stage: Device, what: str, value: float, axis: str) -> None:
        """``value`` is a finite number within the limits ``stage`` declares for ``axis``."""
        ...

    def number(self, where: str, value: float, low: float | None = None) -> None:
        """``value`` is a finite number, at least ``low``."""
        ...

    def detector(self, detector: Any) -> None:
        """The detector exists and its current exposure is allowed."""
        ...

    def data_handler(self, data_handler: Any) -> None:
        """The data handler (when there is one) can still take frames."""
        ...


#: (event class, notification class) pairs already warned about as undeclared.
_UNDECLARED_WARNED: set[tuple[type, type]] = set()


class ExecutorEvent(ABC):
    """Base class of events. Subclasses implement :meth:`execute` and may list
    ``notification_types``.

    Subclasses may be ``@dataclass`` classes and may mix in the capabilities ``DataProducing``,
    ``Stoppable`` and ``Abortable`` before or after ``ExecutorEvent`` in their bases. The event's
    bookkeeping is set up when it is submitted, so a subclass need not call ``super().__init__``.
    """

    notification_types: ClassVar[list[type[Notification]]] = [EventExecutedNotification]
    _future: ExecutionFuture | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        merged: list[type[Notification]] = []
        for klass in reversed(cls.__mro__):
            for kind in vars(klass).get("notification_types", ()):
                if kind not in merged:
                    merged.append(kind)
        if EventExecutedNotification not in merged:
            merged.insert(0, EventExecutedNotification)
        cls.notification_types = merged

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    @abstractmethod
    def execute(self) -> Any:
        """Do the event's work; the return value becomes the future's result."""

    def check(self, checks: EventChecks) -> None:
        """Declare what to check before anything moves: ask ``checks`` about each device setting
        this event will make. Events that declare nothing are checked by running them."""

    def publish_notification(self, notification: Notification) -> None:
        """Publish ``notification`` to the engine's subscribers and record it on this event's
        future.

        Warns (``UserWarning``, once per event class and notification type) when the notification's
        type is not among the event's ``notification_types``; it is published all the same.
        """
        kind = type(notification)
        if kind not in self.notification_types:
            self._warn_undeclared(kind)
        future = self._future
        if future is not None:
            future._notify_of_event_notification(notification)
            future._engine.publish_notification(notification)
        else:
            from .executor import ExecutionEngine

            engine = ExecutionEngine._instance
            if engine is not None:
                engine.publish_notification(notification)

    def _warn_undeclared(self, kind: type[Notification]) -> None:
        if any(issubclass(kind, declared) for declared in self.notification_types):
            return
        key = (type(self), kind)
        if key in _UNDECLARED_WARNED:
            return
        _UNDECLARED_WARNED.add(key)
        warnings.warn(
            f"{type(self).__name__} published a {kind.__name__}, which is not in its "
            f"notification_types {[t.__name__ for t in self.notification_types]}; add it there so "
            "that futures and subscribers can expect it",
            UserWarning,
            stacklevel=3,
        )


class AnonymousCallableEvent(ExecutorEvent):
    """Wraps a zero-argument callable so it can be submitted like an event."""

    def __init__(self, callable_obj: Callable[[], Any]) -> None:
        super().__init__()
        self.callable_obj = callable_obj
        thread_name = getattr(callable_obj, "_thread_name", None)
        if thread_name is not None:
            self._thread_name = thread_name

    def execute(self) -> Any:
        return self.callable_obj()

    def __repr__(self) -> str:
        return f"AnonymousCallableEvent({self.callable_obj!r})"
