"""Stage and focus in the Devices panel, under a real viewer: each positioner shows its position,
kept fresh, and moves to a typed target or by jog steps of a chosen size; errors are shown in red
beside the control; slow moves leave the GUI responsive; nothing outlives the panel or the engine;
Load devices and Snap clicked during a run say that they wait for it."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from exengine.device_types import SingleAxisPositioner

pytestmark = pytest.mark.gui


class SlowFocus(SingleAxisPositioner):
    """A focus drive taking 1 s per move."""

    def __init__(self) -> None:
        super().__init__("SlowFocus")
        self._z = 0.0
        self._moving = threading.Event()

    def set_position(self, position: float) -> None:
        self._moving.set()
        time.sleep(1.0)
        self._z = float(position)
        self._moving.clear()

    def get_position(self) -> float:
        return self._z


@pytest.fixture
def panel(gui_viewer, scope, qtbot):
    """The Devices panel on the simulated microscope, closed afterwards."""
    from napari_exengine.widgets import DevicesPanel

    panel = DevicesPanel(gui_viewer)
    qtbot.addWidget(panel)
    return panel


def type_target(stage, *values: str) -> None:
    for field, value in zip(stage.targets, values, strict=True):
        field.value = value


def test_positions_show_and_follow_moves_made_elsewhere(panel, scope, qtbot):
    assert set(panel.stages) == {"XY", "Z"}
    assert ("Z", "position") not in panel.controls  # the stage controls show it
    qtbot.waitUntil(lambda: panel.stages["XY"].position.value.startswith("at x"), timeout=5000)
    scope["XY"].set_position(120.5, -30.25)
    scope["Z"].set_position(7.5)
    qtbot.waitUntil(
        lambda: panel.stages["XY"].position.value == "at x 120.50 µm, y -30.25 µm", timeout=5000
    )
    qtbot.waitUntil(lambda: panel.stages["Z"].position.value == "at z 7.50 µm", timeout=5000)


def test_go_moves_xy_and_z_to_typed_targets(panel, scope, qtbot):
    xy, z = panel.stages["XY"], panel.stages["Z"]
    type_target(xy, "250", "-100.5")
    xy.go_button.clicked()
    qtbot.waitUntil(lambda: scope["XY"].get_position() == (250.0, -100.5), timeout=5000)
    qtbot.waitUntil(lambda: xy.position.value == "at x 250.00 µm, y -100.50 µm", timeout=5000)
    type_target(xy, "", "20")  # an empty field keeps its axis
    xy.go_button.clicked()
    qtbot.waitUntil(lambda: scope["XY"].get_position() == (250.0, 20.0), timeout=5000)
    type_target(z, "-12.25")
    z.targets[0].native.returnPressed.emit()  # Enter moves too
    qtbot.waitUntil(lambda: scope["Z"].get_position() == -12.25, timeout=5000)
    qtbot.waitUntil(lambda: z.position.value == "at z -12.25 µm", timeout=5000)
    assert not z.message.visible


def test_jogs_move_by_the_chosen_step_in_their_direction(panel, scope, qtbot):
    xy, z = panel.stages["XY"], panel.stages["Z"]
    scope["XY"].set_position(0.0, 0.0)
    scope["Z"].set_position(0.0)
    xy.step.value = 10.0
    xy.jog_buttons[("x", 1)].clicked()
    qtbot.waitUntil(lambda: scope["XY"].get_position() == (10.0, 0.0), timeout=5000)
    xy.jog_buttons[("y", -1)].clicked()
    qtbot.waitUntil(lambda: scope["XY"].get_position() == (10.0, -10.0), timeout=5000)
    xy.step.value = 100.0
    xy.jog_buttons[("x", -1)].clicked()
    qtbot.waitUntil(lambda: scope["XY"].get_position() == (-90.0, -10.0), timeout=5000)
    z.step.value = 0.1
    z.jog_buttons[("z", 1)].clicked()
    z.jog_buttons[("z", 1)].clicked()  # clicked twice at once: two steps
    qtbot.waitUntil(lambda: scope["Z"].get_position() == pytest.approx(0.2), timeout=5000)
    z.step.value = 1.0
    z.jog_buttons[("z", -1)].clicked()
    qtbot.waitUntil(lambda: scope["Z"].get_position() == pytest.approx(-0.8), timeout=5000)
    qtbot.waitUntil(lambda: z.position.value == "at z -0.80 µm", timeout=5000)


def test_refused_targets_are_said_in_red_beside_the_control_and_nothing_moves(panel, scope, qtbot):
    from napari_exengine.panel_common import ERROR_COLOUR

    xy, z = panel.stages["XY"], panel.stages["Z"]
    scope["XY"].set_position(5.0, 6.0)
    scope["Z"].set_position(1.0)
    type_target(z, "6000")  # the simulated focus drive's limits are ±5000 µm
    z.go_button.clicked()
    qtbot.waitUntil(lambda: "did not move" in z.message.value, timeout=5000)
    assert z.message.value.startswith("Z did not move to z 6000.00 µm: ")
    assert "5000" in z.message.value and ERROR_COLOUR in z.message.native.styleSheet()
    assert not z.message.native.isHidden() and scope["Z"].get_position() == 1.0
    type_target(z, "2")
    z.go_button.clicked()
    qtbot.waitUntil(lambda: scope["Z"].get_position() == 2.0, timeout=5000)
    qtbot.waitUntil(lambda: not z.message.visible, timeout=5000)
    for typed in ("abc", "nan", "1e999"):
        type_target(xy, typed, "1")
        assert xy.go() is False
        assert xy.message.value == f"target x: {typed!r} is not a number of µm"
        assert ERROR_COLOUR in xy.message.native.styleSheet()
    type_target(xy, "", "")
    assert xy.go() is False and "type a target" in xy.message.value
    qtbot.wait(200)  # no move was started; give one the time to happen if it were
    assert scope["XY"].get_position() == (5.0, 6.0)


def test_a_slow_move_does_not_block_the_gui_thread(gui_viewer, scope, qtbot):
    from magicgui import widgets as mw
    from qtpy.QtCore import QTimer

    from napari_exengine.widgets import DevicesPanel

    focus = SlowFocus()
    panel = DevicesPanel(gui_viewer)
    qtbot.addWidget(panel)
    stage = panel.stages["SlowFocus"]
    type_target(stage, "3")
    started = time.monotonic()
    stage.go_button.clicked()
    assert time.monotonic() - started < 0.5
    qtbot.waitUntil(focus._moving.is_set, timeout=2000)
    assert stage.message.value == "moving…"
    other = mw.Label(value="before")
    QTimer.singleShot(50, lambda: setattr(other, "value", "after"))
    qtbot.waitUntil(lambda: other.value == "after", timeout=800)
    assert focus._moving.is_set(), "the GUI thread went on during the move"
    qtbot.waitUntil(lambda: stage.position.value == "at z 3.00 µm", timeout=5000)


def test_the_panel_with_stage_controls_keeps_within_its_width(gui_viewer, scope, qtbot):
    from napari_exengine.panel_common import PANEL_WIDTH

    _, panel = gui_viewer.window.add_plugin_dock_widget("napari-exengine", "Devices")
    qtbot.wait(100)  # the layouts' updates are queued events
    for stage in panel.stages.values():
        assert stage.native.minimumSizeHint().width() <= PANEL_WIDTH - 40
    assert panel.minimumSizeHint().width() <= PANEL_WIDTH
    assert panel.sizeHint().width() <= PANEL_WIDTH


@pytest.mark.parametrize(
    ("backend", "xy_name", "z_name"),
    [("micromanager", "mm1_XY", "mm1_Focus"), ("microscope", "pm1_StageXY", "pm1_StageZ")],
)
def test_loaded_backends_stages_get_controls(panel, qtbot, backend, xy_name, z_name):
    from exengine import ExecutionEngine

    panel.backend.value = backend
    panel.load_devices()
    qtbot.waitUntil(lambda: panel.status.value.startswith("Loaded"), timeout=20000)
    xy, focus = panel.stages[xy_name], panel.stages[z_name]
    type_target(xy, "30", "-40")
    xy.go_button.clicked()
    qtbot.waitUntil(lambda: xy.position.value == "at x 30.00 µm, y -40.00 µm", timeout=5000)
    assert ExecutionEngine.get_device(xy_name).get_position() == pytest.approx((30.0, -40.0))
    focus.step.value = 10.0
    before = ExecutionEngine.get_device(z_name).get_position()
    focus.jog_buttons[("z", 1)].clicked()
    qtbot.waitUntil(
        lambda: ExecutionEngine.get_device(z_name).get_position() == pytest.approx(before + 10),
        timeout=5000,
    )


def test_reading_stops_when_the_panel_closes_or_the_engine_is_shut_down(gui_viewer, scope, qtbot):
    """A closed panel reads no device; after the engine it was made with is shut down, the panel
    makes no new engine and moves no stage of the old device set; once gone, nothing keeps it."""
    from exengine import ExecutionEngine
    from napari_exengine.widgets import DevicesPanel

    panel = DevicesPanel(gui_viewer)
    z = panel.stages["Z"]
    qtbot.waitUntil(lambda: z.position.value == "at z 0.00 µm", timeout=5000)
    panel.close()
    assert not panel._refresh_timer.isActive()
    panel.show()
    assert panel._refresh_timer.isActive()
    ExecutionEngine.get_instance().shutdown()
    panel.refresh()
    assert not panel._refresh_timer.isActive() and panel._calls.closed
    panel.stages["Z"].jog("z", 1)
    qtbot.wait(200)
    assert ExecutionEngine._instance is None, "a stale panel started a new engine"
    panel.show()
    assert not panel._refresh_timer.isActive()
    panel.close()
    gone = weakref.ref(panel)
    panel = z = None  # the test's own references gone
    gc.collect()
    qtbot.wait(50)
    gc.collect()
    assert gone() is None, "something keeps the panel (and its devices) alive"


def focus_into(widget) -> None:
    """Give ``widget`` the keyboard focus as a click into it would (the window need not show)."""
    from qtpy.QtCore import QEvent
    from qtpy.QtGui import QFocusEvent
    from qtpy.QtWidgets import QApplication

    QApplication.sendEvent(widget.native, QFocusEvent(QEvent.Type.FocusIn))


def test_the_position_list_goes_to_updates_and_removes_the_selected_row(gui_viewer, scope, qtbot):
    from napari_exengine.panel_common import ERROR_COLOUR
    from napari_exengine.widgets import AcquisitionPanel

    panel = AcquisitionPanel(gui_viewer)
    form = panel.multi_d
    assert [w.value for w in form.position_header] == ["label", "x (µm)", "y (µm)", "z (µm)"]
    assert form.position_header.native.isHidden()  # no positions yet
    scope["XY"].set_position(120.0, -40.0)
    scope["Z"].set_position(7.5)
    form.add_position.clicked.emit()  # x and y from the stage, z from the focus drive
    qtbot.waitUntil(lambda: len(form.position_rows) == 1, timeout=5000)
    qtbot.waitUntil(lambda: form.position_rows[0][3].value == "7.5", timeout=5000)
    form.add_position_at(0.0, 0.0, "B", z=2.0)
    form.add_position_at(300.0, 50.0, "C")  # no z: the focus stays
    assert not form.position_header.native.isHidden() and form.selected_index == 2
    focus_into(form.position_rows[1][1])  # a click into B's x
    assert form.selected_index == 1
    form.go_to_position.clicked()
    qtbot.waitUntil(lambda: scope["XY"].get_position() == (0.0, 0.0), timeout=5000)
    qtbot.waitUntil(lambda: form.position_message.value.startswith("at B"), timeout=5000)
    assert scope["Z"].get_position() == 2.0
    assert form.position_message.value == "at B (x 0.00 µm, y 0.00 µm, z 2.00 µm)"
    focus_into(form.position_rows[2][0])
    form.go_to_position.clicked()
    qtbot.waitUntil(lambda: scope["XY"].get_position() == (300.0, 50.0), timeout=5000)
    assert scope["Z"].get_position() == 2.0
    scope["XY"].set_position(11.0, 12.0)
    scope["Z"].set_position(3.0)
    focus_into(form.position_rows[0][3])
    form.update_position.clicked()
    qtbot.waitUntil(lambda: form.position_rows[0][1].value == 11.0, timeout=5000)
    assert [w.value for w in form.position_rows[0]] == ["Pos0", 11.0, 12.0, "3.0"]
    form.remove_position.clicked()
    assert [row[0].value for row in form.position_rows] == ["B", "C"]
    assert form.selected_index == 0 and form.positions_label.value == "2 positions"
    stages = form.settings(panel.channel_device).sequence.stage_positions
    assert [(p.x, p.y, p.z) for p in stages] == [(0.0, 0.0, 2.0), (300.0, 50.0, None)]
    form.position_rows[0][3].value = "6000"  # beyond the focus drive's ±5000 µm
    form.go_to_position.clicked()
    qtbot.waitUntil(lambda: "Could not go to B" in form.position_message.value, timeout=5000)
    assert "z 6000.00 µm" in form.position_message.value and "5000" in form.position_message.value
    assert ERROR_COLOUR in form.position_message.native.styleSheet()
    assert scope["Z"].get_position() == 3.0


def test_devices_and_snap_say_they_wait_for_a_run(gui_viewer, scope, qtbot):
    """Clicked during a run, Load devices and Snap say at once that they wait for it, and do their
    work once it ends; stage moves and position reads go on between the run's steps."""
    from napari_exengine.widgets import AcquisitionPanel, DevicesPanel

    scope["Camera"].exposure = 20.0
    devices = DevicesPanel(gui_viewer)
    qtbot.addWidget(devices)
    acquisition_panel = AcquisitionPanel(gui_viewer)
    acquisition_panel.multi_d.time_points.value = 500  # 10 s at most
    acquisition_panel.storage.backend.value = "napari-exengine.storage.ndram"
    acquisition = acquisition_panel.run()
    qtbot.waitUntil(lambda: acquisition.frames_stored >= 2, timeout=10000)
    devices.snap()
    qtbot.waitUntil(lambda: devices.status.value.startswith("Snap waits"), timeout=5000)
    assert devices.status.value == "Snap waits for the running acquisition to end…"
    assert devices.snap() is None and "not done yet" in devices.status.value
    devices.backend.value = "microscope"
    devices.load_devices()
    qtbot.waitUntil(lambda: devices.status.value.startswith("Loading devices waits"), timeout=5000)
    z = devices.stages["Z"]
    z.step.value = 10.0
    z.jog("z", 1)  # between the run's steps (a device call from here would wait for the run)
    qtbot.waitUntil(lambda: z.position.value == "at z 10.00 µm", timeout=5000)
    assert acquisition.is_running() and "Snap" not in gui_viewer.layers
    acquisition_panel.stop()
    qtbot.waitUntil(lambda: "Snap" in gui_viewer.layers, timeout=20000)
    assert acquisition.frames_stored < 500 and scope["Z"].get_position() == 10.0
    qtbot.waitUntil(lambda: devices.status.value.startswith("Loaded"), timeout=20000)
    assert "pm1_StageZ" in devices.stages
    qtbot.waitUntil(lambda: acquisition_panel.run_control.run_button.enabled, timeout=10000)


