"""Events that drive detectors: capture and read out data."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

from ..device_types import Detector
from ..kernel.data_coords import DataCoordinates
from ..kernel.data_handler import DataHandler, DataHandlerError
from ..kernel.ex_event_base import EventChecks, ExecutorEvent
from ..kernel.ex_event_capabilities import Abortable, DataProducing, Stoppable
from ..kernel.notification_base import Notification, NotificationCategory
from ._devices import resolve_device

DetectorLike = Detector | str | None


@dataclass(eq=False)
class DataAcquiredNotification(Notification[DataCoordinates]):
    """Published when a detector frame has been read out; the payload is its coordinates."""

    category = NotificationCategory.Data
    description = "Data has been acquired by a detector and handed to the data handler"


def _count(num_blocks: int | None, num_images: int | None) -> int | None:
    if num_blocks is not None and num_images is not None and num_blocks != num_images:
        raise ValueError(
            f"num_blocks={num_blocks} and num_images={num_images} disagree; pass one of them"
        )
    count = num_blocks if num_blocks is not None else num_images
    if count is not None and (not isinstance(count, int) or count < 0):
        raise ValueError(f"The number of images must be a non-negative int or None, got {count!r}")
    return count


class ReadoutData(Stoppable, Abortable, DataProducing, ExecutorEvent):
    """Read frames from a detector and hand them, with their coordinates, to a data handler.

    Reads ``num_images`` (alias ``num_blocks``) frames, or until the coordinate iterator ends, or
    until stopped. ``detector`` is a ``Detector``, its registered name, or ``None`` for the only
    one. ``stop_on_empty`` ends the readout when the detector has stopped and its buffer is empty.
    ``frame_timeout_s`` (default 30 s; None waits forever) raises ``TimeoutError`` when the detector
    delivers no frame for that long.
    """

    notification_types = [DataAcquiredNotification]

    def __init__(
        self,
        data_coordinates_iterator: Any = None,
        detector: DetectorLike = None,
        data_handler: DataHandler | None = None,
        num_blocks: int | None = None,
        stop_on_empty: bool = False,
        num_images: int | None = None,
        data_coordinate_iterator: Any = None,
        frame_timeout_s: float | None = 30.0,
    ) -> None:
        super().__init__(
            data_coordinates_iterator=data_coordinates_iterator,
            data_coordinate_iterator=data_coordinate_iterator,
            data_handler=data_handler,
        )
        self.detector = detector
        self.num_blocks = _count(num_blocks, num_images)
        self.stop_on_empty = stop_on_empty
        self.frame_timeout_s = frame_timeout_s

    @property
    def num_images(self) -> int | None:
        """Alias of ``num_blocks``."""
        return self.num_blocks

    def execute(self) -> int:
        """Read the frames; returns how many were read."""
        detector = resolve_device(self.detector, Detector, "detector")
        handler = self.data_handler
        # nowhere to put frames: stop the camera
        if handler is not None and handler.error is not None:
            detector.stop()
            raise DataHandlerError(
                f"Not reading {detector.name}: the data handler has failed, no more frames "
                f"can be stored ({handler.error!r})"
            ) from handler.error
        counter = itertools.count() if self.num_blocks is None else range(self.num_blocks)
        read = 0
        for _, coords in zip(counter, self.data_coordinate_iterator, strict=False):
            waiting_since = time.monotonic()
            while True:
                if self.is_abort_requested() or self.is_stop_requested():
                    return read
                image, metadata = detector.pop_data(timeout=0.01)
                if image is not None:
                    break
                if self.stop_on_empty and detector.is_stopped():
                    return read
                if (
                    self.frame_timeout_s is not None
                    and time.monotonic() - waiting_since > self.frame_timeout_s
                ):
                    raise TimeoutError(
                        f"{detector.name} delivered no frame for {dict(coords)} within "
                        f"{self.frame_timeout_s} s ({read} frames read)"
                    )
            self.put_data(coords, image, metadata)
            read += 1
            self.publish_notification(DataAcquiredNotification(coords))
        return read

    def check(self, checks: EventChecks) -> None:
        checks.detector(self.detector)
        checks.data_handler(self.data_handler)


class StartCapture(ExecutorEvent):
    """Arm a detector for ``num_images`` (alias ``num_blocks``) frames and start it."""

    def __init__(
        self,
        num_blocks: int | None = None,
        detector: DetectorLike = None,
        num_images: int | None = None,
    ) -> None:
        super().__init__()
        self.num_blocks = _count(num_blocks, num_images)
        if self.num_blocks is None:
            raise ValueError(
                "StartCapture needs num_images; use StartContinuousCapture to capture until stopped"
            )
        self.detector = detector

    def execute(self) -> None:
        _arm_and_start(resolve_device(self.detector, Detector, "detector"), self.num_blocks)

    def check(self, checks: EventChecks) -> None:
        checks.detector(self.detector)


def _arm_and_start(detector: Detector, frame_count: int | None) -> None:
    """Arm and start ``detector``; stop it again if either fails."""
    try:
        detector.arm(frame_count)
        detector.start()
    except BaseException:
        detector.stop()
        raise


class StartContinuousCapture(ExecutorEvent):
    """Start a detector capturing until a ``StopCapture``."""

    def __init__(self, detector: DetectorLike = None) -> None:
        super().__init__()
        self.detector = detector

    def execute(self) -> None:
        _arm_and_start(resolve_device(self.detector, Detector, "detector"), None)

    def check(self, checks: EventChecks) -> None:
        checks.detector(self.detector)


class StopCapture(ExecutorEvent):
    """Stop a detector."""

    def __init__(self, detector: DetectorLike = None) -> None:
        super().__init__()
        self.detector = detector

    def execute(self) -> None:
        resolve_device(self.detector, Detector, "detector").stop()
