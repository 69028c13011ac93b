"""Pure-Python Micro-Manager devices for pymmcore-plus's ``UniMMCore`` (no C++ adapters needed).

:func:`create_demo_core` returns a ``UniMMCore`` with a camera, a sequenceable focus drive, an XY
stage and a filter wheel, and a "Channel" configuration group. The real MMCore and pymmcore-plus
code paths run; only the devices are Python. Frames depend on focus and filter so tests can see them
work.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import root_log_level_kept

try:
    with root_log_level_kept():
        from pymmcore_plus.experimental.unicore import (
            SimpleCameraDevice,
            StageDevice,
            StateDevice,
            UniMMCore,
            XYStageDevice,
            pymm_property,
        )
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "The Micro-Manager demo needs pymmcore-plus: pip install 'napari-exengine[micromanager]'"
    ) from error

__all__ = ["DemoCamera", "DemoFilterWheel", "DemoFocus", "DemoXYStage", "create_demo_core"]

FILTERS = ("DAPI", "FITC", "TRITC")


class _Scene:
    """State shared by the demo devices."""

    def __init__(self) -> None:
        self.z = 0.0
        self.xy = (0.0, 0.0)
        self.filter = 0
        self.z_sequence: tuple[float, ...] = ()
        self.sequence_index = 0


SHARED_SCENE = _Scene()
"""The scene of demo devices created without one, e.g. by a configuration file
(``Device,Camera,exengine.backends.micromanager_demo,DemoCamera``)."""


class DemoCamera(SimpleCameraDevice):
    """A camera whose frame value encodes focus, filter and frame number; exposure honoured if >
    0."""

    def __init__(self, scene: _Scene | None = None, shape: tuple[int, int] = (512, 512)) -> None:
        super().__init__()
        self._scene = scene or SHARED_SCENE
        self._shape = shape
        self._exposure = 0.0
        self._base = (
            (np.arange(shape[0] * shape[1], dtype=np.uint32) % 97).astype(np.uint16).reshape(shape)
        )
        self._failing = False

    def get_exposure(self) -> float:
        return self._exposure

    def set_exposure(self, exposure: float) -> None:
        self._exposure = float(exposure)

    def sensor_shape(self) -> tuple[int, int]:
        return self._shape

    def dtype(self) -> Any:
        return np.uint16

    @pymm_property(allowed_values=[0, 1])
    def fail_next_frames(self) -> int:
        """Set to 1 to make the camera stop delivering frames (to test timeouts)."""
        return int(self._failing)

    @fail_next_frames.setter
    def fail_next_frames(self, value: int) -> None:
        self._failing = bool(int(value))

    def snap(self, buffer: np.ndarray) -> Mapping:
        if self._failing:
            raise RuntimeError("DemoCamera is set to fail")
        scene = self._scene
        z = scene.z
        if scene.z_sequence:
            z = scene.z_sequence[scene.sequence_index % len(scene.z_sequence)]
            scene.sequence_index += 1
        if self._exposure > 0:
            import time

            time.sleep(self._exposure / 1000.0)
        np.add(self._base, 1000 * (scene.filter + 1) + round(z), out=buffer)
        return {"DemoZ": z, "DemoFilter": FILTERS[scene.filter]}


class DemoFocus(StageDevice):
    """A focus drive (µm) that accepts hardware-triggered sequences of up to 1,000 positions."""

    def __init__(self, scene: _Scene | None = None) -> None:
        super().__init__()
        self._scene = scene or SHARED_SCENE

    def set_position_um(self, val: float) -> None:
        self._scene.z = float(val)

    def get_position_um(self) -> float:
        return self._scene.z

    def home(self) -> None:
        self._scene.z = 0.0

    def stop(self) -> None:
        pass

    def set_origin(self) -> None:
        self._scene.z = 0.0

    def get_sequence_max_length(self) -> int:
        return 1000

    def send_sequence(self, sequence: Sequence[float]) -> None:
        self._pending = tuple(float(v) for v in sequence)

    def start_sequence(self) -> None:
        self._scene.z_sequence = getattr(self, "_pending", ())
        self._scene.sequence_index = 0

    def stop_sequence(self) -> None:
        self._scene.z_sequence = ()


class DemoXYStage(XYStageDevice):
    """An XY stage (µm)."""

    def __init__(self, scene: _Scene | None = None) -> None:
        super().__init__()
        self._scene = scene or SHARED_SCENE

    def set_position_um(self, x: float, y: float) -> None:
        self._scene.xy = (float(x), float(y))

    def get_position_um(self) -> tuple[float, float]:
        return self._scene.xy

    def home(self) -> None:
        self._scene.xy = (0.0, 0.0)

    def stop(self) -> None:
        pass

    def set_origin_x(self) -> None:
        pass

    def set_origin_y(self) -> None:
        pass


class DemoFilterWheel(StateDevice):
    """A filter wheel with DAPI, FITC and TRITC positions."""

    def __init__(self, scene: _Scene | None = None) -> None:
        super().__init__(dict(enumerate(FILTERS)))
        self._scene = scene or SHARED_SCENE

    def get_state(self) -> int:
        return self._scene.filter

    def set_state(self, position: int) -> None:
        self._scene.filter = int(position)


def create_demo_core(shape: tuple[int, int] = (512, 512)) -> UniMMCore:
    """A ``UniMMCore`` with the demo devices loaded and a "Channel" group (DAPI, FITC, TRITC)."""
    # no C++ adapters installed: expected
    logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)
    core = UniMMCore()
    scene = _Scene()
    core.loadPyDevice("Camera", DemoCamera(scene, shape))
    core.loadPyDevice("Focus", DemoFocus(scene))
    core.loadPyDevice("XY", DemoXYStage(scene))
    core.loadPyDevice("Filter", DemoFilterWheel(scene))
    core.initializeAllDevices()
    core.setCameraDevice("Camera")
    core.setFocusDevice("Focus")
    core.setXYStageDevice("XY")
    for name in FILTERS:
        core.defineConfig("Channel", name, "Filter", "Label", name)
    core.setChannelGroup("Channel")
    core.definePixelSizeConfig("Demo")
    core.setPixelSizeUm("Demo", 0.65)
    core.setPixelSizeConfig("Demo")
    return core
