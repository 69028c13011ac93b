"""A camera that cannot wait: the simulated camera runs on its own clock into a finite sequence
buffer; frames that arrive while it is full are dropped and counted, everywhere they are reported
(the acquisition, its status, the dataset's summary, ``exengine info``, the command line); stop
keeps the frames in hand and abort drops them."""

from __future__ import annotations

import io
import json
import re
import threading
import time

import numpy as np
import pytest

from exengine.acquisition import Acquisition
from exengine.acquisition_status import FinishReason
from exengine.data import DataHandler
from exengine.devices.simulated import SimulatedCamera
from exengine.events import multi_d_acquisition_plan
from exengine.storage import NDTiffStorage
from exengine.storage.dataset_info import summarise_dataset
from exengine.storage.ndtiff_reader import RUN_SUMMARY, NDTiffReader

SHAPE = (64, 64)
FRAME_MB = SHAPE[0] * SHAPE[1] * 2 / 1024**2


class SlowNDTiff(NDTiffStorage):
    """Real NDTiff storage that takes ``delay_s`` longer for each frame: slower than the camera."""

    delay_s = 0.02

    def _store(self, coords, data, encoded, file):  # each frame's write, whichever path
        time.sleep(self.delay_s)
        super()._store(coords, data, encoded, file)


def small_camera(scope, buffer_frames: int) -> SimulatedCamera:
    camera = scope["Camera"]
    camera.roi = (0, 0, *SHAPE)
    camera.exposure = 0.0
    camera.frame_rate_limit = 500.0  # a frame every 2 ms
    camera.sequence_buffer_mb = buffer_frames * FRAME_MB
    return camera


def test_a_pop_waits_only_while_a_frame_can_still_come(scope):
    """Once every armed frame has arrived, or the camera is stopped, a pop returns at once (a
    reader that waited out its timeout there lost that time at the end of every acquisition);
    armed but not yet started, it waits its timeout."""
    camera = small_camera(scope, buffer_frames=10)
    camera.frame_rate_limit = 100.0
    camera.arm(2)
    before = time.monotonic()
    assert camera.pop_data(timeout=0.2) == (None, None)
    assert time.monotonic() - before >= 0.2, "armed, not started: the pop waits"
    camera.start()
    assert [camera.pop_data(timeout=30)[1]["FrameIndex"] for _ in range(2)] == [0, 1]
    before = time.monotonic()
    assert camera.pop_data(timeout=30) == (None, None)  # every armed frame arrived
    assert time.monotonic() - before < 20
    camera.arm(None)  # until stopped
    camera.start()
    camera.stop()
    popped = []
    reader = threading.Thread(
        target=lambda: popped.extend(iter(camera.pop_data, (None, None))), daemon=True
    )
    reader.start()  # no timeout at all: it must still end
    reader.join(timeout=20)
    assert not reader.is_alive(), "a pop with no timeout on a stopped camera never returned"
    assert len(popped) <= 1, "at most the frame that arrived before the stop"


def test_frames_that_arrive_while_the_buffer_is_full_are_dropped_and_counted(scope):
    camera = small_camera(scope, buffer_frames=3)
    camera.arm(10)
    camera.start()
    time.sleep(0.1)  # all 10 have arrived; nobody took any
    frames = []
    while (frame := camera.pop_data(timeout=0.05))[0] is not None:
        frames.append(frame)
    assert [metadata["FrameIndex"] for _, metadata in frames] == [0, 1, 2]
    assert camera.frames_dropped == 7 and camera.is_stopped()
    camera.arm(2)
    assert camera.frames_dropped == 0, "counted since the last arm"


def test_taken_in_time_nothing_is_dropped_and_buffers_are_reused(scope, engine):
    camera = small_camera(scope, buffer_frames=50)  # in time with up to 100 ms to spare

    def take_all() -> int:  # on the executor thread, as a readout does
        pooled = 0
        camera.arm(200)
        camera.start()
        for index in range(200):
            frame, metadata = camera.pop_data(timeout=1)
            assert metadata["FrameIndex"] == index
            pooled += any(frame is buffer for buffer in camera._pool._buffers)
            del frame
        return pooled

    assert engine.submit(take_all).await_execution(timeout=30) == 200
    assert camera.frames_dropped == 0
    assert len(camera._pool._buffers) <= 50, "the camera's ring of buffers, not fresh memory"


