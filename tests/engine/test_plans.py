"""Built-in plans (grid scan, the two adaptive examples) and plans as npe2 contributions."""

from __future__ import annotations

import pytest
from npe2 import PluginManager, PluginManifest

from exengine.acquisition import Acquisition, PlanError
from exengine.data import DataHandler
from exengine.devices.simulated import BRIGHT_REGION_UM, SimulatedMicroscope
from exengine.plan_helpers import field_of_view_um
from exengine.plans import acquire_until, grid_scan, overview_then_zoom
from exengine.storage import NDRAMStorage
from napari_exengine.contributions import (
    DEFAULT_PLAN,
    build_plan,
    get_contribution,
    list_contributions,
)


def run(plan, handler, timeout=60):
    acquisition = Acquisition(plan, handler)
    acquisition.start()
    acquisition.await_completion(timeout=timeout)
    return acquisition


def test_grid_scan_tiles_around_the_current_position(scope):
    scope["XY"].set_position(100.0, 200.0)
    handler = DataHandler(NDRAMStorage())
    acquisition = run(grid_scan(rows=2, columns=3, overlap=0.1, data_handler=handler), handler)
    assert acquisition.total_frames == 6
    width, height = field_of_view_um(scope["Camera"])
    coords = handler.storage.get_coordinates_list()
    stored = {(c["row"], c["column"]): handler.get(c, return_data=False) for c in coords}
    assert sorted(stored) == [(r, c) for r in range(2) for c in range(3)]
    for (row, column), metadata in stored.items():
        assert metadata["StageX-um"] == pytest.approx(100.0 + (column - 1) * width * 0.9)
        assert metadata["StageY-um"] == pytest.approx(200.0 + (row - 0.5) * height * 0.9)


def test_grid_scan_settings_are_checked(scope):
    with pytest.raises(ValueError, match="rows must be a whole number of at least 1, got 0"):
        grid_scan(rows=0)
    with pytest.raises(ValueError, match="overlap"):
        grid_scan(overlap=1.5)


def test_overview_then_zoom_picks_the_brightest_tile(scope):
    """The simulated specimen is stained brightest around BRIGHT_REGION_UM: the zoom must go to the
    tile nearest to it, and the z-stack must be taken there."""
    scope["XY"].set_position(BRIGHT_REGION_UM[0] - 300.0, BRIGHT_REGION_UM[1] + 300.0)
    width, height = field_of_view_um(scope["Camera"])
    x0, y0 = scope["XY"].get_position()
    tiles = {
        (r, c): (x0 + (c - 1) * width, y0 + (r - 1) * height) for r in range(3) for c in range(3)
    }
    expected = max(tiles, key=lambda rc: SimulatedMicroscope.staining(*tiles[rc]))
    assert expected != (1, 1)  # not simply the tile in the middle
    handler = DataHandler(NDRAMStorage())
    acquisition = run(
        overview_then_zoom(rows=3, columns=3, z_range_um=4, z_step_um=2, data_handler=handler),
        handler,
    )
    assert acquisition.total_frames == 9 + 3
    coords = handler.storage.get_coordinates_list()
    zoom = [c for c in coords if c["scan"] == "zoom"]
    assert len(coords) == 12 and len(zoom) == 3
    assert {(c["row"], c["column"]) for c in zoom} == {expected}
    metadata = [handler.get(c, return_data=False) for c in zoom]
    assert [m["StageZ-um"] for m in metadata] == [-2.0, 0.0, 2.0]
    assert (metadata[0]["StageX-um"], metadata[0]["StageY-um"]) == pytest.approx(tiles[expected])
    assert scope["Z"].get_position() == 0.0


@pytest.mark.parametrize("processing", ["local", "cluster:1"])
def test_an_adaptive_plan_reads_its_frames_back_whatever_the_processor_makes(scope, processing):
    """A max projection turns every tile into a projection without ``z``: the plan still reads
    the raw tiles back (``keep_raw_frames``), locally and on a Dask cluster, and zooms where the
    same plan without the processor zooms."""
    from exengine.dask_processing import run_processor_on
    from exengine.processors import max_intensity_projection

    scope["XY"].set_position(BRIGHT_REGION_UM[0] - 300.0, BRIGHT_REGION_UM[1] + 300.0)
    reference = DataHandler(NDRAMStorage())
    run(overview_then_zoom(rows=3, columns=3, data_handler=reference), reference)
    expected = {
        (c["row"], c["column"])
        for c in reference.storage.get_coordinates_list()
        if c["scan"] == "zoom"
    }
    scope["XY"].set_position(BRIGHT_REGION_UM[0] - 300.0, BRIGHT_REGION_UM[1] + 300.0)
    processor = run_processor_on(max_intensity_projection(axis="z"), processing)
    handler = DataHandler(NDRAMStorage(), processor)
    plan = overview_then_zoom(rows=3, columns=3, data_handler=handler)
    run(plan, handler, timeout=120)
    coords = handler.storage.get_coordinates_list()
    assert all("z" not in c for c in coords) and len(coords) == 10  # 9 tiles and one zoom stack
    assert {(c["row"], c["column"]) for c in coords if c["scan"] == "zoom"} == expected
    with pytest.raises(KeyError, match="keep_raw_frames"):
        handler.get({"scan": "overview", "row": 0, "column": 0, "z": 0})  # finished: released


