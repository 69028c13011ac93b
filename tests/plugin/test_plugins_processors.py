"""Built-in processors, OME-Zarr storage, and processor/storage contributions discovered through
npe2."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import zarr

from exengine.data import DataHandler, DataProcessor
from exengine.processors import (
    ProcessorChain,
    background_subtraction,
    check_fits_plan,
    fit_to_plan,
    flat_field_correction,
    frame_averaging,
    max_intensity_projection,
)
from exengine.storage import NDRAMStorage, OMEZarrStorage
from napari_exengine.contributions import (
    ContributionError,
    build_processor,
    build_storage,
    get_contribution,
    list_contributions,
)


def run(processor, frames):
    handler = DataHandler(NDRAMStorage(), processor)
    for coords, data in frames:
        handler.put(coords, data, {"src": "test"})
    handler.await_completion(10)
    return handler.storage


def test_background_subtraction_clips_instead_of_wrapping(tmp_path):
    storage = run(
        background_subtraction(level=100), [({"time": 0}, np.array([[50, 100, 300]], np.uint16))]
    )
    np.testing.assert_array_equal(storage.get_data({"time": 0}), [[0, 0, 200]])
    dark = np.array([[10, 20, 30]], np.uint16)
    np.save(tmp_path / "dark.npy", dark)
    storage = run(
        background_subtraction(dark_image=str(tmp_path / "dark.npy")),
        [({"time": 0}, np.array([[5, 25, 65535]], np.uint16))],
    )
    np.testing.assert_array_equal(storage.get_data({"time": 0}), [[0, 5, 65505]])
    assert storage.get_data({"time": 0}).dtype == np.uint16


def test_flat_field_correction_keeps_dtype_range(tmp_path):
    flat = np.array([[1.0, 2.0, 3.0]])
    np.save(tmp_path / "flat.npy", flat)
    storage = run(
        flat_field_correction(str(tmp_path / "flat.npy")),
        [({"time": 0}, np.array([[100, 200, 255]], np.uint8))],
    )
    np.testing.assert_array_equal(storage.get_data({"time": 0}), [[200, 200, 170]])
    with pytest.raises(ValueError, match="brighter"):
        np.save(tmp_path / "bad.npy", np.zeros((1, 3)))
        flat_field_correction(str(tmp_path / "bad.npy"))


def test_frame_averaging_groups_frames():
    frames = [
        ({"time": t}, np.full((2, 2), v, np.uint16)) for t, v in enumerate([10, 20, 65535, 65535])
    ]
    storage = run(frame_averaging(frames=2), frames)
    assert storage.get_coordinates_list() == [{"time": 0}, {"time": 1}]
    assert storage.get_data({"time": 0})[0, 0] == 15
    assert storage.get_data({"time": 1})[0, 0] == 65535


@pytest.mark.parametrize("keep", [False, True])
def test_max_intensity_projection_accumulates(keep):
    frames = [
        ({"time": t, "z": z}, np.full((2, 2), 10 * t + z, np.uint16))
        for t in range(2)
        for z in range(3)
    ]
    storage = run(max_intensity_projection(z_planes=3, keep_planes=keep), frames)
    coords = storage.get_coordinates_list()
    projections = [c for c in coords if "projection" in c]
    assert projections == [{"time": 0, "projection": "max"}, {"time": 1, "projection": "max"}]
    assert storage.get_data({"time": 1, "projection": "max"})[0, 0] == 12
    assert len(coords) == (8 if keep else 2)


def test_processor_chain_feeds_outputs_forward():
    chain = ProcessorChain([background_subtraction(level=1), max_intensity_projection(z_planes=2)])
    storage = run(chain, [({"z": z}, np.full((2, 2), 5 + z, np.uint16)) for z in range(2)])
    assert storage.get_data({"projection": "max"})[0, 0] == 5


def test_frame_averaging_emits_the_last_incomplete_group_as_a_partial_average():
    """frames=2 over 5 time points dropped the fifth frame silently."""
    frames = [({"time": t}, np.full((2, 2), 10 * t, np.uint16)) for t in range(5)]
    storage = run(frame_averaging(frames=2), frames)
    assert storage.get_coordinates_list() == [{"time": 0}, {"time": 1}, {"time": 2}]
    assert storage.get_data({"time": 1})[0, 0] == 25 and storage.get_data({"time": 2})[0, 0] == 40
    assert storage.get_metadata({"time": 1}) == {"src": "test", "AveragedFrames": 2}
    assert storage.get_metadata({"time": 2}) == {
        "src": "test",
        "AveragedFrames": 1,
        "Partial": True,
        "ExpectedFrames": 2,
    }


def test_max_intensity_projection_never_discards_an_incomplete_stack():
    """z_planes=10 over a 6-plane stack stored nothing and said "0 frames stored"."""
    frames = [
        ({"time": t, "z": z}, np.full((2, 2), 10 * t + z, np.uint16))
        for t in range(2)
        for z in range(6)
    ]
    storage = run(max_intensity_projection(z_planes=10), frames)
    assert storage.get_coordinates_list() == [
        {"time": 0, "projection": "max"},
        {"time": 1, "projection": "max"},
    ]
    assert storage.get_data({"time": 1, "projection": "max"})[0, 0] == 15
    assert storage.get_metadata({"time": 0, "projection": "max"}) == {
        "src": "test",
        "Projection": "max over 6 z",
        "ProjectedPlanes": 6,
        "Partial": True,
        "ExpectedPlanes": 10,
    }


def test_max_intensity_projection_from_the_plan_or_at_finish():
    frames = [
        ({"time": t, "z": z}, np.full((2, 2), 10 * t + z, np.uint16))
        for t in range(3)
        for z in range(4)
    ]
    # no plan given: every stack is projected when the handler finishes
    unset = max_intensity_projection()
    # 0: a spin box's unset
    assert unset.z_planes is None and max_intensity_projection(z_planes=0).z_planes is None
    storage = run(unset, frames)
    assert len(storage) == 3 and storage.get_data({"time": 2, "projection": "max"})[0, 0] == 23
    assert "Partial" not in storage.get_metadata({"time": 2, "projection": "max"})

    derived = max_intensity_projection()
    assert fit_to_plan(derived, {"time": 3, "z": 4}) == [] and derived.z_planes == 4
    seen = []
    handler = DataHandler(NDRAMStorage(), derived)
    handler.add_listener(lambda stage, coords: seen.append((stage, coords)))
    for coords, data in frames[:4]:
        handler.put(coords, data, {})
    deadline = time.monotonic() + 10
    while ("stored", {"time": 0, "projection": "max"}) not in seen and time.monotonic() < deadline:
        time.sleep(0.01)  # the first stack is projected and stored before the handler finishes
    assert ("stored", {"time": 0, "projection": "max"}) in seen
    handler.await_completion(10)


@pytest.mark.parametrize(
    "factory, settings, message",
    [
        (
            max_intensity_projection,
            {"z_planes": 2.5},
            "z_planes must be a whole number >= 1, got 2.5",
        ),
        (max_intensity_projection, {"z_planes": -2}, "z_planes must be >= 1, got -2"),
        (
            max_intensity_projection,
            {"z_planes": 0.0},
            "z_planes must be a whole number >= 1, got 0.0",
        ),
        (
            max_intensity_projection,
            {"keep_planes": "no"},
            "keep_planes must be true or false, got 'no'",
        ),
        (frame_averaging, {"frames": "2"}, "frames must be a whole number >= 1, got '2'"),
        (frame_averaging, {"frames": True}, "frames must be a whole number >= 1, got True"),
        (frame_averaging, {"axis": 3}, "axis must be an axis name"),
        (background_subtraction, {"level": "abc"}, "level must be a finite number, got 'abc'"),
        (background_subtraction, {"level": float("nan")}, "level must be a finite number, got nan"),
    ],
)
def test_settings_of_the_wrong_type_are_refused_naming_the_setting_and_value(
    factory, settings, message
):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        factory(**settings)


def test_check_fits_plan_refuses_what_cannot_fit_and_tells_what_will_be_partial(tmp_path):
    assert check_fits_plan(max_intensity_projection(z_planes=6), {"time": 2, "z": 6}) == []
    with pytest.raises(ValueError, match="z_planes=10 but the plan has 6 z planes; set z_planes=6"):
        check_fits_plan(max_intensity_projection(z_planes=10), {"time": 2, "z": 6})
    with pytest.raises(ValueError, match="no 'z' axis"):
        check_fits_plan(max_intensity_projection(z_planes=3), {"time": 2, "channel": 2})
    notes = check_fits_plan(frame_averaging(frames=2), {"time": 5})
    assert notes == [
        "frame_averaging frames=2 does not divide 5 time points: the last average is of 1 "
        "frame(s), stored marked Partial"
    ]
    with pytest.raises(ValueError, match="frames=8 but the plan has 5 time points"):
        check_fits_plan(frame_averaging(frames=8), {"time": 5})
    # open-ended: nothing to check
    assert check_fits_plan(frame_averaging(frames=8), {"time": None}) == []
    assert (
        check_fits_plan(lambda c, d, m: (c, d, m), {"time": 5}) == []
        and check_fits_plan(None, {}) == []
    )
    np.save(tmp_path / "dark.npy", np.zeros((4, 4), np.uint16))
    dark = background_subtraction(dark_image=str(tmp_path / "dark.npy"))
    assert check_fits_plan(dark, {"time": 1}, frame_shape=(4, 4)) == []
    with pytest.raises(
        ValueError, match=r"dark image is \(4, 4\) pixels but the camera frames are \(512, 512\)"
    ):
        check_fits_plan(dark, {"time": 1}, frame_shape=(512, 512))
    # through a chain, each processor sees the axes the one before emits
    chain = ProcessorChain([max_intensity_projection(), frame_averaging(frames=2)])
    assert fit_to_plan(chain, {"time": 3, "z": 4}) == [
        "frame_averaging frames=2 does not divide 3 time points: the last average is of 1 "
        "frame(s), stored marked Partial"
    ]
    assert chain.processors[0].z_planes == 4
    with pytest.raises(ValueError, match="no 'z' axis"):
        check_fits_plan(ProcessorChain([max_intensity_projection(z_planes=2)] * 2), {"z": 2})


def test_chain_flush_feeds_what_one_held_into_the_next():
    chain = ProcessorChain([max_intensity_projection(), frame_averaging(frames=2)])
    frames = [
        ({"time": t, "z": z}, np.full((2, 2), 10 * t + z, np.uint16))
        for t in range(3)
        for z in range(2)
    ]
    storage = run(chain, frames)
    assert storage.get_coordinates_list() == [
        {"time": 0, "projection": "max"},
        {"time": 1, "projection": "max"},
    ]
    # mean of the t0 and t1 maxima 1, 11
    assert storage.get_data({"time": 0, "projection": "max"})[0, 0] == 6
    assert storage.get_data({"time": 1, "projection": "max"})[0, 0] == 21
    assert storage.get_metadata({"time": 1, "projection": "max"})["Partial"] is True
    assert chain.stateful and not ProcessorChain([background_subtraction()]).stateful


def test_builtin_processors_declare_whether_they_keep_state():
    assert not background_subtraction().stateful and frame_averaging().stateful
    # safe default
    assert max_intensity_projection().stateful and DataProcessor(lambda c, d, m: None).stateful
    contributions = {c.id: c for c in list_contributions("processor")}
    assert contributions["napari-exengine.processor.background_subtraction"].stateful is False
    assert contributions["napari-exengine.processor.frame_averaging"].stateful is True
    assert contributions["exengine-denoise.gaussian"].stateful in (None, False)
    assert build_processor("exengine-denoise.gaussian").stateful is (
        contributions["exengine-denoise.gaussian"].stateful is not False
    )


def test_omezarr_streams_growing_arrays_with_axis_and_channel_names(tmp_path):
    storage = OMEZarrStorage(tmp_path, name="run", pixel_size_um=0.5)
    handler = DataHandler(storage)
    for t in range(3):
        for channel in ("DAPI", "GFP"):
            for z in range(2):
                handler.put(
                    {"position": "A1", "time": t, "channel": channel, "z": z},
                    np.full((8, 6), 100 * t + z, np.uint16),
                    {"t": np.int64(t)},
                )
    handler.await_completion(10)
    group = zarr.open_group(storage.path, mode="r")
    assert group.attrs["ome"]["bioformats2raw.layout"] == 3  # the position is an image
    image = group["0"]
    array = image["0"]
    assert array.shape == (3, 2, 2, 8, 6) and array.chunks == (1, 1, 1, 8, 6)
    multiscale = image.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["time", "channel", "z", "y", "x"]
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"][-1] == 0.5
    assert [c["label"] for c in image.attrs["ome"]["omero"]["channels"]] == ["DAPI", "GFP"]
    assert group.attrs["exengine"]["axis_values"]["position"] == ["A1"]
    assert array[2, 1, 1, 0, 0] == 201
    assert storage.get_metadata({"position": "A1", "time": 1, "channel": "GFP", "z": 0}) == {"t": 1}
    lines = (tmp_path / "run_1.ome.zarr" / "frame_metadata.jsonl").read_text().splitlines()
    assert len(lines) == 12 and json.loads(lines[0])["coords"]["channel"] == "DAPI"
    with pytest.raises(RuntimeError, match="finished"):
        storage.put(
            {"position": "A1", "time": 9, "channel": "DAPI", "z": 0},
            np.zeros((8, 6), np.uint16),
            {},
        )


def test_omezarr_refuses_duplicates_and_mismatched_frames(tmp_path):
    storage = OMEZarrStorage(tmp_path)
    storage.put({"time": 0}, np.ones((4, 4), np.uint8), {})
    with pytest.raises(ValueError, match="already stored"):
        storage.put({"time": 0}, np.zeros((4, 4), np.uint8), {})
    with pytest.raises(ValueError, match="share axes"):
        storage.put({"time": 1, "z": 0}, np.zeros((4, 4), np.uint8), {})
    with pytest.raises(TypeError, match="2-D numeric"):
        storage.put({"time": 1}, np.zeros((4, 4, 3), np.uint8), {})
    assert storage.get_data({"time": 0})[0, 0] == 1


def test_builtins_and_installed_example_plugins_are_discovered():
    contributions = {c.id: c for c in list_contributions()}
    for cid in (
        "napari-exengine.processor.background_subtraction",
        "napari-exengine.processor.frame_averaging",
        "napari-exengine.processor.flat_field_correction",
        "napari-exengine.processor.max_intensity_projection",
        "napari-exengine.storage.ndtiff",
        "napari-exengine.storage.ndram",
        "napari-exengine.storage.omezarr",
    ):
        assert contributions[cid].available and contributions[cid].plugin == "napari-exengine"
    denoise = contributions["exengine-denoise.gaussian"]
    assert (
        denoise.kind == "processor" and denoise.plugin == "exengine-denoise" and denoise.available
    )
    assert [p.name for p in denoise.parameters()] == ["sigma"]
    npy = contributions["exengine-npy-storage.npy_folder"]
    assert npy.kind == "storage" and [p.name for p in npy.parameters()] == ["compress"]


def test_example_plugins_run_an_acquisition(tmp_path):
    from exengine import ExecutionEngine
    from exengine.devices.simulated import create_simulated_devices
    from exengine.events import multi_d_acquisition_events

    devices = create_simulated_devices()
    devices["Camera"].exposure = 0
    devices["Camera"].roi = (0, 0, 64, 64)
    storage = build_storage(
        "exengine-npy-storage.npy_folder", str(tmp_path), "npy", {"a": 1}, compress=True
    )
    processor = build_processor("exengine-denoise.gaussian", sigma=2.0)
    handler = DataHandler(storage, processor)
    events = multi_d_acquisition_events(num_time_points=3, data_handler=handler)
    ExecutionEngine.get_instance().submit(events)[-1].await_execution(10)
    handler.await_completion(10)
    assert sorted(p.name for p in (tmp_path / "npy").glob("*.npz")) == [
        "time-0.npz",
        "time-1.npz",
        "time-2.npz",
    ]
    assert storage.get_metadata({"time": 2})["Denoise"] == "gaussian sigma=2.0"
    assert storage.get_data({"time": 0}).dtype == np.uint16


def test_broken_contributions_are_unavailable_with_reason_and_break_nothing(
    manager_with_broken_plugin,
):
    manager = manager_with_broken_plugin
    contributions = {c.id: c for c in list_contributions(manager=manager)}
    missing = contributions["broken-contributions.missing"]
    assert not missing.available and "no_such_module_anywhere" in missing.error
    assert contributions["napari-exengine.storage.ndtiff"].available
    assert contributions["exengine-denoise.gaussian"].available
    with pytest.raises(ContributionError, match="failed: frames must be >= 1"):
        get_contribution("broken-contributions.raises", manager=manager).build(frames=0)
    with pytest.raises(ContributionError, match="returned dict"):
        get_contribution("broken-contributions.wrong", manager=manager).build(
            directory="/tmp", name="x"
        )
    with pytest.raises(KeyError, match="available"):
        get_contribution("nothing-like-this", manager=manager)


@pytest.mark.parametrize("compress", [False, True])
def test_omezarr_frames_read_back_through_zarr(tmp_path, compress):
    storage = OMEZarrStorage(tmp_path, name="c", compress=compress)
    frames = {
        t: np.random.default_rng(t).integers(0, 65535, (5, 7), dtype=np.uint16) for t in range(5)
    }
    for t, frame in frames.items():
        storage.put({"time": t}, frame, {})
    storage.finish()
    array = zarr.open_group(storage.path, mode="r")["0"]
    assert array.shape == (5, 5, 7)
    assert bool(array.compressors) is compress
    for t, frame in frames.items():
        np.testing.assert_array_equal(array[t], frame)
