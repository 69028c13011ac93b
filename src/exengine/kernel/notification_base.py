"""Notifications: small, hashable messages published by events, devices and the data pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar

TNotificationPayload = TypeVar("TNotificationPayload")


class NotificationCategory(Enum):
    """The broad kind of a notification, usable as a subscription filter."""

    Event = "Update from the execution of an event"
    Data = "Data has been acquired, processed or stored"
    Storage = "Update from a data storage object"
    Device = "Update from a device"


def _identity_eq(self: object, other: object) -> bool:
    return self is other


def _identity_hash(self: object) -> int:
    return id(self)


@dataclass(eq=False)
class Notification(Generic[TNotificationPayload]):
    """Base class of every notification.

    Subclasses set the class variables ``category`` and ``description`` and may be plain classes or
    ``@dataclass`` classes. Each instance is a distinct message: equality and hashing are by
    identity, also for ``@dataclass`` subclasses (which would otherwise become unhashable).
    """

    category: ClassVar[NotificationCategory] = NotificationCategory.Event
    description: ClassVar[str] = ""
    payload: TNotificationPayload | None = None
    timestamp: datetime = field(default_factory=datetime.now, init=False, compare=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Present in the subclass's own namespace before @dataclass runs, so it keeps them.
        cls.__eq__ = _identity_eq  # type: ignore[method-assign,assignment]
        cls.__hash__ = _identity_hash  # type: ignore[method-assign,assignment]

    __eq__ = _identity_eq  # type: ignore[assignment]
    __hash__ = _identity_hash  # type: ignore[assignment]


@dataclass(eq=False)
class EventExecutedNotification(Notification[BaseException | None]):
    """Published when an event finishes; the payload is ``None`` or the exception it raised."""

    category = NotificationCategory.Event
    description = "An event has finished executing (payload: None or the exception it raised)"


@dataclass(eq=False)
class DataStoredNotification(Notification[Any]):
    """Published once the storage has accepted a frame; the payload is its ``DataCoordinates``."""

    category = NotificationCategory.Data
    description = "Data has been stored (payload: its DataCoordinates)"


@dataclass(eq=False)
class DataHandlerErrorNotification(Notification[BaseException]):
    """Published when a processor or the storage of a ``DataHandler`` raises; the payload is the
    error."""

    category = NotificationCategory.Storage
    description = "Processing or storing data failed (payload: the exception)"


@dataclass(eq=False)
class NotificationSubscriberErrorNotification(Notification[BaseException]):
    """Published (to other subscribers) when a notification subscriber raises."""

    category = NotificationCategory.Event
    description = "A notification subscriber raised (payload: the exception)"


@dataclass(eq=False)
class AcquisitionPausedNotification(Notification[int]):
    """Published when a paused acquisition stops between events; the payload is the frames acquired
    so far."""

    category = NotificationCategory.Event
    description = "The acquisition is paused between events (payload: frames acquired so far)"


@dataclass(eq=False)
class AcquisitionResumedNotification(Notification[float]):
    """Published when a paused acquisition goes on; the payload is how long it was paused, in
    seconds."""

    category = NotificationCategory.Event
    description = "The acquisition goes on after a pause (payload: seconds paused)"
