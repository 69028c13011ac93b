"""What the Acquisition panel tests share: a panel shown in the viewer, and a run to its end."""

from __future__ import annotations

from typing import Any


def shown_panel(viewer: Any, qtbot: Any) -> Any:
    """An Acquisition panel in ``viewer``, shown (a panel not shown reads no devices)."""
    from napari_exengine.acquisition_panel import AcquisitionPanel

    panel = AcquisitionPanel(viewer)
    qtbot.addWidget(panel)
    panel.show()
    return panel


def run_panel(panel: Any, qtbot: Any, timeout: int = 30000) -> Any:
    """Run the panel's acquisition and wait until it is finished and Run is enabled again."""
    acquisition = panel.run()
    assert acquisition is not None, panel.run_control.status.value
    qtbot.waitUntil(
        lambda: panel.run_control.run_button.enabled and acquisition.status().is_finished,
        timeout=timeout,
    )
    return acquisition
