"""Standard events (re-exports of the common ones)."""

from ._devices import resolve_device
from .detector_events import (
    DataAcquiredNotification,
    ReadoutData,
    StartCapture,
    StartContinuousCapture,
    StopCapture,
)
from .misc_events import AcquisitionClock, SetTimeEvent, Sleep
from .multi_d_events import (
    UNTIL_STOPPED,
    MultiDPlan,
    multi_d_acquisition_events,
    multi_d_acquisition_plan,
)
from .multi_d_settings import MultiDSettings
from .positioner_events import (
    SetPosition1DEvent,
    SetPosition2DEvent,
    SetTriggerable1DPositionsEvent,
    SetTriggerable2DPositionsEvent,
    StopTriggerablePositionSequenceEvent,
)
from .property_events import (
    SetPropertiesEvent,
    SetTriggerablePropertySequencesEvent,
    StopTriggerablePropertySequencesEvent,
)

__all__ = [
    "UNTIL_STOPPED",
    "AcquisitionClock",
    "DataAcquiredNotification",
    "MultiDPlan",
    "MultiDSettings",
    "ReadoutData",
    "SetPosition1DEvent",
    "SetPosition2DEvent",
    "SetPropertiesEvent",
    "SetTimeEvent",
    "SetTriggerable1DPositionsEvent",
    "SetTriggerable2DPositionsEvent",
    "SetTriggerablePropertySequencesEvent",
    "Sleep",
    "StartCapture",
    "StartContinuousCapture",
    "StopCapture",
    "StopTriggerablePositionSequenceEvent",
    "StopTriggerablePropertySequencesEvent",
    "multi_d_acquisition_events",
    "multi_d_acquisition_plan",
    "resolve_device",
]
