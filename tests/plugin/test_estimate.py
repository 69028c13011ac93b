"""The Acquisition panel's estimate follows camera changes made elsewhere, without the GUI thread
waiting on a device, and its device watch stops with the panel."""

from __future__ import annotations

import time

import pytest

from panel_helpers import shown_panel

pytestmark = pytest.mark.gui


def test_the_estimate_follows_an_roi_and_binning_change_made_elsewhere(gui_viewer, scope, qtbot):

    panel = shown_panel(gui_viewer, qtbot)
    assert panel.run_control.estimate.value.startswith("1 frame, 512.0 KiB") or "512" in (
        panel.run_control.estimate.value
    )
    before = panel.run_control.estimate.value
    scope["Camera"].roi = (0, 0, 128, 128)  # as a script or the Devices panel would
    qtbot.waitUntil(lambda: panel.run_control.estimate.value != before, timeout=5000)
    roi_changed = panel.run_control.estimate.value
    assert "32" in roi_changed  # 128 x 128 x 2 bytes
    scope["Camera"].binning = 2
    qtbot.waitUntil(lambda: panel.run_control.estimate.value != roi_changed, timeout=5000)
    assert "8" in panel.run_control.estimate.value  # 64 x 64 x 2 bytes


def test_the_estimate_never_waits_for_a_running_plan(gui_viewer, scope, qtbot, tmp_path):
    """A run keeps the devices' thread busy (frames of 300 ms): neither a device list refresh nor
    the device watch makes the GUI thread wait for it."""

    scope["Camera"].exposure = 300.0
    panel = shown_panel(gui_viewer, qtbot)
    panel.plan_choice.value = "napari-exengine.plan.grid_scan"
    panel.storage.directory.value = tmp_path
    panel.refresh_devices()  # first-time costs (imports) before the run
    acquisition = panel.run()
    assert acquisition is not None
    qtbot.waitUntil(lambda: acquisition.frames_stored >= 1, timeout=10000)
    longest = 0.0
    for _ in range(5):
        started = time.monotonic()
        panel.refresh_devices()
        panel.update_estimate()
        longest = max(longest, time.monotonic() - started)
        qtbot.wait(200)  # the watch's timer and the sink run meanwhile
    assert longest < 0.1
    assert not acquisition.status().is_finished  # measured while the plan ran
    qtbot.waitUntil(lambda: panel.run_control.run_button.enabled, timeout=30000)
    assert panel.run_control.estimate.value.startswith("9 frames")


def test_the_panels_timers_stop_when_it_closes(gui_viewer, scope, qtbot):
    from qtpy import sip

    from napari_exengine.acquisition_panel import AcquisitionPanel

    panel = AcquisitionPanel(gui_viewer)
    # a panel not shown (one left over from an engine shut down, its devices' thread gone) reads
    # no devices: a read would wait for ever
    qtbot.wait(1500)
    assert panel.device_watch._latest is None and panel.field_of_view.latest is None
    timers = [panel.device_watch._timer, panel.field_of_view._timer]
    assert all(timer.isActive() for timer in timers)
    callbacks = gui_viewer.mouse_double_click_callbacks
    assert panel.field_of_view._on_double_click in callbacks
    panel.close()
    panel.deleteLater()
    qtbot.waitUntil(lambda: all(sip.isdeleted(timer) for timer in timers), timeout=5000)
    assert panel.field_of_view._on_double_click not in callbacks
