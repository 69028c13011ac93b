"""The estimate's duration comes from the devices' timings: each frame its camera's interval at its
channel's exposure, a time-lapse's schedule, and the moves of devices that declare how long they
take. (How close representative runs come to it is measured in ``benchmarks/bench_estimate.py``:
speed is not asserted in tests.)"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.gui

PLANS = {
    "t": {"time_points": 100},
    "tz": {"time_points": 20, "use_z": True},
    "tcz, 2 channels": {"time_points": 10, "use_z": True, "channels": ["DAPI", "FITC"]},
    "tp, 4 positions": {"time_points": 25, "positions": [(0, 0), (100, 0), (0, 100), (100, 100)]},
    "tc, exposure per channel": {
        "time_points": 10,
        "channels": ["DAPI", "FITC"],
        "exposures": {"DAPI": 20.0, "FITC": 45.0},
    },
    "tcz every 0.5 s": {
        "time_points": 3,
        "interval_s": 0.5,
        "use_z": True,
        "channels": ["DAPI", "FITC"],
    },
}


@pytest.fixture
def panel(gui_viewer, scope, qtbot, tmp_path):
    """The Acquisition panel on the simulated microscope with its default camera timing."""
    from napari_exengine.acquisition_panel import AcquisitionPanel

    scope["Camera"].exposure = 10.0
    scope["Camera"].frame_rate_limit = 100.0
    panel = AcquisitionPanel(gui_viewer)
    qtbot.addWidget(panel)
    panel.show()
    panel.storage.directory.value = tmp_path
    return panel


def set_plan(form, plan: dict) -> None:
    plan = dict(plan)
    for x, y in plan.pop("positions", []):
        form.add_position_at(x, y)
    form.channels.value = plan.pop("channels", [])
    exposures = plan.pop("exposures", None)
    if exposures:
        form.per_channel_exposure.value = True
        for channel, exposure in exposures.items():
            form._exposure_boxes[channel].value = exposure
    for name, value in plan.items():
        getattr(form, name).value = value


@pytest.mark.parametrize("name", list(PLANS))
def test_the_estimate_adds_up_the_devices_timings(panel, name):
    """At least every frame's camera interval (at its channel's exposure), and no less than the
    time-lapse's schedule; a few milliseconds a frame at most beyond (the measured per-frame
    cost)."""
    plan = PLANS[name]
    set_plan(panel.multi_d, plan)
    checked = panel.update_estimate()
    assert checked is not None, panel.run_control.estimate.value
    exposures = plan.get("exposures") or {}
    frames = checked.total_frames
    per_channel = [max(e / 1000.0, 0.01) for e in exposures.values()] or [0.01]
    least = frames * sum(per_channel) / len(per_channel)
    if "interval_s" in plan:
        least = max(least, (plan["time_points"] - 1) * plan["interval_s"])
    assert least <= checked.duration_s <= least + frames * 0.005 + 0.1


def test_declared_move_times_count(panel, scope, qtbot):
    """A focus drive that declares ``move_time_s`` adds it for each move the plan makes."""
    from exengine.devices.simulated import SimulatedZStage

    class SlowFocus(SimulatedZStage):
        move_time_s = 0.04

        def set_position(self, position: float) -> None:
            time.sleep(self.move_time_s)
            super().set_position(position)

    slow = SlowFocus("SlowZ", microscope=scope["Camera"].microscope)
    panel.refresh_devices()
    panel.multi_d.channels.value = []
    set_plan(panel.multi_d, {"time_points": 6, "use_z": True})
    before = panel.update_estimate().duration_s
    panel.z_choice.value = slow
    checked = panel.update_estimate()
    assert checked.duration_s == pytest.approx(before + 30 * 0.04)  # 6 stacks of 5 planes: 30 moves
    acquisition = panel.run()
    qtbot.waitUntil(lambda: acquisition.status().is_finished, timeout=30000)
    assert acquisition.elapsed_s() >= 30 * 0.04  # the moves did take their time
