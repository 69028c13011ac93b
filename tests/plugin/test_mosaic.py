"""Tiles where they were taken: the mosaic of grid scans and multi-position runs, slider axes that
stay apart across acquisitions, the field of view outlined and moved to by a double-click."""

from __future__ import annotations

import numpy as np
import pytest

from exengine.data import DataHandler
from exengine.storage import NDRAMStorage
from exengine.storage.ndtiff_reader import NDTiffReader
from panel_helpers import run_panel, shown_panel

pytestmark = pytest.mark.gui

PIXEL = 0.5


def tile(value: int, x: float, y: float, shape=(16, 20)):
    """A frame of ``value`` taken at stage ``x``, ``y`` and its metadata."""
    return np.full(shape, value, np.uint16), {"PixelSizeUm": PIXEL, "StageX-um": x, "StageY-um": y}


def world_value(layer, y: float, x: float, index=()):
    """The layer's pixel at world ``y``, ``x`` (µm) and slider ``index``."""
    row, col = (np.array([y, x]) - np.asarray(layer.translate)[-2:]) / np.asarray(layer.scale)[-2:]
    return np.asarray(layer.data[tuple(index)])[int(row), int(col)]


def sink_for(viewer, name, **kwargs):
    from napari_exengine.layer_sink import LayerSink

    handler = DataHandler(NDRAMStorage())
    return handler, LayerSink(viewer, handler, name=name, **kwargs)


def test_a_time_lapse_then_a_grid_scan_keep_their_own_sliders(gui_viewer, qtbot):
    handler, sink = sink_for(gui_viewer, "lapse")
    for t in range(198):
        handler.put({"time": t}, *tile(t, 100.0, 50.0))
    qtbot.waitUntil(lambda: sink.frames_shown == 198, timeout=10000)
    handler.finish()
    sink.close()
    handler, sink = sink_for(gui_viewer, "grid")
    for r in range(3):
        for c in range(3):
            handler.put({"row": r, "column": c}, *tile(10 * r + c + 1, 10.0 * c, 8.0 * r))
    qtbot.waitUntil(lambda: sink.frames_shown == 9, timeout=10000)
    handler.finish()
    sink.close()
    dims = gui_viewer.dims
    # no row/column sliders: the tiles are placed; the time slider keeps its label and range
    assert "row" not in dims.axis_labels and "column" not in dims.axis_labels
    assert dims.axis_labels[0] == "time" and dims.range[0].stop == 197
    mosaic = gui_viewer.layers["grid"]
    assert mosaic.metadata["mosaic"] and mosaic.data.ndim == 2
    assert tuple(mosaic.scale) == pytest.approx((PIXEL, PIXEL))
    # each frame centred on its stage position (the last row's middle tile)
    assert world_value(mosaic, 16.0, 10.0) == 22
    # the first tile's top-left corner is the canvas's
    assert tuple(mosaic.translate) == pytest.approx((0.0 - 8 * PIXEL, 0.0 - 10 * PIXEL))
    assert world_value(mosaic, 0.0, 0.0) == 1 and world_value(mosaic, 8.0, 20.0) == 13
    lapse = gui_viewer.layers["lapse"]
    assert tuple(lapse.translate)[-2:] == pytest.approx((50.0 - 4.0, 100.0 - 5.0))


def test_a_time_lapse_then_a_z_stack_do_not_share_a_slider(gui_viewer, qtbot):
    handler, sink = sink_for(gui_viewer, "lapse")
    for t in range(50):
        handler.put({"time": t}, np.full((8, 8), t, np.uint16), {})
    qtbot.waitUntil(lambda: sink.frames_shown == 50, timeout=10000)
    handler.finish()
    sink.close()
    handler, sink = sink_for(gui_viewer, "stack")
    for z in range(5):
        handler.put({"z": z}, np.full((8, 8), z, np.uint16), {})
    qtbot.waitUntil(lambda: sink.frames_shown == 5, timeout=10000)
    handler.finish()
    sink.close()
    dims = gui_viewer.dims
    assert dims.axis_labels == ("z", "time", "y", "x")
    assert dims.range[0].stop == 4 and dims.range[1].stop == 49
    stack = gui_viewer.layers["stack"]
    assert stack.data.shape == (5, 1, 8, 8)
    # the new acquisition is in view: its z slider at the newest plane, time where it has a frame
    assert dims.current_step[:2] == (4, 0)
    assert np.asarray(stack.data[3, 0])[0, 0] == 3


