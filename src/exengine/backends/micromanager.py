"""Micro-Manager devices through pymmcore-plus (extra ``micromanager``).

:func:`load_micromanager` wraps every device of a core (loaded from a configuration file, or already
set up) as an ExEngine device registered with the engine: cameras as :class:`MicroManagerCamera`
(a ``Detector``), focus drives as :class:`MicroManagerSingleAxisStage`, XY stages as
:class:`MicroManagerXYStage` (both triggerable when the hardware supports sequences), everything
else as :class:`MicroManagerDevice`, and each configuration group (e.g. "Channel") as a
:class:`MicroManagerConfigGroup` whose ``config`` property selects a preset.

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
from ..kernel.device import Device
from . import root_log_level_kept

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
    """A Micro-Manager camera: single frames are snapped; several (or continuous) frames use
    sequence acquisition into the core's circular buffer."""

    def __init__(
        self, label: str | None = None, core: CMMCorePlus | None = None, name: str | None = None
    ) -> None:
        core = core or CMMCorePlus.instance()
        super().__init__(label or core.getCameraDevice(), core, name)
        self._frame_count: int | None = None
        self._popped = 0
        self._started = False
        self._snapped: tuple[np.ndarray, dict[str, Any]] | None = None
        self._dropped = 0

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

    def arm(self, frame_count: int | None = None) -> None:
        if frame_count is not None and frame_count < 0:
            raise ValueError(f"{self._label}: frame_count must be >= 0 or None, got {frame_count}")
        if self._core.isSequenceRunning(self._label):
            self._core.stopSequenceAcquisition(self._label)
        self._frame_count = frame_count
        self._dropped = 0

    def start(self) -> None:
        self._popped = 0
        if self._frame_count == 1:
            self._core.snapImage()
            image = self._core.getImage()
            self._snapped = (
                image,
                {
                    "Camera": self._label,
                    "Exposure-ms": self._core.getExposure(self._label),
                    "ElapsedTime-ms": 0.0,
                    "ImageNumber": 0,
                },
            )
            return
        self._started = True
        self._core.clearCircularBuffer()
        if self._frame_count is None:
            self._core.startContinuousSequenceAcquisition(0)
        else:
            self._core.startSequenceAcquisition(self._label, self._frame_count, 0, True)

    def stop(self) -> None:
        self._started = False
        if self._core.isSequenceRunning(self._label):
            self._core.stopSequenceAcquisition(self._label)

    def is_stopped(self) -> bool:
        return (
            self._snapped is None
            and not self._core.isSequenceRunning(self._label)
            and self._core.getRemainingImageCount() == 0
        )

    def pop_data(
        self, timeout: float | None = None
    ) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        if self._snapped is not None:
            frame, self._snapped = self._snapped, None
            self._popped += 1
            return frame
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._core.getRemainingImageCount() == 0:
            if self._core.isBufferOverflowed():
                self._overflowed()
                return None, None
            owed = self._frame_count is None or self._popped < self._frame_count
            if (
                self._started
                and owed
                and not self._core.isSequenceRunning(self._label)
                and self._core.getRemainingImageCount() == 0
            ):
                self._started = False
                raise RuntimeError(
                    f"{self._label} stopped delivering frames after {self._popped}"
                    + ("" if self._frame_count is None else f" of {self._frame_count}")
                )
            if deadline is not None and time.monotonic() >= deadline:
                return None, None
            time.sleep(0.0005)
        image, metadata = self._core.popNextImageAndMD()
        self._popped += 1
        return image, {str(k): v for k, v in dict(metadata).items()}

    def _overflowed(self) -> None:
        """The circular buffer overflowed and the core stopped the sequence: what it did not
        capture is dropped (counted once)."""
        if not self._started:
            return
        self._started = False
        if self._core.isSequenceRunning(self._label):
            self._core.stopSequenceAcquisition(self._label)
        if self._frame_count is None:
            self._dropped += 1
        else:
            self._dropped += max(self._frame_count - self._popped, 1)


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


_WRAPPERS = {
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
        device = wrapper(label, core, name=prefix + label)
        devices[device.name] = device
    for group in core.getAvailableConfigGroups():
        if prefix + group not in devices:
            device = MicroManagerConfigGroup(group, core, name=prefix + group)
            devices[device.name] = device
    return devices
