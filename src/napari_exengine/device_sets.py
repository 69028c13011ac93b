"""Ready-made device sets for the panels and the command line: simulated, Micro-Manager,
python-microscope."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
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
    #: The backend that made the devices, and its Micro-Manager configuration file (if any).
    backend: str = "simulated"
    mm_config: str | None = None

    @property
    def cameras(self) -> list[Any]:
        """The camera, or the cameras that capture together."""
        return list(self.camera) if isinstance(self.camera, (list, tuple)) else [self.camera]

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
    backend: str = "simulated",
    mm_config: str | None = None,
    prefix: str = "",
    cameras: Sequence[str] | None = None,
) -> DeviceSet:
    """Create and register the devices of ``backend`` (names start with ``prefix``).

    ``micromanager`` loads the configuration file ``mm_config`` with pymmcore-plus's ``UniMMCore``
    (C++ adapters need a Micro-Manager installation; Python devices do not), or without one its
    pure-Python demo devices; ``microscope`` creates python-microscope's simulators;
    ``simulated`` reuses the registered devices or creates the simulated microscope. ``cameras``
    names the cameras to acquire with (several capture together; the simulated microscope makes
    ``Camera2``, ... when asked for). Raises ``ValueError`` with the reason when the backend
    cannot be loaded.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if mm_config and backend != "micromanager":
        raise ValueError("a Micro-Manager configuration file needs the micromanager backend")
    if backend == "micromanager":
        device_set = _micromanager(mm_config, prefix)
    elif backend == "microscope":
        device_set = _microscope(prefix)
    else:
        device_set = _simulated(prefix)
    if cameras:
        device_set.camera = _cameras(cameras, device_set, simulated=backend == "simulated")
    device_set.backend = backend
    device_set.mm_config = os.path.abspath(mm_config) if mm_config else None
    return device_set


def _cameras(names: Sequence[str], device_set: DeviceSet, simulated: bool) -> Any:
    """The cameras named (one, or a list of several), made on the simulated microscope when it
    offers them (``Camera2``, ...)."""
    from exengine.device_types import Detector
    from exengine.devices.simulated import SimulatedCamera, add_simulated_camera

    if len(set(names)) != len(names):
        raise ValueError(f"cameras must be distinct, got {list(names)}")
    registered = ExecutionEngine.get_devices()
    found = []
    first = device_set.camera
    for name in names:
        device = registered.get(name)
        offered = simulated and isinstance(first, SimulatedCamera)
        if device is None and offered and re.fullmatch(r".*Camera\d+", name):
            device = add_simulated_camera(name, beside=first)
        if not isinstance(device, Detector):
            known = [n for n, d in registered.items() if isinstance(d, Detector)]
            raise ValueError(f"No camera named {name!r}; cameras: {', '.join(known)}")
        found.append(device)
    return found if len(found) > 1 else found[0]


def _simulated(prefix: str) -> DeviceSet:
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


#: Camera settings written down at the start and restored on resume, when a camera has them.
CAMERA_STATE = ("exposure", "binning", "roi", "bit_depth")


def device_state(devices: DeviceSet) -> dict[str, Any]:
    """The state a plan starts from, as JSON values: stage positions, and each camera's settings
    (written into a dataset's summary, restored to resume it)."""
    state: dict[str, Any] = {}
    for role, device in (("xy", devices.xy), ("z", devices.z)):
        with contextlib.suppress(Exception):  # a stage that cannot say: nothing to restore
            position = device.get_position()
            state[role] = list(position) if isinstance(position, (tuple, list)) else position
    for camera in devices.cameras:
        settings = {}
        for name in CAMERA_STATE:
            with contextlib.suppress(Exception):
                value = getattr(camera, name)
                if isinstance(value, (int, float, str, tuple, list)):
                    settings[name] = list(value) if isinstance(value, tuple) else value
        if settings:
            state.setdefault("cameras", {})[getattr(camera, "name", "camera")] = settings
    return state


def restore_device_state(devices: DeviceSet, state: Mapping[str, Any]) -> None:
    """Put the devices back in ``state`` (as :func:`device_state` wrote it); raise
    ``ValueError`` naming what cannot be restored."""
    for role, device in (("xy", devices.xy), ("z", devices.z)):
        if role in state and device is not None:
            target = state[role]
            try:
                if isinstance(target, list):
                    device.set_position(*target)
                else:
                    device.set_position(target)
            except Exception as e:
                raise ValueError(f"Cannot move the {role} stage back to {target}: {e}") from None
    by_name = {getattr(camera, "name", "camera"): camera for camera in devices.cameras}
    for name, settings in (state.get("cameras") or {}).items():
        camera = by_name.get(name)
        if camera is None:
            continue
        for key in CAMERA_STATE:
            if key in settings:
                value = settings[key]
                try:
                    setattr(camera, key, tuple(value) if isinstance(value, list) else value)
                except Exception as e:
                    raise ValueError(f"Cannot set {name}'s {key} back to {value}: {e}") from None