def test_a_wide_mosaic_is_a_reduced_preview(gui_viewer, qtbot):
    from napari_exengine.mosaic import MAX_CANVAS_SIDE

    handler, sink = sink_for(gui_viewer, "far")
    handler.put({"position": 0}, *tile(3, 0.0, 0.0))
    handler.put({"position": 1}, *tile(7, 10_000.0, 0.0))
    qtbot.waitUntil(lambda: sink.frames_shown == 2, timeout=10000)
    handler.finish()
    sink.close()
    layer = gui_viewer.layers["far"]
    assert max(layer.data.shape) <= MAX_CANVAS_SIDE
    step = layer.scale[-1]
    assert step / PIXEL in (2, 4, 8) and layer.data.shape[-1] * step >= 10_000
    assert world_value(layer, 0.0, 0.0) == 3 and world_value(layer, 0.0, 10_000.0) == 7


def run_plan(panel, qtbot, plan, tmp_path, **settings):
    panel.plan_choice.value = plan
    for name, value in settings.items():
        getattr(panel.plan_form, name).value = value
    panel.storage.directory.value = tmp_path
    return run_panel(panel, qtbot, timeout=60000)


def assert_tiles_at_their_stage_positions(layer, handler, coordinates, index=()):
    """Each frame's pixels are where its stage position puts them (frame centred on it)."""
    for coords in coordinates:
        frame, metadata = handler.get(coords)
        pixel = metadata["PixelSizeUm"]
        height, width = frame.shape
        top = metadata["StageY-um"] - height * pixel / 2
        left = metadata["StageX-um"] - width * pixel / 2
        for row, col in ((1, 1), (height - 2, width - 2), (height // 2, width // 3)):
            y, x = top + (row + 0.5) * pixel, left + (col + 0.5) * pixel
            assert world_value(layer, y, x, index) == frame[row, col], (coords, row, col)


def test_a_grid_scan_from_the_panel_is_a_mosaic_with_the_field_of_view_outlined(
    gui_viewer, scope, qtbot, tmp_path
):
    from napari.utils.interactions import mouse_double_click_callbacks

    from napari_exengine.field_of_view import LAYER_NAME

    scope["Camera"].roi = (0, 0, 128, 96)
    scope["XY"].set_position(100.0, -50.0)
    panel = shown_panel(gui_viewer, qtbot)
    acquisition = run_plan(
        panel, qtbot, "napari-exengine.plan.grid_scan", tmp_path, rows=3, columns=2, overlap=0.0
    )
    handler = acquisition.data_handler
    [mosaic] = [layer for layer in gui_viewer.layers if layer.metadata.get("mosaic")]
    assert mosaic.data.ndim == 2 and tuple(mosaic.scale) == pytest.approx((0.65, 0.65))
    # 2 x 3 fields of 128 x 96 pixels, without overlap, centred on where the stage was
    assert mosaic.data.shape == (3 * 96, 2 * 128)
    assert tuple(mosaic.translate) == pytest.approx((-50.0 - 1.5 * 96 * 0.65, 100.0 - 128 * 0.65))
    coordinates = [{"row": r, "column": c} for r in range(3) for c in range(2)]
    assert_tiles_at_their_stage_positions(mosaic, handler, coordinates)
    # the field of view, outlined where the stage is (the grid put it back to its start)
    x, y = scope["XY"].get_position()
    qtbot.waitUntil(lambda: LAYER_NAME in gui_viewer.layers, timeout=5000)
    outline = gui_viewer.layers[LAYER_NAME]
    qtbot.waitUntil(
        lambda: np.allclose(outline.data[0].min(axis=0), (y - 96 * 0.65 / 2, x - 128 * 0.65 / 2)),
        timeout=5000,
    )
    assert outline.shape_type == ["rectangle"]
    assert np.allclose(np.ptp(outline.data[0], axis=0), (96 * 0.65, 128 * 0.65))
    # a double-click on the mosaic moves the stage there, and the outline follows
    event = type(
        "Event", (), {"position": (12.5, 140.0), "type": "mouse_double_click", "modifiers": ()}
    )()
    mouse_double_click_callbacks(gui_viewer, event)
    qtbot.waitUntil(lambda: np.allclose(scope["XY"].get_position(), (140.0, 12.5)), timeout=5000)
    qtbot.waitUntil(lambda: np.allclose(outline.data[0].mean(axis=0), (12.5, 140.0)), timeout=5000)
    panel.field_of_view.close()


def test_a_multi_position_time_lapse_places_its_positions_with_a_time_slider(
    gui_viewer, scope, qtbot, tmp_path
):

    scope["Camera"].roi = (0, 0, 64, 64)
    panel = shown_panel(gui_viewer, qtbot)
    panel.multi_d.time_points.value = 3
    panel.multi_d.add_position_at(0.0, 0.0)
    panel.multi_d.add_position_at(200.0, 30.0)
    panel.storage.directory.value = tmp_path
    acquisition = run_panel(panel, qtbot, timeout=60000)
    [mosaic] = [layer for layer in gui_viewer.layers if layer.metadata.get("mosaic")]
    assert "time" in gui_viewer.dims.axis_labels and "position" not in gui_viewer.dims.axis_labels
    assert mosaic.data.shape[0] == 3
    assert mosaic.metadata["axis_values"]["time"] == range(3)
    handler = acquisition.data_handler
    stored = NDTiffReader(handler.storage.path).coordinates()
    assert len(stored) == 6
    for t in range(3):
        coordinates = [c for c in stored if c["time"] == t]
        assert_tiles_at_their_stage_positions(mosaic, handler, coordinates, (t,))


def test_overview_then_zoom_and_the_spiral_plan_show_their_tiles_in_place(
    gui_viewer, scope, qtbot, tmp_path
):

    scope["Camera"].roi = (0, 0, 64, 48)
    panel = shown_panel(gui_viewer, qtbot)
    acquisition = run_plan(
        panel, qtbot, "napari-exengine.plan.overview_then_zoom", tmp_path / "a", z_range_um=2.0
    )
    [mosaic] = [layer for layer in gui_viewer.layers if layer.metadata.get("mosaic")]
    assert tuple(mosaic.axis_labels) == ("scan", "z", "y", "x")
    overview = [
        {"scan": "overview", "row": r, "column": c, "z": 0} for r in range(3) for c in range(3)
    ]
    assert_tiles_at_their_stage_positions(mosaic, acquisition.data_handler, overview, (0, 0))
    # the zoom's z planes, at the chosen tile, each its own canvas on the scan and z sliders
    stored = NDTiffReader(acquisition.data_handler.storage.path).coordinates()
    zoom = [c for c in stored if c["scan"] == "zoom"]
    assert len(zoom) == 2 and mosaic.metadata["axis_values"]["scan"][1] == "zoom"
    for coords in zoom:
        index = (1, coords["z"])
        assert_tiles_at_their_stage_positions(mosaic, acquisition.data_handler, [coords], index)
    plan_id = next(i for i in panel.plans if i.startswith("exengine-spiral-plan."))
    acquisition = run_plan(panel, qtbot, plan_id, tmp_path / "b", turns=1, overlap=0.0)
    spiral = [layer for layer in gui_viewer.layers if layer.metadata.get("mosaic")][-1]
    assert spiral.data.ndim == 2  # no slider of its own: shown whatever the others show
    tiles = [{"tile": k} for k in range(9)]
    assert_tiles_at_their_stage_positions(spiral, acquisition.data_handler, tiles)


def test_snap_and_live_overlay_the_mosaic_where_the_stage_is(gui_viewer, scope, qtbot, tmp_path):
    """A Snap taken at a tile's stage position covers that tile of the mosaic, pixel for pixel;
    Live frames follow the stage."""
    from napari_exengine.acquisition_panel import AcquisitionPanel
    from napari_exengine.widgets import DevicesPanel

    scope["Camera"].roi = (0, 0, 128, 96)
    scope["XY"].set_position(100.0, -50.0)
    panel = AcquisitionPanel(gui_viewer)
    qtbot.addWidget(panel)
    acquisition = run_plan(
        panel, qtbot, "napari-exengine.plan.grid_scan", tmp_path, rows=2, columns=2, overlap=0.0
    )
    [mosaic] = [layer for layer in gui_viewer.layers if layer.metadata.get("mosaic")]
    _, metadata = acquisition.data_handler.get({"row": 1, "column": 1})
    x, y = metadata["StageX-um"], metadata["StageY-um"]
    scope["XY"].set_position(x, y)
    devices = DevicesPanel(gui_viewer)
    qtbot.addWidget(devices)
    devices.snap()
    qtbot.waitUntil(lambda: "Snap" in gui_viewer.layers, timeout=10000)
    snap = gui_viewer.layers["Snap"]
    assert tuple(snap.scale) == pytest.approx((0.65, 0.65))
    assert tuple(snap.translate) == pytest.approx((y - 48 * 0.65, x - 64 * 0.65))
    # the same field of view as the tile (the simulated camera adds fresh noise to each frame)
    top, left = ((np.asarray(snap.translate) - mosaic.translate) / 0.65).round().astype(int)
    tile = np.asarray(mosaic.data)[top : top + 96, left : left + 128].astype(float)
    assert np.corrcoef(tile.ravel(), np.asarray(snap.data, float).ravel())[0, 1] > 0.9
    devices.toggle_live()
    qtbot.waitUntil(lambda: "Live" in gui_viewer.layers, timeout=10000)
    live = gui_viewer.layers["Live"]
    assert tuple(live.translate) == pytest.approx(tuple(snap.translate))
    scope["XY"].set_position(x + 30.0, y - 20.0)
    qtbot.waitUntil(
        lambda: (
            tuple(live.translate) == pytest.approx((y - 20.0 - 48 * 0.65, x + 30.0 - 64 * 0.65))
        ),
        timeout=10000,
    )
    devices.toggle_live()
    qtbot.waitUntil(lambda: devices._live_worker is None, timeout=10000)
    panel.field_of_view.close()
