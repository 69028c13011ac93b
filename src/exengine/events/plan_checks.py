"""Plan checks: a plan's settings (finite numbers, counts) when it is made, and every setting its
events hold, checked against what the devices declare before anything moves (allowed values,
limits, read-only properties).

Each event type declares what to check in its ``check`` method (see
:meth:`~exengine.kernel.ex_event_base.ExecutorEvent.check`); :class:`PlanChecks` answers it, looking
each device up and checking each (device, property, value) once: a plan repeats the same few
settings, and every device query may be a thread hop.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, TypeVar

from ..device_types import Detector
from ..kernel.device import Device
from ..kernel.ex_event_base import ExecutorEvent
from ._devices import resolve_device

__all__ = [
    "PlanChecks",
    "PlanError",
    "check_event",
    "check_number",
    "check_setting",
    "finite_number",
    "is_count",
    "whole_number",
]

_D = TypeVar("_D", bound=Device)
_PLAIN = (int, float, str, bool, type(None))


class PlanError(ValueError):
    """A setting of the plan that the devices cannot take; raised before anything moves."""


def finite_number(value: Any, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``name`` when it is not a finite number
    within [``low``, ``high``] (a setting of a plan)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not low <= number <= high:
        if math.isinf(high):
            valid = f"at least {low:g}"
        elif math.isinf(low):
            valid = f"at most {high:g}"
        else:
            valid = f"from {low:g} to {high:g}"
        raise ValueError(f"{name} must be {valid}, got {value!r}")
    return number


def is_count(value: Any) -> bool:
    """True for a whole number of at least 1 (not a bool)."""
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 1


def whole_number(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int, or a ``ValueError`` naming ``name`` when it is not a whole number of at
    least ``minimum`` (a setting of a plan)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


def check_setting(device: Device, prop: str, value: Any) -> None:
    """Raise :class:`PlanError` when ``device.prop = value`` is refused by what the device declares:
    a property it does not have, a read-only property, a value outside the allowed values or the
    limits, a number that is not finite."""
    where = f"{device.name}.{prop}"
    names = device.get_property_names()
    if prop not in names and not isinstance(getattr(type(device), prop, None), property):
        # setting it would only make a new attribute: the device would not change
        raise PlanError(
            f"{device.name} has no property {prop!r}; its properties: {', '.join(names)}"
        )
    if device.is_property_read_only(prop):
        raise PlanError(f"{where} is read-only")
    allowed = device.get_allowed_property_values(prop)
    if allowed is not None and value not in allowed:
        valid = ", ".join(map(repr, allowed))
        raise PlanError(f"{where} = {value!r} is not allowed; valid: {valid}")
    if isinstance(value, Real) and not isinstance(value, bool):
        check_number(where, float(value), device.get_property_limits(prop))


def check_number(
    where: str, value: float, limits: tuple[float | None, float | None] = (None, None)
) -> None:
    """Raise :class:`PlanError` when ``value`` is not a finite number within ``limits`` (``None``:
    unbounded)."""
    if not math.isfinite(value):
        raise PlanError(f"{where} = {value!r} is not a finite number")
    low, high = limits
    if (low is not None and value < low) or (high is not None and value > high):
        raise PlanError(
            f"{where} = {value:g} is outside its limits [{_bound(low, '-inf')}, "
            f"{_bound(high, 'inf')}]"
        )


def _bound(value: float | None, unbounded: str) -> str:
    return unbounded if value is None else f"{value:g}"


class PlanChecks:
    """Checks events against their devices (each device lookup and each setting once); the
    :class:`~exengine.kernel.ex_event_base.EventChecks` that events declare their checks to."""

    def __init__(self) -> None:
        self._devices: dict[tuple[Any, type], Device] = {}
        self._done: set[tuple[Any, ...]] = set()

    def event(self, event: ExecutorEvent) -> None:
        """Check what ``event`` declares (see :func:`check_event`)."""
        event.check(self)

    def device(self, device: Any, kind: type[_D], role: str) -> _D:
        key = (device if device is None or isinstance(device, str) else id(device), kind)
        found = self._devices.get(key)
        if found is None:
            try:
                found = self._devices[key] = resolve_device(device, kind, role)
            except (ValueError, TypeError, KeyError) as e:
                raise PlanError(str(e)) from None
        return found  # type: ignore[return-value]

    def setting(self, device: Device, prop: str, value: Any) -> None:
        key = (id(device), prop, value if isinstance(value, _PLAIN) else repr(value))
        if key not in self._done:
            check_setting(device, prop, value)
            self._done.add(key)

    def position(self, stage: Device, what: str, value: float, axis: str) -> None:
        key = (id(stage), axis, value)
        if key not in self._done:
            check_number(f"{stage.name} {what}", value, stage.get_property_limits(axis))
            self._done.add(key)

    def number(self, where: str, value: float, low: float | None = None) -> None:
        check_number(where, float(value), (low, None))

    def detector(self, detector: Any) -> None:
        camera = self.device(detector, Detector, "detector")
        key = ("exposure", id(camera))
        if key not in self._done and hasattr(camera, "exposure"):
            check_setting(camera, "exposure", camera.exposure)
            self._done.add(key)

    def data_handler(self, data_handler: Any) -> None:
        error = getattr(data_handler, "error", None)
        if error is not None:
            raise PlanError(f"The data handler has failed, no more frames can be stored: {error!r}")


def check_event(event: ExecutorEvent) -> None:
    """Check one event against the devices it drives; raise :class:`PlanError` naming the value and
    what would be valid. Events that declare no checks pass (they are checked by running them)."""
    event.check(PlanChecks())
