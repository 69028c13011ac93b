"""python-microscope devices (extra ``microscope``): cameras, stages, filter wheels, light sources.

Wrap local device objects or Pyro proxies of a device server:

- :class:`MicroscopeCamera` — a ``Detector``. With ``trigger="software"`` (default) it triggers one
  frame per frame asked for; with ``trigger="external"`` frames come from triggers sent by something
  else (hardware, a DAQ), and ``trigger_type``/``trigger_mode`` set the camera's own trigger.
- :class:`MicroscopeStageAxis` (one axis, e.g. focus) and :class:`MicroscopeXYStage` (two axes).
- :class:`MicroscopeFilterWheel` — ``position`` and, with names, ``channel``.
- :class:`MicroscopeLightSource` — ``power`` (0-1) and ``enabled``.

Device settings (``describe_settings``) are reported through the ``Device`` property hooks and read
or written with ``get_property``/``set_property``.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..device_types import Detector, DoubleAxisPositioner, SingleAxisPositioner
from ..kernel.device import Device

try:
    import microscope
    import microscope.abc
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "The python-microscope backend needs it: pip install 'napari-exengine[microscope]'"
    ) from error

__all__ = [
    "MicroscopeCamera",
    "MicroscopeFilterWheel",
    "MicroscopeLightSource",
    "MicroscopeStageAxis",
    "MicroscopeXYStage",
    "wrap_microscope_devices",
]


class _SettingsMixin:
    """Report a python-microscope device's settings through the Device property hooks."""

    _device: Any

    def get_property(self, name: str) -> Any:
        """The value of setting ``name``."""
        self._check_setting(name)
        return self._device.get_setting(name)

    def set_property(self, name: str, value: Any) -> None:
        """Set setting ``name``; invalid values raise ``ValueError`` naming the valid ones."""
        info = self._check_setting(name)
        if info.get("readonly"):
            raise ValueError(f"{self.name}: setting {name!r} is read-only")
        allowed = self.get_allowed_property_values(name)
        if allowed is not None and value not in allowed:
            raise ValueError(
                f"{self.name}: setting {name!r} must be one of {allowed}, got {value!r}"
            )
        self._device.set_setting(name, value)

    def _settings(self) -> dict[str, dict[str, Any]]:
        return dict(self._device.describe_settings())

    def _check_setting(self, name: str) -> dict[str, Any]:
        settings = self._settings()
        if name not in settings:
            raise AttributeError(
                f"{self.name} has no setting {name!r}; settings: {sorted(settings)}"
            )
        return settings[name]

    def get_setting_names(self) -> list[str]:
        """Names of the device's python-microscope settings."""
        return sorted(self._settings())

    def get_allowed_property_values(self, property_name: str) -> list[Any] | None:
        info = self._settings().get(property_name)
        if info and info.get("type") == "enum":
            return [value for value, _ in info["values"]]
        if info and info.get("type") == "bool":
            return [False, True]
        return None

    def get_property_limits(self, property_name: str) -> tuple[float | None, float | None]:
        info = self._settings().get(property_name)
        if (
            info
            and info.get("type") in ("int", "float")
            and isinstance(info.get("values"), (tuple, list))
        ):
            low, high = info["values"]
            return float(low), float(high)
        return (None, None)

    def is_property_read_only(self, property_name: str) -> bool:
        info = self._settings().get(property_name)
        return bool(info and info.get("readonly")) or super().is_property_read_only(property_name)  # type: ignore[misc]


def _enable(device: Any) -> None:
    if hasattr(device, "enable") and not getattr(device, "enabled", True):
        device.enable()


