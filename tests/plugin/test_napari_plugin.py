"""The napari plugin under a real viewer: panels, layer sink, acquisition, failures, Live,
launcher."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from exengine import ExecutionEngine
from exengine.data import DataHandler, PlannedData
from exengine.storage import NDRAMStorage, NDTiffStorage
from panel_helpers import run_panel

pytestmark = pytest.mark.gui


def test_napari_lists_and_docks_plugin_widgets(gui_viewer, scope):
    from napari_exengine.widgets import AcquisitionPanel, DevicesPanel

    _dock, widget = gui_viewer.window.add_plugin_dock_widget("napari-exengine", "Devices")
    assert isinstance(widget, DevicesPanel)
    _dock, widget = gui_viewer.window.add_plugin_dock_widget("napari-exengine", "Acquisition")
    assert isinstance(widget, AcquisitionPanel)


def test_devices_panel_controls_follow_property_metadata(gui_viewer, scope, qtbot):
    from magicgui import widgets as mw

    from napari_exengine.widgets import DevicesPanel

    panel = DevicesPanel(gui_viewer)
    assert isinstance(panel.controls[("Camera", "binning")], mw.ComboBox)
    assert panel.controls[("Camera", "binning")].choices == (1, 2, 4)
    exposure = panel.controls[("Camera", "exposure")]
    assert isinstance(exposure, mw.FloatSpinBox) and exposure.max == 10000.0
    assert not panel.controls[("Camera", "pixel_size_um")].enabled
    assert panel.controls[("Camera", "pixel_size_um")].label == "pixel size (µm)"
    exposure.value = 5.0
    qtbot.waitUntil(lambda: scope["Camera"].exposure == 5.0, timeout=5000)
    channel = panel.controls[("Channel", "channel")]
    channel.value = "Cy5"
    qtbot.waitUntil(lambda: scope["Channel"].channel == "Cy5", timeout=5000)
    power = panel.controls[("Light", "power")]
    power.value = 0.25
    qtbot.waitUntil(lambda: scope["Light"].power == 0.25, timeout=5000)


def test_device_error_is_shown_not_raised(gui_viewer, scope, qtbot):
    from napari_exengine.panel_common import ERROR_COLOUR
    from napari_exengine.widgets import DevicesPanel

    panel = DevicesPanel(gui_viewer)
    panel.set_property(scope["Light"], "power", 5.0)
    qtbot.waitUntil(lambda: "power" in panel.status.value, timeout=5000)
    assert "[0, 1]" in panel.status.value
    assert ERROR_COLOUR in panel.status.native.styleSheet()
    assert scope["Light"].power == 1.0
    roi = panel.controls[("Camera", "roi")]
    roi.value = "(0, 0, 256, 256)"
    qtbot.waitUntil(lambda: scope["Camera"].roi == (0, 0, 256, 256), timeout=5000)


def test_snap_and_live(gui_viewer, scope, qtbot):
    from napari_exengine.widgets import DevicesPanel

    panel = DevicesPanel(gui_viewer)
    panel.snap()
    qtbot.waitUntil(lambda: "Snap" in gui_viewer.layers, timeout=10000)
    snap = gui_viewer.layers["Snap"]
    # as acquisitions
    assert snap.data.shape == (512, 512) and tuple(snap.scale) == pytest.approx((0.65, 0.65))
    panel.toggle_live()
    qtbot.waitUntil(lambda: "Live" in gui_viewer.layers, timeout=10000)
    assert tuple(gui_viewer.layers["Live"].scale) == pytest.approx((0.65, 0.65))
    # the camera's frame rate, counted over the last second
    qtbot.waitUntil(lambda: "frames/s from Camera" in panel.status.value, timeout=10000)
    qtbot.waitUntil(
        lambda: float(panel.status.value.split()[1]) > 1.0, timeout=10000
    )  # 20 ms exposures: tens a second
    panel.toggle_live()
    qtbot.waitUntil(lambda: panel._live_worker is None, timeout=10000)
    assert panel.live_button.text == "Live"
    assert scope["Camera"].is_stopped()
    scope["Camera"].binning = 2
    panel.snap()
    qtbot.waitUntil(lambda: snap.data.shape == (256, 256), timeout=10000)
    assert tuple(snap.scale) == pytest.approx((1.3, 1.3))
    # a Snap from another camera (8-bit) gets its own contrast, not the first camera's (black)
    from exengine.devices.simulated import add_simulated_camera

    second = add_simulated_camera("Camera8", beside=scope["Camera"])
    second.bit_depth = 8
    panel.camera_choice.reset_choices()
    panel.camera_choice.value = second
    first_contrast = tuple(snap.contrast_limits)
    panel.snap()
    qtbot.waitUntil(lambda: snap.metadata.get("camera") == "Camera8", timeout=10000)
    assert snap.data.dtype == np.uint8 and snap.contrast_limits[1] <= 255 < first_contrast[1]


def test_panel_runs_tcz_acquisition_into_labelled_layers(gui_viewer, scope, qtbot, tmp_path):
    from napari_exengine.widgets import AcquisitionPanel

    panel = AcquisitionPanel(gui_viewer)
    panel.multi_d.time_points.value = 2
    panel.multi_d.use_z.value = True
    panel.multi_d.z_start.value, panel.multi_d.z_stop.value, panel.multi_d.z_step.value = (
        -2.0,
        2.0,
        2.0,
    )
    panel.multi_d.channels.value = ["DAPI", "FITC"]
    panel.storage.directory.value = tmp_path
    panel.storage.dataset_name.value = "tcz v2.5"
    assert panel.run_control.estimate.value.startswith("12 frames")
    run_panel(panel, qtbot)
    assert panel.run_control.status.value.startswith("done: 12 of 12 frames stored in "), (
        panel.run_control.status.value
    )
    storage = panel.acquisition.data_handler.storage
    assert isinstance(storage, NDTiffStorage) and len(storage) == 12
    # named after the dataset's folder, as the reader names the layers when it is reopened
    assert {layer.name for layer in gui_viewer.layers} == {"tcz v2.5_1 DAPI", "tcz v2.5_1 FITC"}
    layer = gui_viewer.layers["tcz v2.5_1 FITC"]
    assert layer.data.shape == (2, 3, 512, 512)
    # coloured by dye, not by order
    assert gui_viewer.layers["tcz v2.5_1 DAPI"].colormap.name == "blue"
    assert layer.colormap.name == "green"
    assert tuple(layer.axis_labels) == ("time", "z", "y", "x")
    assert layer.scale[1] == 2.0 and layer.scale[-1] == pytest.approx(0.65)
    np.testing.assert_array_equal(
        np.asarray(layer.data[1, 2]), storage.get_data({"time": 1, "channel": "FITC", "z": 2})
    )
    assert panel.run_control.progress.value == 12
    # the sliders followed the frames to the last (the simulated stage moved the layers at first)
    qtbot.waitUntil(lambda: tuple(gui_viewer.dims.current_step[:2]) == (1, 2), timeout=5000)
    reopened = gui_viewer.open(storage.path, plugin="napari-exengine")[0]
    # napari tells the second layer of that name apart
    assert reopened.name == "tcz v2.5_1 DAPI [1]"
    # z step and pixel size kept
    assert tuple(reopened.scale) == pytest.approx((1.0, 2.0, 0.65, 0.65))


def test_panel_saves_outside_the_temporary_folder_by_default(
    gui_viewer, scope, monkeypatch, tmp_path
):
    from napari_exengine.widgets import AcquisitionPanel

    monkeypatch.delenv("EXENGINE_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    panel = AcquisitionPanel(gui_viewer)
    assert str(panel.storage.directory.value) == str(tmp_path / "home" / "exengine-data")
    assert panel.run_control.estimate.value.startswith("1 frame,")
    monkeypatch.setenv("EXENGINE_DATA_DIR", str(tmp_path / "lab data"))
    assert str(AcquisitionPanel(gui_viewer).storage.directory.value) == str(tmp_path / "lab data")


def test_positions_are_added_from_the_stage_edited_and_removed_one_by_one(gui_viewer, scope, qtbot):
    from napari_exengine.widgets import AcquisitionPanel

    panel = AcquisitionPanel(gui_viewer)
    panel.storage.backend.value = "napari-exengine.storage.ndram"
    panel.multi_d.time_points.value = 2
    scope["XY"].set_position(120.0, -40.0)
    panel.multi_d.add_position.clicked.emit()
    qtbot.waitUntil(lambda: len(panel.multi_d.position_rows) == 1, timeout=5000)
    panel.multi_d.add_position_at(0.0, 0.0)
    panel.multi_d.add_position_at(500.0, 500.0, label="well C")
    assert panel.multi_d.xy_positions == [(120.0, -40.0), (0.0, 0.0), (500.0, 500.0)]
    assert (
        panel.multi_d.positions_label.value == "3 positions"
        and panel.run_control.estimate.value.startswith("6 frames")
    )
    second = panel.multi_d.position_rows[1]
    second[0].value, second[1].value = "well B", 300.0  # edit a label and an x
    panel.multi_d.select_position(0)
    panel.multi_d.remove_position.clicked.emit()  # remove the first (the selected one)
    assert panel.multi_d.xy_positions == [(300.0, 0.0), (500.0, 500.0)]
    assert panel.run_control.estimate.value.startswith("4 frames")
    panel.multi_d.position_rows[0][0].value = "well C"
    assert (
        "needs a label of its own" in panel.run_control.estimate.value
        and not panel.run_control.run_button.enabled
    )
    panel.multi_d.position_rows[0][0].value = "well B"
    run_panel(panel, qtbot)
    storage = panel.acquisition.data_handler.storage
    assert {c["position"] for c in storage.get_coordinates_list()} == {"well B", "well C"}
    metadata = storage.get_metadata({"time": 1, "position": "well C", "channel": "DAPI"})
    assert (metadata["StageX-um"], metadata["StageY-um"]) == (500.0, 500.0)
    panel.multi_d.clear_positions.clicked.emit()
    assert (
        panel.multi_d.xy_positions == []
        and panel.multi_d.positions_label.value == "current position only"
    )


def test_invalid_settings_are_rejected_inline(gui_viewer, scope):
    from napari_exengine.panel_common import ERROR_COLOUR
    from napari_exengine.widgets import AcquisitionPanel

    panel = AcquisitionPanel(gui_viewer)
    assert not panel.multi_d.z_start.enabled  # editable once "z stack" is on
    panel.multi_d.use_z.value = True
    assert panel.multi_d.z_start.enabled
    estimate = panel.run_control.estimate
    panel.multi_d.z_start.value, panel.multi_d.z_stop.value = 4.0, -4.0  # top to bottom
    assert estimate.value.startswith("5 frames") and panel.run_control.run_button.enabled
    assert panel.request().plan.z_range() == (4.0, -4.0, -2.0)
    assert ERROR_COLOUR not in estimate.native.styleSheet()
    panel.multi_d.order.value = "tq"
    assert estimate.value.startswith("invalid") and "order" in estimate.value
    assert not panel.run_control.run_button.enabled
    assert ERROR_COLOUR in estimate.native.styleSheet()  # in red, not in the estimate's grey
    panel.multi_d.order.value = "tpcz"
    assert panel.run_control.run_button.enabled and ERROR_COLOUR not in estimate.native.styleSheet()


def test_exposure_per_channel(gui_viewer, scope, qtbot):
    from napari_exengine.widgets import AcquisitionPanel

    scope["Camera"].exposure = 2.0
    panel = AcquisitionPanel(gui_viewer)
    panel.storage.backend.value = "napari-exengine.storage.ndram"
    panel.multi_d.channels.value = ["DAPI", "FITC"]
    assert (
        panel.multi_d.exposures() is None and len(panel.multi_d.exposure_rows) == 0
    )  # the camera's exposure
    panel.multi_d.per_channel_exposure.value = True
    assert [box.label for box in panel.multi_d.exposure_rows] == [
        "DAPI exposure (ms)",
        "FITC exposure (ms)",
    ]
    assert panel.multi_d.exposures() == [2.0, 2.0]
    panel.multi_d.exposure_rows[1].value = 5.0
    panel.multi_d.channels.value = [
        "FITC",
        "TRITC",
    ]  # FITC keeps its value, TRITC starts at the camera's
    assert panel.multi_d.exposures() == [5.0, 2.0]
    panel.multi_d.channels.value = ["DAPI", "FITC"]
    panel.multi_d.exposure_rows[0].value = 1.0
    run_panel(panel, qtbot)
    storage = panel.acquisition.data_handler.storage
    assert storage.get_metadata({"time": 0, "channel": "DAPI"})["Exposure-ms"] == 1.0
    assert storage.get_metadata({"time": 0, "channel": "FITC"})["Exposure-ms"] == 5.0


@pytest.mark.parametrize("action", ["stop", "abort"])
def test_stop_and_abort_keep_stored_frames(gui_viewer, scope, qtbot, action):
    from napari_exengine.widgets import AcquisitionPanel

    scope["Camera"].exposure = 20.0
    panel = AcquisitionPanel(gui_viewer)
    panel.multi_d.time_points.value = 500
    panel.storage.backend.value = "napari-exengine.storage.ndram"
    acquisition = panel.run()
    qtbot.waitUntil(lambda: acquisition.frames_stored >= 3, timeout=10000)
    assert not panel.multi_d.time_points.enabled
    getattr(panel, action)()
    qtbot.waitUntil(lambda: panel.run_control.run_button.enabled, timeout=10000)
    stored = len(panel.acquisition.data_handler.storage)
    reason = "stopped" if action == "stop" else "aborted"
    status = panel.run_control.status.value
    assert 3 <= stored < 500 and status.startswith(f"{reason}: {stored} of 500 frames stored")
    assert (
        panel.multi_d.time_points.enabled and not panel.multi_d.z_start.enabled
    )  # "z stack" is off


def test_the_estimate_of_a_long_time_lapse_counts_every_frame(gui_viewer, scope):
    from napari_exengine.widgets import AcquisitionPanel

    panel = AcquisitionPanel(gui_viewer)
    panel.multi_d.channels.value = ["DAPI", "FITC"]
    panel.multi_d.use_z.value = True
    panel.multi_d.add_position_at(0.0, 0.0)
    panel.multi_d.add_position_at(10.0, 0.0)
    panel.multi_d.interval_s.value = 60.0
    # planned one time point at a time, counted for all of them
    panel.multi_d.time_points.value = 30_000
    assert panel.run_control.estimate.value.startswith("600,000 frames, 293.0 GB, ~20d19h")


class FailingStorage(NDRAMStorage):
    def __init__(self, fail_at):
        super().__init__()
        self.fail_at = fail_at

    def put(self, coords, data, metadata):
        if coords["time"] == self.fail_at:
            raise OSError("simulated disk failure")
        super().put(coords, data, metadata)


def test_storage_failure_mid_run_is_shown_and_keeps_earlier_frames(
    gui_viewer, scope, qtbot, monkeypatch
):
    from napari_exengine.widgets import AcquisitionPanel

    panel = AcquisitionPanel(gui_viewer)
    panel.multi_d.time_points.value = 30
    import napari_exengine.acquisition_setup as setup

    monkeypatch.setattr(setup, "_storage", lambda request, summary: FailingStorage(fail_at=5))
    panel.run()
    qtbot.waitUntil(lambda: panel.run_control.run_button.enabled, timeout=20000)
    assert "simulated disk failure" in panel.run_control.status.value
    assert [c["time"] for c in panel.acquisition.data_handler.storage.get_coordinates_list()][
        :5
    ] == [0, 1, 2, 3, 4]
    started = time.monotonic()
    qtbot.wait(50)
    assert time.monotonic() - started < 1


def test_attach_layer_sink_grows_with_infinite_sequence(gui_viewer, qtbot):
    from napari_exengine import attach_layer_sink

    handler = DataHandler(NDRAMStorage())
    sink = attach_layer_sink(gui_viewer, handler, name="script")
    for t in range(5):
        handler.put({"time": t, "position": "well A"}, np.full((16, 16), t, np.uint16), {})
    qtbot.waitUntil(lambda: sink.frames_shown == 5, timeout=5000)
    layer = gui_viewer.layers["script"]
    assert layer.data.shape == (1, 5, 16, 16)
    assert tuple(layer.axis_labels) == ("position", "time", "y", "x")
    assert layer.metadata["axis_values"]["position"] == ["well A"]
    assert gui_viewer.dims.current_step[1] == 4
    handler.put({"time": 5, "position": "well B"}, np.full((16, 16), 9, np.uint16), {})
    qtbot.waitUntil(lambda: sink.frames_shown == 6, timeout=5000)
    assert layer.data.shape == (2, 6, 16, 16)
    assert np.asarray(layer.data[1, 5])[0, 0] == 9
    assert np.asarray(layer.data[1, 0]).max() == 0
    handler.await_completion(5)
    sink.close()


def test_planned_layers_exist_before_the_first_frame_and_settle_on_it(gui_viewer, qtbot):
    from napari_exengine.layer_sink import LayerSink

    handler = DataHandler(NDRAMStorage())
    planned = PlannedData(
        axis_sizes={"time": 3, "channel": 2},
        axis_values={"channel": ("DAPI", "FITC")},
        frame_shape=(16, 16),
        dtype="uint16",
    )
    sink = LayerSink(gui_viewer, handler, name="plan", planned=planned)
    dapi, fitc = gui_viewer.layers["plan DAPI"], gui_viewer.layers["plan FITC"]
    assert dapi.data.shape == fitc.data.shape == (3, 16, 16)
    assert tuple(dapi.contrast_limits) == (0, 65535) and np.asarray(dapi.data[2]).max() == 0
    # at the first planned frame, not napari's mid-range
    assert gui_viewer.dims.current_step[0] == 0
    handler.put(
        {"time": 0, "channel": "DAPI"}, np.full((16, 16), 7, np.uint16), {"PixelSizeUm": 0.5}
    )
    qtbot.waitUntil(lambda: sink.frames_shown == 1, timeout=5000)
    assert tuple(dapi.contrast_limits) == (7, 8) and dapi.scale[-1] == pytest.approx(0.5)
    assert np.asarray(dapi.data[0])[0, 0] == 7
    # not the planned frame
    handler.put({"time": 0, "channel": "FITC"}, np.full((8, 32), 3, np.uint8), {})
    qtbot.waitUntil(lambda: sink.frames_shown == 2, timeout=5000)
    fitc = gui_viewer.layers["plan FITC"]
    assert fitc.data.shape == (3, 8, 32) and fitc.data.dtype == np.uint8
    assert np.asarray(fitc.data[0])[0, 0] == 3
    handler.await_completion(5)
    sink.close()


def test_planned_layers_take_the_planned_pixel_size_and_keep_it_when_frames_agree(
    gui_viewer, qtbot
):
    from napari_exengine.layer_sink import LayerSink

    handler = DataHandler(NDRAMStorage())
    sink = LayerSink(
        gui_viewer,
        handler,
        name="px",
        planned=PlannedData(axis_sizes={"time": 2}, frame_shape=(16, 16), pixel_size_um=0.65),
    )
    layer = gui_viewer.layers["px"]
    assert tuple(layer.scale) == pytest.approx((1.0, 0.65, 0.65))
    rescaled = []
    layer.events.scale.connect(rescaled.append)
    handler.put({"time": 0}, np.full((16, 16), 5, np.uint16), {"PixelSizeUm": 0.65})
    qtbot.waitUntil(lambda: sink.frames_shown == 1, timeout=5000)
    assert not rescaled  # rescaling re-slices every layer: not done when the plan was right
    handler.put({"time": 1}, np.full((16, 16), 6, np.uint16), {"PixelSizeUm": 0.3})
    qtbot.waitUntil(lambda: sink.frames_shown == 2, timeout=5000)
    assert not rescaled  # only the first frame settles the layer
    handler.await_completion(5)
    sink.close()


def test_panel_plans_layers_at_the_cameras_binned_pixel_size(gui_viewer, scope, qtbot):
    from napari_exengine.widgets import AcquisitionPanel

    scope["Camera"].binning = 2
    scope["Camera"].exposure = 50.0
    panel = AcquisitionPanel(gui_viewer)
    panel.multi_d.time_points.value = 3
    panel.storage.backend.value = "napari-exengine.storage.ndram"
    acquisition = panel.run()
    # made on the GUI loop's next turn
    qtbot.waitUntil(lambda: len(gui_viewer.layers) == 1, timeout=5000)
    (layer,) = gui_viewer.layers
    assert layer.data.shape[-2:] == (256, 256)
    assert layer.scale[-1] == pytest.approx(1.3)  # planned at the binned pixel size
    qtbot.waitUntil(
        lambda: not acquisition.is_running() and panel.sink.frames_shown == 3, timeout=10000
    )
    assert tuple(gui_viewer.layers) == (layer,) and layer.scale[-1] == pytest.approx(1.3)


def test_display_refreshes_less_often_while_frames_outpace_it(gui_viewer):
    from napari_exengine import layer_sink

    handler = DataHandler(NDRAMStorage())
    sink = layer_sink.LayerSink(gui_viewer, handler, name="pace")
    for t in range(layer_sink.BUSY_FRAMES + 3):
        handler.put({"time": t}, np.full((8, 8), t, np.uint16), {})
    handler.await_completion(5)  # the GUI thread is blocked meanwhile: every frame is pending
    sink._tick()
    assert sink.frames_shown == layer_sink.BUSY_FRAMES + 3
    # the storage keeps up (a camera's pace): still often enough to show each frame within ~100 ms
    assert sink.interval_ms == layer_sink.FAST_REFRESH_INTERVAL_MS and sink._timer.isActive()
    # counted from the start of the refresh, leaving napari a moment to paint
    assert layer_sink.MIN_GAP_MS <= sink._timer.interval() <= layer_sink.FAST_REFRESH_INTERVAL_MS
    sink._tick()  # nothing new: back to the camera-rate pace
    assert sink.interval_ms == layer_sink.REFRESH_INTERVAL_MS
    sink.close()
    assert not sink._timer.isActive()


def test_display_spaces_refreshes_by_what_they_cost_the_gui_thread(gui_viewer):
    """Refreshes that cost the GUI thread more (a slow machine, a large screen) come less often:
    the GUI's share of a core stays within MAX_GUI_SHARE; cheap ones bring the pace back."""
    from napari_exengine import layer_sink

    handler = DataHandler(NDRAMStorage())
    planned = PlannedData(axis_sizes={"time": 100}, frame_shape=(8, 8), dtype="uint16")
    sink = layer_sink.LayerSink(gui_viewer, handler, name="cost", planned=planned)  # sized at once
    stored = threading.Semaphore(0)
    handler.add_listener(lambda stage, coords: stored.release() if stage == "stored" else None)
    put = 0

    def tick(burn_s=0.0):
        nonlocal put
        handler.put({"time": put}, np.full((8, 8), put, np.uint16), {})
        put += 1
        assert stored.acquire(timeout=10)
        end = time.thread_time() + burn_s
        while time.thread_time() < end:  # what a slow paint costs the GUI thread (stand-in)
            pass
        sink._tick()

    try:
        tick()  # makes the layer: not a refresh's usual cost
        tick()
        assert sink.interval_ms == layer_sink.REFRESH_INTERVAL_MS
        for _ in range(6):  # refreshes that cost 100 ms each (smoothed: one alone weighs less)
            tick(burn_s=0.1)
        assert sink.refresh_cost_ms >= 80
        assert sink.interval_ms >= 80 / layer_sink.MAX_GUI_SHARE
        assert sink._timer.interval() >= 80 / layer_sink.MAX_GUI_SHARE - 100
        for _ in range(4):  # however costly, at least two refreshes a second
            tick(burn_s=0.4)
        assert sink.refresh_cost_ms / layer_sink.MAX_GUI_SHARE > layer_sink.BUSY_REFRESH_INTERVAL_MS
        assert sink.interval_ms == layer_sink.BUSY_REFRESH_INTERVAL_MS
        for _ in range(20):
            tick()
        assert sink.interval_ms == layer_sink.REFRESH_INTERVAL_MS
    finally:
        sink.close()
        handler.finish()


