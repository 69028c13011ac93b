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

from typing import Any

import numpy as np

from ..device_types import TriggerableDoubleAxisPositioner, TriggerableSingleAxisPositioner
from ..kernel.device import Device
from .micromanager_camera import PHYSICAL_CAMERA, MicroManagerCamera, MicroManagerMultiCamera
from .micromanager_device import CMMCorePlus, DeviceType, MicroManagerDevice

__all__ = [
    "MicroManagerCamera",
    "MicroManagerConfigGroup",
    "MicroManagerDevice",
    "MicroManagerMultiCamera",
    "MicroManagerSingleAxisStage",
    "MicroManagerXYStage",
    "load_micromanager",
]


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
        if wrapper is MicroManagerCamera and core.hasProperty(label, PHYSICAL_CAMERA + "1"):
            wrapper = MicroManagerMultiCamera
        device = wrapper(label, core, name=prefix + label)
        devices[device.name] = device
    for group in core.getAvailableConfigGroups():
        if prefix + group not in devices:
            device = MicroManagerConfigGroup(group, core, name=prefix + group)
            devices[device.name] = device
    return devices
