"""Micro-Manager devices through pymmcore-plus (extra ``micromanager``).

:func:`load_micromanager` wraps every device of a core (loaded from a configuration file, or already
set up) as an ExEngine device registered with the engine: cameras as :class:`MicroManagerCamera` (a
``Detector``; a Multi Camera device as :class:`MicroManagerMultiCamera`), focus drives as
:class:`MicroManagerSingleAxisStage`, XY stages as :class:`MicroManagerXYStage` (both triggerable
when the hardware supports sequences), everything else as :class:`MicroManagerDevice`, and each
configuration group (e.g. "Channel") as a :class:`MicroManagerConfigGroup` whose ``config`` property
selects a preset.

Micro-Manager properties appear as device attributes (``device.Binning``, or
``device.get_property("ROI-X-start")`` for names that are not identifiers), with allowed values,
limits, read-only and sequenceable flags reported through the ``Device`` property hooks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..device_types import (
    Detector,
    TriggerableDoubleAxisPositioner,
    TriggerableSingleAxisPositioner,
)
from ..kernel.device import Device, direct_access
from ..kernel.executor import ExecutionEngine
from . import root_log_level_kept
from .micromanager_images import CoreImages

try:
    with root_log_level_kept():
        from pymmcore_plus import CMMCorePlus, DeviceType, PropertyType
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "The Micro-Manager backend needs pymmcore-plus: pip install 'napari-exengine[micromanager]'"
    ) from error

__all__ = [
    "MicroManagerCamera",
    "MicroManagerConfigGroup",
    "MicroManagerDevice",
    "MicroManagerMultiCamera",
    "MicroManagerSingleAxisStage",
    "MicroManagerXYStage",
    "load_micromanager",
]


def _convert(core: CMMCorePlus, label: str, prop: str, value: Any) -> Any:
    kind = core.getPropertyType(label, prop)
    try:
        if kind == PropertyType.Integer:
            return int(float(value))
        if kind == PropertyType.Float:
            return float(value)
    except (TypeError, ValueError):
        return value
    return value


class MicroManagerDevice(Device):
    """Any Micro-Manager device; its properties are attributes of this object."""

    def __init__(
        self, label: str, core: CMMCorePlus | None = None, name: str | None = None
    ) -> None:
        super().__init__(name or label)
        self._core = core or CMMCorePlus.instance()
        if label not in self._core.getLoadedDevices():
            raise ValueError(
                f"No Micro-Manager device {label!r}; loaded: {list(self._core.getLoadedDevices())}"
            )
        self._label = label
        self._mm_properties = frozenset(
            str(getattr(p, "value", p)) for p in self._core.getDevicePropertyNames(label)
        )

    @property
    def label(self) -> str:
        """The Micro-Manager device label."""
        return self._label

    @property
    def core(self) -> CMMCorePlus:
        """The pymmcore-plus core the device lives in."""
        return self._core

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._mm_properties:
            raise AttributeError(
                f"{type(self).__name__} {self._label!r} has no attribute or property {name!r}"
            )
        return self.get_property(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name in self.__dict__.get("_mm_properties", ()):
            self.set_property(name, value)
        else:
            super().__setattr__(name, value)

    def get_property(self, name: str) -> Any:
        """The value of Micro-Manager property ``name`` (numbers as int/float)."""
        self._check_property(name)
        return _convert(self._core, self._label, name, self._core.getProperty(self._label, name))

    def set_property(self, name: str, value: Any) -> None:
        """Set Micro-Manager property ``name``; invalid values raise ``ValueError`` naming the valid
        ones."""
        self._check_property(name)
        if self._core.isPropertyReadOnly(self._label, name):
            raise ValueError(f"{self._label}.{name} is read-only")
        allowed = self.get_allowed_property_values(name)
        if allowed is not None and str(value) not in {str(a) for a in allowed}:
            raise ValueError(f"{self._label}.{name} must be one of {allowed}, got {value!r}")
        low, high = self.get_property_limits(name)
        if low is not None and high is not None and not low <= float(value) <= high:
            raise ValueError(f"{self._label}.{name} must be within [{low}, {high}], got {value!r}")
        try:
            self._core.setProperty(self._label, name, value)
            self._core.waitForDevice(self._label)
        except RuntimeError as e:
            raise ValueError(f"{self._label}.{name} = {value!r} failed: {e}") from e

    def _check_property(self, name: str) -> None:
        if name not in self._mm_properties:
            raise AttributeError(
                f"{self._label} has no property {name!r}; properties: {sorted(self._mm_properties)}"
            )

    def get_property_names(self) -> list[str]:
        return sorted(self._mm_properties)

    def get_allowed_property_values(self, property_name: str) -> list[Any] | None:
        if property_name not in self._mm_properties:
            return None
        values = self._core.getAllowedPropertyValues(self._label, property_name)
        return [_convert(self._core, self._label, property_name, v) for v in values] or None

    def is_property_read_only(self, property_name: str) -> bool:
        return property_name in self._mm_properties and self._core.isPropertyReadOnly(
            self._label, property_name
        )

    def get_property_limits(self, property_name: str) -> tuple[float | None, float | None]:
        if property_name in self._mm_properties and self._core.hasPropertyLimits(
            self._label, property_name
        ):
            return (
                self._core.getPropertyLowerLimit(self._label, property_name),
                self._core.getPropertyUpperLimit(self._label, property_name),
            )
        return (None, None)

    def is_property_hardware_triggerable(self, property_name: str) -> bool:
        return property_name in self._mm_properties and self._core.isPropertySequenceable(
            self._label, property_name
        )

    def get_triggerable_sequence_max_length(self, property_name: str) -> int:
        return self._core.getPropertySequenceMaxLength(self._label, property_name)

    def load_triggerable_sequence(
        self, property_name: str, event_sequence: Iterable[str | float | int]
    ) -> None:
        self._core.loadPropertySequence(
            self._label, property_name, [str(v) for v in event_sequence]
        )

    def start_triggerable_sequence(self, property_name: str) -> None:
        self._core.startPropertySequence(self._label, property_name)

    def stop_triggerable_sequence(self, property_name: str) -> None:
        self._core.stopPropertySequence(self._label, property_name)


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

    def start(self) -> None:
        core, labels = self._core, self._labels()
        self._images.begin(labels)
        self._popped = 0
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
        else:
            count = _ENDLESS if self._frame_count is None else self._frame_count
            core.startSequenceAcquisition(self._label, count, 0, True)
        self._started = True

    def stop(self) -> None:
        self._started = False
        if self._driver is not self:
            self._driver.stop()
        elif self._core.isSequenceRunning(self._label):
            self._core.stopSequenceAcquisition(self._label)

    def is_stopped(self) -> bool:
        return not self._core.isSequenceRunning(self._driver._label) and not self._images.waiting(
            self._labels()
        )

    def pop_data(
        self, timeout: float | None = None
    ) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        deadline = None if timeout is None else time.monotonic() + timeout
        labels = self._labels()
        while (image := self._images.pop(labels)) is None:
            if self._core.isBufferOverflowed():
                self._overflowed()
                return None, None
            owed = self._frame_count is None or self._popped < self._owed()
            if self._started and owed and not self._core.isSequenceRunning(self._driver._label):
                if (image := self._images.pop(labels)) is not None:
                    break  # the last frame arrived as the sequence ended
                self._started = False
                raise RuntimeError(
                    f"{self._label} stopped delivering frames after {self._popped}"
                    + ("" if self._frame_count is None else f" of {self._owed()}")
                )
            if deadline is not None and time.monotonic() >= deadline:
                return None, None
            time.sleep(0.0005)
        self._popped += 1
        return image

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
        else:
            self._dropped += max(self._owed() - self._popped, 1)


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
            (p for p in self._mm_properties if p.startswith(_PHYSICAL)),
            key=lambda p: int(p[len(_PHYSICAL) :]),
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
        super().arm(frame_count)
        self._followers = self.cameras()  # type: ignore[assignment]
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


_PHYSICAL = "Physical Camera "
_UNDEFINED = "Undefined"
#: The frame count of a sequence "until stopped" of a camera other than the core's own.
_ENDLESS = 2**31 - 1


class MicroManagerSingleAxisStage(MicroManagerDevice, TriggerableSingleAxisPositioner):
    """A Micro-Manager focus drive / single-axis stage (µm); sequences when the hardware supports
    them."""

    def __init__(
        self, label: str | None = None, core: CMMCorePlus | None = None, name: str | None = None
    ) -> None:
        core = core or CMMCorePlus.instance()
        super().__init__(label or core.getFocusDevice(), core, name)

    def set_position(self, position: float) -> None:
        self._core.setPosition(self._label, float(position))
        self._core.waitForDevice(self._label)

    def get_position(self) -> float:
        return float(self._core.getPosition(self._label))

    def set_position_sequence(self, positions: np.ndarray) -> None:
        if not self._core.isStageSequenceable(self._label):
            raise RuntimeError(f"{self._label} cannot run position sequences")
        self._core.loadStageSequence(self._label, [float(p) for p in positions])
        self._core.startStageSequence(self._label)

    def get_triggerable_position_sequence_max_length(self) -> int:
        if not self._core.isStageSequenceable(self._label):
            return 0
        return int(self._core.getStageSequenceMaxLength(self._label))

    def stop_position_sequence(self) -> None:
        if self._core.isStageSequenceable(self._label):
            self._core.stopStageSequence(self._label)


class MicroManagerXYStage(MicroManagerDevice, TriggerableDoubleAxisPositioner):
    """A Micro-Manager XY stage (µm)."""

    def __init__(
        self, label: str | None = None, core: CMMCorePlus | None = None, name: str | None = None
    ) -> None:
        core = core or CMMCorePlus.instance()
        super().__init__(label or core.getXYStageDevice(), core, name)

    def set_position(self, x: float, y: float) -> None:
        self._core.setXYPosition(self._label, float(x), float(y))
        self._core.waitForDevice(self._label)

    def get_position(self) -> tuple[float, float]:
        x, y = self._core.getXYPosition(self._label)
        return float(x), float(y)

    def set_position_sequence(self, positions: np.ndarray) -> None:
        if not self._core.isXYStageSequenceable(self._label):
            raise RuntimeError(f"{self._label} cannot run position sequences")
        positions = np.asarray(positions, dtype=float).reshape(-1, 2)
        self._core.loadXYStageSequence(self._label, list(positions[:, 0]), list(positions[:, 1]))
        self._core.startXYStageSequence(self._label)

    def get_triggerable_position_sequence_max_length(self) -> int:
        if not self._core.isXYStageSequenceable(self._label):
            return 0
        return int(self._core.getXYStageSequenceMaxLength(self._label))

    def stop_position_sequence(self) -> None:
        if self._core.isXYStageSequenceable(self._label):
            self._core.stopXYStageSequence(self._label)


class MicroManagerConfigGroup(Device):
    """A Micro-Manager configuration group (e.g. "Channel"); ``config`` selects one of its
    presets."""

    def __init__(
        self, group: str, core: CMMCorePlus | None = None, name: str | None = None
    ) -> None:
        super().__init__(name or group)
        self._core = core or CMMCorePlus.instance()
        if not self._core.isGroupDefined(group):
            raise ValueError(
                f"No configuration group {group!r}; groups: "
                f"{list(self._core.getAvailableConfigGroups())}"
            )
        self._group = group

    @property
    def config(self) -> str:
        """The active preset of the group."""
        return self._core.getCurrentConfig(self._group)

    @config.setter
    def config(self, value: str) -> None:
        allowed = list(self._core.getAvailableConfigs(self._group))
        if value not in allowed:
            raise ValueError(f"{self._group}.config must be one of {allowed}, got {value!r}")
        self._core.setConfig(self._group, value)
        self._core.waitForConfig(self._group, value)

    def get_allowed_property_values(self, property_name: str) -> list[Any] | None:
        return (
            list(self._core.getAvailableConfigs(self._group)) if property_name == "config" else None
        )


_WRAPPERS: dict[Any, type[MicroManagerDevice]] = {
    DeviceType.Camera: MicroManagerCamera,
    DeviceType.Stage: MicroManagerSingleAxisStage,
    DeviceType.XYStage: MicroManagerXYStage,
}


def load_micromanager(
    config_file: str | None = None, core: CMMCorePlus | None = None, prefix: str = ""
) -> dict[str, Device]:
    """Wrap (after loading ``config_file``, if given) every device and configuration group of
    ``core``.

    Devices are registered with the engine under ``prefix`` + their Micro-Manager label. To use a
    real installation, point pymmcore-plus at it (``mmcore install`` or
    ``CMMCorePlus(mm_path=...)``) and pass your ``.cfg`` file.
    """
    core = core or CMMCorePlus.instance()
    if config_file is not None:
        try:
            core.loadSystemConfiguration(config_file)
        except (OSError, RuntimeError) as e:
            raise RuntimeError(
                f"Cannot load Micro-Manager configuration {config_file!r}: {e}"
            ) from e
    devices: dict[str, Device] = {}
    for label in core.getLoadedDevices():
        if label == "Core":
            continue
        wrapper = _WRAPPERS.get(core.getDeviceType(label), MicroManagerDevice)
        if wrapper is MicroManagerCamera and core.hasProperty(label, _PHYSICAL + "1"):
            wrapper = MicroManagerMultiCamera
        device = wrapper(label, core, name=prefix + label)
        devices[device.name] = device
    for group in core.getAvailableConfigGroups():
        if prefix + group not in devices:
            device = MicroManagerConfigGroup(group, core, name=prefix + group)
            devices[device.name] = device
    return devices
