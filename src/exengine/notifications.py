"""Built-in notifications (re-exports)."""

from .events.detector_events import DataAcquiredNotification
from .kernel.notification_base import (
    DataHandlerErrorNotification,
    DataStoredNotification,
    EventExecutedNotification,
    NotificationCategory,
    NotificationSubscriberErrorNotification,
)

__all__ = [
    "DataAcquiredNotification",
    "DataHandlerErrorNotification",
    "DataStoredNotification",
    "EventExecutedNotification",
    "NotificationCategory",
    "NotificationSubscriberErrorNotification",
]
