"""Base classes to subclass when extending ExEngine (re-exports)."""

from .kernel.data_storage_base import DataStorage
from .kernel.device import Device
from .kernel.ex_event_base import ExecutorEvent
from .kernel.ex_event_capabilities import Abortable, DataProducing, Stoppable
from .kernel.notification_base import Notification, NotificationCategory

__all__ = [
    "Abortable",
    "DataProducing",
    "DataStorage",
    "Device",
    "ExecutorEvent",
    "Notification",
    "NotificationCategory",
    "Stoppable",
]
