"""Micro-Manager cameras on Micro-Manager's own C++ demo adapters (mm-test-adapters): the Multi
Camera device drives two DemoCameras as one, each frame reaches the camera that took it through the
core's one circular buffer, and an overflow of that buffer is counted exactly."""

from __future__ import annotations

import time

import pytest
from pymmcore_plus import CMMCorePlus

from exengine.acquisition import Acquisition
from exengine.backends.micromanager import (
    MicroManagerCamera,
    MicroManagerMultiCamera,
    load_micromanager,
)
from exengine.data import DataHandler
from exengine.events import MultiDPlan, MultiDSettings, multi_d_acquisition_events
from exengine.storage import NDRAMStorage, NDTiffStorage
from exengine.storage.ndtiff_reader import NDTiffReader
from micromanager_helpers import camera_of


@pytest.fixture
def mm(multi_camera_config):
    core = CMMCorePlus()
    devices = load_micromanager(str(multi_camera_config), core=core)
    devices["Multi"].exposure = 1.0
    yield devices
    core.unloadAllDevices()


def stored(storage: NDTiffStorage) -> list[dict]:
    reader = NDTiffReader(storage.path)
    return [dict(c) for c in reader.coordinates()]


def check_every_frame_came_from_its_camera(path, coordinates) -> None:
    reader = NDTiffReader(path)
    for coords in coordinates:
        metadata = reader.read_metadata(coords)
        assert metadata["Camera"] == coords["camera"], coords
        assert camera_of(reader.read_frame(coords)) == coords["camera"], coords


def test_a_multi_camera_device_is_wrapped_with_its_cameras(mm):
    multi = mm["Multi"]
    assert isinstance(multi, MicroManagerMultiCamera)
    assert type(mm["Cam1"]) is MicroManagerCamera
    assert multi.physical_cameras() == ("Cam1", "Cam2")
    assert multi.cameras() == (mm["Cam1"], mm["Cam2"])
    assert mm["Cam1"].cameras() == (mm["Cam1"],)
    multi.exposure = 3.0  # the Multi Camera sets it on both
    assert mm["Cam1"].exposure == mm["Cam2"].exposure == 3.0


@pytest.mark.parametrize("sequence", [None, "t"], ids=["a-frame-at-a-time", "hardware-sequence"])
def test_a_multi_camera_acquisition_has_a_camera_axis(mm, tmp_path, sequence):
    storage = NDTiffStorage(tmp_path, "multi")
    handler = DataHandler(storage)
    events = multi_d_acquisition_events(
        num_time_points=6,
        z_start=0,
        z_end=2,
        z_step=1,
        order="zt" if sequence else "tz",
        sequence=sequence,
        camera=mm["Multi"],
        z_device=mm["Z"],
        data_handler=handler,
    )
    acquisition = Acquisition(events, handler)
    acquisition.start()
    acquisition.await_completion(timeout=60)
    handler.await_completion(30)
    reader = NDTiffReader(storage.path)
    assert reader.axes["camera"] == ["Cam1", "Cam2"]
    coordinates = stored(storage)
    assert len(coordinates) == 6 * 3 * 2 == acquisition.status().frames_stored
    check_every_frame_came_from_its_camera(storage.path, coordinates)


def test_a_multi_camera_snap_gives_each_camera_its_frame(mm, tmp_path):
    """A single frame of the core's camera is snapped: one exposure, one image per camera."""
    assert mm["Multi"].core.getCameraDevice() == "Multi"
    storage = NDTiffStorage(tmp_path, "snap")
    handler = DataHandler(storage)
    settings = MultiDSettings.from_event_arguments(num_time_points=1)
    Acquisition(MultiDPlan(settings, camera="Multi"), handler).start().await_execution(30)
    handler.await_completion(30)
    coordinates = stored(storage)
    assert sorted(c["camera"] for c in coordinates) == ["Cam1", "Cam2"]
    check_every_frame_came_from_its_camera(storage.path, coordinates)


def test_cameras_started_one_after_another_each_get_their_own_frames(mm, tmp_path):
    """Two cameras (no Multi Camera) share the core's circular buffer, their images interleaved:
    each readout still takes its own camera's."""
    mm["Cam1"].exposure = mm["Cam2"].exposure = 1.0
    storage = NDTiffStorage(tmp_path, "pair")
    handler = DataHandler(storage)
    settings = MultiDSettings.from_event_arguments(num_time_points=20, sequence="t")
    plan = MultiDPlan(settings, camera=[mm["Cam1"], mm["Cam2"]])
    Acquisition(plan, handler).start().await_execution(60)
    handler.await_completion(30)
    coordinates = stored(storage)
    assert len(coordinates) == 40
    check_every_frame_came_from_its_camera(storage.path, coordinates)


