"""The Acquisition panel in a real viewer: open-ended runs, pause/resume, inline validation,
contributed plans (built-in and from an installed example plugin), useq sequences, and processors on
a Dask cluster."""

from __future__ import annotations

import time

import pytest

from exengine.notifications import AcquisitionPausedNotification, AcquisitionResumedNotification
from exengine.storage.ndtiff_reader import NDTiffReader

pytestmark = pytest.mark.gui


def panel_for(viewer):
    from napari_exengine.acquisition_panel import AcquisitionPanel

    return AcquisitionPanel(viewer)


def finish(panel, qtbot, timeout=30000):
    qtbot.waitUntil(lambda: panel.run_control.run_button.enabled, timeout=timeout)


def test_until_stopped_grows_the_time_slider_and_stores_everything(
    gui_viewer, scope, qtbot, tmp_path
):
    panel = panel_for(gui_viewer)
    panel.multi_d.until_stopped.value = True
    assert (
        not panel.multi_d.time_points.enabled
        and panel.run_control.estimate.value == "until stopped"
    )
    panel.storage.directory.value = tmp_path
    acquisition = panel.run()
    assert acquisition.is_open_ended and panel.run_control.progress.max == 0
    qtbot.waitUntil(lambda: acquisition.frames_stored >= 30, timeout=20000)
    qtbot.waitUntil(
        lambda: (
            "elapsed" in panel.run_control.status.value
            and "frames/s" in panel.run_control.status.value
        ),
        timeout=5000,
    )
    assert "left" not in panel.run_control.status.value
    layer = gui_viewer.layers[-1]
    # the time axis grows with no plan
    qtbot.waitUntil(lambda: layer.data.shape[0] >= 10, timeout=5000)
    panel.stop()
    finish(panel, qtbot)
    reader = NDTiffReader(panel.acquisition.data_handler.storage.path)
    assert len(reader.coordinates()) == acquisition.frames_acquired >= 30
    stopped = f"stopped: {acquisition.frames_acquired:,} frames stored"
    assert panel.run_control.status.value.startswith(stopped)


@pytest.mark.slow
def test_a_long_open_ended_run_keeps_memory_flat(gui_viewer, scope, qtbot, tmp_path):
    """10 s with the camera at full speed (3,000 small frames a second, which the storage keeps up
    with, so that the run measures the display and not a backlog): the process's memory does not
    grow with the frames, the sink's time axis is held as a range, and every frame is in storage."""
    import psutil

    scope["Camera"].roi = (0, 0, 64, 64)
    scope["Camera"].frame_rate_limit = 3000.0
    panel = panel_for(gui_viewer)
    panel.multi_d.until_stopped.value = True
    panel.storage.directory.value = tmp_path
    process = psutil.Process()
    acquisition = panel.run()
    qtbot.wait(3000)
    early, frames_early = process.memory_info().rss, acquisition.frames_stored
    qtbot.wait(7000)
    late, frames_late = process.memory_info().rss, acquisition.frames_stored
    panel.stop()
    finish(panel, qtbot, timeout=60000)
    assert frames_late - frames_early > 5000
    grown = (late - early) / 1e6
    assert grown < 50, f"memory grew {grown:.0f} MB over {frames_late - frames_early} frames"
    time_index = next(iter(panel.sink._state.values())).indices["time"]
    assert isinstance(time_index.values, range) and len(time_index) == acquisition.frames_acquired
    assert (
        len(NDTiffReader(panel.acquisition.data_handler.storage.path).coordinates())
        == acquisition.frames_acquired
    )


