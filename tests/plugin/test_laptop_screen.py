"""The window on a 1280x720 laptop screen: it fits, Run and the progress bar can be reached, and the
canvas keeps at least 40% of the window's width whatever the panels show.

The check needs a display of that size: ``test_the_window_fits_a_1280x720_screen`` runs it in a
pytest subprocess whose Xvfb is 1280x720 (this session's display may be larger).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui

SCREEN = (1280, 720)
CANVAS_SHARE = 0.4
LONG_STATUS = "Loaded 5 devices: " + ", ".join(f"mm1_LongDeviceName{i}" for i in range(12))


def reachable(widget) -> bool:
    """Scroll ``widget`` into view (in every scroll area holding it) and tell whether it is then
    shown whole inside its window and the screen."""
    from qtpy.QtCore import QRect
    from qtpy.QtWidgets import QScrollArea

    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QScrollArea) and parent.widget().isAncestorOf(widget):
            parent.ensureWidgetVisible(widget, 0, 0)
        parent = parent.parentWidget()
    window = widget.window()
    shown = QRect(widget.mapTo(window, widget.rect().topLeft()), widget.size())
    parent = widget.parentWidget()
    while parent is not None and parent is not window:
        visible = QRect(parent.mapTo(window, parent.rect().topLeft()), parent.size())
        if not visible.contains(shown):
            return False
        parent = parent.parentWidget()
    on_screen = QRect(window.mapToGlobal(shown.topLeft()), shown.size())
    return (
        widget.isVisible()
        and window.rect().contains(shown)
        and window.screen().geometry().contains(on_screen)
    )


@pytest.mark.parametrize("gui_viewer", [True], indirect=True)
def test_run_and_progress_are_reachable_and_the_canvas_keeps_its_share(gui_viewer, scope, qtbot):
    from qtpy.QtWidgets import QApplication

    screen = QApplication.primaryScreen()
    if (screen.size().width(), screen.size().height()) != SCREEN:
        pytest.skip("needs a 1280x720 display: test_the_window_fits_a_1280x720_screen runs it")
    viewer = gui_viewer
    window = viewer.window._qt_window
    _, devices = viewer.window.add_plugin_dock_widget("napari-exengine", "Devices")
    _, acquisition = viewer.window.add_plugin_dock_widget("napari-exengine", "Acquisition")
    canvas = viewer.window._qt_viewer.canvas.native
    run = acquisition.run_control.run_button.native
    progress = acquisition.run_control.progress.native
    available = screen.availableGeometry()

    def check(what: str) -> None:
        window.showMaximized()
        # what a window manager does when maximising (Xvfb has none)
        window.setGeometry(available)
        qtbot.wait(100)  # the layouts' updates are queued events

        def fits() -> None:
            assert window.geometry() == available, (what, window.geometry())
            minimum = window.minimumSizeHint()
            assert minimum.width() <= SCREEN[0] and minimum.height() <= SCREEN[1], (what, minimum)
            assert reachable(run) and reachable(progress), what
            share = canvas.width() / window.width()
            assert canvas.isVisible() and share >= CANVAS_SHARE, (what, canvas.width(), share)

        qtbot.waitUntil(fits, timeout=5000)

    check("docked panels")
    devices.status.value = LONG_STATUS
    check("a long Devices status")
    line = devices.status.native.fontMetrics().height()
    qtbot.waitUntil(lambda: devices.status.native.height() >= 2 * line, timeout=5000)  # wrapped
    for plan in acquisition.plans:
        acquisition.plan_choice.value = plan
        check(f"the plan {plan}")
    for processor in acquisition.processors.processors:
        acquisition.processors.add(processor)
    check("every processor")
    devices.toggle_live()
    qtbot.waitUntil(lambda: "Live" in viewer.layers, timeout=10000)
    check("the Live layer")
    devices.toggle_live()
    qtbot.waitUntil(lambda: devices._live_worker is None, timeout=10000)
    devices._refresh_timer.stop()
    qtbot.waitUntil(lambda: not devices._reading, timeout=10000)


@pytest.mark.slow
def test_the_window_fits_a_1280x720_screen():
    width, height = SCREEN
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        f"xvfb_width={width}",
        "-o",
        f"xvfb_height={height}",
        f"{__file__}::test_run_and_progress_are_reachable_and_the_canvas_keeps_its_share",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "CI": "true"},
    )
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-5000:]