def test_the_position_list_uses_the_stages_chosen_in_the_panel(gui_viewer, scope, qtbot):
    """Add current position, Go to and Update read and move the XY stage and focus drive chosen
    in the Acquisition panel, not the first registered ones."""
    from exengine.devices.simulated import create_simulated_devices
    from napari_exengine.widgets import AcquisitionPanel

    other = create_simulated_devices(prefix="b_")
    panel = AcquisitionPanel(gui_viewer)
    panel.xy_choice.value, panel.z_choice.value = other["b_XY"], other["b_Z"]
    form = panel.multi_d
    scope["XY"].set_position(1.0, 2.0)
    scope["Z"].set_position(3.0)
    other["b_XY"].set_position(40.0, -50.0)
    other["b_Z"].set_position(6.5)
    form.add_position.clicked.emit()
    qtbot.waitUntil(lambda: len(form.position_rows) == 1, timeout=5000)
    assert [w.value for w in form.position_rows[0]] == ["Pos0", 40.0, -50.0, "6.5"]
    form.position_rows[0][1].value, form.position_rows[0][3].value = 70.0, "-2.0"
    form.go_to_position.clicked()
    qtbot.waitUntil(lambda: other["b_XY"].get_position() == (70.0, -50.0), timeout=5000)
    qtbot.waitUntil(lambda: other["b_Z"].get_position() == -2.0, timeout=5000)
    assert scope["XY"].get_position() == (1.0, 2.0) and scope["Z"].get_position() == 3.0
    other["b_XY"].set_position(8.0, 9.0)
    other["b_Z"].set_position(1.25)
    form.update_position.clicked()
    qtbot.waitUntil(lambda: form.position_rows[0][1].value == 8.0, timeout=5000)
    assert [w.value for w in form.position_rows[0]] == ["Pos0", 8.0, 9.0, "1.25"]
    form.stage_devices = lambda: (other["b_XY"], None)  # no focus drive: added without z
    form.add_position.clicked.emit()
    qtbot.waitUntil(lambda: len(form.position_rows) == 2, timeout=5000)
    assert [w.value for w in form.position_rows[1]] == ["Pos1", 8.0, 9.0, ""]
