"""Resuming: the plan without its stored frames (``ResumedPlan``), and NDTiff datasets reopened to
add frames (``NDTiffStorage.resume``)."""

from __future__ import annotations

import os

import ndstorage
import numpy as np
import pytest

from exengine.acquisition import Acquisition
from exengine.data import DataHandler
from exengine.devices.simulated import add_simulated_camera
from exengine.events import MultiDPlan, MultiDSettings
from exengine.events.detector_events import ReadoutData, StartCapture
from exengine.events.misc_events import SetTimeEvent
from exengine.events.positioner_events import SetPosition1DEvent
from exengine.kernel.data_coords import DataCoordinates
from exengine.resumed_plan import ResumedPlan
from exengine.storage.ndtiff import NDTiffStorage
from exengine.storage.ndtiff_reader import INDEX_NAME, NDTiffReader


def _plan(scope, **settings):
    return MultiDPlan(
        MultiDSettings.from_event_arguments(channel_group=scope["Channel"], **settings),
        camera=scope["Camera"],
        z_device=scope["Z"],
        channel_group=scope["Channel"],
    )


def _captured(events):
    return [c for e in events if isinstance(e, ReadoutData) for c in e.data_coordinate_iterator]


def test_stored_frames_are_left_out_and_the_rest_keeps_its_order(scope):
    plan = _plan(scope, num_time_points=3, channels=["DAPI", "FITC"], z_start=0, z_end=2, z_step=1)
    everything = _captured(list(plan))
    stored = everything[:7] + everything[9:10]  # a gap too: a frame the camera dropped
    resumed = ResumedPlan(plan, stored)
    assert resumed.total_frames == len(everything) - 8
    assert resumed.axis_sizes == plan.axis_sizes
    events = list(resumed)
    assert _captured(events) == [c for c in everything if c not in stored]
    # the left-out steps' settings are made once, the last of each kind, before the first capture
    first = next(i for i, e in enumerate(events) if isinstance(e, StartCapture))
    before = events[:first]
    assert sum(isinstance(e, SetPosition1DEvent) for e in before) == 1
    assert before[[isinstance(e, SetPosition1DEvent) for e in before].index(True)].position == 1.0
    assert sum(isinstance(e, SetTimeEvent) for e in before) == 1


def test_time_lapse_intervals_restart_at_the_resume(scope):
    plan = _plan(scope, num_time_points=5, time_interval_s=10.0)
    stored = _captured(list(plan))[:3]
    starts = [
        (e.time_index, e.min_start_time)
        for e in ResumedPlan(plan, stored)
        if isinstance(e, SetTimeEvent)
    ]
    assert starts == [(3, 0.0), (4, 10.0)]


def test_a_capture_only_partly_stored_runs_whole_and_the_handler_lets_stored_frames_go(
    scope, tmp_path
):
    add_simulated_camera("Camera2", beside=scope["Camera"])
    plan = MultiDPlan(
        MultiDSettings.from_event_arguments(num_time_points=3),
        camera=[scope["Camera"], "Camera2"],
    )
    everything = _captured(list(plan))
    stored = everything[:3]  # time 1 of the second camera is missing
    storage = NDTiffStorage(tmp_path, "partial")
    for coords in stored:
        storage.put(coords, np.zeros((512, 512), np.uint16), {})
    storage.finish()
    storage.close()
    resumed_storage = NDTiffStorage.resume(storage.path)
    handler = DataHandler(resumed_storage)
    handler.skip_stored(stored)
    acquisition = Acquisition(ResumedPlan(plan, stored), handler)
    acquisition.start()
    acquisition.await_completion(timeout=60)
    assert handler.frames_stored == 3
    reader = NDTiffReader(storage.path)
    key = lambda c: sorted(dict(c).items())  # noqa: E731
    assert sorted(map(key, reader.coordinates())) == sorted(map(key, everything))
    assert reader.read_frame(dict(stored[2])).max() == 0  # the first frame kept