class SlowNDTiff(NDTiffStorage):
    """Real NDTiff storage that takes 20 ms longer for each frame: slower than the cameras."""

    def _store(self, coords, data, encoded, file):  # each frame's write, whichever path
        time.sleep(0.02)
        super()._store(coords, data, encoded, file)


def test_a_circular_buffer_overflow_is_counted_exactly_for_each_camera(mm, tmp_path):
    multi = mm["Multi"]
    core = multi.core
    core.setCircularBufferMemoryFootprint(1)  # MB: about 80 frames of 96x64 at 16 bit
    mm["Cam1"].set_property("PixelType", "16bit")
    mm["Cam2"].set_property("PixelType", "16bit")
    multi.exposure = 0.0
    storage = SlowNDTiff(tmp_path, "overflow")
    handler = DataHandler(storage, memory_budget_bytes=64 * 96 * 2 * 8)
    settings = MultiDSettings.from_event_arguments(num_time_points=400, sequence="t")
    acquisition = Acquisition(MultiDPlan(settings, camera=multi), handler)
    acquisition.start()
    acquisition.await_completion(timeout=120)
    handler.await_completion(30)
    status = acquisition.status()
    kept = [(c["time"], c["camera"]) for c in stored(storage)]
    dropped = [(c["time"], c["camera"]) for c in acquisition.dropped_coordinates]
    assert status.frames_dropped == len(dropped) > 0
    assert status.frames_stored + status.frames_dropped == status.frames_planned == 800
    assert sorted(kept + dropped) == sorted((t, c) for t in range(400) for c in ("Cam1", "Cam2"))
    assert multi.cameras()[0].frames_dropped + multi.cameras()[1].frames_dropped == len(dropped)


def test_a_multi_camera_without_its_cameras_wrapped_says_what_to_do(mm):
    multi = mm["Multi"]
    multi.set_property("Physical Camera 1", "Undefined")
    multi.set_property("Physical Camera 2", "Undefined")
    with pytest.raises(ValueError, match="Physical Camera properties are all Undefined; set them"):
        multi.cameras()


def test_a_multi_camera_of_one_camera_reads_it_without_a_camera_axis(mm, tmp_path):
    mm["Multi"].set_property("Physical Camera 1", "Cam2")
    mm["Multi"].set_property("Physical Camera 2", "Undefined")
    assert mm["Multi"].cameras() == (mm["Cam2"],)
    for sequence, name in ((None, "snapped"), ("t", "sequenced")):
        storage = NDTiffStorage(tmp_path, name)
        handler = DataHandler(storage)
        settings = MultiDSettings.from_event_arguments(num_time_points=2, sequence=sequence)
        Acquisition(MultiDPlan(settings, camera=mm["Multi"]), handler).start().await_execution(30)
        handler.await_completion(30)
        reader = NDTiffReader(storage.path)
        assert reader.axes == {"time": [0, 1]}
        assert camera_of(reader.read_frame({"time": 1})) == "Cam2"


def test_a_core_reloaded_with_other_devices_still_delivers_frames(mm, tmp_path):
    """What a capture of the unloaded cameras left behind does not stand in the way."""
    core = mm["Multi"].core
    settings = MultiDSettings.from_event_arguments(num_time_points=3, sequence="t")
    first = Acquisition(MultiDPlan(settings, camera=mm["Multi"]), DataHandler(NDRAMStorage()))
    first.start().await_execution(30)
    core.unloadAllDevices()
    core.loadDevice("Other", "DemoCamera", "DCam")
    core.initializeAllDevices()
    other = load_micromanager(core=core, prefix="again_")["again_Other"]
    other.exposure = 1.0
    handler = DataHandler(NDRAMStorage())
    Acquisition(MultiDPlan(settings, camera=other), handler).start().await_execution(30)
    handler.await_completion(30)
    assert len(handler.storage) == 3


