"""A grid scan's region from a rectangle drawn in a napari Shapes layer: the rows and columns of
fields of view (with the plan's overlap) that cover it, and the XY stage moved to its centre, where
the grid scan centres its grid.

The camera is read and the stage moved on the engine's main executor thread
(:class:`~napari_exengine.stage_controls.EngineCalls`); the GUI thread never waits for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui import widgets as mw
from qtpy.QtCore import QObject

from exengine.plan_helpers import field_of_view_um

from .field_of_view import LAYER_NAME
from .panel_common import show_as_error, wrapping
from .stage_controls import EngineCalls

__all__ = ["GridRegion", "drawn_rectangle", "grid_covering"]

#: The plan whose region a rectangle defines.
GRID_SCAN = "napari-exengine.plan.grid_scan"


def drawn_rectangle(viewer: Any) -> np.ndarray | None:
    """The corners (world y, x in µm) of the rectangle to scan: the last selected rectangle of the
    active Shapes layer, else the last rectangle drawn in any Shapes layer (the newest layer first;
    the field of view's outline is not one); ``None`` without a rectangle."""
    shapes = [layer for layer in viewer.layers if layer.__class__.__name__ == "Shapes"]
    shapes = [layer for layer in shapes if layer.name != LAYER_NAME]
    active = viewer.layers.selection.active
    if any(layer is active for layer in shapes):
        shapes.remove(active)
        shapes.append(active)
    for layer in reversed(shapes):
        rectangles = [i for i, kind in enumerate(layer.shape_type) if kind == "rectangle"]
        chosen = [i for i in rectangles if i in layer.selected_data] or rectangles
        if chosen:
            corners = np.asarray(layer.data[chosen[-1]])
            return np.array([layer.data_to_world(c) for c in corners])[:, -2:]
    return None


def grid_covering(
    corners: np.ndarray, field_of_view: tuple[float, float], overlap: float
) -> tuple[int, int, tuple[float, float]]:
    """The rows, columns and centre (x, y in µm) of the grid of fields of view (width, height in
    µm) overlapping by ``overlap`` that covers the rectangle with ``corners`` (y, x in µm)."""
    (top, left), (bottom, right) = corners.min(axis=0), corners.max(axis=0)
    width, height = field_of_view
    counts = []
    for extent, side in ((bottom - top, height), (right - left, width)):
        step = side * (1 - overlap)
        counts.append(max(1, math.ceil((extent - side) / step - 1e-9) + 1))
    return counts[0], counts[1], ((left + right) / 2, (top + bottom) / 2)


class GridRegion(mw.Container):
    """*Scan the drawn rectangle*: sets the grid scan form's rows and columns to cover the
    rectangle (:func:`drawn_rectangle`) and moves the XY stage to its centre; what it did, or why
    it could not, is said below the button (in red)."""

    def __init__(
        self,
        viewer: Any,
        stage_and_camera: Callable[[], tuple[Any, Any]],
        plan_form: mw.Container,
        parent: QObject,
    ) -> None:
        self.button = mw.PushButton(
            text="Scan the drawn rectangle",
            tooltip="rows and columns to cover the rectangle drawn in a Shapes layer (the selected "
            "one), and the XY stage moved to its centre",
        )
        self.message = wrapping(mw.Label(value="", visible=False))
        super().__init__(widgets=[self.button, self.message], labels=False, visible=False)
        self.margins = (0, 0, 0, 0)
        self._viewer, self._devices, self._form = viewer, stage_and_camera, plan_form
        self._calls = EngineCalls(parent)
        self.button.clicked.connect(self.apply)

    def say(self, message: str, error: bool = False) -> None:
        """Show ``message`` below the button (an ``error`` in red); empty hides it."""
        self.message.value = message
        self.message.visible = bool(message)
        show_as_error(self.message, error)

    def apply(self, *_: Any) -> bool:
        """Fit the grid to the drawn rectangle and move the stage to its centre (on the engine);
        False when there is no rectangle, stage or camera (said in red)."""
        corners = drawn_rectangle(self._viewer)
        stage, camera = self._devices()
        if corners is None:
            self.say("Draw a rectangle in a Shapes layer first", error=True)
            return False
        if stage is None or camera is None:
            self.say("Scanning a region needs an XY stage and a camera", error=True)
            return False
        overlap = float(self._form.overlap.value)

        def fit() -> tuple[int, int, tuple[float, float]]:
            rows, columns, centre = grid_covering(corners, field_of_view_um(camera), overlap)
            stage.set_position(*centre)
            return rows, columns, centre

        def fitted(grid: tuple[int, int, tuple[float, float]]) -> None:
            rows, columns, (x, y) = grid
            self._form.rows.value, self._form.columns.value = rows, columns
            self.say(f"{rows} rows by {columns} columns of tiles around x {x:.1f} µm, y {y:.1f} µm")

        self.say("Moving the stage to the rectangle's centre…")
        self._calls.call(fit, fitted, lambda e: self.say(f"Cannot scan the rectangle: {e}", True))
        return True