def test_an_adaptive_plan_reads_what_was_stored_and_goes_on(scope, tmp_path):
    from exengine.plans import overview_then_zoom

    def plan(handler):
        return overview_then_zoom(
            rows=2,
            columns=2,
            z_range_um=2,
            z_step_um=1,
            data_handler=handler,
            camera=scope["Camera"],
            xy_device=scope["XY"],
            z_device=scope["Z"],
        )

    storage = NDTiffStorage(tmp_path, "whole")
    whole = Acquisition(plan(handler := DataHandler(storage)), handler)
    whole.start()
    whole.await_completion(timeout=60)
    chosen = {
        (c["row"], c["column"]) for c in storage.get_coordinates_list() if c["scan"] == "zoom"
    }
    first_run = [c for c in storage.get_coordinates_list()][:5]  # the overview and one plane
    partial = NDTiffStorage(tmp_path, "partial")
    for coords in first_run:
        partial.put(coords, storage.get_data(coords), {})
    partial.finish()
    partial.close()
    reopened = NDTiffStorage.resume(partial.path)
    handler = DataHandler(reopened)
    resumed = Acquisition(ResumedPlan(plan(handler), first_run), handler)
    resumed.start()
    resumed.await_completion(timeout=60)
    assert handler.frames_stored == len(storage.get_coordinates_list()) - 5
    zoomed = {
        (c["row"], c["column"])
        for c in NDTiffReader(partial.path).coordinates()
        if c["scan"] == "zoom"
    }
    assert zoomed == chosen


def _frames(path):
    reader = NDTiffReader(path)
    try:
        return {
            str(c): (reader.read_frame(c).tobytes(), reader.read_metadata(c))
            for c in reader.coordinates()
        }
    finally:
        reader.close()


def test_ndtiff_resume_appends_to_the_same_dataset_and_keeps_what_was_there(tmp_path):
    storage = NDTiffStorage(tmp_path, "run", {"Plan": {"id": "multi_d"}, "FramesDropped": 2})
    for t in range(3):
        storage.put({"time": t}, np.full((16, 16), t, np.uint16), {"t": t})
    storage.finish()
    storage.close()
    before = _frames(storage.path)
    resumed = NDTiffStorage.resume(storage.path)
    assert {"time": 2} in resumed
    assert resumed.get_data({"time": 1})[0, 0] == 1
    assert "FramesDropped" not in resumed.summary_metadata  # counted again by the resumed run
    with pytest.raises(ValueError, match="already stored"):
        resumed.put({"time": 0}, np.zeros((16, 16), np.uint16), {})
    with pytest.raises(ValueError, match="share one shape"):
        resumed.put({"time": 3}, np.zeros((8, 8), np.uint16), {})
    with pytest.raises(ValueError, match="ints or strs"):
        resumed.put({"time": "3"}, np.zeros((16, 16), np.uint16), {})
    for t in range(3, 5):
        resumed.put({"time": t}, np.full((16, 16), t, np.uint16), {"t": t})
    resumed.finish()
    resumed.close()
    after = _frames(storage.path)
    assert {k: after[k] for k in before} == before
    assert len(after) == 5
    assert "resume1_NDTiffStack.tif" in os.listdir(storage.path)
    dataset = ndstorage.Dataset(storage.path)  # ndstorage's own reader agrees
    assert dataset.read_image(time=4)[0, 0] == 4
    dataset.close()


def test_ndtiff_resume_after_a_crash_cuts_off_a_half_written_index_entry(tmp_path):
    storage = NDTiffStorage(tmp_path, "crash")
    for t in range(2):
        storage.put({"time": t}, np.full((16, 16), t, np.uint16), {})
    index = os.path.join(storage.path, INDEX_NAME)  # not finished: as a SIGKILL leaves it
    storage.dataset._index_file.close()  # the writer's lock goes with its process
    with open(index, "ab") as f:
        f.write(b'\x30\x00\x00\x00{"time":')
    resumed = NDTiffStorage.resume(storage.path)
    resumed.put({"time": 2}, np.full((16, 16), 2, np.uint16), {})
    resumed.finish()
    resumed.close()
    reader = NDTiffReader(storage.path)
    assert not reader.levels[0].incomplete_tail
    assert [int(reader.read_frame(c)[0, 0]) for c in reader.coordinates()] == [0, 1, 2]
    reader.close()


