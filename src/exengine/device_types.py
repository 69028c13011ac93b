"""Standard device types: detectors and positioners that the standard events drive."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from .kernel.device import Device, direct_access

__all__ = [
    "Autofocus",
    "Detector",
    "Device",
    "DoubleAxisPositioner",
    "SingleAxisPositioner",
    "TriggerableDoubleAxisPositioner",
    "TriggerableSingleAxisPositioner",
]


class SingleAxisPositioner(Device):
    """A positioner along one axis, e.g. a focus (z) drive."""

    @abstractmethod
    def set_position(self, position: float) -> None:
        """Move to ``position``; returns once there."""

    @abstractmethod
    def get_position(self) -> float:
        """The current position."""


class _PositionSequencer(Device):
    """Positioners that step through a loaded sequence of positions on external triggers."""

    @abstractmethod
    def set_position_sequence(self, positions: np.ndarray) -> None:
        """Load ``positions`` (one per trigger; ``(N, 2)`` for two axes) and arm the sequence."""

    @abstractmethod
    def get_triggerable_position_sequence_max_length(self) -> int:
        """The longest sequence the hardware accepts."""

    @abstractmethod
    def stop_position_sequence(self) -> None:
        """Stop the running sequence."""


class TriggerableSingleAxisPositioner(SingleAxisPositioner, _PositionSequencer):
    """A single-axis positioner that steps through a loaded sequence on external triggers."""


class DoubleAxisPositioner(Device):
    """A two-axis positioner, e.g. an XY stage."""

    @abstractmethod
    def set_position(self, x: float, y: float) -> None:
        """Move to ``(x, y)``; returns once there."""

    @abstractmethod
    def get_position(self) -> tuple[float, float]:
        """The current ``(x, y)``."""


class TriggerableDoubleAxisPositioner(DoubleAxisPositioner, _PositionSequencer):
    """A two-axis positioner that steps through a loaded sequence on external triggers."""


class Detector(Device):
    """A camera or other detector together with the buffer it stores data in."""

    @abstractmethod
    def arm(self, frame_count: int | None = None) -> None:
        """Prepare to capture ``frame_count`` frames (``None``: until stopped)."""

    @abstractmethod
    def start(self) -> None:
        """Start capturing (after ``arm``)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop capturing."""

    @abstractmethod
    def is_stopped(self) -> bool:
        """True when not capturing."""

    @abstractmethod
    def pop_data(
        self, timeout: float | None = None
    ) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        """The next ``(frame, metadata)``; waits up to ``timeout`` s (None: forever), then ``(None,
        None)``, which a detector may return at once when no frame will come (stopped, or every
        armed frame delivered). ``metadata["FrameIndex"]``, when given, is the frame's index in the
        capture (a gap tells frames dropped)."""

    @property
    def frames_dropped(self) -> int:
        """Frames captured since the last ``arm`` that the detector could not keep (its buffer was
        full); 0 for detectors that cannot tell."""
        return 0

    @direct_access
    def cameras(self) -> tuple[Detector, ...]:
        """The cameras whose frames this detector delivers, each read out on its own: the detector
        itself, or, for a device that drives several cameras together (Micro-Manager's Multi
        Camera device), those cameras. Frames of several cameras have a ``camera`` axis."""
        return (self,)


class Autofocus(Device):
    """A hardware autofocus: finds the best focus and moves the focus drive there.

    ``autofocus_device_name`` is the name a useq-schema ``autofocus_plan`` gives for it (its
    ``autofocus_device_name``; ``None``: answers to its own name only). ``offset`` (µm) is added to
    the best focus found, as the offset motor of a hardware autofocus does.
    """

    autofocus_device_name: str | None = None

    @abstractmethod
    def run(self) -> float:
        """Find the best focus, move the focus drive to it plus ``offset``, and return that z
        (µm); ``RuntimeError`` when no focus is found."""

    @property
    @abstractmethod
    def offset(self) -> float:
        """µm added to the best focus found."""

    @offset.setter
    @abstractmethod
    def offset(self, value: float) -> None: ...
