"""Screenshots of the real plugin for the README and the docs, made under Xvfb with a real napari
viewer.

``pytest -m screenshots`` regenerates ``docs/_static/*.png`` (not part of the default run); the
default run only checks that the committed pictures exist and are shown in the README and the docs.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exengine import ExecutionEngine
from exengine.data import DataHandler
from exengine.events import multi_d_acquisition_events
from exengine.storage import NDTiffStorage

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "docs" / "_static"
PICTURES = ("panels.png", "acquisition.png", "reopened_dataset.png")
MAX_BYTES = 300_000
WINDOW = (1280, 720)  # a laptop screen

# a shown window, so docks are laid out
show = pytest.mark.parametrize("gui_viewer", [True], indirect=True)


def save_screenshot(viewer, qtbot, name: str) -> np.ndarray:
    """Check the window and its canvas show image content, then save the window as
    ``docs/_static/<name>`` (downscaled until it is under ``MAX_BYTES``); returns the window's
    pixels."""
    from PIL import Image

    viewer.reset_view()
    qtbot.wait(500)  # let docks, sliders and the canvas settle
    window = viewer.screenshot(canvas_only=False, flash=False)[..., :3]
    canvas = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float).mean(axis=-1)
    assert (window.shape[1], window.shape[0]) == WINDOW, f"{name}: {window.shape} is not {WINDOW}"
    assert window.mean() > 15 and window.std() > 15, f"{name}: the window is (nearly) black"
    assert canvas.std() > 8, f"{name}: the canvas shows no image (std {canvas.std():.1f})"
    assert len(np.unique(canvas.astype(np.uint8))) > 64, f"{name}: the canvas is nearly uniform"
    image = Image.fromarray(np.ascontiguousarray(window))
    while True:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= MAX_BYTES:
            break
        image = image.resize(
            (int(image.width * 0.85), int(image.height * 0.85)), Image.Resampling.LANCZOS
        )
    STATIC.mkdir(parents=True, exist_ok=True)
    (STATIC / name).write_bytes(buffer.getvalue())
    return window


def dock_panels(viewer):
    """Dock the plugin's two panels the way napari's Plugins menu does."""
    _, devices = viewer.window.add_plugin_dock_widget("napari-exengine", "Devices")
    _, acquisition = viewer.window.add_plugin_dock_widget("napari-exengine", "Acquisition")
    return devices, acquisition


def show_step(viewer, **steps: int) -> None:
    """Move the sliders of the named axes (by their labels) to the given indices."""
    labels = list(viewer.dims.axis_labels)
    for label, index in steps.items():
        viewer.dims.set_current_step(labels.index(label), index)


@pytest.mark.screenshots
@pytest.mark.gui
@show
def test_screenshot_docked_panels_before_a_run(gui_viewer, scope, qtbot, monkeypatch):
    from qtpy.QtWidgets import QPushButton

    # shown as a user sees it (nothing is saved)
    monkeypatch.setenv("EXENGINE_DATA_DIR", "~/exengine-data")
    viewer = gui_viewer
    viewer.window.resize(*WINDOW)
    scope["Camera"].exposure = 20.0
    devices, _ = dock_panels(viewer)
    (snap,) = [
        b
        for b in getattr(devices, "native", devices).findChildren(QPushButton)
        if b.text() == "Snap"
    ]
    snap.click()
    qtbot.waitUntil(lambda: len(viewer.layers) == 1 and viewer.layers[0].data.any(), timeout=20000)
    save_screenshot(viewer, qtbot, "panels.png")
    # The Devices panel re-reads its properties every second and does not stop when the viewer
    # closes: a read
    # in flight at teardown would update deleted controls. Stop it and let the last read land first.
    timer = getattr(devices, "_refresh_timer", None)
    if timer is not None:
        timer.stop()
    qtbot.waitUntil(lambda: not getattr(devices, "_reading", False), timeout=10000)


@pytest.mark.screenshots
@pytest.mark.gui
@show
def test_screenshot_finished_time_z_two_channel_acquisition(gui_viewer, scope, qtbot, tmp_path):
    from napari_exengine import attach_layer_sink

    viewer = gui_viewer
    viewer.window.resize(*WINDOW)
    scope["Camera"].exposure = 20.0
    handler = DataHandler(NDTiffStorage(str(tmp_path), name="time-lapse"))
    sink = attach_layer_sink(viewer, handler, name="time-lapse")
    events = multi_d_acquisition_events(
        num_time_points=3,
        z_start=-8,
        z_end=8,
        z_step=4,
        channel_group=scope["Channel"],
        channels=["DAPI", "FITC"],
        camera=scope["Camera"],
        z_device=scope["Z"],
        xy_device=scope["XY"],
        data_handler=handler,
    )
    futures = ExecutionEngine.get_instance().submit(events)
    qtbot.waitUntil(futures[-1].is_execution_complete, timeout=60000)
    handler.await_completion(timeout=60)
    qtbot.waitUntil(lambda: sink.frames_shown >= 30, timeout=30000)
    sink.close()
    assert sorted(layer.name for layer in viewer.layers) == ["time-lapse DAPI", "time-lapse FITC"]
    assert {"time", "z"} <= set(viewer.dims.axis_labels)
    show_step(viewer, time=2, z=2)
    save_screenshot(viewer, qtbot, "acquisition.png")


@pytest.mark.screenshots
@pytest.mark.gui
@show
def test_screenshot_reopened_micro_manager_dataset(gui_viewer, qtbot, testdata):
    viewer = gui_viewer
    viewer.window.resize(*WINDOW)
    layers = viewer.open(testdata / "v3" / "ndtiff3.2_multichannel", plugin="napari-exengine")
    assert len(layers) == 2
    assert {"time", "z"} <= set(viewer.dims.axis_labels)
    show_step(viewer, time=4, z=8)
    save_screenshot(viewer, qtbot, "reopened_dataset.png")


def test_screenshots_are_committed_and_shown_in_readme_and_docs():
    readme = (ROOT / "README.md").read_text()
    docs = "\n".join(page.read_text() for page in (ROOT / "docs").glob("*.rst"))
    for name in PICTURES:
        path = STATIC / name
        assert path.is_file(), f"{path} is missing: run pytest -m screenshots"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size <= MAX_BYTES
        assert f"](docs/_static/{name})" in readme, f"README.md does not show {name}"
        assert f"_static/{name}" in docs, f"no docs page shows {name}"


@pytest.mark.slow
def test_docs_html_shows_the_screenshots_and_the_api_pages(tmp_path):
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "-q",
        "-b",
        "html",
        str(ROOT / "docs"),
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = set(
        re.findall(r'<img [^>]*src="_images/([^"]+)"', (tmp_path / "screenshots.html").read_text())
    )
    assert shown == set(PICTURES)
    assert all((tmp_path / "_images" / name).stat().st_size > 10_000 for name in PICTURES)
    api = (tmp_path / "api.html").read_text()
    assert 'id="exengine.kernel.executor.ExecutionEngine"' in api
    assert 'id="exengine.events.multi_d_settings.MultiDSettings.load"' in api
