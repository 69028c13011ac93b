"""Events that drive detectors: capture and read out data."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from ..device_types import Detector
from ..kernel.data_coords import DataCoordinates
from ..kernel.data_handler import DataHandler, DataHandlerError
from ..kernel.ex_event_base import EventChecks, ExecutorEvent
from ..kernel.ex_event_capabilities import Abortable, DataProducing, Stoppable
from ..kernel.executor import ExecutionEngine
from ..kernel.notification_base import Notification, NotificationCategory
from ._devices import resolve_device

DetectorLike = Detector | str | None
#: One detector, or several that capture together (armed, then started, in order).
Detectors = DetectorLike | Sequence[Detector | str]
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


@dataclass
class _Capture:
    """What the readouts of one capture share: the ``FrameIndex`` the detector's next frame should
    have (``None``: not known), and the drops they have counted."""

    next_index: int | None = None
    dropped: int = 0


#: Per detector, its current capture (reset when a capture event arms it).
_CAPTURES: WeakKeyDictionary[Detector, _Capture] = WeakKeyDictionary()


def _capture_of(detector: Detector) -> _Capture:
    """The detector's current capture; one started elsewhere counts drops from now on."""
    capture = _CAPTURES.get(detector)
    if capture is None:
        capture = _CAPTURES[detector] = _Capture(dropped=getattr(detector, "frames_dropped", 0))
    return capture


