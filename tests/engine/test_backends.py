"""Micro-Manager (pymmcore-plus UniMMCore with pure-Python devices) and python-microscope
backends."""

from __future__ import annotations

import threading
import time

import microscope
import numpy as np
import pytest
from microscope.simulators import (
    SimulatedCamera,
    SimulatedFilterWheel,
    SimulatedLightSource,
    SimulatedStage,
)

from exengine import ExecutionEngine
from exengine.acquisition import Acquisition
from exengine.backends.micromanager import (
    MicroManagerCamera,
    MicroManagerConfigGroup,
    MicroManagerDevice,
    MicroManagerSingleAxisStage,
    MicroManagerXYStage,
    load_micromanager,
)
from exengine.backends.micromanager_demo import create_demo_core
from exengine.backends.microscope import MicroscopeCamera, wrap_microscope_devices
from exengine.data import DataHandler
from exengine.events import ReadoutData, StartCapture, multi_d_acquisition_events
from exengine.storage import NDTiffStorage
from exengine.storage.ndtiff_reader import NDTiffReader


@pytest.fixture
def mm():
    core = create_demo_core(shape=(64, 64))
    devices = load_micromanager(core=core)
    yield devices
    core.unloadAllDevices()


@pytest.fixture
def scope_devices():
    limits = {
        "x": microscope.AxisLimits(-1000, 1000),
        "y": microscope.AxisLimits(-1000, 1000),
        "z": microscope.AxisLimits(-100, 100),
    }
    raw = {
        "PMCamera": SimulatedCamera(sensor_shape=(64, 48)),
        "PMStage": SimulatedStage(limits=limits),
        "PMWheel": SimulatedFilterWheel(positions=3),
        "PMLight": SimulatedLightSource(),
    }
    devices = wrap_microscope_devices(raw, filter_names=["DAPI", "FITC", "TRITC"])
    devices["PMCamera"].exposure = 1.0
    yield devices
    for device in raw.values():
        device.shutdown()


def test_micromanager_devices_are_wrapped_by_type(mm):
    assert isinstance(mm["Camera"], MicroManagerCamera)
    assert isinstance(mm["Focus"], MicroManagerSingleAxisStage)
    assert isinstance(mm["XY"], MicroManagerXYStage)
    assert isinstance(mm["Filter"], MicroManagerDevice)
    assert isinstance(mm["Channel"], MicroManagerConfigGroup)
    assert ExecutionEngine.get_device("Camera") is mm["Camera"]


def test_micromanager_properties_map_to_device_hooks(mm):
    wheel = mm["Filter"]
    assert "Label" in wheel.get_property_names()
    assert wheel.get_allowed_property_values("Label") == ["DAPI", "FITC", "TRITC"]
    assert wheel.Label == "DAPI"
    wheel.Label = "TRITC"
    assert wheel.State == 2
    with pytest.raises(ValueError, match="must be one of"):
        wheel.Label = "GFP"
    assert wheel.Label == "TRITC"
    camera = mm["Camera"]
    assert camera.is_property_read_only("Binning")
    with pytest.raises(ValueError, match="read-only"):
        camera.Binning = 2
    with pytest.raises(AttributeError, match="no property"):
        camera.get_property("Nope")
    assert not camera.is_property_hardware_triggerable("Exposure")
    mm["Channel"].config = "FITC"
    assert wheel.Label == "FITC"
    with pytest.raises(ValueError, match="must be one of"):
        mm["Channel"].config = "Cy5"


def test_micromanager_camera_stage_and_sequence(mm):
    camera, focus = mm["Camera"], mm["Focus"]
    camera.exposure = 0.0
    focus.set_position(7.0)
    assert focus.get_position() == 7.0
    mm["XY"].set_position(10.0, -5.0)
    assert mm["XY"].get_position() == (10.0, -5.0)
    camera.arm(3)
    camera.start()
    frames = [camera.pop_data(timeout=5) for _ in range(3)]
    assert all(f[0] is not None and f[0].shape == (64, 64) for f in frames)
    assert frames[0][0][0, 0] == 1000 + 7 and frames[0][1]["DemoFilter"] == "DAPI"
    assert camera.pop_data(timeout=0.05) == (None, None)
    assert focus.get_triggerable_position_sequence_max_length() == 1000