class MicroscopeCamera(_SettingsMixin, Detector):
    """A python-microscope camera as a ``Detector``."""

    def __init__(
        self,
        camera: Any,
        name: str = "Camera",
        trigger: str = "software",
        trigger_type: microscope.TriggerType | None = None,
        trigger_mode: microscope.TriggerMode | None = None,
    ) -> None:
        super().__init__(name)
        if trigger not in ("software", "external"):
            raise ValueError(f"trigger must be 'software' or 'external', got {trigger!r}")
        self._device = camera
        self._trigger = trigger
        self._frames: queue.SimpleQueue[tuple[np.ndarray, float]] = queue.SimpleQueue()
        self._count: int | None = None
        self._requested = 0
        self._received = 0
        self._running = False
        if trigger_type is not None or trigger_mode is not None:
            try:
                camera.set_trigger(
                    trigger_type or camera.trigger_type, trigger_mode or camera.trigger_mode
                )
            except Exception as e:
                raise ValueError(
                    f"{name}: the camera does not support trigger {trigger_type}/{trigger_mode}: "
                    f"{e}"
                ) from e
        camera.set_client(self._frames)
        _enable(camera)

    @property
    def exposure(self) -> float:
        """Exposure in ms."""
        return float(self._device.get_exposure_time()) * 1000.0

    @exposure.setter
    def exposure(self, value: float) -> None:
        self._device.set_exposure_time(max(float(value), 0.0) / 1000.0)

    def arm(self, frame_count: int | None = None) -> None:
        if frame_count is not None and frame_count < 0:
            raise ValueError(f"{self.name}: frame_count must be >= 0 or None, got {frame_count}")
        _enable(self._device)
        self._count = frame_count

    def start(self) -> None:
        self._requested = self._received = 0
        self._running = True

    def stop(self) -> None:
        self._running = False

    def is_stopped(self) -> bool:
        done = self._count is not None and self._received >= self._count
        return (not self._running or done) and self._frames.empty()

    def pop_data(
        self, timeout: float | None = None
    ) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        owed = self._count is None or self._requested < self._count
        if (
            self._trigger == "software"
            and self._running
            and owed
            and self._requested == self._received
        ):
            self._device.trigger()
            self._requested += 1
        try:
            data, timestamp = self._next(timeout)
        except queue.Empty:
            return None, None
        self._received += 1
        return np.asarray(data), {
            "Camera": self.name,
            "Timestamp": timestamp,
            "Exposure-ms": self.exposure,
            "FrameIndex": self._received - 1,
        }

    def _next(self, timeout: float | None) -> tuple[Any, float]:
        item = (
            self._frames.get(timeout=timeout)
            if timeout is None or timeout > 0
            else self._frames.get_nowait()
        )
        if isinstance(item, tuple):
            return item
        return item, time.time()


def _check_within_limits(stage: Any, axis: str, value: float, device_name: str) -> None:
    """``ValueError`` naming the range when ``value`` is outside the limits of the stage's
    ``axis``."""
    limits = stage.axes[axis].limits
    if not limits.lower <= float(value) <= limits.upper:
        raise ValueError(
            f"{device_name}: {axis}={value} is outside [{limits.lower}, {limits.upper}]"
        )


class MicroscopeStageAxis(SingleAxisPositioner):
    """One axis (e.g. ``"z"``) of a python-microscope stage, in the stage's units (µm)."""

    def __init__(self, stage: Any, axis: str = "z", name: str = "Z") -> None:
        super().__init__(name)
        if axis not in stage.axes:
            raise ValueError(f"{name}: the stage has no axis {axis!r}; axes: {sorted(stage.axes)}")
        self._stage = stage
        self._axis = axis
        _enable(stage)

    def get_property_limits(self, property_name: str) -> tuple[float | None, float | None]:
        if property_name == "position":
            limits = self._stage.axes[self._axis].limits
            return float(limits.lower), float(limits.upper)
        return (None, None)

    def set_position(self, position: float) -> None:
        _check_within_limits(self._stage, self._axis, position, self.name)
        self._stage.move_to({self._axis: float(position)})

    def get_position(self) -> float:
        return float(self._stage.position[self._axis])


