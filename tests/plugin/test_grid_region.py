"""A rectangle drawn in a napari Shapes layer defines a grid scan's region: rows and columns from
the camera's field of view and the overlap, the stage moved to its centre, and the mosaic covers
it."""

from __future__ import annotations

import numpy as np
import pytest

from panel_helpers import run_panel, shown_panel

pytestmark = pytest.mark.gui


def test_grid_covering_counts_fields_of_view_with_their_overlap():
    from napari_exengine.grid_region import grid_covering

    corners = np.array([[0.0, 0.0], [150.0, 300.0]])  # y, x (µm)
    assert grid_covering(corners, (100.0, 50.0), 0.0) == (3, 3, (150.0, 75.0))
    assert grid_covering(corners, (100.0, 50.0), 0.5) == (5, 5, (150.0, 75.0))
    assert grid_covering(corners, (400.0, 200.0), 0.1) == (1, 1, (150.0, 75.0))


def test_a_drawn_rectangle_sets_the_grid_and_the_mosaic_covers_it(
    gui_viewer, scope, qtbot, tmp_path
):
    from napari_exengine.panel_common import ERROR_COLOUR

    scope["Camera"].roi = (0, 0, 128, 96)  # 83.2 x 62.4 µm
    panel = shown_panel(gui_viewer, qtbot)
    region = panel.grid_region
    assert region.native.isHidden()  # only for the grid scan
    panel.plan_choice.value = "napari-exengine.plan.grid_scan"
    assert not region.native.isHidden()
    assert region.apply() is False
    assert region.message.value == "Draw a rectangle in a Shapes layer first"
    assert ERROR_COLOUR in region.message.native.styleSheet()
    gui_viewer.add_shapes([[0.0, 0.0], [150.0, 300.0]], shape_type="rectangle", name="region")
    panel.plan_form.overlap.value = 0.1
    region.button.clicked()
    qtbot.waitUntil(lambda: "rows by" in region.message.value, timeout=5000)
    # (150 - 62.4) / 56.16 steps: 3 rows; (300 - 83.2) / 74.88 steps: 4 columns
    assert (panel.plan_form.rows.value, panel.plan_form.columns.value) == (3, 4)
    assert scope["XY"].get_position() == pytest.approx((150.0, 75.0))
    assert ERROR_COLOUR not in region.message.native.styleSheet()
    panel.storage.directory.value = tmp_path
    run_panel(panel, qtbot, timeout=60000)
    [mosaic] = [layer for layer in gui_viewer.layers if layer.metadata.get("mosaic")]
    top_left = np.asarray(mosaic.translate)[-2:]
    bottom_right = top_left + np.asarray(mosaic.data.shape[-2:]) * np.asarray(mosaic.scale)[-2:]
    assert (top_left <= (0.0, 0.0)).all() and (bottom_right >= (150.0, 300.0)).all()
    panel.field_of_view.close()