@pytest.mark.parametrize("gui_viewer", [True], indirect=True)
def test_the_display_cost_counts_a_software_renderers_threads(gui_viewer):
    """Without a GPU (Xvfb here and in CI), Mesa's llvmpipe paints the canvas on threads of its own,
    at about the GUI thread's cost: the sink's paint clock measures them too."""
    from napari_exengine.paint_cost import PaintClock

    frame = np.random.default_rng(0).integers(0, 60000, (2048, 2048), dtype=np.uint16)
    layer = gui_viewer.add_image(frame)
    clock = PaintClock()
    if not clock.renderer_threads:
        pytest.skip("no software OpenGL renderer here: a GPU paints")
    gui, renderer = clock.read()
    assert abs(gui - time.thread_time()) < 0.01  # the GUI thread's time
    for t in range(5):
        layer.data = frame + t  # a new texture, painted
        gui_viewer.screenshot(canvas_only=True)
    renderer = clock.read()[1] - renderer
    assert renderer > 0.005, f"the renderer's threads took {renderer * 1000:.1f} ms"


def test_display_yields_to_the_acquisition_while_the_storage_falls_behind(gui_viewer):
    from napari_exengine import layer_sink

    gate = threading.Event()

    class Held(NDRAMStorage):
        def put(self, coords, data, metadata):
            assert gate.wait(30)
            super().put(coords, data, metadata)

    processed = threading.Semaphore(0)
    handler = DataHandler(Held(), lambda coords, data, metadata: (coords, data, metadata))
    handler.add_listener(
        lambda stage, coords: processed.release() if stage == "processed" else None
    )
    # frames shown once processed: none can be stored while the storage is held
    sink = layer_sink.LayerSink(gui_viewer, handler, name="lagging", stage="processed")
    frame = np.zeros((256, 256), np.uint16)
    put = 0

    def more(n=layer_sink.BUSY_FRAMES + 1):
        nonlocal put
        for t in range(put, put + n):
            handler.put({"time": t}, frame, {})
        for _ in range(n):
            assert processed.acquire(timeout=10)
        put += n

    try:
        more(layer_sink.BUSY_BACKLOG_FRAMES + layer_sink.BUSY_FRAMES)
        sink._tick()  # shows them, then pauses: the storage is behind
        assert handler.bytes_in_flight > layer_sink.BUSY_BACKLOG_FRAMES * frame.nbytes
        assert sink.frames_shown == put
        assert sink.interval_ms == layer_sink.BUSY_REFRESH_INTERVAL_MS
        assert sink._timer.interval() == layer_sink.BUSY_SAMPLE_MS  # samples the backlog meanwhile
        assert sink._quiet_until > time.monotonic()
        # however slow this machine is, still within the pause
        sink._quiet_until = time.monotonic() + 60
        shown = sink.frames_shown
        more()
        sink._tick()  # a sample during the pause, still behind: no redraw
        assert sink.frames_shown == shown
        assert sink._timer.interval() == layer_sink.BUSY_SAMPLE_MS
        sink._quiet_until = time.monotonic()  # the pause is over: one redraw, and a pause again
        sink._tick()
        assert sink.frames_shown == put
        assert sink.interval_ms == layer_sink.BUSY_REFRESH_INTERVAL_MS
    finally:
        gate.set()
        handler.await_completion(30)
        sink.close()


