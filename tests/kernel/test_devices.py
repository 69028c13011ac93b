"""Device rerouting, on_thread, registry and the simulated microscope."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from exengine import ExecutionEngine, on_thread
from exengine.base_classes import Device
from exengine.device_types import Detector, SingleAxisPositioner
from exengine.devices.simulated import (
    SimulatedCamera,
    SimulatedMicroscope,
    SimulatedZStage,
    create_simulated_devices,
)


class Recorder(Device):
    def __init__(self, name="Recorder", **kwargs):
        super().__init__(name, **kwargs)
        self.value = 1
        self._private = 0

    def where(self):
        return threading.current_thread().name

    @property
    def prop(self):
        return threading.current_thread().name

    def spawn(self):
        out = []
        thread = threading.Thread(target=lambda: out.append(self.where()))
        thread.start()
        thread.join(5)
        return out[0], threading.current_thread().name


@on_thread("DeviceThread")
class Pinned(Recorder):
    @on_thread("MethodThread")
    def method_pinned(self):
        return threading.current_thread().name


def test_methods_properties_and_attributes_are_rerouted():
    device = Recorder()
    assert device.where() == "MainExecutorThread"
    assert device.prop == "MainExecutorThread"


def test_attribute_get_and_set_wait_for_the_executor(engine):
    device = Recorder()
    gate = threading.Event()
    engine.submit(lambda: gate.wait(5))
    results = []
    setter = threading.Thread(target=lambda: setattr(device, "value", 7))
    getter = threading.Thread(target=lambda: results.append(device.value))
    setter.start()
    setter.join(0.2)
    assert setter.is_alive(), (
        "the set ran on the calling thread instead of waiting for the executor"
    )
    assert object.__getattribute__(device, "value") == 1
    getter.start()
    gate.set()
    setter.join(5)
    getter.join(5)
    assert object.__getattribute__(device, "value") == 7
    assert results == [7]


def test_calls_on_executor_threads_run_directly(engine):
    device = Recorder()
    assert engine.submit(device.where, thread_name="Elsewhere").await_execution(5) == "Elsewhere"


def test_on_thread_class_and_method_level():
    device = Pinned("Pinned")
    assert device.where() == "DeviceThread"
    assert device.prop == "DeviceThread"
    assert device.method_pinned() == "MethodThread"


def test_threads_started_by_devices_are_not_rerouted():
    device = Recorder()
    spawned_name, host = device.spawn()
    assert host == "MainExecutorThread"
    assert spawned_name != "MainExecutorThread"


def test_no_executor_and_no_executor_attrs():
    direct = Recorder("Direct", no_executor=True)
    assert direct.where() == threading.current_thread().name
    partial = Recorder("Partial", no_executor_attrs=("where",))
    assert partial.where() == threading.current_thread().name
    assert partial.prop == "MainExecutorThread"


def test_exceptions_from_rerouted_calls_propagate():
    class Faulty(Device):
        def fail(self):
            raise OSError("port closed")

    with pytest.raises(OSError, match="port closed"):
        Faulty("Faulty").fail()


def test_registry_per_engine_and_clear_errors(engine):
    device = Recorder("Mine")
    assert ExecutionEngine.get_device("Mine") is device
    with pytest.raises(ValueError, match=r"No device named 'Nope'.*Mine"):
        ExecutionEngine.get_device("Nope")
    with pytest.raises(ValueError, match="already registered"):
        Recorder("Mine")
    assert Recorder().name.startswith("Recorder")


def test_creating_a_device_creates_the_engine(engine):
    engine.shutdown()
    assert ExecutionEngine._instance is None
    device = Recorder("Fresh")
    assert ExecutionEngine._instance is not None
    assert device.where() == "MainExecutorThread"


def test_property_metadata_hooks():
    devices = create_simulated_devices()
    camera = devices["Camera"]
    assert isinstance(camera, Detector)
    assert camera.get_allowed_property_values("binning") == [1, 2, 4]
    assert camera.get_property_limits("exposure") == (0.0, 10000.0)
    assert camera.is_property_read_only("pixel_size_um")
    assert "exposure" in camera.get_property_names()
    channel = devices["Channel"]
    assert channel.get_allowed_property_values("channel") == ["DAPI", "FITC", "TRITC", "Cy5"]
    assert channel.is_property_hardware_triggerable("channel")
    with pytest.raises(ValueError, match="must be one of"):
        channel.channel = "GFP"
    assert isinstance(devices["Z"], SingleAxisPositioner)


def test_simulated_camera_image_follows_z_channel_and_exposure():
    scope = SimulatedMicroscope()
    camera = SimulatedCamera("Cam", scope, width=128, height=128)
    stage = SimulatedZStage("Zs", scope)
    camera.exposure = 0
    camera.frame_rate_limit = 1000.0

    def snap():
        camera.arm(1)
        camera.start()
        frame, metadata = camera.pop_data(timeout=2)
        assert frame is not None
        return frame.astype(float), metadata

    in_focus, md = snap()
    assert md["StageZ-um"] == 0 and md["Channel"] == "DAPI"
    stage.set_position(60.0)
    far, _ = snap()
    assert far.std() < in_focus.std()
    stage.set_position(0.0)
    scope.channel = "FITC"
    other, _ = snap()
    assert np.abs(other - in_focus).mean() > 5
    camera.exposure = 40.0
    bright, _ = snap()
    assert bright.mean() > other.mean()


# exposure 15 saturates a few binned pixels, 50 most of them; 8-bit has its background near 0
@pytest.mark.parametrize(
    ("bit_depth", "exposure"), [(16, 10.0), (16, 15.0), (16, 50.0), (12, 15.0), (8, 10.0)]
)
def test_simulated_camera_frames_are_clean_image_plus_noise_clipped_exactly(bit_depth, exposure):
    camera = SimulatedCamera("Noisy", width=96, height=64)
    camera.exposure = exposure
    camera.frame_rate_limit = 10000.0
    camera.bit_depth = bit_depth
    camera.roi = (8, 4, 80, 48)
    camera.binning = 2
    camera.arm(6)
    camera.start()
    frames = [camera.pop_data(timeout=2)[0] for _ in range(6)]
    ((base, _inner, _edges),) = camera._cache.values()
    maximum = (1 << bit_depth) - 1
    for index, frame in enumerate(frames):
        noise = camera._noise[index % 4, : 24 * 40].reshape(24, 40)
        expected = np.clip(base + noise, 0, maximum)
        assert frame.dtype == (np.uint8 if bit_depth == 8 else np.uint16) and frame.shape == (
            24,
            40,
        )
        np.testing.assert_array_equal(frame, expected)
    if exposure >= 15:
        assert (frames[0] == maximum).any()  # saturated pixels read the maximum, never wrap around


def test_simulated_camera_honours_frame_rate():
    import time

    camera = SimulatedCamera("Timed", width=64, height=64)
    camera.exposure = 20.0
    camera.arm(5)
    camera.start()
    started = time.monotonic()
    frames = [camera.pop_data(timeout=2)[0] for _ in range(5)]
    assert all(f is not None for f in frames)
    assert time.monotonic() - started >= 0.09
    assert camera.pop_data(timeout=0.05) == (None, None)
    assert camera.is_stopped()


def _clean_image(camera: SimulatedCamera) -> np.ndarray:
    """Snap one frame and return the noise-free image it was made from."""
    camera.exposure = 10.0
    camera.frame_rate_limit = 10000.0
    camera._cache.clear()
    camera.arm(1)
    camera.start()
    frame, _metadata = camera.pop_data(timeout=10)
    ((base, _inner, _edges),) = camera._cache.values()
    assert frame.shape == base.shape
    return base


@pytest.mark.parametrize("side", [2048, 2304])
def test_simulated_camera_renders_scmos_sensor_sizes_with_the_same_specimen_tiled(side):
    scope = SimulatedMicroscope()
    scope.x_um, scope.y_um = 300.0, -123.0  # crops that start inside the specimen's period
    big = SimulatedCamera("Big", scope, width=side, height=side)
    small = SimulatedCamera("Small", scope, width=512, height=512)
    image, reference = _clean_image(big), _clean_image(small)
    assert image.shape == (side, side)
    # the specimen a 512 x 512 sensor sees
    np.testing.assert_array_equal(image[:512, :512], reference)
    np.testing.assert_array_equal(image[512:1024, 1024:1536], reference)  # ... repeated seamlessly
    np.testing.assert_array_equal(image[:, 512:], image[:, :-512])
    big.binning = 4
    big.arm(1)
    big.start()
    frame, _metadata = big.pop_data(timeout=10)
    assert frame.shape == (side // 4, side // 4) and frame.dtype == np.uint16


def test_simulated_camera_bins_rois_that_are_not_a_multiple_of_the_binning():
    camera = SimulatedCamera("Odd", width=1031, height=7)
    camera.binning = 2
    assert _clean_image(camera).shape == (3, 515)
    camera.binning = 4
    assert _clean_image(camera).shape == (1, 257)
    camera.roi = (0, 0, 3, 7)
    with pytest.raises(ValueError, match="binning 4 leaves no pixels of the 3x7 roi"):
        camera.arm(1)


@pytest.mark.parametrize("bad", [0, -512, 8193, 2.5, "2048", True, None])
def test_simulated_camera_refuses_sensor_sizes_it_cannot_render_naming_them(bad):
    with pytest.raises(
        ValueError, match=rf"width must be a whole number of pixels from 1 to 8192, got {bad!r}"
    ):
        SimulatedCamera("Bad", width=bad)
    with pytest.raises(ValueError, match="height must be"):
        SimulatedCamera("Bad", height=bad)
    assert "Bad" not in ExecutionEngine.get_devices()