def test_pause_and_resume_in_the_panel(gui_viewer, scope, qtbot, engine):
    scope["Camera"].frame_rate_limit = 100.0
    notes = []
    engine.subscribe_to_notifications(notes.append)
    panel = panel_for(gui_viewer)
    panel.multi_d.time_points.value = 300
    panel.storage.backend.value = "napari-exengine.storage.ndram"
    acquisition = panel.run()
    qtbot.waitUntil(lambda: acquisition.frames_stored >= 3, timeout=10000)
    panel.run_control.pause_button.clicked.emit()
    assert acquisition.is_paused and panel.run_control.pause_button.text == "Resume"
    qtbot.waitUntil(
        lambda: any(isinstance(n, AcquisitionPausedNotification) for n in notes), timeout=5000
    )
    held = acquisition.frames_acquired
    qtbot.wait(500)
    assert acquisition.frames_acquired == held
    qtbot.waitUntil(lambda: panel.run_control.status.value.startswith("paused"), timeout=2000)
    panel.run_control.pause_button.clicked.emit()
    assert not acquisition.is_paused and panel.run_control.pause_button.text == "Pause"
    qtbot.waitUntil(
        lambda: any(isinstance(n, AcquisitionResumedNotification) for n in notes), timeout=5000
    )
    qtbot.waitUntil(lambda: acquisition.frames_acquired > held, timeout=5000)
    panel.run_control.pause_button.clicked.emit()  # stop while paused
    panel.stop()
    finish(panel, qtbot)
    assert len(panel.acquisition.data_handler.storage) == acquisition.frames_acquired < 300
    engine.unsubscribe_from_notifications(notes.append)


def test_invalid_settings_are_shown_inline_and_disable_run(gui_viewer, scope):
    panel = panel_for(gui_viewer)
    panel.multi_d.channels.value = ["DAPI"]
    panel.multi_d.per_channel_exposure.value = True
    panel.multi_d._exposure_boxes["DAPI"].value = 20000.0
    assert panel.run_control.estimate.value.startswith(
        "invalid: Camera.exposure = 20000 is outside its limits [0, 10000]"
    )
    assert not panel.run_control.run_button.enabled
    assert panel.run() is None and panel.acquisition is None
    panel.multi_d._exposure_boxes["DAPI"].value = 5.0
    assert panel.run_control.run_button.enabled and not panel.run_control.estimate.value.startswith(
        "invalid"
    )


def test_a_contributed_plan_runs_from_the_panel(gui_viewer, scope, qtbot, tmp_path):
    panel = panel_for(gui_viewer)
    panel.plan_choice.value = "napari-exengine.plan.grid_scan"
    assert panel.multi_d.native.isHidden() and not panel.plan_form.native.isHidden()
    assert [w.name for w in panel.plan_form] == ["rows", "columns", "overlap"]
    panel.plan_form.rows.value = 0
    assert (
        panel.run_control.estimate.value.startswith(
            "invalid: rows must be a whole number of at least 1"
        )
        and not panel.run_control.run_button.enabled
    )
    panel.plan_choice.value = "napari-exengine.plan.overview_then_zoom"
    assert [w.label for w in panel.plan_form][-2:] == ["z range (µm)", "z step (µm)"]
    panel.plan_choice.value = "napari-exengine.plan.grid_scan"
    panel.plan_form.rows.value = 2
    panel.plan_form.columns.value = 2
    assert panel.run_control.estimate.value.startswith("4 frames")
    panel.storage.directory.value = tmp_path
    panel.run()
    finish(panel, qtbot)
    assert NDTiffReader(panel.acquisition.data_handler.storage.path).axes == {
        "row": [0, 1],
        "column": [0, 1],
    }
    # the tiles are placed where they were taken (a mosaic), not on row and column sliders
    assert "row" not in gui_viewer.dims.axis_labels and "column" not in gui_viewer.dims.axis_labels
    assert any(layer.metadata.get("mosaic") for layer in gui_viewer.layers)


def test_the_example_plugins_plan_runs_from_the_panel(gui_viewer, scope, qtbot, tmp_path):
    panel = panel_for(gui_viewer)
    plan_id = next(i for i in panel.plans if i.startswith("exengine-spiral-plan."))
    panel.plan_choice.value = plan_id
    panel.plan_form.turns.value = 1
    panel.storage.directory.value = tmp_path
    panel.run()
    finish(panel, qtbot)
    assert len(NDTiffReader(panel.acquisition.data_handler.storage.path).coordinates()) == 9