def test_micromanager_multi_d_to_ndtiff_with_channels_and_z_sequence(mm, tmp_path):
    storage = NDTiffStorage(tmp_path, "mm")
    handler = DataHandler(storage)
    events = multi_d_acquisition_events(
        num_time_points=2,
        z_start=0,
        z_end=3,
        z_step=1,
        channel_group=mm["Channel"],
        channel_property="config",
        channels=["DAPI", "FITC"],
        order="tcz",
        sequence="z",
        camera=mm["Camera"],
        z_device=mm["Focus"],
        data_handler=handler,
    )
    assert sum(isinstance(e, ReadoutData) for e in events) == 4
    Acquisition(events, handler).start().await_execution(30)
    handler.await_completion(30)
    reader = NDTiffReader(storage.path)
    assert reader.axes == {"time": [0, 1], "channel": ["DAPI", "FITC"], "z": [0, 1, 2, 3]}
    assert reader.read_frame({"time": 1, "channel": "FITC", "z": 3})[0, 0] == 2000 + 3


def test_mixed_microscope_stage_with_micromanager_camera(mm, scope_devices, tmp_path):
    handler = DataHandler(NDTiffStorage(tmp_path, "mixed"))
    events = multi_d_acquisition_events(
        num_time_points=2,
        z_start=-2,
        z_end=2,
        z_step=2,
        camera=mm["Camera"],
        z_device=scope_devices["PMStageZ"],
        data_handler=handler,
    )
    Acquisition(events, handler).start().await_execution(30)
    handler.await_completion(30)
    assert len(handler.storage) == 6
    assert scope_devices["PMStageZ"].get_position() == 2.0


def test_micromanager_frame_timeout_and_errors_leave_engine_usable(mm):
    engine = ExecutionEngine.get_instance()
    mm["Camera"].set_property("fail_next_frames", 1)
    engine.submit(StartCapture(num_images=1, detector=mm["Camera"]))
    readout = engine.submit(ReadoutData(detector=mm["Camera"], num_images=1, frame_timeout_s=2))
    with pytest.raises((RuntimeError, TimeoutError), match="Camera"):
        readout.await_execution(10)
    mm["Camera"].set_property("fail_next_frames", 0)
    mm["Camera"].stop()
    assert engine.submit(lambda: 1).await_execution(5) == 1
    mm["Camera"].core.unloadDevice("Filter")
    with pytest.raises(RuntimeError):
        mm["Filter"].get_property("Label")


def test_microscope_camera_software_trigger_and_settings(scope_devices):
    camera = scope_devices["PMCamera"]
    assert camera.exposure == pytest.approx(1.0)
    assert "image pattern" in camera.get_setting_names()
    assert camera.get_allowed_property_values("image pattern") == [0, 1, 2, 3, 4, 5]
    camera.set_property("image pattern", 5)
    with pytest.raises(ValueError, match="must be one of"):
        camera.set_property("image pattern", 9)
    camera.arm(2)
    camera.start()
    frame, metadata = camera.pop_data(timeout=5)
    assert frame.shape == (48, 64) and metadata["FrameIndex"] == 0
    assert camera.pop_data(timeout=5)[0] is not None
    assert camera.is_stopped()


def test_microscope_external_trigger_and_unsupported_hardware_trigger():
    raw = SimulatedCamera(sensor_shape=(16, 16))
    with pytest.raises(ValueError, match="does not support trigger"):
        MicroscopeCamera(raw, "HWCam", trigger_type=microscope.TriggerType.RISING_EDGE)
    camera = MicroscopeCamera(raw, "ExtCam", trigger="external")
    camera.exposure = 1.0
    camera.arm(1)
    camera.start()
    assert camera.pop_data(timeout=0.2) == (None, None), "no frame before the external trigger"
    threading.Timer(0.05, raw.trigger).start()
    frame, _ = camera.pop_data(timeout=5)
    assert frame.shape == (16, 16)
    raw.shutdown()