def test_frames_popped_from_a_thread_of_the_users_reuse_the_cameras_buffers(scope):
    """A device call from outside the engine runs as an event on an executor thread; once it
    returns, nothing keeps what it returned (before, the event and its future kept each other, and
    every frame lived on until Python's cyclic garbage collection: the camera wrote each next frame
    into fresh memory)."""
    from exengine.devices.simulated_camera import PREFILLED_FRAMES

    camera = small_camera(scope, buffer_frames=100)
    camera.arm(100)
    camera.start()
    for _ in range(100):
        frame, _ = camera.pop_data(timeout=1)  # this thread is none of the engine's
        assert frame is not None
    assert len(camera._pool._buffers) == PREFILLED_FRAMES  # none made beyond those made at arm


def test_arming_prepares_the_first_frames_so_none_waits_for_rendering(scope, monkeypatch):
    """Rendering a frame's clean image costs a few tenths of a second at 2048x2048; it is done at
    ``arm``, before the clock starts, for each channel of a sequence, not at the first frames."""
    from exengine.devices import simulated_camera

    rendered: list[tuple] = []
    render = simulated_camera.render_clean
    monkeypatch.setattr(
        simulated_camera, "render_clean", lambda key: rendered.append(key) or render(key)
    )
    microscope = scope["Camera"].microscope
    camera = small_camera(scope, buffer_frames=8)
    microscope.channel_sequence = ["DAPI", "FITC"]
    try:
        camera.arm(4)
        assert [key[3] for key in rendered] == ["DAPI", "FITC"]
        camera.start()
        frames = [camera.pop_data(timeout=1)[1]["Channel"] for _ in range(4)]
    finally:
        microscope.channel_sequence = None
    assert frames == ["DAPI", "FITC", "DAPI", "FITC"] and len(rendered) == 2


def test_a_frame_kept_by_its_reader_is_never_overwritten(scope):
    camera = small_camera(scope, buffer_frames=4)
    camera.arm(40)
    camera.start()
    kept = [camera.pop_data(timeout=1)[0]]
    first = kept[0].copy()  # as it was when popped
    kept += [camera.pop_data(timeout=1)[0] for _ in range(39)]
    assert np.array_equal(kept[0], first) and len({id(f) for f in kept}) == 40
    kept[1][:8, :8] = 0  # a processor changing a frame in place changes that frame only
    assert not np.array_equal(kept[1][:8, :8], kept[5][:8, :8])


def test_a_storage_slower_than_the_camera_makes_it_drop_frames_counted_exactly(scope, tmp_path):
    from exengine.events import MultiDPlan, MultiDSettings

    camera = small_camera(scope, buffer_frames=3)
    storage = SlowNDTiff(tmp_path, name="slow")
    handler = DataHandler(storage, memory_budget_bytes=int(4 * FRAME_MB * 1024**2))
    # one hardware-timed sequence of 60 frames: the camera does not wait for the readout
    settings = MultiDSettings.from_event_arguments(num_time_points=60, sequence="t")
    acquisition = Acquisition(MultiDPlan(settings, camera=camera), handler)
    acquisition.start()
    acquisition.await_completion(timeout=60)
    status = acquisition.status()
    stored = {c["time"] for c in storage.get_coordinates_list()}
    dropped = [c["time"] for c in acquisition.dropped_coordinates]
    assert status.frames_dropped == len(dropped) > 0
    assert status.frames_stored + status.frames_dropped == status.frames_planned == 60
    assert sorted(stored | set(dropped)) == list(range(60)) and not stored & set(dropped)
    assert status.finish_reason is FinishReason.DONE
    assert f"{len(dropped)} dropped by the camera" in status.summary()
    summary = json.loads((tmp_path / "slow_1" / RUN_SUMMARY).read_text())
    assert summary["FramesDropped"] == len(dropped)
    assert [c["time"] for c in summary["DroppedCoordinates"]] == dropped
    assert NDTiffReader(tmp_path / "slow_1").summary_metadata["FramesDropped"] == len(dropped)
    assert (
        f"Dropped by the camera: {len(dropped)} frames"
        in summarise_dataset(str(tmp_path / "slow_1")).text()
    )


def test_the_command_line_reports_drops_with_exit_status_3(scope, tmp_path):
    from napari_exengine.cli import DROPPED, main

    camera = small_camera(scope, buffer_frames=2)
    camera.frame_rate_limit = 100_000.0  # a frame every 10 µs: faster than any readout
    out = io.StringIO()
    args = ["acquire", "--time", "400", "--sequence", "t", "--out", str(tmp_path), "--name", "cli"]
    assert main(args, out) == DROPPED
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("Done: ") and "dropped by the camera" in last and "of 400 frames" in last
    stored, dropped = (
        int(n) for n in re.findall(r"([\d,]+) (?:of 400 frames stored|dropped)", last)
    )
    assert stored + dropped == 400