def test_sequences_save_and_load_through_useq(gui_viewer, scope, tmp_path):
    panel = panel_for(gui_viewer)
    panel.multi_d.time_points.value = 3
    panel.multi_d.interval_s.value = 2.0
    panel.multi_d.use_z.value = True
    panel.multi_d.z_start.value, panel.multi_d.z_stop.value, panel.multi_d.z_step.value = (
        -2.0,
        2.0,
        1.0,
    )
    panel.multi_d.channels.value = ["DAPI", "FITC"]
    panel.multi_d.per_channel_exposure.value = True
    panel.multi_d._exposure_boxes["DAPI"].value = 5.0
    panel.multi_d._exposure_boxes["FITC"].value = 7.0
    panel.multi_d.add_position_at(10.0, 20.0, "A")
    panel.multi_d.add_position_at(30.0, 40.0, "B")
    panel.multi_d.order.value = "tpcz"
    path = tmp_path / "sequence.yaml"
    panel.save_sequence(str(path))
    import useq

    assert useq.MDASequence.from_file(path).sizes == {"t": 3, "p": 2, "c": 2, "z": 5}
    other = panel_for(gui_viewer)
    other.load_sequence(str(path))
    assert other.multi_d.settings(other.channel_device) == panel.multi_d.settings(
        panel.channel_device
    )
    unrunnable = tmp_path / "camera.json"  # a grid runs as loaded (test_panel_sequences.py)
    unrunnable.write_text('{"channels": [{"config": "DAPI", "camera": "Other"}]}')
    with pytest.raises(ValueError, match="camera"):
        other.load_sequence(str(unrunnable))
    assert other.multi_d.time_points.value == 3, "a refused file changes nothing"


@pytest.mark.slow
def test_processors_on_a_local_dask_cluster_from_the_panel(gui_viewer, scope, qtbot, tmp_path):
    panel = panel_for(gui_viewer)
    panel.multi_d.time_points.value = 4
    panel.processors.add("napari-exengine.processor.background_subtraction").level.value = 50
    panel.processors.processing.value = "a local cluster"
    assert (
        not panel.processors.cluster_workers.native.isHidden()
        and panel.processors.scheduler_address.native.isHidden()
    )
    assert panel.processors.location() == "cluster:2"
    panel.storage.directory.value = tmp_path
    started = time.monotonic()
    panel.run()
    finish(panel, qtbot, timeout=90000)
    assert time.monotonic() - started < 90
    reader = NDTiffReader(panel.acquisition.data_handler.storage.path)
    assert len(reader.coordinates()) == 4
    assert reader.read_metadata(reader.coordinates()[0])["Background"] == 50


def test_processors_are_fitted_to_the_plan_inline(gui_viewer, scope):
    panel = panel_for(gui_viewer)
    panel.multi_d.time_points.value = 5
    form = panel.processors.add("napari-exengine.processor.frame_averaging")
    form.frames.value = 2
    assert (
        "the last average is of 1 frame" in panel.run_control.estimate.value
        and panel.run_control.run_button.enabled
    )
    panel.multi_d.use_z.value = True
    projection = panel.processors.add("napari-exengine.processor.max_intensity_projection")
    projection.z_planes.value = 50
    assert (
        panel.run_control.estimate.value.startswith("invalid: ")
        and "z_planes=50" in panel.run_control.estimate.value
    )
    assert not panel.run_control.run_button.enabled


def test_the_devices_panel_stops_refreshing_when_it_is_closed(gui_viewer, scope, qtbot):
    from napari_exengine.devices_panel import DevicesPanel

    panel = DevicesPanel(gui_viewer)
    qtbot.waitUntil(lambda: bool(panel.controls), timeout=10000)
    timer = panel._refresh_timer
    assert timer.isActive()
    panel.refresh()  # a read in flight while the panel goes
    panel.deleteLater()
    qtbot.wait(2500)  # more than two refresh periods: no refresh may touch the deleted controls
    with pytest.raises(RuntimeError):
        timer.isActive()  # the timer went with the panel
