"""Micro-Manager cameras: :class:`MicroManagerCamera`, and :class:`MicroManagerMultiCamera` for the
Multi Camera device (Utilities), whose cameras capture together as one."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..device_types import Detector
from ..kernel.device import direct_access
from ..kernel.executor import ExecutionEngine
from .micromanager_device import CMMCorePlus, MicroManagerDevice
from .micromanager_images import CoreImages

__all__ = ["MicroManagerCamera", "MicroManagerMultiCamera"]


class MicroManagerCamera(MicroManagerDevice, Detector):
    """A Micro-Manager camera: a single frame of the core's camera is snapped; several (or
    continuous) frames, or a frame of another camera, use sequence acquisition into the core's
    circular buffer, whose images go to the camera that took them (:class:`CoreImages`)."""

    def __init__(
        self, label: str | None = None, core: CMMCorePlus | None = None, name: str | None = None
    ) -> None:
        core = core or CMMCorePlus.instance()
        super().__init__(label or core.getCameraDevice(), core, name)
        self._images = CoreImages.of(self._core)
        self._frame_count: int | None = None
        self._popped = 0
        self._started = False
        self._dropped = 0
        self._driver: MicroManagerCamera = self  # whose sequence delivers this camera's frames
        self._next_number: dict[str, int] = {}  # per camera: the ImageNumber expected next
        self._ended_at = 0.0  # when its sequence was first seen ended with frames still owed

    @property
    def frames_dropped(self) -> int:
        """Frames lost since the last ``arm`` because the core's circular buffer overflowed: the
        frames of the sequence not captured once it did (at least one for a continuous one)."""
        return self._dropped

    @property
    def exposure(self) -> float:
        """Exposure in ms."""
        return float(self._core.getExposure(self._label))

    @exposure.setter
    def exposure(self, value: float) -> None:
        self._core.setExposure(self._label, float(value))

    def _labels(self) -> tuple[str, ...]:
        """The labels of the cameras whose frames this one delivers."""
        return (self._label,)

    def arm(self, frame_count: int | None = None) -> None:
        if frame_count is not None and frame_count < 0:
            raise ValueError(f"{self._label}: frame_count must be >= 0 or None, got {frame_count}")
        if self._core.isSequenceRunning(self._label):
            self._core.stopSequenceAcquisition(self._label)
        self._follow(self, frame_count)

    def _follow(self, driver: MicroManagerCamera, frame_count: int | None) -> None:
        """Take this camera's next frames from ``driver``'s capture of ``frame_count`` each."""
        self._driver, self._frame_count = driver, frame_count
        self._dropped = self._popped = 0
        self._started = False
        self._next_number = {}
        self._ended_at = 0.0

    def start(self) -> None:
        core, labels = self._core, self._labels()
        others = self._images.begin(labels)
        self._popped = 0
        current = core.getCameraDevice()
        if current != self._label:
            if others or core.isSequenceRunning():
                self._check_fits(current)
            else:  # the core reads images with its current camera's size and pixel type
                core.setCameraDevice(self._label)
        if self._frame_count == 1 and core.getCameraDevice() == self._label:
            core.snapImage()
            exposure = core.getExposure(self._label)
            channels = core.getNumberOfCameraChannels()
            names = labels  # a camera of one channel: its own label (or its one camera's)
            if channels > 1:
                names = tuple(core.getCameraChannelName(c) for c in range(channels))
            for channel, camera in enumerate(names):
                tags = {"Camera": camera, "Exposure-ms": exposure, "ElapsedTime-ms": 0.0}
                self._images.keep(camera, core.getImage(channel), {**tags, "ImageNumber": 0})
            return
        if self._frame_count is None and core.getCameraDevice() == self._label:
            core.startContinuousSequenceAcquisition(0)
        elif self._frame_count is None:  # as continuous: going on past an overflow
            core.startSequenceAcquisition(self._label, _ENDLESS, 0, False)
        else:
            core.startSequenceAcquisition(self._label, self._frame_count, 0, True)
        self._started = True

    def _geometry(self, label: str) -> tuple[Any, ...]:
        """Width, height and pixel type of camera ``label``'s images."""
        core = self._core
        width, height = core.getROI(label)[2:]
        typed = core.hasProperty(label, "PixelType")
        return int(width), int(height), core.getProperty(label, "PixelType") if typed else ""

    def _check_fits(self, current: str) -> None:
        """Refuse to capture beside ``current``, the core's current camera, with images of another
        size or pixel type: the core reads every image with its current camera's."""
        mine, theirs = self._geometry(self._label), self._geometry(current)
        if not _alike([mine, theirs]):
            raise ValueError(
                f"{self._label} gives {_described(mine)} images, {current}, Micro-Manager's "
                f"current camera, {_described(theirs)}: the core reads every camera's images with "
                "its current camera's size and pixel type. Give them the same ROI, binning and "
                "pixel type, or capture with one at a time"
            )

    def stop(self) -> None:
        self._started = False
        if self._driver is not self:
            self._driver.stop()
        elif self._core.isSequenceRunning(self._label):
            self._core.stopSequenceAcquisition(self._label)

    def is_stopped(self) -> bool:
        if self._core.isSequenceRunning(self._driver._label):
            return False
        if self._images.waiting(self._labels()):
            return False
        return not self._owes() or self._ended_for() > LAST_IMAGES_S

    def _owes(self) -> bool:
        """Its capture runs and has not delivered all its frames."""
        return self._started and (self._frame_count is None or self._popped < self._owed())

    def _ended_for(self) -> float:
        """Seconds since its sequence was first seen ended with frames still owed."""
        self._ended_at = self._ended_at or time.monotonic()
        return time.monotonic() - self._ended_at

    def pop_data(
        self, timeout: float | None = None
    ) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        deadline = None if timeout is None else time.monotonic() + timeout
        labels = self._labels()
        while (image := self._images.pop(labels)) is None:
            running = self._core.isSequenceRunning(self._driver._label)
            # a continuous capture goes on past an overflow
            if (self._frame_count is not None or not running) and self._core.isBufferOverflowed():
                self._overflowed()
                return None, None
            # the core may say a sequence ended before its last images are in the buffer
            if self._owes() and not running and self._ended_for() > LAST_IMAGES_S:
                self._started = False
                raise RuntimeError(
                    f"{self._label} stopped delivering frames after {self._popped}"
                    + ("" if self._frame_count is None else f" of {self._owed()}")
                )
            if deadline is not None and time.monotonic() >= deadline:
                return None, None
            time.sleep(0.0005)
        self._popped += 1
        self._ended_at = 0.0
        self._number(image[1])
        return image

    def _number(self, metadata: dict[str, Any]) -> None:
        """Give the image its ``FrameIndex`` (its ``ImageNumber``, counted per camera); a gap in
        the numbers counts the images the core lost (a continuous capture goes on past a full
        circular buffer, clearing it)."""
        try:
            number = int(metadata["ImageNumber"])
        except (KeyError, TypeError, ValueError):
            return
        camera = str(metadata.get("Camera", self._label))
        expected = self._next_number.get(camera)
        if expected is not None and number > expected:
            self._dropped += number - expected
        self._next_number[camera] = number + 1
        metadata.setdefault("FrameIndex", number)

    def _owed(self) -> int:
        """Frames this camera's capture delivers (``frame_count`` of each of its cameras)."""
        return (self._frame_count or 0) * len(self._labels())

    def _overflowed(self) -> None:
        """The circular buffer overflowed and the core stopped the sequence: what it did not
        capture is dropped (counted once)."""
        if not self._started:
            return
        self._started = False
        if self._core.isSequenceRunning(self._driver._label):
            self._core.stopSequenceAcquisition(self._driver._label)
        if self._frame_count is None:
            self._dropped += 1
        else:  # what was not captured (the gaps counted so far included)
            self._dropped = max(self._owed() - self._popped, self._dropped + 1)