def test_acquire_until_stops_itself_when_the_signal_bleaches(scope):
    scope["Camera"].exposure = 10.0
    scope["Light"].bleaching = 3.0  # per second of light: each 10 ms frame bleaches 3 %
    handler = DataHandler(NDRAMStorage())
    acquisition = run(
        acquire_until(threshold=0.6, max_time_points=500, data_handler=handler), handler
    )
    assert acquisition.is_open_ended
    frames = len(handler.storage)
    assert 5 < frames < 500
    means = [float(handler.get({"time": t}, return_metadata=False).mean()) for t in range(frames)]
    assert means[-1] < 0.6 * means[0] <= means[-2]


def test_acquire_until_goes_on_while_the_trend_would_cross_in_time(scope):
    scope["Camera"].exposure = 10.0
    scope["Light"].bleaching = 0.5  # 0.5 % per frame: 0.6 of the first frame after ~100 frames
    handler = DataHandler(NDRAMStorage())
    run(acquire_until(threshold=0.6, give_up_after=20, data_handler=handler), handler)
    frames = len(handler.storage)
    means = [float(handler.get({"time": t}, return_metadata=False).mean()) for t in range(frames)]
    assert 80 < frames < 130 and means[-1] < 0.6 * means[0] <= means[-2]


def test_acquire_until_gives_up_on_a_signal_that_does_not_move_unless_told_not_to(scope):
    scope["Camera"].exposure = 0.0
    handler = DataHandler(NDRAMStorage())
    run(acquire_until(give_up_after=10, data_handler=handler), handler)
    assert len(handler.storage) == 10  # the simulated dyes do not bleach: Light.bleaching is 0
    handler = DataHandler(NDRAMStorage())
    run(acquire_until(max_time_points=60, give_up_after=0, data_handler=handler), handler)
    assert len(handler.storage) == 60
    with pytest.raises(ValueError, match=r"give_up_after must be 0 .* or at least 2"):
        acquire_until(give_up_after=1)


def test_a_plan_that_raises_fails_the_acquisition_clearly(scope):
    handler = DataHandler(NDRAMStorage())
    plan = overview_then_zoom(rows=1, columns=2, data_handler=handler)
    handler_get = handler.get

    def broken_get(*args, **kwargs):
        raise RuntimeError("analysis crashed")

    handler.get = broken_get
    acquisition = Acquisition(plan, handler)
    acquisition.start()
    with pytest.raises(PlanError, match="RuntimeError: analysis crashed"):
        acquisition.await_completion(timeout=30)
    handler.get = handler_get
    assert len(handler.storage) == 2


def test_plans_are_contributions_with_settings(scope):
    plans = {c.id: c for c in list_contributions("plan")}
    assert {
        DEFAULT_PLAN,
        "napari-exengine.plan.grid_scan",
        "napari-exengine.plan.overview_then_zoom",
        "napari-exengine.plan.acquire_until",
    } <= set(plans)
    assert [p.name for p in plans["napari-exengine.plan.grid_scan"].parameters()] == [
        "rows",
        "columns",
        "overlap",
    ]
    handler = DataHandler(NDRAMStorage())
    events = build_plan("napari-exengine.plan.grid_scan", rows=1, columns=2, data_handler=handler)
    run(events, handler)
    assert len(handler.storage) == 2
    with pytest.raises(
        PlanError, match="has no setting 'rowz'; its settings: rows, columns, overlap"
    ):
        build_plan("grid_scan", rowz=2)


BROKEN_PLANS = """
name: broken-plans
contributions:
  commands:
    - id: broken-plans.missing
      title: Missing module
      python_name: no_such_module_anywhere:plan
    - id: broken-plans.not_callable
      title: Not callable
      python_name: math:pi
  menus:
    napari-exengine/plans:
      - command: broken-plans.missing
      - command: broken-plans.not_callable
"""


def test_broken_plan_plugins_are_listed_with_their_error(tmp_path):
    path = tmp_path / "napari.yaml"
    path.write_text(BROKEN_PLANS)
    manager = PluginManager()
    manager.discover()
    manager.register(PluginManifest.from_file(path))
    plans = {c.id: c for c in list_contributions("plan", manager=manager)}
    assert "cannot import" in plans["broken-plans.missing"].error
    assert "float" in plans["broken-plans.not_callable"].error
    assert plans[DEFAULT_PLAN].available
    assert get_contribution(DEFAULT_PLAN, "plan", manager=manager).available
