"""Simulated microscope: camera, z stage, xy stage, channel selector, light source and a hardware
autofocus.

The devices share one :class:`SimulatedMicroscope` state, so the camera renders a synthetic specimen
that follows the stage position (x/y pan, z focus through blobs at several depths), the active
channel, the light source and the exposure, with noise, at a real frame rate
(:mod:`~exengine.devices.simulated_camera`; the specimen in
:mod:`~exengine.devices.simulated_specimen`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..device_types import DoubleAxisPositioner, TriggerableSingleAxisPositioner
from ..kernel.device import Device
from .simulated_autofocus import SimulatedAutofocus
from .simulated_camera import SimulatedCamera
from .simulated_specimen import (
    BRIGHT_REGION_RADIUS_UM,
    BRIGHT_REGION_UM,
    CHANNELS,
    SimulatedMicroscope,
    prepare_specimens,
)

__all__ = [
    "BRIGHT_REGION_RADIUS_UM",
    "BRIGHT_REGION_UM",
    "CHANNELS",
    "SimulatedAutofocus",
    "SimulatedCamera",
    "SimulatedChannelSelector",
    "SimulatedLightSource",
    "SimulatedMicroscope",
    "SimulatedXYStage",
    "SimulatedZStage",
    "add_simulated_camera",
    "create_simulated_devices",
]


class SimulatedZStage(TriggerableSingleAxisPositioner):
    """A focus drive (µm) that also steps through hardware-triggered position sequences."""

    def __init__(self, name: str = "Z", microscope: SimulatedMicroscope | None = None) -> None:
        super().__init__(name)
        self._scope = microscope or SimulatedMicroscope()

    def get_property_limits(self, property_name: str) -> tuple[float | None, float | None]:
        return (-5000.0, 5000.0) if property_name == "position" else (None, None)

    @property
    def position(self) -> float:
        """The current z in µm."""
        return self._scope.z_um

    @position.setter
    def position(self, value: float) -> None:
        self.set_position(value)

    def set_position(self, position: float) -> None:
        low, high = self.get_property_limits("position")
        position = float(position)
        if not low <= position <= high:  # type: ignore[operator]
            raise ValueError(f"{self.name}: z {position} µm is outside [{low}, {high}]")
        self._scope.z_um = position

    def get_position(self) -> float:
        return self._scope.z_um

    def set_position_sequence(self, positions: np.ndarray) -> None:
        self._scope.z_sequence = np.asarray(positions, dtype=float)

    def get_triggerable_position_sequence_max_length(self) -> int:
        return 10000

    def stop_position_sequence(self) -> None:
        self._scope.z_sequence = None


class SimulatedXYStage(DoubleAxisPositioner):
    """An XY stage (µm)."""

    def __init__(self, name: str = "XY", microscope: SimulatedMicroscope | None = None) -> None:
        super().__init__(name)
        self._scope = microscope or SimulatedMicroscope()

    def set_position(self, x: float, y: float) -> None:
        self._scope.x_um, self._scope.y_um = float(x), float(y)

    def get_position(self) -> tuple[float, float]:
        return self._scope.x_um, self._scope.y_um


class SimulatedChannelSelector(Device):
    """A filter/channel selector with named positions; triggerable sequences for fast channel
    switching."""

    def __init__(
        self,
        name: str = "Channel",
        microscope: SimulatedMicroscope | None = None,
        channels: tuple[str, ...] = CHANNELS,
    ) -> None:
        super().__init__(name)
        self._scope = microscope or SimulatedMicroscope()
        self._channels = tuple(channels)
        self._scope.channel = self._channels[0]

    @property
    def channel(self) -> str:
        """The active channel."""
        return self._scope.channel

    @channel.setter
    def channel(self, value: str) -> None:
        if value not in self._channels:
            raise ValueError(
                f"{self.name}.channel must be one of {list(self._channels)}, got {value!r}"
            )
        self._scope.channel = value

    def get_allowed_property_values(self, property_name: str) -> list[Any] | None:
        return list(self._channels) if property_name == "channel" else None

    def is_property_hardware_triggerable(self, property_name: str) -> bool:
        return property_name == "channel"

    def get_triggerable_sequence_max_length(self, property_name: str) -> int:
        return 256

    def load_triggerable_sequence(self, property_name: str, event_sequence: Any) -> None:
        values = list(event_sequence)
        bad = [v for v in values if v not in self._channels]
        if bad:
            raise ValueError(f"{self.name}: unknown channels {bad}; allowed {list(self._channels)}")
        self._pending_sequence = values

    def start_triggerable_sequence(self, property_name: str) -> None:
        self._scope.channel_sequence = list(getattr(self, "_pending_sequence", []))

    def stop_triggerable_sequence(self, property_name: str) -> None:
        self._scope.channel_sequence = None


class SimulatedLightSource(Device):
    """A light source with an on/off switch and relative power (0-1)."""

    def __init__(self, name: str = "Light", microscope: SimulatedMicroscope | None = None) -> None:
        super().__init__(name)
        self._scope = microscope or SimulatedMicroscope()

    @property
    def enabled(self) -> bool:
        """Whether the light is on."""
        return self._scope.light_on

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._scope.light_on = bool(value)

    @property
    def power(self) -> float:
        """Relative power, 0 to 1."""
        return self._scope.light_power

    @power.setter
    def power(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{self.name}.power must be within [0, 1], got {value}")
        self._scope.light_power = value

    @property
    def bleaching(self) -> float:
        """How fast the dyes bleach: the fraction lost per second of full-power light (0: never).
        Setting it starts from a fresh, unbleached specimen."""
        return self._scope.bleaching_per_s

    @bleaching.setter
    def bleaching(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value <= 100.0:
            raise ValueError(
                f"{self.name}.bleaching must be within [0, 100] per second, got {value}"
            )
        self._scope.bleaching_per_s = value
        self._scope.fluorescence = 1.0

    def get_property_limits(self, property_name: str) -> tuple[float | None, float | None]:
        return {"power": (0.0, 1.0), "bleaching": (0.0, 100.0)}.get(property_name, (None, None))


def create_simulated_devices(prefix: str = "", cameras: int = 1) -> dict[str, Device]:
    """Create and register one simulated microscope: camera, z stage, xy stage, channel selector,
    light and autofocus (on the z stage); with ``cameras`` above 1, more cameras on the same
    microscope (``Camera2``, ...), as behind an image splitter."""
    if isinstance(cameras, bool) or not isinstance(cameras, int) or not 1 <= cameras <= 8:
        raise ValueError(f"cameras must be a whole number from 1 to 8, got {cameras!r}")
    prepare_specimens()
    scope = SimulatedMicroscope()
    z_stage = SimulatedZStage(f"{prefix}Z", scope)
    devices: list[Device] = [
        SimulatedCamera(f"{prefix}Camera", scope),
        z_stage,
        SimulatedXYStage(f"{prefix}XY", scope),
        SimulatedChannelSelector(f"{prefix}Channel", scope),
        SimulatedLightSource(f"{prefix}Light", scope),
        SimulatedAutofocus(f"{prefix}Autofocus", scope, z_stage),
    ]
    devices += [SimulatedCamera(f"{prefix}Camera{n}", scope) for n in range(2, cameras + 1)]
    return {device.name: device for device in devices}


def add_simulated_camera(name: str, beside: SimulatedCamera) -> SimulatedCamera:
    """Create and register another camera on the microscope ``beside`` looks at (same sensor)."""
    height, width = beside.sensor_shape
    return SimulatedCamera(name, beside.microscope, width=width, height=height)