@pytest.mark.parametrize("action", ["stop", "abort"])
def test_stop_keeps_the_frame_being_exposed_and_abort_drops_it(scope, tmp_path, action):
    camera = scope["Camera"]
    camera.roi = (0, 0, *SHAPE)
    camera.exposure = 1500.0
    handler = DataHandler(NDTiffStorage(tmp_path, name="long"))
    acquisition = Acquisition(multi_d_acquisition_plan(num_time_points=3), handler)
    acquisition.start()
    time.sleep(0.5)  # a third of the first exposure
    started = time.monotonic()
    getattr(acquisition, action)()
    acquisition.await_completion(timeout=10)
    took = time.monotonic() - started
    status = acquisition.status()
    if action == "stop":
        assert status.frames_stored == 1 and status.finish_reason is FinishReason.STOPPED
        assert 0.7 < took < 3.0, "it waited for the exposure to end, and no more"
    else:
        assert status.frames_stored == 0 and status.finish_reason is FinishReason.ABORTED
        assert took < 0.5


class RecordingCamera(SimulatedCamera):
    """A simulated camera that notes when it is armed and started."""

    calls: list[str] = []

    def arm(self, frame_count=None):
        RecordingCamera.calls.append(f"arm {self.name}")
        super().arm(frame_count)

    def start(self):
        RecordingCamera.calls.append(f"start {self.name}")
        super().start()


def test_several_cameras_are_armed_before_any_starts_and_each_frame_has_its_camera(scope, tmp_path):
    from exengine.events import multi_d_acquisition_events

    microscope = scope["Camera"].microscope
    cameras = [RecordingCamera(name, microscope, width=64, height=64) for name in ("A", "B")]
    for camera in cameras:
        camera.exposure, camera.frame_rate_limit = 0.0, 1000.0
    RecordingCamera.calls = []
    handler = DataHandler(NDTiffStorage(tmp_path, name="two"))
    events = multi_d_acquisition_events(
        num_time_points=2,
        channel_group="Channel",
        channels=["DAPI", "FITC"],
        camera=cameras,
        data_handler=handler,
    )
    acquisition = Acquisition(events, handler)
    acquisition.start()
    acquisition.await_completion(timeout=30)
    assert RecordingCamera.calls[:4] == ["arm A", "arm B", "start A", "start B"]
    stored = handler.storage
    assert len(stored) == acquisition.total_frames == 8
    reader = NDTiffReader(tmp_path / "two_1")
    assert reader.axes["camera"] == ["A", "B"]
    for coords in stored.get_coordinates_list():
        metadata = stored.get_metadata(coords)
        assert metadata["Camera"] == coords["camera"] and metadata["Channel"] == coords["channel"]


def test_two_cameras_running_free_are_read_in_turn_and_drop_nothing(scope, tmp_path):
    from exengine.events import MultiDPlan, MultiDSettings

    microscope = scope["Camera"].microscope
    cameras = [SimulatedCamera(name, microscope, width=64, height=64) for name in ("L", "R")]
    for camera in cameras:
        camera.exposure, camera.frame_rate_limit = 0.0, 200.0
        camera.sequence_buffer_mb = 8 * FRAME_MB  # each camera keeps 8 frames: no waiting
    handler = DataHandler(NDTiffStorage(tmp_path, name="free"))
    settings = MultiDSettings.from_event_arguments(num_time_points=100, sequence="t")
    acquisition = Acquisition(MultiDPlan(settings, camera=cameras), handler)
    acquisition.start()
    acquisition.await_completion(timeout=30)
    assert acquisition.frames_dropped == 0 and acquisition.frames_stored == 200
    for coords in handler.storage.get_coordinates_list():
        metadata = handler.storage.get_metadata(coords)
        assert (metadata["Camera"], metadata["FrameIndex"]) == (coords["camera"], coords["time"])


def test_the_command_line_acquires_with_two_cameras(scope, tmp_path):
    from napari_exengine.cli import main

    scope["Camera"].exposure = 0.0
    out = io.StringIO()
    args = ["acquire", "--time", "3", "--camera", "Camera,Camera2", "--out", str(tmp_path)]
    assert main([*args, "--name", "pair"], out) == 0, out.getvalue()
    assert NDTiffReader(tmp_path / "pair_1").axes == {
        "time": [0, 1, 2],
        "camera": ["Camera", "Camera2"],
    }
    assert main([*args, "--camera", "Camera,Nope", "--name", "bad"], io.StringIO()) == 2