def test_microscope_stage_wheel_light_and_limits(scope_devices):
    z = scope_devices["PMStageZ"]
    z.set_position(12.5)
    assert z.get_position() == 12.5
    with pytest.raises(ValueError, match="outside"):
        z.set_position(500)
    scope_devices["PMStageXY"].set_position(5, 6)
    assert scope_devices["PMStageXY"].get_position() == (5.0, 6.0)
    wheel = scope_devices["PMWheel"]
    wheel.channel = "TRITC"
    assert wheel.position == 2 and wheel.get_allowed_property_values("channel") == [
        "DAPI",
        "FITC",
        "TRITC",
    ]
    light = scope_devices["PMLight"]
    light.enabled = True
    light.power = 0.3
    assert light.enabled and light.power == pytest.approx(0.3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        light.power = 2


def test_microscope_multi_d_to_ndtiff(scope_devices, tmp_path):
    storage = NDTiffStorage(tmp_path, "pm")
    handler = DataHandler(storage)
    events = multi_d_acquisition_events(
        num_time_points=2,
        z_start=0,
        z_end=2,
        z_step=1,
        channel_group="PMWheel",
        channels=["DAPI", "FITC"],
        camera="PMCamera",
        z_device="PMStageZ",
        xy_device="PMStageXY",
        xy_positions=[(0, 0), (10, 10)],
        data_handler=handler,
    )
    started = time.monotonic()
    Acquisition(events, handler).start().await_execution(60)
    handler.await_completion(30)
    assert len(storage) == 2 * 2 * 2 * 3 and time.monotonic() - started < 60
    frame = storage.get_data({"time": 1, "position": 1, "channel": "FITC", "z": 2})
    assert frame.shape == (48, 64) and frame.dtype in (np.uint8, np.uint16)


def test_micromanager_configuration_file_is_loaded(tmp_path, micromanager_config):
    from pymmcore_plus.experimental.unicore import UniMMCore

    config = micromanager_config
    core = UniMMCore()
    devices = load_micromanager(str(config), core=core, prefix="cfg_")
    assert {"cfg_Camera", "cfg_Focus", "cfg_XY", "cfg_Filter", "cfg_Channel"} <= set(devices)
    devices["cfg_Channel"].config = "FITC"
    assert devices["cfg_Filter"].Label == "FITC"
    with pytest.raises(RuntimeError, match="Cannot load Micro-Manager configuration"):
        load_micromanager(str(tmp_path / "missing.cfg"), core=UniMMCore())
    core.unloadAllDevices()


def test_loading_micromanager_devices_keeps_the_root_loggers_level():
    """pymmcore-plus sets the root logger to DEBUG when imported: every library would then log at
    debug level (slow, and it broke S3 writes under pytest's log capture)."""
    import logging
    import subprocess
    import sys

    code = (
        "import logging; logging.getLogger().setLevel(logging.WARNING); "
        "from napari_exengine.device_sets import load_device_set; load_device_set('micromanager'); "
        "print(logging.getLogger().level)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip().splitlines()[-1] == str(logging.WARNING), result.stderr


def test_a_channel_property_the_device_does_not_have_is_refused_before_running(mm):
    """Setting it would only add an attribute: the channel would never change."""
    from exengine.events import multi_d_acquisition_plan
    from exengine.plan_helpers import PlanError

    def plan(**property_name):
        return multi_d_acquisition_plan(
            1,
            channels=["DAPI", "FITC"],
            channel_group=mm["Channel"],
            camera=mm["Camera"],
            **property_name,
        )

    with pytest.raises(PlanError, match="Channel has no property 'channel'; its properties: conf"):
        plan().validate()
    plan(channel_property="config").validate()