class MicroscopeXYStage(DoubleAxisPositioner):
    """Two axes (default ``x`` and ``y``) of a python-microscope stage."""

    def __init__(self, stage: Any, axes: Sequence[str] = ("x", "y"), name: str = "XY") -> None:
        super().__init__(name)
        missing = [a for a in axes if a not in stage.axes]
        if missing:
            raise ValueError(f"{name}: the stage has no axes {missing}; axes: {sorted(stage.axes)}")
        self._stage = stage
        self._axes = tuple(axes)
        _enable(stage)

    def set_position(self, x: float, y: float) -> None:
        for axis, value in zip(self._axes, (x, y), strict=True):
            _check_within_limits(self._stage, axis, value, self.name)
        self._stage.move_to({self._axes[0]: float(x), self._axes[1]: float(y)})

    def get_position(self) -> tuple[float, float]:
        position = self._stage.position
        return float(position[self._axes[0]]), float(position[self._axes[1]])


class MicroscopeFilterWheel(_SettingsMixin, Device):
    """A python-microscope filter wheel; ``channel`` selects a position by name when ``names`` are
    given."""

    def __init__(
        self, wheel: Any, name: str = "FilterWheel", names: Sequence[str] | None = None
    ) -> None:
        super().__init__(name)
        self._device = wheel
        _enable(wheel)
        count = int(wheel.n_positions)
        self._names = list(names) if names is not None else [str(i) for i in range(count)]
        if len(self._names) != count:
            raise ValueError(f"{name}: {len(self._names)} names for {count} positions")

    @property
    def position(self) -> int:
        """The wheel position (0-based)."""
        return int(self._device.position)

    @position.setter
    def position(self, value: int) -> None:
        if not 0 <= int(value) < len(self._names):
            raise ValueError(
                f"{self.name}.position must be within 0..{len(self._names) - 1}, got {value}"
            )
        self._device.position = int(value)

    @property
    def channel(self) -> str:
        """The name of the current position."""
        return self._names[self.position]

    @channel.setter
    def channel(self, value: str) -> None:
        if value not in self._names:
            raise ValueError(f"{self.name}.channel must be one of {self._names}, got {value!r}")
        self.position = self._names.index(value)

    def get_allowed_property_values(self, property_name: str) -> list[Any] | None:
        if property_name == "channel":
            return list(self._names)
        if property_name == "position":
            return list(range(len(self._names)))
        return super().get_allowed_property_values(property_name)


class MicroscopeLightSource(_SettingsMixin, Device):
    """A python-microscope light source: ``power`` (0-1) and ``enabled``."""

    def __init__(self, light: Any, name: str = "Light") -> None:
        super().__init__(name)
        self._device = light

    @property
    def power(self) -> float:
        """Relative power, 0 to 1."""
        return float(self._device.power)

    @power.setter
    def power(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{self.name}.power must be within [0, 1], got {value}")
        self._device.power = float(value)

    @property
    def enabled(self) -> bool:
        """Whether the light is on."""
        return bool(self._device.get_is_on())

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if value:
            self._device.enable()
        else:
            self._device.disable()

    def get_property_limits(self, property_name: str) -> tuple[float | None, float | None]:
        return (
            (0.0, 1.0) if property_name == "power" else super().get_property_limits(property_name)
        )


def wrap_microscope_devices(
    devices: dict[str, Any], prefix: str = "", filter_names: Sequence[str] | None = None
) -> dict[str, Device]:
    """Wrap python-microscope devices by kind: cameras, stages (an xy pair and a ``z`` axis when
    present), filter wheels and light sources; returns the ExEngine devices by name."""
    wrapped: dict[str, Device] = {}
    for label, device in devices.items():
        name = prefix + label
        if isinstance(device, microscope.abc.Camera):
            wrapped[name] = MicroscopeCamera(device, name)
        elif isinstance(device, microscope.abc.Stage):
            axes = set(device.axes)
            if {"x", "y"} <= axes:
                wrapped[name + "XY"] = MicroscopeXYStage(device, name=name + "XY")
            if "z" in axes:
                wrapped[name + "Z"] = MicroscopeStageAxis(device, "z", name + "Z")
        elif isinstance(device, microscope.abc.FilterWheel):
            wrapped[name] = MicroscopeFilterWheel(device, name, filter_names)
        elif isinstance(device, microscope.abc.LightSource):
            wrapped[name] = MicroscopeLightSource(device, name)
        else:
            raise TypeError(
                f"{label!r} is a {type(device).__name__}, which has no ExEngine adapter yet"
            )
    return wrapped