def test_a_storage_stall_at_a_cameras_pace_delays_redraws_by_one_sample(gui_viewer):
    """At a camera's pace the storage may stall for a moment: redraws pause while it is behind, and
    resume at the first sample that finds the backlog drained, well before the pause would end."""
    from napari_exengine import layer_sink

    class Stalling(DataHandler):
        backlog = 0  # the one thing this test is not about: how the backlog came about

        @property
        def bytes_in_flight(self):
            return self.backlog

    handler = Stalling(NDRAMStorage())
    stored = threading.Semaphore(0)
    sink = layer_sink.LayerSink(gui_viewer, handler, name="stall")
    handler.add_listener(lambda stage, coords: stored.release() if stage == "stored" else None)
    frame = np.zeros((64, 64), np.uint16)
    put = 0

    def more():
        nonlocal put
        for _ in range(layer_sink.BUSY_FRAMES + 1):
            handler.put({"time": put}, frame, {})
            put += 1
        for _ in range(layer_sink.BUSY_FRAMES + 1):
            assert stored.acquire(timeout=10)

    try:
        more()
        sink._tick()
        assert sink.interval_ms == layer_sink.FAST_REFRESH_INTERVAL_MS  # a camera's pace
        handler.backlog = 2 * layer_sink.BUSY_BACKLOG_FRAMES * frame.nbytes  # the storage stalls
        more()
        sink._tick()
        assert sink.interval_ms == layer_sink.BUSY_REFRESH_INTERVAL_MS
        # however slow this machine is, still within the pause
        sink._quiet_until = time.monotonic() + 60
        more()
        sink._tick()
        assert sink.frames_shown == put - layer_sink.BUSY_FRAMES - 1  # paused
        handler.backlog = layer_sink.BUSY_BACKLOG_FRAMES * frame.nbytes // 4  # caught up
        sink._tick()
        assert sink.frames_shown == put
        assert sink.interval_ms == layer_sink.FAST_REFRESH_INTERVAL_MS
    finally:
        sink.close()
        handler.finish()