class MicroManagerMultiCamera(MicroManagerCamera):
    """Micro-Manager's Multi Camera device (Utilities): its physical cameras capture together,
    started and triggered as one camera. A readout takes each camera's frames from that camera's
    own :class:`MicroManagerCamera` (``cameras()``), so frames carry a ``camera`` axis; the physical
    cameras must be wrapped too (``load_micromanager`` wraps every camera)."""

    _followers: tuple[MicroManagerCamera, ...] = ()  # the cameras of the capture armed

    @direct_access
    def physical_cameras(self) -> tuple[str, ...]:
        """The labels of the cameras it drives, in the order of its "Physical Camera" properties."""
        names = sorted(
            (p for p in self._mm_properties if p.startswith(PHYSICAL_CAMERA)),
            key=lambda p: int(p[len(PHYSICAL_CAMERA) :]),
        )
        values = [self._core.getProperty(self._label, p) for p in names]
        return tuple(v for v in values if v and v != _UNDEFINED)

    def _labels(self) -> tuple[str, ...]:
        if self._followers:
            return tuple(camera._label for camera in self._followers)
        return self.physical_cameras()

    @direct_access
    def cameras(self) -> tuple[Detector, ...]:
        labels = self.physical_cameras()
        wrapped: dict[str, MicroManagerCamera] = {}
        for device in ExecutionEngine.get_devices().values():
            if isinstance(device, MicroManagerCamera) and device._core is self._core:
                wrapped.setdefault(device._label, device)
        if not labels:
            raise ValueError(
                f"{self._label} drives no camera: its Physical Camera properties are all "
                f"{_UNDEFINED}; set them to the cameras' labels"
            )
        missing = [label for label in labels if label not in wrapped]
        if missing:
            raise ValueError(
                f"{self._label}'s cameras {', '.join(missing)} are not wrapped as devices; wrap "
                "every camera of the core with load_micromanager"
            )
        return tuple(wrapped[label] for label in labels)

    def arm(self, frame_count: int | None = None) -> None:
        cameras: tuple[MicroManagerCamera, ...] = self.cameras()  # type: ignore[assignment]
        sizes = {label: self._geometry(label) for label in (c._label for c in cameras)}
        if not _alike(sizes.values()):
            described = ", ".join(f"{label} {_described(size)}" for label, size in sizes.items())
            raise ValueError(
                f"The cameras of {self._label} must give images of one size and pixel type, got "
                f"{described}: give them the same ROI, binning and pixel type"
            )
        super().arm(frame_count)
        self._followers = cameras
        for camera in self._followers:
            camera._follow(self, frame_count)

    def start(self) -> None:
        super().start()
        for camera in self._followers:
            camera._started = self._started

    def stop(self) -> None:
        super().stop()
        for camera in self._followers:
            camera._started = False


def _alike(geometries: Iterable[tuple[Any, ...]]) -> bool:
    """Whether images of these geometries (``_geometry``) have one size and one pixel type (the
    pixel types that are known)."""
    geometries = list(geometries)
    sizes = {geometry[:2] for geometry in geometries}
    return len(sizes) == 1 and len({g[2] for g in geometries if g[2]}) <= 1


def _described(geometry: tuple[Any, ...]) -> str:
    width, height, pixels = geometry
    return f"{width}x{height}" + (f" {pixels}" if pixels else "")


#: How long images may still arrive after the core says their sequence ended (s).
LAST_IMAGES_S = 1.0
#: The properties of a Multi Camera that name its cameras: "Physical Camera 1", 2, ...
PHYSICAL_CAMERA = "Physical Camera "
_UNDEFINED = "Undefined"
#: The frame count of a sequence "until stopped" of a camera other than the core's own.
_ENDLESS = 2**31 - 1
