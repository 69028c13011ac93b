"""Events that drive detectors: capture and read out data."""

from __future__ import annotations

import time
from collections.abc import Iterator
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
#: The most coordinates of dropped frames a readout lists (all are counted).
MAX_DROPPED_LISTED = 10_000


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


def _has_dropped(detector: Detector) -> bool:
    return bool(getattr(detector, "frames_dropped", 0))


class ReadoutData(Stoppable, Abortable, DataProducing, ExecutorEvent):
    """Read frames from a detector and hand them, with their coordinates, to a data handler.

    Reads ``num_images`` (alias ``num_blocks``) frames, or until the coordinate iterator ends, or
    until stopped: then it still takes the frames already in the detector's buffer and the one it
    was capturing (an abort drops them). ``detector`` is a ``Detector``, its registered name, or
    ``None`` for the only one. ``stop_on_empty`` ends the readout when the detector has stopped and
    its buffer is empty. ``frame_timeout_s`` (default 30 s; None waits forever) raises
    ``TimeoutError`` when the detector delivers no frame for that long. Frames the detector dropped
    (its buffer was full; told by gaps in the frames' ``FrameIndex`` and by its ``frames_dropped``)
    are skipped with their coordinates and counted in ``frames_dropped``.
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
        self.frames_dropped = 0
        self.dropped_coordinates: list[dict[str, Any]] = []
        self._took_frame_in_hand = False
        self.stop_on_empty = stop_on_empty
        self.frame_timeout_s = frame_timeout_s

    @property
    def num_images(self) -> int | None:
        """Alias of ``num_blocks``."""
        return self.num_blocks

    def execute(self) -> int:
        """Read the frames; returns how many were read. Frames the detector dropped (its buffer was
        full) are counted in ``frames_dropped``, and their coordinates kept in
        ``dropped_coordinates`` (the first :data:`MAX_DROPPED_LISTED`)."""
        detector = resolve_device(self.detector, Detector, "detector")
        handler = self.data_handler
        # nowhere to put frames: stop the camera
        if handler is not None and handler.error is not None:
            detector.stop()
            raise DataHandlerError(
                f"Not reading {detector.name}: the data handler has failed, no more frames "
                f"can be stored ({handler.error!r})"
            ) from handler.error
        self.frames_dropped = 0
        self.dropped_coordinates = []
        self._took_frame_in_hand = False
        coordinates = iter(self.data_coordinate_iterator)
        remaining = self.num_blocks
        read = 0
        expected: int | None = None  # the detector's index of the next frame
        while remaining is None or remaining > 0:
            frame = self._next_frame(detector, read)
            if frame is None:
                break
            image, metadata = frame
            index = metadata.get("FrameIndex") if isinstance(metadata, dict) else None
            if isinstance(index, int) and expected is not None and index > expected:
                remaining = self._drop(coordinates, index - expected, remaining)
            expected = index + 1 if isinstance(index, int) else None
            coords = next(coordinates, None)
            if coords is None or remaining == 0:
                break
            self.put_data(coords, image, metadata)
            read += 1
            remaining = None if remaining is None else remaining - 1
            self.publish_notification(DataAcquiredNotification(coords))
        trailing = getattr(detector, "frames_dropped", 0) - self.frames_dropped
        if trailing > 0 and not self.is_abort_requested():  # dropped after the last frame read
            self._drop(coordinates, trailing, remaining)
        return read

    def _next_frame(self, detector: Detector, read: int) -> tuple[Any, Any] | None:
        """The detector's next frame; ``None`` when there is none to wait for: aborted; stopped
        (after the frames already in the detector's buffer and the one it was capturing); the
        detector stopped after dropping frames (or, with ``stop_on_empty``, at all)."""
        waiting_since = time.monotonic()
        while not self.is_abort_requested():
            stopping = self.is_stop_requested()
            image, metadata = detector.pop_data(timeout=0.0 if stopping else 0.01)
            if image is not None:
                return image, metadata
            if stopping:
                return self._frame_in_hand(detector)
            if detector.is_stopped() and (self.stop_on_empty or _has_dropped(detector)):
                return None
            if (
                self.frame_timeout_s is not None
                and time.monotonic() - waiting_since > self.frame_timeout_s
            ):
                raise TimeoutError(
                    f"{detector.name} delivered no frame within {self.frame_timeout_s} s "
                    f"({read} frames read)"
                )
        return None

    def _frame_in_hand(self, detector: Detector) -> tuple[Any, Any] | None:
        """Stopped: the frame the detector was capturing when the stop came (once), unless it has
        stopped or an abort comes first."""
        if self._took_frame_in_hand:
            return None
        self._took_frame_in_hand = True
        waited = 0.0
        while not self.is_abort_requested() and not detector.is_stopped():
            image, metadata = detector.pop_data(timeout=0.01)
            if image is not None:
                return image, metadata
            waited += 0.01
            if self.frame_timeout_s is not None and waited > self.frame_timeout_s:
                break
        return None

    def _drop(self, coordinates: Iterator[Any], count: int, remaining: int | None) -> int | None:
        """Count ``count`` frames the detector dropped, taking their coordinates; returns the
        frames still to read."""
        for _ in range(count if remaining is None else min(count, remaining)):
            coords = next(coordinates, None)
            if coords is None:
                break
            self.frames_dropped += 1
            if len(self.dropped_coordinates) < MAX_DROPPED_LISTED:
                self.dropped_coordinates.append(dict(coords))
        return None if remaining is None else max(remaining - count, 0)

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