def test_sinks_following_acquisitions_keep_the_collector_off_older_objects(gui_viewer):
    import gc

    from napari_exengine.layer_sink import LayerSink

    assert gc.get_freeze_count() == 0
    first = LayerSink(gui_viewer, DataHandler(NDRAMStorage()), name="one")
    # a full collection walks napari's objects: ~130 ms holding the GIL
    assert gc.get_freeze_count() > 0
    second = LayerSink(gui_viewer, DataHandler(NDRAMStorage()), name="two")
    first.close()
    first.close()  # idempotent
    assert gc.get_freeze_count() > 0  # the other one still follows
    second.close()
    assert gc.get_freeze_count() == 0
    handler = DataHandler(NDRAMStorage())
    script = LayerSink(gui_viewer, handler, name="script")  # a script's sink, never closed
    assert gc.get_freeze_count() > 0
    handler.await_completion(5)
    script._tick()
    assert gc.get_freeze_count() == 0  # its handler finished: collected as usual again
    script.close()
    assert gc.get_freeze_count() == 0


def test_moving_the_sliders_slices_each_layer_once(gui_viewer, qtbot):
    from napari_exengine.layer_sink import LayerSink

    handler = DataHandler(NDRAMStorage())
    sink = LayerSink(
        gui_viewer,
        handler,
        name="once",
        planned=PlannedData(axis_sizes={"time": 4}, frame_shape=(16, 16)),
    )
    layer = gui_viewer.layers["once"]
    slices = []
    original = layer._slice_dims
    layer._slice_dims = lambda *args, **kwargs: (slices.append(1), original(*args, **kwargs))[1]
    handler.put({"time": 3}, np.full((16, 16), 3, np.uint16), {})
    qtbot.waitUntil(lambda: sink.frames_shown == 1, timeout=5000)
    assert gui_viewer.dims.current_step[0] == 3 and np.asarray(layer._slice.image.raw)[0, 0] == 3
    assert len(slices) == 1  # napari's own "point" event would have sliced it a second time
    handler.await_completion(5)
    sink.close()


