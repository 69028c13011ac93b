"""Micro-Manager's Multi Camera device in napari, loaded from a configuration file of
Micro-Manager's own C++ demo adapters by the Devices panel: an acquisition shows each camera in its
own layer, and Snap and Live show each camera's frame."""

from __future__ import annotations

from exengine import ExecutionEngine
from micromanager_helpers import camera_of
from panel_helpers import run_panel


def names(viewer) -> set[str]:
    return {layer.name for layer in viewer.layers}


def load_multi_camera(viewer, qtbot, config):
    from napari_exengine.widgets import DevicesPanel

    panel = DevicesPanel(viewer)
    panel.backend.value = "micromanager-config"
    panel.mm_config.value = str(config)
    panel.load_devices()
    qtbot.waitUntil(lambda: panel.status.value.startswith("Loaded"), timeout=20000)
    multi = next(d for name, d in ExecutionEngine.get_devices().items() if name.endswith("Multi"))
    multi.exposure = 1.0
    return panel, multi


def test_a_multi_camera_chosen_in_the_panel_shows_each_camera_in_its_layer(
    gui_viewer, qtbot, multi_camera_config
):
    from napari_exengine.widgets import AcquisitionPanel

    _, multi = load_multi_camera(gui_viewer, qtbot, multi_camera_config)
    panel = AcquisitionPanel(gui_viewer)
    panel.camera_choice.reset_choices()
    panel.camera_choice.value = [multi]
    panel.multi_d.time_points.value = 3
    panel.storage.backend.value = "napari-exengine.storage.ndram"
    assert panel.run_control.estimate.value.startswith("6 frames"), panel.run_control.estimate.value
    run_panel(panel, qtbot)
    assert panel.run_control.status.value.startswith("done: 6 of 6 frames stored")
    cameras = [camera.name for camera in multi.cameras()]
    for camera in cameras:  # one layer each (of the panel's one channel)
        [layer] = [x for x in gui_viewer.layers if x.name.startswith(f"{panel.sink.name} {camera}")]
        assert camera_of(layer.data[-1]) == camera.rpartition("_")[2]


def test_snap_and_live_show_each_camera_of_a_multi_camera(gui_viewer, qtbot, multi_camera_config):
    panel, multi = load_multi_camera(gui_viewer, qtbot, multi_camera_config)
    panel.camera_choice.reset_choices()
    panel.camera_choice.value = multi
    panel.snap()
    qtbot.waitUntil(lambda: {"Snap Cam1", "Snap Cam2"} <= names(gui_viewer), timeout=10000)
    for camera in ("Cam1", "Cam2"):
        assert camera_of(gui_viewer.layers[f"Snap {camera}"].data) == camera
    panel.toggle_live()
    qtbot.waitUntil(lambda: {"Live Cam1", "Live Cam2"} <= names(gui_viewer), timeout=10000)
    qtbot.waitUntil(lambda: "frames/s" in panel.status.value, timeout=5000)
    panel.toggle_live()
    qtbot.waitUntil(lambda: panel.live_button.text == "Live", timeout=10000)
    for camera in ("Cam1", "Cam2"):
        assert camera_of(gui_viewer.layers[f"Live {camera}"].data) == camera


def test_snap_and_live_of_a_multi_camera_without_cameras_say_why(
    gui_viewer, qtbot, multi_camera_config
):
    panel, multi = load_multi_camera(gui_viewer, qtbot, multi_camera_config)
    for number in (1, 2):
        multi.set_property(f"Physical Camera {number}", "Undefined")
    panel.camera_choice.reset_choices()
    panel.camera_choice.value = multi
    panel.snap()
    qtbot.waitUntil(lambda: panel.status.value.startswith("Snap failed"), timeout=10000)
    assert "Physical Camera properties are all Undefined" in panel.status.value
    panel.toggle_live()
    assert panel.status.value.startswith("Live failed") and panel.live_button.text == "Live"