class ReadoutData(Stoppable, Abortable, DataProducing, ExecutorEvent):
    """Read frames from a detector and hand them, with their coordinates, to a data handler.

    Reads ``num_images`` (alias ``num_blocks``) frames, or until the coordinate iterator ends,
    or until stopped: then it still takes the frames already in the detector's buffer and the
    one it was capturing (an abort drops them). ``detector`` is a ``Detector``, its registered
    name, or ``None`` for the only one; several, or one that drives several cameras
    (``Detector.cameras()``), are read camera by camera: coordinates that name a ``camera`` go
    to that camera, others to each camera in turn. ``stop_on_empty`` ends the readout when the
    detector has stopped and its buffer is empty. ``frame_timeout_s`` (default 30 s; None waits
    forever) raises ``TimeoutError`` when the detector delivers no frame for that long. Frames
    the detector dropped (its buffer was full; told by gaps in the frames' ``FrameIndex`` and by
    its ``frames_dropped``) are skipped with their coordinates and counted in
    ``frames_dropped``.
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
        count = len(detector) if isinstance(detector, (list, tuple)) else 1
        if self.num_blocks is not None and self.num_blocks % count:
            raise ValueError(
                f"{self.num_blocks} frames cannot be shared by {count} detectors; give each as "
                "many (num_images counts the frames of all of them)"
            )
        self.frames_dropped = 0
        self.dropped_coordinates: list[dict[str, Any]] = []
        self._stopped_detectors = False
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
        detectors = detectors_of(self.detector)
        handler = self.data_handler
        # nowhere to put frames: stop the cameras
        if handler is not None and handler.error is not None:
            for detector in detectors:
                detector.stop()
            names = ", ".join(d.name for d in detectors)
            raise DataHandlerError(
                f"Not reading {names}: the data handler has failed, no more frames can be stored "
                f"({handler.error!r})"
            ) from handler.error
        self.frames_dropped = 0
        self.dropped_coordinates = []
        self._stopped_detectors = False
        cameras = cameras_of(detectors)
        if self.num_blocks is not None and self.num_blocks % len(cameras):
            raise ValueError(
                f"{self.num_blocks} frames cannot be shared by {len(cameras)} cameras "
                f"({', '.join(c.name for c in cameras)}); give each as many"
            )
        if len(cameras) > 1:
            return _SeveralDetectors(self, cameras).read()
        detector = cameras[0]
        capture = _capture_of(detector)
        coordinates = iter(self.data_coordinate_iterator)
        remaining = self.num_blocks
        read = 0
        while remaining is None or remaining > 0:
            frame = self._next_frame(detector, read)
            if frame is None:
                break
            image, metadata = frame
            index = metadata.get("FrameIndex") if isinstance(metadata, dict) else None
            expected = capture.next_index
            if isinstance(index, int) and expected is not None and index > expected:
                capture.dropped += index - expected
                remaining = self._drop(coordinates, index - expected, remaining)
            capture.next_index = index + 1 if isinstance(index, int) else None
            coords = next(coordinates, None)
            if coords is None or remaining == 0:
                break
            _check_camera(coords, detector, [detector])
            self.put_data(coords, image, metadata)
            read += 1
            remaining = None if remaining is None else remaining - 1
            self.publish_notification(DataAcquiredNotification(coords))
        # dropped after the last frame read, while this readout still had frames to read (else
        # the next readout of the capture finds them by their FrameIndex)
        trailing = getattr(detector, "frames_dropped", 0) - capture.dropped
        if trailing > 0 and remaining != 0 and not self.is_abort_requested():
            capture.dropped += trailing
            self._drop(coordinates, trailing, remaining)
        return read

    def _next_frame(self, detector: Detector, read: int) -> tuple[Any, Any] | None:
        """The detector's next frame; ``None`` when there is none to wait for: aborted; stopped
        (after the frames already in the detector's buffer and the one it was capturing); the
        detector stopped after dropping frames (or, with ``stop_on_empty``, at all)."""
        waiting_since = time.monotonic()
        while not self.is_abort_requested():
            if self.is_stop_requested():
                return self._frame_when_stopped(detector)
            image, metadata = detector.pop_data(timeout=0.01)
            if image is not None:
                return image, metadata
            if detector.is_stopped() and (self.stop_on_empty or _has_dropped(detector)):
                # no more will come; the last one may have arrived since the pop
                image, metadata = detector.pop_data(timeout=0.0)
                return None if image is None else (image, metadata)
            if (
                self.frame_timeout_s is not None
                and time.monotonic() - waiting_since > self.frame_timeout_s
            ):
                raise TimeoutError(
                    f"{detector.name} delivered no frame within {self.frame_timeout_s} s "
                    f"({read} frames read)"
                )
        return None

    def _frame_when_stopped(self, detector: Detector) -> tuple[Any, Any] | None:
        """Stopped: the frames in the detector's buffer, and the one it was capturing when the stop
        came if its buffer was empty then. The detector is stopped at once when frames are waiting
        (the readout is behind), else once that frame is in hand: a stop ends within a frame plus
        what the buffer holds, however fast the camera runs."""
        image, metadata = detector.pop_data(timeout=0.0)
        if self._stopped_detectors:
            return None if image is None else (image, metadata)
        self._stopped_detectors = True
        frame = self._frame_in_hand(detector) if image is None else (image, metadata)
        detector.stop()
        return frame

    def _frame_in_hand(self, detector: Detector) -> tuple[Any, Any] | None:
        """The frame the detector is capturing, unless it has stopped, an abort comes first or it
        takes longer than ``frame_timeout_s``."""
        waited = 0.0
        while not self.is_abort_requested():
            image, metadata = detector.pop_data(timeout=0.01)
            if image is not None:
                return image, metadata
            if detector.is_stopped():  # no more will come; the last one may just have arrived
                image, metadata = detector.pop_data(timeout=0.0)
                return None if image is None else (image, metadata)
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
            self._record_drop(coords)
        return None if remaining is None else max(remaining - count, 0)

    def _record_drop(self, coords: Any) -> None:
        """Count a frame the detector dropped, keeping its coordinates (the first
        :data:`MAX_DROPPED_LISTED`)."""
        self.frames_dropped += 1
        if len(self.dropped_coordinates) < MAX_DROPPED_LISTED:
            self.dropped_coordinates.append(dict(coords))

    def check(self, checks: EventChecks) -> None:
        for detector in _as_list(self.detector):
            checks.detector(detector)
        checks.data_handler(self.data_handler)


class _SeveralDetectors:
    """A readout of several detectors that capture together (``ReadoutData(detector=[a, b])``):
    their frames are taken as they come, round robin, so that none waits for another; the k-th
    coordinate belongs to detector ``k % n`` (frame ``k // n`` of it)."""

    def __init__(self, readout: ReadoutData, detectors: list[Detector]) -> None:
        count = len(detectors)
        self.readout, self.detectors = readout, detectors
        self.index = {detector.name: i for i, detector in enumerate(detectors)}
        self.captures = [_capture_of(detector) for detector in detectors]
        self.quota = None if readout.num_blocks is None else readout.num_blocks // count
        self.coordinates = iter(readout.data_coordinate_iterator)
        self.pending: list[deque[Any]] = [deque() for _ in detectors]
        self.handed = 0  # coordinates taken from the iterator
        self.taken = [0] * count  # frames read or dropped, per detector
        self.ended = [False] * count  # its coordinates ran out
        self.stopped = False  # stopped: the detectors were told to stop

    def coordinates_of(self, i: int) -> Any:
        """Detector ``i``'s next coordinates (``None``: the iterator ended): coordinates that name
        a ``camera`` go to that camera, others to each in turn."""
        while not self.pending[i]:
            coords = next(self.coordinates, None)
            if coords is None:
                return None
            name = _camera_named(coords)
            if name is None:
                self.pending[self.handed % len(self.detectors)].append(coords)
            elif name in self.index:
                self.pending[self.index[name]].append(coords)
            else:
                _check_camera(coords, None, self.detectors)
            self.handed += 1
        return self.pending[i].popleft()

    def done(self, i: int) -> bool:
        return self.ended[i] or (self.quota is not None and self.taken[i] >= self.quota)

    def drop(self, i: int, count: int) -> None:
        self.captures[i].dropped += count
        for _ in range(count):
            if self.done(i):
                return
            coords = self.coordinates_of(i)
            if coords is None:
                self.ended[i] = True
                return
            self.readout._record_drop(coords)
            self.taken[i] += 1

    def read(self) -> int:
        readout, read = self.readout, 0
        active = list(range(len(self.detectors)))
        last_frame = time.monotonic()
        while active and not readout.is_abort_requested():
            if readout.is_stop_requested() and not self.stopped:
                read += self.stop(active)
            got = False
            for i in list(active):
                if self.take(i):
                    got, read = True, read + 1
                elif self.finished(i):
                    if self.take(i):  # the last frame may have arrived since
                        got, read = True, read + 1
                    else:
                        active.remove(i)
            if got:
                last_frame = time.monotonic()
            elif self.stopped:
                break
            else:
                self.wait(last_frame, read)
        if not readout.is_abort_requested():
            for i, detector in enumerate(self.detectors):
                # dropped after its last frame read, while it still had frames to read
                trailing = getattr(detector, "frames_dropped", 0) - self.captures[i].dropped
                if trailing > 0 and not self.done(i):
                    self.drop(i, trailing)
        return read

    def stop(self, active: list[int]) -> int:
        """Stopped: take each detector's frame in hand (the one it was capturing, if nothing
        waits in its buffer), then stop them all; the frames in their buffers are read after."""
        self.stopped, read = True, 0
        for i in active:
            detector = self.detectors[i]
            image, metadata = detector.pop_data(timeout=0.0)
            frame = self.readout._frame_in_hand(detector) if image is None else (image, metadata)
            detector.stop()
            if frame is not None and not self.done(i) and self.accept(i, *frame):
                read += 1
        return read

    def take(self, i: int) -> bool:
        """Read detector ``i``'s next frame if it has one; whether it did."""
        if self.done(i):
            return False
        image, metadata = self.detectors[i].pop_data(timeout=0.0)
        return image is not None and self.accept(i, image, metadata)

    def accept(self, i: int, image: Any, metadata: Any) -> bool:
        """Hand detector ``i``'s frame over (after counting the frames missing before it); False
        when its coordinates ran out."""
        capture = self.captures[i]
        index = metadata.get("FrameIndex") if isinstance(metadata, dict) else None
        expected = capture.next_index
        if isinstance(index, int) and expected is not None and index > expected:
            self.drop(i, index - expected)
        capture.next_index = index + 1 if isinstance(index, int) else None
        coords = None if self.done(i) else self.coordinates_of(i)
        if coords is None:  # the coordinates ran out: this detector is done
            self.ended[i] = True
            return False
        self.readout.put_data(coords, image, metadata)
        self.taken[i] += 1
        self.readout.publish_notification(DataAcquiredNotification(coords))
        return True

    def finished(self, i: int) -> bool:
        """Detector ``i`` has nothing more to give this readout."""
        detector = self.detectors[i]
        if self.done(i):
            return True
        return detector.is_stopped() and (
            self.stopped or self.readout.stop_on_empty or _has_dropped(detector)
        )

    def wait(self, last_frame: float, read: int) -> None:
        timeout = self.readout.frame_timeout_s
        if timeout is not None and time.monotonic() - last_frame > timeout:
            names = ", ".join(d.name for d in self.detectors)
            raise TimeoutError(
                f"{names} delivered no frame within {timeout} s ({read} frames read)"
            )
        time.sleep(0.0005)


def _camera_named(coords: Any) -> Any:
    """The ``camera`` the coordinates name (``None``: none)."""
    get = getattr(coords, "get", None)
    return None if get is None else get("camera")


def _check_camera(coords: Any, detector: Detector | None, cameras: list[Detector]) -> None:
    """Refuse coordinates that name a ``camera`` other than ``detector``, which read the frame
    (``None``: none of ``cameras`` is the one named)."""
    name = _camera_named(coords)
    if name is None or (detector is not None and name == detector.name):
        return
    names = ", ".join(camera.name for camera in cameras)
    raise ValueError(
        f"The frame at {dict(coords)} is planned for camera {name!r}, but the cameras capturing "
        f"are {names}: the plan was made for other cameras (were a Multi Camera's cameras "
        "changed after the plan was made?)"
    )


class StartCapture(ExecutorEvent):
    """Arm a detector (or several: all are armed, then all started) for ``num_images`` (alias
    ``num_blocks``) frames each and start it."""

    def __init__(
        self,
        num_blocks: int | None = None,
        detector: Detectors = None,
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
        _arm_and_start(detectors_of(self.detector), self.num_blocks)

    def check(self, checks: EventChecks) -> None:
        for detector in _as_list(self.detector):
            checks.detector(detector)


def detectors_of(detector: Detectors) -> list[Detector]:
    """The detectors ``detector`` names: one (an object, its registered name, or ``None`` for the
    only one) or several."""
    return [resolve_device(d, Detector, "detector") for d in _as_list(detector)]


def cameras_of(detectors: list[Detector]) -> list[Detector]:
    """The cameras whose frames ``detectors`` deliver, each read out on its own (a device that
    drives several cameras together stands for them: ``Detector.cameras``)."""
    cameras = [camera for detector in detectors for camera in detector.cameras()]
    if len({id(camera) for camera in cameras}) != len(cameras):
        camera_names(detectors)  # raises, saying which
        raise ValueError(f"A camera would capture twice: {', '.join(c.name for c in cameras)}")
    return cameras


def camera_names(detector: Detectors) -> list[str]:
    """The values of the ``camera`` axis of frames of ``detector`` (one, or several that capture
    together): the names of the cameras whose frames they deliver when there are several, else
    none. A name not registered (yet) stands for one camera."""
    names: list[str] = []
    given: list[str] = []  # what each item stands for, to say which camera is named twice
    for item in _as_list(detector):
        if isinstance(item, str) and item not in ExecutionEngine.get_devices():
            names.append(item)
            given.append(item)
            continue
        try:
            found = resolve_device(item, Detector, "camera")
        except ValueError:  # None, and not exactly one detector registered
            return []
        cameras = [camera.name for camera in found.cameras()]
        names += cameras
        drives = ", ".join(c for c in cameras if c != found.name)
        given.append(f"{found.name} (drives {drives})" if drives else found.name)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(
            f"Each camera captures once at a time, but {', '.join(twice)} would capture twice: "
            f"{', '.join(given)}"
        )
    return names if len(names) > 1 else []


def _as_list(detector: Detectors) -> list[Detector | str | None]:
    return list(detector) if isinstance(detector, (list, tuple)) else [detector]


def _arm_and_start(detectors: list[Detector], frame_count: int | None) -> None:
    """Arm every detector, then start them (so that a shared trigger catches them all); stop
    them again if any fails. Each starts a new capture for the readouts' drop counting."""
    cameras = cameras_of(detectors)  # each camera once
    try:
        for detector in detectors:
            detector.arm(frame_count)
        for capturing in {*detectors, *cameras}:
            _CAPTURES[capturing] = _Capture()
        for detector in detectors:
            detector.start()
    except BaseException:
        for detector in detectors:
            detector.stop()
        raise


class StartContinuousCapture(ExecutorEvent):
    """Start a detector (or several) capturing until a ``StopCapture``."""

    def __init__(self, detector: Detectors = None) -> None:
        super().__init__()
        self.detector = detector

    def execute(self) -> None:
        _arm_and_start(detectors_of(self.detector), None)

    def check(self, checks: EventChecks) -> None:
        for detector in _as_list(self.detector):
            checks.detector(detector)


class StopCapture(ExecutorEvent):
    """Stop a detector (or several)."""

    def __init__(self, detector: Detectors = None) -> None:
        super().__init__()
        self.detector = detector

    def execute(self) -> None:
        for detector in detectors_of(self.detector):
            detector.stop()

    def check(self, checks: EventChecks) -> None:
        for detector in _as_list(self.detector):
            checks.detector(detector)
