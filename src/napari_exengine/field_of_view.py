"""The camera's field of view outlined where the XY stage is, beside the mosaic; a double-click on
the canvas moves the stage there.

The stage and camera are read on a thread of their own (a device call waits for the device's
executor thread, which a running plan keeps busy), one read at a time; a timer on the GUI thread
shows the newest result in a Shapes layer. The outline appears once the viewer shows a mosaic.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer

from exengine.plan_helpers import field_of_view_um

from .panel_common import run_in_thread

#: How often the stage is read (ms).
POLL_MS = 250
#: The Shapes layer's name.
LAYER_NAME = "field of view"

#: The XY stage and the camera (either ``None`` when there is none).
Devices = Callable[[], tuple[Any, Any]]


class FieldOfView:
    """Outlines the field of view of ``devices()``'s camera at its XY stage's position in
    ``viewer`` and moves the stage to a double-clicked point, unless ``busy()`` (a run is using
    the stage). The timer is a child of ``parent``: it stops when ``parent`` goes."""

    def __init__(
        self, viewer: Any, devices: Devices, busy: Callable[[], bool], parent: QObject
    ) -> None:
        self.viewer, self._devices, self._busy = viewer, devices, busy
        self.layer: Any = None
        #: The newest reading: stage x, y and field of view width, height (µm).
        self.latest: tuple[float, float, float, float] | None = None
        self._shown: tuple[float, float, float, float] | None = None
        self._reading = False
        self._timer = QTimer(parent)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        viewer.mouse_double_click_callbacks.append(self._on_double_click)

    def close(self) -> None:
        """Stop reading the stage and answering double-clicks (the layer stays)."""
        with contextlib.suppress(RuntimeError):  # the timer went with its parent
            self._timer.stop()
        callbacks = self.viewer.mouse_double_click_callbacks
        if self._on_double_click in callbacks:
            callbacks.remove(self._on_double_click)

    def _mosaic_shown(self) -> bool:
        return any(layer.metadata.get("mosaic") for layer in self.viewer.layers)

    def _tick(self) -> None:
        if self.layer is None and not self._mosaic_shown():
            return
        self._show()
        if self._reading:
            return
        stage, camera = self._devices()
        if stage is None or camera is None:
            return
        self._reading = True
        threading.Thread(target=self._read, args=(stage, camera), daemon=True).start()

    def _read(self, stage: Any, camera: Any) -> None:
        """Read the stage and the camera's field of view (off the GUI thread)."""
        try:
            x, y = stage.get_position()[:2]
            width, height = field_of_view_um(camera)
            self.latest = (float(x), float(y), float(width), float(height))
        except Exception:  # a device that cannot answer now: the outline stays where it was
            pass
        finally:
            self._reading = False

    def _show(self) -> None:
        """Draw the newest reading (GUI thread); a layer the user removed is not drawn again."""
        latest = self.latest
        if latest is None or latest == self._shown:
            return
        if self.layer is not None and self.layer not in self.viewer.layers:
            return
        self._shown = latest
        x, y, width, height = latest
        corners = [[y - height / 2, x - width / 2], [y + height / 2, x + width / 2]]
        if self.layer is None:
            active = self.viewer.layers.selection.active
            self.layer = self.viewer.add_shapes(
                [corners],
                shape_type="rectangle",
                edge_color="yellow",
                face_color="transparent",
                edge_width=max(width, height) / 100,
                name=LAYER_NAME,
            )
            if active is not None:  # the acquisition's layer stays the one selected
                self.viewer.layers.selection.active = active
        else:
            self.layer.data = [corners]
            self.layer.edge_width = [max(width, height) / 100]

    def _on_double_click(self, viewer: Any, event: Any) -> None:
        """Move the XY stage to the double-clicked point (on a thread), when a mosaic is shown and
        no run is using the stage."""
        if self.layer is None or self._busy():
            return
        active = viewer.layers.selection.active
        if str(getattr(active, "mode", "pan_zoom")) != "pan_zoom":
            return  # drawing or selecting in the active layer
        stage, _ = self._devices()
        if stage is None:
            return
        y, x = (float(v) for v in event.position[-2:])
        viewer.status = f"Moving {stage.name} to x={x:.1f} µm, y={y:.1f} µm"
        run_in_thread(lambda: stage.set_position(x, y), what=f"Moving {stage.name}")
