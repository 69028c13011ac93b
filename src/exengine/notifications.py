"""Built-in notifications (re-exports)."""

from .events.detector_events import DataAcquiredNotification
from .kernel.notification_base import (
    AcquisitionPausedNotification,
    AcquisitionResumedNotification,
    DataHandlerErrorNotification,
    DataStoredNotification,
    EventExecutedNotification,
    NotificationCategory,
    NotificationSubscriberErrorNotification,
)

__all__ = [
    "AcquisitionPausedNotification",
    "AcquisitionResumedNotification",
    "DataAcquiredNotification",
    "DataHandlerErrorNotification",
    "DataStoredNotification",
    "EventExecutedNotification",
    "NotificationCategory",
    "NotificationSubscriberErrorNotification",
]