def test_a_stop_while_the_camera_outruns_the_storage_ends_within_its_buffer(scope, tmp_path):
    """A free-running camera faster than the storage keeps refilling its buffer: a stop stops the
    camera, and the readout ends once it has read what the buffer held."""
    from exengine.events import MultiDPlan, MultiDSettings

    camera = small_camera(scope, buffer_frames=6)
    storage = SlowNDTiff(tmp_path, name="outrun")
    handler = DataHandler(storage, memory_budget_bytes=int(4 * FRAME_MB * 1024**2))
    settings = MultiDSettings.from_event_arguments(num_time_points=100_000, sequence="t")
    acquisition = Acquisition(MultiDPlan(settings, camera=camera), handler)  # 200 s of frames
    acquisition.start()
    deadline = time.monotonic() + 20  # its first frames (a loaded machine may be slow to start)
    while acquisition.frames_acquired < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)
    started = time.monotonic()
    acquisition.stop()
    acquisition.await_completion(timeout=20)  # raises if the readout went on with the camera
    took = time.monotonic() - started
    status = acquisition.status()
    assert status.finish_reason is FinishReason.STOPPED and camera.is_stopped()
    assert took < 5, f"the stop took {took:.1f} s"
    assert status.frames_dropped > 0 and 0 < status.frames_stored < 1000
    stored = {c["time"] for c in storage.get_coordinates_list()}
    dropped = {c["time"] for c in acquisition.dropped_coordinates}
    assert not stored & dropped
    assert max(stored | dropped) + 1 == len(stored | dropped)  # no gap: all accounted for


def test_readouts_of_one_capture_count_each_drop_once(scope, tmp_path):
    """A continuous capture read by several readouts: a gap between two of them is found by the
    next one's FrameIndex, and no drop is counted twice."""
    from exengine.events.detector_events import ReadoutData, StartContinuousCapture, StopCapture

    camera = small_camera(scope, buffer_frames=2)
    storage = SlowNDTiff(tmp_path, name="parts")
    handler = DataHandler(storage, memory_budget_bytes=int(2 * FRAME_MB * 1024**2))
    events = [StartContinuousCapture(camera)]
    for part in range(3):
        coords = [{"time": t} for t in range(20 * part, 20 * part + 20)]
        events.append(ReadoutData(coords, detector=camera, num_images=20))
    events.append(StopCapture(camera))
    acquisition = Acquisition(events, handler)
    acquisition.start()
    acquisition.await_completion(timeout=60)
    stored = {c["time"] for c in storage.get_coordinates_list()}
    dropped = [c["time"] for c in acquisition.dropped_coordinates]
    assert acquisition.frames_dropped == len(dropped) == len(set(dropped)) > 0
    assert sorted(stored | set(dropped)) == list(range(60)) and not stored & set(dropped)
    for coords in storage.get_coordinates_list():  # each frame at its own coordinates
        assert storage.get_metadata(coords)["FrameIndex"] >= coords["time"]


def test_two_cameras_where_only_the_fast_one_drops_count_each_cameras_frames(scope, tmp_path):
    from exengine.events import MultiDPlan, MultiDSettings

    microscope = scope["Camera"].microscope
    fast, slow = (SimulatedCamera(name, microscope, width=64, height=64) for name in "FS")
    fast.exposure, fast.frame_rate_limit = 0.0, 2000.0
    slow.exposure, slow.frame_rate_limit = 0.0, 40.0
    for camera in (fast, slow):
        camera.sequence_buffer_mb = 2 * FRAME_MB
    storage = SlowNDTiff(tmp_path, name="mixed")
    storage.delay_s = 0.005
    handler = DataHandler(storage, memory_budget_bytes=int(2 * FRAME_MB * 1024**2))
    settings = MultiDSettings.from_event_arguments(num_time_points=40, sequence="t")
    acquisition = Acquisition(MultiDPlan(settings, camera=[fast, slow]), handler)
    acquisition.start()
    acquisition.await_completion(timeout=60)
    status = acquisition.status()
    assert status.finish_reason is FinishReason.DONE
    for name, camera in (("F", fast), ("S", slow)):
        stored = {c["time"] for c in storage.get_coordinates_list() if c["camera"] == name}
        dropped = {c["time"] for c in acquisition.dropped_coordinates if c["camera"] == name}
        assert len(dropped) == camera.frames_dropped
        assert sorted(stored | dropped) == list(range(40)) and not stored & dropped
    assert fast.frames_dropped > 0 and slow.frames_dropped == 0