def test_short_plans_make_their_layers_first_and_long_ones_start_at_once():
    from napari_exengine.layer_sink import DEFER_LAYERS_ABOVE_FRAMES, defer_layers_for

    assert not defer_layers_for(1000) and not defer_layers_for(DEFER_LAYERS_ABOVE_FRAMES)
    assert defer_layers_for(DEFER_LAYERS_ABOVE_FRAMES + 1) and defer_layers_for(None)


@pytest.mark.parametrize("gui_viewer", [True], indirect=True)
def test_screenshot_of_running_acquisition_is_not_blank(gui_viewer, scope, qtbot):
    from napari_exengine.widgets import AcquisitionPanel

    scope["Camera"].exposure = 30.0
    panel = AcquisitionPanel(gui_viewer)
    panel.multi_d.time_points.value = 100
    panel.storage.backend.value = "napari-exengine.storage.ndram"
    acquisition = panel.run()
    qtbot.waitUntil(
        lambda: len(gui_viewer.layers) > 0 and acquisition.frames_stored > 2, timeout=10000
    )
    qtbot.wait(100)
    shot = gui_viewer.screenshot(canvas_only=True)
    assert shot.std() > 1.0
    panel.abort()
    qtbot.waitUntil(lambda: panel.run_control.run_button.enabled, timeout=10000)