def test_a_continuous_capture_counts_what_a_full_circular_buffer_lost(mm, tmp_path):
    """Past a full circular buffer a continuous capture goes on (the camera clears the buffer):
    the gaps in each camera's image numbers are counted, with their coordinates."""
    from exengine.events.detector_events import (
        ReadoutData,
        StartContinuousCapture,
        StopCapture,
    )

    multi = mm["Multi"]
    multi.core.setCircularBufferMemoryFootprint(1)  # MB: about 160 frames of 96x64 at 8 bit
    multi.exposure = 0.0
    storage = SlowNDTiff(tmp_path, "continuous")
    handler = DataHandler(storage, memory_budget_bytes=64 * 96 * 4)
    coords = [{"time": t, "camera": c} for t in range(300) for c in ("Cam2", "Cam1")]
    events = [
        StartContinuousCapture(multi),
        ReadoutData(coords, detector=multi, num_images=len(coords)),
        StopCapture(multi),
    ]
    acquisition = Acquisition(events, handler)
    acquisition.start()
    acquisition.await_completion(timeout=120)
    handler.await_completion(30)
    kept = [(c["time"], c["camera"]) for c in stored(storage)]
    dropped = [(c["time"], c["camera"]) for c in acquisition.dropped_coordinates]
    assert acquisition.frames_dropped == len(dropped) > 0
    assert sorted(kept + dropped) == sorted((c["time"], c["camera"]) for c in coords)
    check_every_frame_came_from_its_camera(storage.path, stored(storage))
    reader = NDTiffReader(storage.path)
    for time_point, camera in kept:  # each frame at its own coordinates: its image number
        frame = {"time": time_point, "camera": camera}
        assert reader.read_metadata(frame)["FrameIndex"] == time_point


def test_a_camera_captures_as_the_cores_camera_or_beside_one_like_it(mm, tmp_path):
    """The core reads every image with its current camera's size and pixel type: a camera alone
    becomes the current camera; beside another, it must give images like the current one's."""
    mm["Cam1"].set_property("Binning", 2)
    settings = MultiDSettings.from_event_arguments(num_time_points=2)
    handler = DataHandler(NDRAMStorage())
    Acquisition(MultiDPlan(settings, camera=mm["Cam1"]), handler).start().await_execution(30)
    handler.await_completion(30)
    assert mm["Cam1"].core.getCameraDevice() == "Cam1"
    assert handler.storage.get_data({"time": 1}).shape == (64 // 2, 96 // 2)
    pair = MultiDPlan(settings, camera=[mm["Cam1"], mm["Cam2"]])
    future = Acquisition(pair, DataHandler(NDRAMStorage())).start()
    with pytest.raises(Exception, match=r"Cam2 gives 96x64 .* Cam1, Micro-Manager's current"):
        future.await_execution(30)


def test_frames_go_to_the_camera_their_coordinates_name(mm, tmp_path):
    """A Multi Camera's cameras swapped after the plan was made still store each frame at its own
    camera; a camera taken away is refused, not stored under another's name."""
    multi = mm["Multi"]
    settings = MultiDSettings.from_event_arguments(num_time_points=3, sequence="t")
    plan = MultiDPlan(settings, camera=multi)
    multi.set_property("Physical Camera 1", "Cam2")
    multi.set_property("Physical Camera 2", "Cam1")
    storage = NDTiffStorage(tmp_path, "swapped")
    handler = DataHandler(storage)
    Acquisition(plan, handler).start().await_execution(30)
    handler.await_completion(30)
    check_every_frame_came_from_its_camera(storage.path, stored(storage))
    assert len(stored(storage)) == 6
    plan = MultiDPlan(settings, camera=multi)
    multi.set_property("Physical Camera 2", "Undefined")
    future = Acquisition(plan, DataHandler(NDRAMStorage())).start()
    with pytest.raises(Exception, match="planned for camera 'Cam1', but the cameras capturing"):
        future.await_execution(30)


def test_cameras_that_would_capture_twice_or_differ_are_refused_clearly(mm):
    from exengine.events import StartCapture

    settings = MultiDSettings.from_event_arguments(num_time_points=2)
    with pytest.raises(ValueError, match=r"Cam1 would capture twice: Multi \(drives Cam1, Cam2\)"):
        MultiDPlan(settings, camera=[mm["Multi"], mm["Cam1"]])
    with pytest.raises(ValueError, match="Cam1 would capture twice"):
        StartCapture(num_images=1, detector=[mm["Multi"], mm["Cam1"]]).execute()
    mm["Cam2"].set_property("Binning", 2)
    with pytest.raises(ValueError, match="must give images of one size and pixel type"):
        mm["Multi"].arm(3)


def test_plans_that_read_frames_one_at_a_time_take_one_camera(mm):
    from exengine.plans import acquire_until, grid_scan

    with pytest.raises(ValueError, match="takes its frames from one camera; Cam1, Cam2 capture"):
        acquire_until(0.5, camera=mm["Multi"])
    with pytest.raises(ValueError, match="takes its frames from one camera"):
        grid_scan(2, 2, camera=mm["Multi"], xy_device="nothing")
