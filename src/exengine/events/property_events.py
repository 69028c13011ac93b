"""Events that set device properties, one value at a time or as hardware-triggered sequences."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..kernel.device import Device
from ..kernel.ex_event_base import EventChecks, ExecutorEvent
from ._devices import resolve_device

DeviceLike = Device | str


class SetPropertiesEvent(ExecutorEvent):
    """Set properties: ``[(device or name, property name, value), ...]``, in order."""

    def __init__(self, devices_prop_names_values: Iterable[tuple[DeviceLike, str, Any]]) -> None:
        super().__init__()
        self.devices_prop_names_values = [tuple(item) for item in devices_prop_names_values]
        for item in self.devices_prop_names_values:
            if len(item) != 3:
                raise ValueError(
                    f"SetPropertiesEvent takes (device, property, value) triples, got {item!r}"
                )

    def execute(self) -> None:
        for device, prop_name, value in self.devices_prop_names_values:
            setattr(resolve_device(device, Device, "device"), prop_name, value)

    def check(self, checks: EventChecks) -> None:
        for device, prop, value in self.devices_prop_names_values:
            checks.setting(checks.device(device, Device, "device"), prop, value)


class SetTriggerablePropertySequencesEvent(ExecutorEvent):
    """Load and start hardware-triggered value sequences: ``[(device or name, property, values),
    ...]``."""

    def __init__(self, property_sequences: Iterable[tuple[DeviceLike, str, Iterable[Any]]]) -> None:
        super().__init__()
        self.property_sequences = [
            (device, prop, list(values)) for device, prop, values in property_sequences
        ]

    def execute(self) -> None:
        resolved = [
            (resolve_device(d, Device, "device"), p, v) for d, p, v in self.property_sequences
        ]
        for device, prop_name, values in resolved:
            if not device.is_property_hardware_triggerable(prop_name):
                raise ValueError(f"{device.name}.{prop_name} is not hardware triggerable")
            limit = device.get_triggerable_sequence_max_length(prop_name)
            if len(values) > limit:
                raise ValueError(
                    f"{device.name}.{prop_name} takes sequences of at most {limit} values, got "
                    f"{len(values)}"
                )
            device.load_triggerable_sequence(prop_name, values)
        for device, prop_name, _ in resolved:
            device.start_triggerable_sequence(prop_name)

    def check(self, checks: EventChecks) -> None:
        for device, prop, values in self.property_sequences:
            resolved = checks.device(device, Device, "device")
            for value in values:
                checks.setting(resolved, prop, value)


class StopTriggerablePropertySequencesEvent(ExecutorEvent):
    """Stop running property sequences: ``[(device or name, property), ...]``."""

    def __init__(self, property_sequences: Iterable[tuple[DeviceLike, str]]) -> None:
        super().__init__()
        self.property_sequences = [tuple(item) for item in property_sequences]

    def execute(self) -> None:
        for device, prop_name in self.property_sequences:
            resolve_device(device, Device, "device").stop_triggerable_sequence(prop_name)
