"""The example plan plugin (examples/exengine-spiral-plan): found by npe2, listed with its settings,
and run headless from Python and from the command line; the stored frames' stage positions form a
square spiral."""

from __future__ import annotations

import io
import itertools
import time
import typing

import pytest

from exengine.acquisition import Acquisition, PlanError
from exengine.data import DataHandler
from exengine.devices.simulated import SimulatedXYStage
from exengine.plan_helpers import field_of_view_um
from exengine.storage import NDRAMStorage
from exengine.storage.ndtiff_reader import NDTiffReader
from napari_exengine.cli import main
from napari_exengine.contributions import build_plan, get_contribution, list_contributions

SPIRAL = "exengine-spiral-plan.spiral"


def assert_spiral(positions, centre, step, turns):
    """``positions`` (x, y in tile order) visit every tile within ``turns`` of ``centre`` once,
    starting at the centre, each beside the previous one, ring after ring outwards, always turning
    the same way."""
    offsets = [((x - centre[0]) / step[0], (y - centre[1]) / step[1]) for x, y in positions]
    tiles = [(round(i), round(j)) for i, j in offsets]
    flat = [value for offset in offsets for value in offset]
    assert flat == pytest.approx([value for tile in tiles for value in tile])
    assert tiles[0] == (0, 0)
    assert len(tiles) == len(set(tiles)) == (2 * turns + 1) ** 2
    assert set(tiles) == set(itertools.product(range(-turns, turns + 1), repeat=2))
    moves = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(tiles)]
    assert all(abs(dx) + abs(dy) == 1 for dx, dy in moves)
    rings = [max(abs(i), abs(j)) for i, j in tiles]
    assert rings == sorted(rings)
    turns_made = [a[0] * b[1] - a[1] * b[0] for a, b in itertools.pairwise(moves)]
    assert set(turns_made) == {0, 1}  # straight on or a left turn: never back, never right


def steps(camera, overlap):
    width, height = field_of_view_um(camera)
    return width * (1 - overlap), height * (1 - overlap)


def test_npe2_discovers_the_plan_with_its_settings():
    plans = {c.id: c for c in list_contributions("plan")}
    spiral = plans[SPIRAL]
    assert spiral.available, spiral.error
    assert (spiral.plugin, spiral.title, spiral.kind) == (
        "exengine-spiral-plan",
        "Spiral tile scan",
        "plan",
    )
    parameters = spiral.parameters()
    assert [(p.name, p.default) for p in parameters] == [("turns", 2), ("overlap", 0.1)]
    hints = typing.get_type_hints(spiral.settings_callable())
    assert (hints["turns"], hints["overlap"]) == (int, float)
    assert get_contribution("Spiral tile scan", "plan").id == SPIRAL


def test_exengine_list_shows_the_plan(scope):
    out = io.StringIO()
    assert main(["list"], stream=out) == 0
    line = next(line for line in out.getvalue().splitlines() if SPIRAL in line)
    assert line.startswith("plan") and "Spiral tile scan (exengine-spiral-plan)" in line
    assert "unavailable" not in line


def test_build_plan_and_acquisition_store_a_spiral(scope):
    scope["XY"].set_position(100.0, -50.0)
    handler = DataHandler(NDRAMStorage())
    plan = build_plan(SPIRAL, turns=2, overlap=0.2, data_handler=handler)
    acquisition = Acquisition(plan, handler)
    assert acquisition.total_frames == 25 and not acquisition.is_open_ended
    acquisition.start()
    acquisition.await_completion(timeout=60)
    assert acquisition.frames_stored == 25
    assert sorted(c["tile"] for c in handler.storage.get_coordinates_list()) == list(range(25))
    metadata = [handler.get({"tile": t}, return_data=False) for t in range(25)]
    positions = [(m["StageX-um"], m["StageY-um"]) for m in metadata]
    assert_spiral(positions, (100.0, -50.0), steps(scope["Camera"], 0.2), turns=2)


def test_exengine_acquire_plan_stores_a_spiral(scope, tmp_path, capsys):
    scope["XY"].set_position(-20.0, 30.0)
    out = io.StringIO()
    status = main(
        ["acquire", "--plan", SPIRAL, "turns=1", "--out", str(tmp_path), "--name", "spiral"],
        stream=out,
    )
    assert status == 0, capsys.readouterr().err
    assert "Done: 9 of 9 frames stored" in out.getvalue()
    reader = NDTiffReader(tmp_path / "spiral_1")
    try:
        assert reader.axes == {"tile": list(range(9))}
        metadata = [reader.read_metadata({"tile": t}) for t in range(9)]
    finally:
        reader.close()
    positions = [(m["StageX-um"], m["StageY-um"]) for m in metadata]
    assert_spiral(positions, (-20.0, 30.0), steps(scope["Camera"], 0.1), turns=1)


@pytest.mark.parametrize(
    "setting, reason",
    [
        ("turns=-1", "turns must be a whole number of at least 0, got -1"),
        ("turns=1.5", "turns must be a whole number of at least 0, got 1.5"),
        ("overlap=0.95", "overlap must be from 0 to 0.9, got 0.95"),
        ("turnz=1", "has no setting 'turnz'; its settings: turns, overlap"),
    ],
)
def test_bad_settings_exit_2_with_the_reason(scope, tmp_path, capsys, setting, reason):
    status = main(
        ["acquire", "--plan", SPIRAL, setting, "--out", str(tmp_path / "out")], stream=io.StringIO()
    )
    error = capsys.readouterr().err
    assert status == 2 and reason in error, error
    assert not (tmp_path / "out").exists()


class LimitedXYStage(SimulatedXYStage):
    """The simulated stage with travel limits of +-1000 µm on both axes."""

    def get_property_limits(self, property_name):
        return (-1000.0, 1000.0) if property_name in ("x", "y") else (None, None)


def test_a_spiral_beyond_the_stage_limits_is_refused_before_anything_moves(scope):
    stage = LimitedXYStage("LimitedXY")
    stage.set_position(900.0, 0.0)
    handler = DataHandler(NDRAMStorage())
    acquisition = Acquisition(
        build_plan(SPIRAL, turns=1, data_handler=handler, xy_device=stage), handler
    )
    with pytest.raises(
        PlanError, match=r"LimitedXY x = 1199.5\d* is outside its limits \[-1000, 1000\]"
    ):
        acquisition.start()
    assert not acquisition.is_running()
    assert stage.get_position() == (900.0, 0.0) and handler.frames_accepted == 0


def test_a_huge_spiral_is_planned_lazily(scope):
    started = time.perf_counter()
    plan = build_plan(SPIRAL, turns=1000)
    Acquisition(plan).validate()
    first = list(itertools.islice(plan, 6))
    assert time.perf_counter() - started < 1.0
    assert plan.total_frames == 2001**2
    assert [type(e).__name__ for e in first] == [
        "SetPosition2DEvent",
        "StartCapture",
        "ReadoutData",
    ] * 2