def test_launcher_opens_viewer_with_docked_panels():
    code = (
        "from qtpy.QtCore import QTimer\nimport napari\nfrom napari_exengine.launcher import "
        "open_viewer\nviewer = open_viewer(show=True)\ndocks = "
        "list(viewer.window._dock_widgets)\nprint('DOCKS', docks, "
        "flush=True)\nQTimer.singleShot(500, viewer.close)\nnapari.run()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Devices" in result.stdout and "Acquisition" in result.stdout


def test_panel_offers_contributions_and_runs_through_plugin_processor_and_storage(
    gui_viewer, scope, qtbot, tmp_path
):
    from napari_exengine.widgets import AcquisitionPanel

    scope["Camera"].roi = (0, 0, 64, 64)
    panel = AcquisitionPanel(gui_viewer)
    storage_ids = (
        [value for _, value in panel.storage.backend.choices]
        if isinstance(panel.storage.backend.choices[0], tuple)
        else list(panel.storage.backend.choices)
    )
    assert {"napari-exengine.storage.omezarr", "exengine-npy-storage.npy_folder"} <= set(
        storage_ids
    )
    assert "exengine-denoise.gaussian" in panel.processors.processors
    form = panel.processors.add("exengine-denoise.gaussian")
    form.sigma.value = 1.5
    panel.processors.add("napari-exengine.processor.background_subtraction").level.value = 50.0
    panel.storage.backend.value = "exengine-npy-storage.npy_folder"
    assert [w.name for w in panel.storage.backend_settings] == ["compress"]
    panel.storage.directory.value = tmp_path
    panel.storage.dataset_name.value = "plugged"
    panel.multi_d.time_points.value = 3
    run_panel(panel, qtbot)
    assert panel.run_control.status.value.startswith("done: 3 of 3 frames stored"), (
        panel.run_control.status.value
    )
    metadata = panel.acquisition.data_handler.storage.get_metadata({"time": 1, "channel": "DAPI"})
    assert metadata["Denoise"] == "gaussian sigma=1.5" and metadata["Background"] == 50.0
    assert len(list((tmp_path / "plugged").glob("*.npy"))) == 3


def test_layers_are_named_after_the_dataset_folder_without_its_format_suffix(
    gui_viewer, scope, qtbot, tmp_path
):
    from napari_exengine.widgets import AcquisitionPanel

    panel = AcquisitionPanel(gui_viewer)
    panel.storage.backend.value = "napari-exengine.storage.omezarr"
    panel.storage.directory.value = tmp_path
    panel.storage.dataset_name.value = "zarr run"
    run_panel(panel, qtbot)
    assert panel.acquisition.data_handler.storage.path.endswith("zarr run_1.ome.zarr")
    assert [layer.name for layer in gui_viewer.layers] == ["zarr run_1 DAPI"]


@pytest.mark.parametrize("backend", ["micromanager", "microscope"])
def test_devices_panel_loads_backends_and_acquisition_panel_uses_them(
    gui_viewer, scope, qtbot, backend
):
    from napari_exengine.devices_panel import TEST_HOOKS
    from napari_exengine.widgets import AcquisitionPanel, DevicesPanel

    devices_panel = DevicesPanel(gui_viewer)
    acquisition_panel = AcquisitionPanel(gui_viewer)
    devices_panel.backend.value = backend
    devices_panel.load_devices()
    qtbot.waitUntil(lambda: devices_panel.status.value.startswith("Loaded"), timeout=20000)
    prefix = "mm1_" if backend == "micromanager" else "pm1_"
    camera_name = f"{prefix}Camera"
    assert any(name == camera_name for name, _ in devices_panel.controls)
    assert not any(prop in TEST_HOOKS for _, prop in devices_panel.controls)
    if backend == "micromanager":  # the demo camera has the test hook, hidden from users
        assert "fail_next_frames" in ExecutionEngine.get_device(camera_name).get_property_names()
    acquisition_panel.camera_choice.value = [ExecutionEngine.get_device(camera_name)]
    channel_device = ExecutionEngine.get_device(
        f"{prefix}Channel" if backend == "micromanager" else f"{prefix}FilterWheel"
    )
    acquisition_panel.channel_choice.value = channel_device
    assert "FITC" in acquisition_panel.multi_d.channels.choices
    acquisition_panel.multi_d.channels.value = ["DAPI", "FITC"]
    acquisition_panel.z_choice.value = ExecutionEngine.get_device(
        f"{prefix}Focus" if backend == "micromanager" else f"{prefix}StageZ"
    )
    acquisition_panel.multi_d.use_z.value = True
    acquisition_panel.multi_d.z_start.value, acquisition_panel.multi_d.z_stop.value = 0.0, 2.0
    acquisition_panel.storage.backend.value = "napari-exengine.storage.ndram"
    acquisition_panel.multi_d.time_points.value = 2
    ExecutionEngine.get_device(camera_name).exposure = 1.0
    run_panel(acquisition_panel, qtbot)
    assert acquisition_panel.run_control.status.value.startswith("done: 8 of 8 frames stored"), (
        acquisition_panel.run_control.status.value
    )
    assert {
        "channel": "FITC",
        "time": 1,
        "z": 1,
    } in acquisition_panel.acquisition.data_handler.storage


def test_loading_a_missing_mm_config_is_reported(gui_viewer, scope, qtbot):
    from napari_exengine.widgets import DevicesPanel

    panel = DevicesPanel(gui_viewer)
    panel.backend.value = "micromanager-config"
    panel.mm_config.value = "/nonexistent/system.cfg"
    panel.load_devices()
    qtbot.waitUntil(lambda: "failed" in panel.status.value, timeout=10000)
    assert "no such file" in panel.status.value


def test_devices_panel_follows_changes_made_elsewhere(gui_viewer, scope, qtbot):
    from napari_exengine.widgets import DevicesPanel

    panel = DevicesPanel(gui_viewer)
    scope["Light"].power = 0.7
    scope["Channel"].channel = "TRITC"
    qtbot.waitUntil(
        lambda: panel.controls[("Light", "power")].value == pytest.approx(0.7), timeout=5000
    )
    qtbot.waitUntil(lambda: panel.controls[("Channel", "channel")].value == "TRITC", timeout=5000)
    assert scope["Light"].power == pytest.approx(0.7), "showing the value did not write it back"


def test_panel_lists_broken_contributions_as_unavailable(
    gui_viewer, scope, monkeypatch, manager_with_broken_plugin
):
    import napari_exengine.acquisition_panel as widgets
    from napari_exengine.contributions import list_contributions

    monkeypatch.setattr(
        widgets,
        "list_contributions",
        lambda: list_contributions(manager=manager_with_broken_plugin),
    )
    panel = widgets.AcquisitionPanel(gui_viewer)
    assert "broken-contributions.missing" not in panel.processors.processors
    assert (
        not panel.unavailable.native.isHidden()
        and "no_such_module_anywhere" in panel.unavailable.value
    )
    assert "napari-exengine.processor.max_intensity_projection" in panel.processors.processors
    assert panel.run_control.run_button.enabled


def test_the_panel_status_says_how_many_frames_the_camera_dropped(gui_viewer, scope, qtbot):
    from napari_exengine.widgets import AcquisitionPanel

    camera = scope["Camera"]
    camera.roi = (0, 0, 64, 64)
    camera.frame_rate_limit = 100_000.0  # a frame every 10 µs: faster than any readout
    camera.sequence_buffer_mb = 2 * 64 * 64 * 2 / 1024**2  # two frames
    panel = AcquisitionPanel(gui_viewer)
    panel.multi_d.time_points.value = 400
    panel.multi_d.channels.value = []
    panel.multi_d.sequenced.value = "t"  # the camera runs free through the time points
    panel.storage.backend.value = "napari-exengine.storage.ndram"
    acquisition = run_panel(panel, qtbot)
    status = panel.run_control.status.value
    assert acquisition.frames_dropped > 0
    assert f"{acquisition.frames_dropped:,} dropped by the camera" in status, status
    assert status.startswith(f"done: {acquisition.frames_stored:,} of 400 frames stored")
    assert acquisition.frames_stored + acquisition.frames_dropped == 400


def test_two_cameras_chosen_in_the_panel_each_get_their_layer(gui_viewer, scope, qtbot):
    from exengine.devices.simulated import add_simulated_camera
    from napari_exengine.widgets import AcquisitionPanel

    second = add_simulated_camera("Camera2", beside=scope["Camera"])
    for camera in (scope["Camera"], second):
        camera.roi = (0, 0, 64, 64)
    panel = AcquisitionPanel(gui_viewer)
    panel.camera_choice.value = [scope["Camera"], second]
    panel.multi_d.time_points.value = 3
    panel.multi_d.channels.value = ["DAPI", "FITC"]
    panel.storage.backend.value = "napari-exengine.storage.ndram"
    assert panel.run_control.estimate.value.startswith("12 frames")
    run_panel(panel, qtbot)
    names = {layer.name for layer in gui_viewer.layers}
    prefix = panel.sink.name
    assert {f"{prefix} {c} {ch}" for c in ("Camera", "Camera2") for ch in ("DAPI", "FITC")} <= names
    assert panel.run_control.status.value.startswith("done: 12 of 12 frames stored")


def test_layer_and_setting_names_read_as_words():
    from napari_exengine.layer_sink import layer_name
    from napari_exengine.panel_common import setting_label

    assert layer_name("ndtiffv2.0_stitched_test", "") == "ndtiffv2.0_stitched_test"
    assert layer_name("run_1", "DAPI") == "run_1 DAPI" and layer_name("run_1", 0) == "run_1 0"
    assert layer_name("run_1") == "run_1"
    assert setting_label("pixel_size_um") == "pixel size (µm)"
    assert setting_label("time_interval_s") == "time interval (s)"
    assert setting_label("bit_depth") == "bit depth" and setting_label("rows") == "rows"


def test_a_dataset_with_an_unnamed_channel_reopens_without_a_trailing_space(tmp_path):
    from napari_exengine.reader import read_ndtiff

    storage = NDTiffStorage(str(tmp_path), name="mm dataset")
    for t in range(2):  # Micro-Manager names a dataset's only channel ""
        storage.put({"time": t, "channel": ""}, np.zeros((8, 8), np.uint16), {})
    storage.finish()
    assert [kwargs["name"] for _, kwargs, _ in read_ndtiff(storage.path)] == ["mm dataset_1"]


def test_the_sliders_follow_the_newest_frame_acquired_when_frames_are_stored_out_of_order(
    gui_viewer, qtbot, tmp_path, monkeypatch
):
    """NDTiff writes two large frames at once, so they may be reported stored out of order: here
    frame 4 is stored after frame 5 (and after a refresh showed 5), and the sliders stay on 5."""
    from exengine.data import FrameStage
    from exengine.storage import ndtiff_files
    from napari_exengine.layer_sink import LayerSink

    newest_shown = threading.Event()
    write = ndtiff_files.ImageFile.write

    def late(file, key, image, metadata, then):
        if dict(key)["time"] == 4:
            assert newest_shown.wait(20)
        return write(file, key, image, metadata, then)

    monkeypatch.setattr(ndtiff_files.ImageFile, "write", late)
    handler = DataHandler(NDTiffStorage(tmp_path, "order"))
    stored: list[int] = []
    handler.add_listener(
        lambda stage, coords: stored.append(coords["time"]) if stage == FrameStage.STORED else None
    )
    sink = LayerSink(gui_viewer, handler, name="order")
    for t in range(6):
        handler.put({"time": t}, np.full((1024, 1024), t, np.uint16), {}, timeout=30)
    qtbot.waitUntil(lambda: sink.frames_shown == 5, timeout=20000)
    assert gui_viewer.dims.current_step[0] == 5
    newest_shown.set()
    handler.await_completion(30)
    qtbot.waitUntil(lambda: sink.frames_shown == 6, timeout=20000)
    assert stored[-1] == 4 and gui_viewer.dims.current_step[0] == 5
    sink.close()


@pytest.mark.parametrize(
    "metadata",
    [{"XPositionUm": 1000.0, "YPositionUm": -500.0}, {"PixelSizeUm": 0.25}],
    ids=["placed at its stage position", "rescaled"],
)
def test_the_sliders_follow_the_newest_frame_after_the_first_moves_or_rescales_the_layer(
    gui_viewer, qtbot, metadata
):
    """A first frame at a stage position (or of another pixel size) moves the planned layer, and
    napari moves the displayed axes' steps with it: the sliders still follow the newest frame, until
    the user moves one."""
    from napari_exengine.layer_sink import LayerSink

    handler = DataHandler(NDRAMStorage())
    planned = PlannedData(axis_sizes={"time": 8}, frame_shape=(64, 64), pixel_size_um=1.0)
    sink = LayerSink(gui_viewer, handler, name="moved", planned=planned)
    layer = gui_viewer.layers["moved"]
    for t in range(8):
        if t == 6:
            gui_viewer.dims.current_step = (2, *gui_viewer.dims.current_step[1:])
        handler.put({"time": t}, np.full((64, 64), t, np.uint16), dict(metadata))
        qtbot.waitUntil(lambda t=t: sink.frames_shown == t + 1, timeout=5000)
        shown = t if t < 6 else 2  # the user's slider stays
        assert gui_viewer.dims.current_step[0] == shown
        assert np.asarray(layer._slice.image.raw)[0, 0] == shown
    handler.await_completion(5)
    sink.close()
