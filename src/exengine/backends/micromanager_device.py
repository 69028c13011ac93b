"""``MicroManagerDevice``: any Micro-Manager device of a pymmcore-plus core, its properties as
attributes (the base of the backend's cameras, stages and other devices)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..kernel.device import Device
from . import root_log_level_kept

try:
    with root_log_level_kept():
        from pymmcore_plus import CMMCorePlus, DeviceType, PropertyType
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "The Micro-Manager backend needs pymmcore-plus: pip install 'napari-exengine[micromanager]'"
    ) from error

#: The backend's other modules take pymmcore-plus's names from here, where its import is checked
__all__ = ["CMMCorePlus", "DeviceType", "MicroManagerDevice", "PropertyType"]


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
