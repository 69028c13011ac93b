"""Ready-made device sets for the panels and the command line: simulated, Micro-Manager,
python-microscope."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from exengine import ExecutionEngine
from exengine.kernel.device import Device

BACKENDS = ("simulated", "micromanager", "microscope")


@dataclass
class DeviceSet:
    """The devices of one backend and the role each plays in an acquisition."""

    devices: dict[str, Device]
    camera: Any
    z: Any
    xy: Any
    channel: Any
    channel_property: str

    def plan_arguments(self) -> dict[str, Any]:
        """The devices as a plan takes them (``exengine.plan_helpers.PLAN_ARGUMENTS``)."""
        return {
            "camera": self.camera,
            "z_device": self.z,
            "xy_device": self.xy,
            "channel_group": self.channel,
            "channel_property": self.channel_property,
        }


def load_device_set(
    backend: str = "simulated", mm_config: str | None = None, prefix: str = ""
) -> DeviceSet:
    """Create and register the devices of ``backend`` (names start with ``prefix``).

    ``micromanager`` loads the configuration file ``mm_config`` with pymmcore-plus's ``UniMMCore``
    (C++ adapters need a Micro-Manager installation; Python devices do not), or without one its
    pure-Python demo devices; ``microscope`` creates python-microscope's simulators;
    ``simulated`` reuses the registered devices or creates the simulated microscope. Raises
    ``ValueError`` with the reason when the backend cannot be loaded.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if mm_config and backend != "micromanager":
        raise ValueError("a Micro-Manager configuration file needs the micromanager backend")
    if backend == "micromanager":
        return _micromanager(mm_config, prefix)
    if backend == "microscope":
        return _microscope(prefix)
    from exengine.devices.simulated import create_simulated_devices

    if f"{prefix}Camera" not in ExecutionEngine.get_devices():
        create_simulated_devices(prefix)
    devices = {
        f"{prefix}{n}": ExecutionEngine.get_device(f"{prefix}{n}")
        for n in ("Camera", "Z", "XY", "Channel")
    }
    return DeviceSet(
        devices,
        devices[f"{prefix}Camera"],
        devices[f"{prefix}Z"],
        devices[f"{prefix}XY"],
        devices[f"{prefix}Channel"],
        "channel",
    )


def _micromanager(mm_config: str | None, prefix: str) -> DeviceSet:
    try:
        from exengine.backends.micromanager import load_micromanager
        from exengine.backends.micromanager_demo import create_demo_core
    except ImportError as e:
        raise ValueError(str(e)) from None
    logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)  # problems are reported by us
    if mm_config:
        from pymmcore_plus.experimental.unicore import UniMMCore

        if not os.path.isfile(mm_config):
            raise ValueError(f"Cannot load Micro-Manager configuration {mm_config!r}: no such file")
        # UniMMCore loads C++ adapters (from a Micro-Manager installation) and Python
        # devices alike
        try:
            devices = load_micromanager(mm_config, core=UniMMCore(), prefix=prefix)
        except (RuntimeError, ValueError, ImportError, TypeError) as e:
            raise ValueError(str(e).splitlines()[0]) from None
    else:
        devices = load_micromanager(core=create_demo_core(), prefix=prefix)
    core = next(iter(devices.values())).core
    group = core.getChannelGroup() or "Channel"
    return DeviceSet(
        devices,
        devices.get(prefix + core.getCameraDevice()),
        devices.get(prefix + core.getFocusDevice()),
        devices.get(prefix + core.getXYStageDevice()),
        devices.get(prefix + group),
        "config",
    )


def _microscope(prefix: str) -> DeviceSet:
    try:
        import microscope
        from microscope.simulators import (
            SimulatedCamera,
            SimulatedFilterWheel,
            SimulatedLightSource,
            SimulatedStage,
        )

        from exengine.backends.microscope import wrap_microscope_devices
    except ImportError as e:
        raise ValueError(str(e)) from None
    limits = {axis: microscope.AxisLimits(-10000, 10000) for axis in ("x", "y", "z")}
    devices = wrap_microscope_devices(
        {
            "Camera": SimulatedCamera(),
            "Stage": SimulatedStage(limits=limits),
            "FilterWheel": SimulatedFilterWheel(positions=4),
            "Light": SimulatedLightSource(),
        },
        prefix=prefix,
        filter_names=["DAPI", "FITC", "TRITC", "Cy5"],
    )
    return DeviceSet(
        devices,
        devices[f"{prefix}Camera"],
        devices[f"{prefix}StageZ"],
        devices[f"{prefix}StageXY"],
        devices[f"{prefix}FilterWheel"],
        "channel",
    )