def test_resumed_coordinates_are_data_coordinates(tmp_path):
    storage = NDTiffStorage(tmp_path, "kinds")
    storage.put({"time": 0, "channel": "DAPI"}, np.zeros((4, 4), np.uint8), {})
    storage.finish()
    storage.close()
    resumed = NDTiffStorage.resume(storage.path)
    assert resumed.get_coordinates_list() == [DataCoordinates({"time": 0, "channel": "DAPI"})]
    resumed.finish()
    resumed.close()


def test_omezarr_resume_appends_in_the_same_arrays_and_stays_valid(tmp_path):
    import zarr

    from exengine.storage.omezarr import OMEZarrStorage
    from exengine.storage.omezarr_reader import OMEZarrDataset
    from exengine.storage.omezarr_resume import resume_omezarr
    from omezarr_helpers import validate

    storage = OMEZarrStorage(tmp_path, "run", {"Plan": {"id": "multi_d"}})
    for position in ("A", "B"):
        for t in range(2):
            storage.put({"position": position, "time": t, "channel": "DAPI"}, _tile(t), {"t": t})
    # not finished, and the last record cut short: as a SIGKILL leaves it (its lock gone with it)
    storage._files.close()
    with open(os.path.join(storage.path, "frame_metadata.jsonl"), "ab") as f:
        f.write(b'{"coords": {"position": "B", "ti')
    chunks = [os.path.join(p, n) for p, _, names in os.walk(storage.path) for n in names]
    left = next(c for c in chunks if os.sep + "c" + os.sep in c) + ".partial"
    with open(left, "wb") as f:  # a chunk's write the kill cut short
        f.write(b"\0" * 10)
    before = OMEZarrDataset(storage.path)
    kept = {str(c): before.read_frame(c).tobytes() for c in before.coordinates()}
    resumed = resume_omezarr(storage.path)
    assert len(resumed.get_coordinates_list()) == 4
    with pytest.raises(ValueError, match="already stored"):
        resumed.put({"position": "A", "time": 0, "channel": "DAPI"}, _tile(9), {})
    resumed.put({"position": "B", "time": 2, "channel": "DAPI"}, _tile(2), {"t": 2})
    resumed.put({"position": "C", "time": 0, "channel": "DAPI"}, _tile(5), {"t": 0})
    resumed.put({"position": "C", "time": 0, "channel": "FITC"}, _tile(6), {"t": 0})
    resumed.finish()
    after = OMEZarrDataset(storage.path)
    assert after.finished
    assert {str(c): after.read_frame(c).tobytes() for c in before.coordinates()} == kept
    assert len(after.coordinates()) == 7
    assert after.axes["position"] == ["A", "B", "C"]
    assert after.axes["channel"] == ["DAPI", "FITC"]
    assert after.read_frame({"position": "C", "time": 0, "channel": "FITC"})[0, 0] == 6
    validate(zarr.open_group(storage.path, mode="r"))
    assert not os.path.exists(left), "a half-written chunk file a crash left stays"


def _tile(value):
    return np.full((32, 32), value, np.uint16)


def test_a_reopened_omezarr_storage_has_the_state_of_a_new_one(tmp_path):
    """``omezarr_resume`` fills in ``OMEZarrStorage``'s state itself: it must not miss what
    ``__init__`` sets (a new attribute there needs its value here too)."""
    from exengine.storage.omezarr import OMEZarrStorage
    from exengine.storage.omezarr_resume import resume_omezarr

    fresh = OMEZarrStorage(tmp_path, "fresh")
    fresh.put({"time": 0}, _tile(0), {})
    fresh.finish()
    reopened = resume_omezarr(fresh.path)
    assert set(vars(reopened)) == set(vars(fresh))
    reopened.finish()
