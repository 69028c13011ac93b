"""Every useq-schema MDASequence runs: grids of every kind (relative and absolute), sub-sequences
per position, positions with z and z plans relative to them, channels with ``do_stack``,
``acquire_every`` and ``z_offset``, position properties and hardware autofocus. The multi-D plan's
frames, their order and the stage positions they are taken at are those of useq-schema's own
``MDASequence.iter_events``, for a corpus that holds the examples of useq-schema's and
pymmcore-plus's documentation; the plan runs them on the simulated microscope and from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import useq

from exengine.acquisition import Acquisition, FinishReason, PlanError
from exengine.backends.micromanager import load_micromanager
from exengine.backends.micromanager_demo import (
    FILTERS,
    DemoCamera,
    DemoFilterWheel,
    DemoFocus,
    DemoXYStage,
    _Scene,
    create_demo_core,
)
from exengine.data import DataHandler
from exengine.device_types import Autofocus
from exengine.devices.simulated import SimulatedAutofocus
from exengine.events import MultiDPlan, MultiDSettings
from exengine.events.autofocus_events import AutofocusEvent
from exengine.events.detector_events import ReadoutData, StartCapture
from exengine.events.misc_events import SetTimeEvent
from exengine.events.positioner_events import SetPosition1DEvent, SetPosition2DEvent
from exengine.events.property_events import SetPropertiesEvent
from exengine.plan_helpers import field_of_view_um
from exengine.storage import NDRAMStorage

GRID = {"rows": 2, "columns": 3, "fov_width": 100, "fov_height": 80}

CORPUS = {
    # useq-schema's README
    "useq-readme": {
        "stage_positions": [(100, 100, 30), (200, 150, 35)],
        "channels": ["DAPI", "FITC"],
        "time_plan": {"interval": 1, "loops": 20},
        "z_plan": {"range": 4, "step": 0.5},
        "axis_order": "tpcz",
    },
    # useq-schema's docs: a sub-sequence (a grid) at one position
    "useq-position-sub-sequence": {
        "stage_positions": [
            (10, 20, 0),
            {"x": 10, "y": 20, "z": 50, "sequence": {"grid_plan": {"rows": 2, "columns": 3}}},
        ],
        "channels": ["DAPI", "FITC"],
        "z_plan": {"range": 2, "step": 1},
    },
    # useq-schema's review of sub-sequences: z overridden, shifted, inherited
    "useq-sub-sequence-z": {
        "z_plan": {"top": 60, "bottom": 55, "step": 1},
        "stage_positions": [
            {
                "x": 40,
                "y": 50,
                "z": 60,
                "sequence": {"z_plan": {"top": 20, "bottom": 0, "step": 5}},
            },
            {"x": 60, "y": 70, "z": 80, "sequence": {"z_plan": {"range": 20, "step": 5}}},
            {"x": 10, "y": 20, "z": 30},
        ],
    },
    # pymmcore-plus's examples/run_mda.py
    "pymmcore-run-mda": {
        "channels": ["DAPI", {"config": "FITC", "exposure": 50}],
        "time_plan": {"interval": 2, "loops": 5},
        "z_plan": {"range": 4, "step": 0.5},
        "axis_order": "tpcz",
    },
    # pymmcore-plus's examples (tensorstore, tiff writers): named and unnamed positions
    "pymmcore-writers": {
        "channels": ["DAPI", {"config": "FITC", "exposure": 1}],
        "stage_positions": [{"x": 1, "y": 1, "name": "some position"}, {"x": 0, "y": 0}],
        "time_plan": {"interval": 2, "loops": 3},
        "z_plan": {"range": 4, "step": 0.5},
        "axis_order": "tpcz",
    },
    # pymmcore-plus's tiff-sequence example: a grid sub-sequence at a position with z
    "pymmcore-tiff-sequence": {
        "channels": ["DAPI", {"config": "FITC", "exposure": 1}],
        "stage_positions": [
            {"x": 1, "y": 1, "name": "some position"},
            {"x": 2, "y": 2, "z": 3, "sequence": {"grid_plan": {"rows": 2, "columns": 2}}},
        ],
        "time_plan": {"interval": 2, "loops": 2},
        "z_plan": {"range": 2, "step": 0.5},
        "axis_order": "tpcz",
    },
    # pymmcore-plus's OME-Zarr writer example: a grid at every position
    "pymmcore-ome-zarr": {
        "channels": ["DAPI", "FITC"],
        "stage_positions": [(1, 2, 3)],
        "time_plan": {"interval": 0, "loops": 3},
        "grid_plan": {"rows": 2, "columns": 1},
        "z_plan": {"range": 2, "step": 0.7},
    },
    # pymmcore-widgets' MDA widget file (its full dump)
    "pymmcore-widgets-file": {
        "axis_order": "tpgzc",
        "channels": [
            {"config": "Cy5", "exposure": 100.0, "group": "Channel"},
            {"config": "DAPI", "exposure": 100.0, "group": "Channel"},
        ],
        "grid_plan": {
            "columns": 1,
            "rows": 1,
            "fov_height": 512.0,
            "fov_width": 512.0,
            "mode": "row_wise_snake",
            "overlap": (0.0, 0.0),
            "relative_to": "center",
        },
        "metadata": {"pymmcore_widgets": {"version": "0.5.3"}},
        "stage_positions": [{"x": 0.0, "y": 0.0, "z": 0.0}],
        "time_plan": {"interval": 1, "loops": 1},
    },
    # useq-schema's test of skipping channels
    "useq-channels-skip": {
        "time_plan": {"interval": 0.2, "loops": 4},
        "z_plan": {"range": 4, "step": 2},
        "stage_positions": [(0, 0), (1, 1), (2, 2)],
        "channels": [
            {"config": "DAPI", "do_stack": False},
            {"config": "FITC", "z_offset": 100},
            {"config": "Cy5", "acquire_every": 2},
        ],
    },
    # every grid kind, relative and absolute
    "grid-rows-columns": {"grid_plan": GRID, "channels": ["DAPI"]},
    "grid-rows-columns-modes": {
        "stage_positions": [(500, 500)],
        "grid_plan": {**GRID, "mode": "spiral", "overlap": 10, "relative_to": "top_left"},
    },
    "grid-width-height": {
        "stage_positions": [(0, 0, 1), (1000, -500, 2)],
        "grid_plan": {"width": 300, "height": 200, "fov_width": 100, "fov_height": 100},
        "z_plan": {"above": 1, "below": 1, "step": 1},
    },
    "grid-from-edges": {
        "grid_plan": {
            "top": 100,
            "left": -100,
            "bottom": -100,
            "right": 100,
            "fov_width": 90,
            "fov_height": 90,
            "mode": "column_wise",
        },
        "channels": ["DAPI", "FITC"],
    },
    "grid-from-edges-with-positions": {
        "stage_positions": [{"z": 5}, {"z": 6}],  # an absolute grid at two planes
        "grid_plan": {
            "top": 50,
            "left": 0,
            "bottom": 0,
            "right": 50,
            "fov_width": 40,
            "fov_height": 40,
        },
        "axis_order": "tpgcz",
        "channels": ["DAPI"],
        "z_plan": {"range": 2, "step": 1},
    },
    "grid-from-polygon": {
        "grid_plan": {
            "vertices": [(0, 0), (100, 0), (50, 100)],
            "fov_width": 40,
            "fov_height": 40,
        },
        "channels": ["DAPI"],
    },
    "well-plate": {
        "stage_positions": {
            "plate": 96,
            "a1_center_xy": (0, 0),
            "selected_wells": ([0, 1], [0, 1]),
            "well_points_plan": {"rows": 1, "columns": 2, "fov_width": 300, "fov_height": 300},
        },
        "channels": ["DAPI"],
    },
    "grid-camera-fov": {"grid_plan": {"rows": 2, "columns": 2}, "channels": ["DAPI"]},
    "grid-random-points": {
        "stage_positions": [(100, 100)],
        "grid_plan": {"num_points": 4, "max_width": 300, "max_height": 300, "random_seed": 1},
    },
    "grid-order-gp": {
        "axis_order": "tgpcz",
        "stage_positions": [(0, 0), (1000, 1000)],
        "grid_plan": {"rows": 1, "columns": 2, "fov_width": 50, "fov_height": 50},
    },
    # sub-sequences of every kind
    "sub-sequence-own-channels-and-time": {
        "stage_positions": [
            (0, 0),
            {
                "x": 5,
                "y": 5,
                "name": "B",
                "sequence": {
                    "channels": [{"config": "Cy5", "exposure": 3}],
                    "time_plan": {"interval": 0.5, "loops": 3},
                },
            },
        ],
        "channels": ["DAPI", "FITC"],
    },
    "sub-sequence-absolute-grid": {
        "stage_positions": [
            {
                "z": 2,
                "sequence": {
                    "grid_plan": {
                        "top": 20,
                        "left": 0,
                        "bottom": 0,
                        "right": 20,
                        "fov_width": 15,
                        "fov_height": 15,
                    }
                },
            },
            {"x": 300, "y": 300, "sequence": {"grid_plan": {**GRID, "rows": 1}}},
        ],
        "channels": ["DAPI"],
        "z_plan": {"range": 1, "step": 1},
    },
    "sub-sequence-z-offsets": {
        "stage_positions": [
            {
                "x": 1,
                "y": 1,
                "z": 10,
                "sequence": {
                    "z_plan": {"above": 2, "below": 0, "step": 1},
                    "channels": [
                        {"config": "DAPI", "z_offset": 0.5, "do_stack": False},
                        {"config": "FITC"},
                    ],
                },
            },
        ],
    },
    # per-position z
    "positions-with-z-only": {"stage_positions": [(0, 0, 4), (1, 1, -3), (2, 2)]},
    "positions-z-absolute-plan": {
        "stage_positions": [(0, 0, 4), (1, 1)],
        "z_plan": {"absolute": [1, 2]},
    },
    "position-without-x": {"stage_positions": [(5, 5), {"y": 9}], "channels": ["DAPI"]},
    "position-properties": {
        "stage_positions": [
            (0, 0),
            {"x": 1, "y": 1, "properties": [("Light", "power", 0.5)]},
        ],
    },
    "keep-shutter-open": {
        "channels": ["DAPI"],
        "z_plan": {"range": 2, "step": 1},
        "keep_shutter_open_across": ["z"],
    },
    # hardware autofocus
    "autofocus-per-position": {
        "stage_positions": [(0, 0, 1), (200, 0, 2)],
        "channels": ["DAPI", "FITC"],
        "z_plan": {"range": 2, "step": 1},
        "autofocus_plan": {
            "autofocus_device_name": "Autofocus",
            "autofocus_motor_offset": 1.5,
            "axes": ["p"],
        },
    },
    "autofocus-per-time-and-sub-sequence": {
        "time_plan": {"interval": 0, "loops": 2},
        "stage_positions": [
            {"x": 0, "y": 0, "z": 0},
            {
                "x": 50,
                "y": 0,
                "z": 3,
                "sequence": {
                    "grid_plan": {**GRID, "rows": 1, "columns": 2},
                    "autofocus_plan": {"autofocus_device_name": "PFSOffset", "axes": ["g"]},
                },
            },
        ],
        "autofocus_plan": {"axes": ["t"]},
    },
}


def with_camera_fov(sequence: useq.MDASequence, fov: tuple[float, float]) -> useq.MDASequence:
    """``sequence`` with the camera's field of view in grid plans that give none, as the plan (and
    pymmcore-plus) fill it in."""

    def filled(grid):
        if grid is None or grid.fov_width is not None:
            return grid
        return grid.model_copy(update={"fov_width": fov[0], "fov_height": fov[1]})

    positions = [
        p.model_copy(
            update={
                "sequence": p.sequence.model_copy(
                    update={"grid_plan": filled(p.sequence.grid_plan)}
                )
            }
        )
        if p.sequence is not None
        else p
        for p in sequence.stage_positions
    ]
    return sequence.model_copy(
        update={"grid_plan": filled(sequence.grid_plan), "stage_positions": tuple(positions)}
    )


def grid_tile(sequence: useq.MDASequence, event: useq.MDAEvent) -> dict:
    """The row and column (or the grid index of scattered points) of ``event``'s tile."""
    grid = sequence.grid_plan
    if "p" in event.index:
        sub = sequence.stage_positions[event.index["p"]].sequence
        if sub is not None and sub.grid_plan is not None:
            grid = sub.grid_plan
    if isinstance(grid, useq.RandomPoints):
        return {"grid": event.index["g"]}
    point = list(grid)[event.index["g"]]
    return {"row": point.grid_row, "column": point.grid_col}


def useq_walk(sequence: useq.MDASequence, axes: list[str]) -> list[tuple]:
    """What useq-schema's iteration does: for each frame its coordinates (every axis of ``axes``;
    0 where it lacks one), stage x/y/z, channel and exposure; autofocus runs, where they are. An
    unset (``None``) value stays as the event before set it, as on a real stage and camera."""
    walk = []
    last = {"x": None, "y": None, "z": None, "exposure": None}
    named = any(p.name is not None for p in sequence.stage_positions)
    for event in sequence.iter_events():
        for key, value in zip(
            last, (event.x_pos, event.y_pos, event.z_pos, event.exposure), strict=True
        ):
            if value is not None:
                last[key] = value
        if isinstance(event.action, useq.HardwareAutofocus):
            walk.append(("autofocus", last["x"], last["y"], _round(last["z"])))
            continue
        coords = {}
        for axis, index in event.index.items():
            if axis == "p":
                coords["position"] = (event.pos_name or f"Pos{index}") if named else index
            elif axis == "c":
                coords["channel"] = event.channel.config
            elif axis == "g":
                coords.update(grid_tile(sequence, event))
            else:
                coords[{"t": "time", "z": "z"}[axis]] = index
        coords = {axis: coords.get(axis, 0) for axis in axes}
        channel = event.channel.config if event.channel else None
        walk.append((coords, last["x"], last["y"], _round(last["z"]), channel, last["exposure"]))
    return walk


def exengine_walk(events) -> list[tuple]:
    """What ``events`` do, walking them as the engine runs them (the z of a move as planned, before
    any autofocus correction)."""
    state = {"x": None, "y": None, "z": None, "channel": None, "exposure": None}
    walk = []
    for event in events:
        if isinstance(event, SetPosition2DEvent):
            state["x"], state["y"] = event.position
        elif isinstance(event, SetPosition1DEvent):
            state["z"] = event.position
        elif isinstance(event, SetPropertiesEvent):
            for _, prop, value in event.devices_prop_names_values:
                if prop in ("exposure", "channel"):
                    state[prop] = value
        elif isinstance(event, AutofocusEvent):
            walk.append(("autofocus", state["x"], state["y"], _round(state["z"])))
        elif isinstance(event, ReadoutData):
            for coords in event.data_coordinate_iterator:
                walk.append(
                    (
                        dict(coords),
                        state["x"],
                        state["y"],
                        _round(state["z"]),
                        state["channel"],
                        state["exposure"],
                    )
                )
        else:
            assert isinstance(event, (SetTimeEvent, StartCapture)), event
    return walk


def _round(z):
    return None if z is None else round(z, 6) + 0.0


def make_plan(fields, scope) -> MultiDPlan:
    return MultiDPlan(
        MultiDSettings.from_sequence(fields),
        camera=scope["Camera"],
        z_device=scope["Z"],
        xy_device=scope["XY"],
        channel_group=scope["Channel"],
    )


@pytest.mark.parametrize("fields", list(CORPUS.values()), ids=list(CORPUS))
def test_the_plan_follows_useq_iter_events(fields, scope):
    plan = make_plan(fields, scope)
    sequence = with_camera_fov(useq.MDASequence(**fields), field_of_view_um(scope["Camera"]))
    expected = useq_walk(sequence, list(plan.axis_sizes))
    walk = exengine_walk(plan)
    assert walk == expected
    frames = [step for step in walk if step[0] != "autofocus"]
    assert plan.total_frames == len(frames)
    for axis, size in plan.axis_sizes.items():
        values = {frame[0][axis] for frame in frames}
        if axis in plan.axis_values:
            assert values <= set(plan.axis_values[axis]) and len(plan.axis_values[axis]) == size
        else:
            assert values <= set(range(size)) and max(values) == size - 1
    assert exengine_walk(plan) == walk, "a second pass makes the same events"


def test_grid_tiles_have_rows_and_columns_as_the_grid_scan_plan(scope):
    plan = make_plan(CORPUS["pymmcore-ome-zarr"], scope)
    assert plan.axis_sizes == {
        "time": 3,
        "position": 1,
        "row": 2,
        "column": 1,
        "channel": 2,
        "z": 4,
    }
    points = make_plan(CORPUS["grid-random-points"], scope)
    assert points.axis_sizes == {"position": 1, "grid": 4}


def run(plan, timeout=60):
    handler = DataHandler(NDRAMStorage())
    plan.data_handler = handler
    acquisition = Acquisition(plan, handler)
    acquisition.start()
    acquisition.await_completion(timeout=timeout)
    assert acquisition.finish_reason == FinishReason.DONE, acquisition.status()
    return handler


@pytest.mark.parametrize(
    "name",
    [
        "useq-channels-skip",
        "sub-sequence-absolute-grid",
        "grid-from-edges-with-positions",
        "sub-sequence-own-channels-and-time",
        "position-without-x",
        "position-properties",
    ],
)
def test_the_frames_are_taken_where_useq_says(name, scope):
    plan = make_plan(CORPUS[name], scope)
    expected = [step for step in exengine_walk(plan) if step[0] != "autofocus"]
    handler = run(plan)
    stored = [
        (c, handler.get(c, return_data=False)) for c in handler.storage.get_coordinates_list()
    ]
    assert len(stored) == len(expected) == plan.total_frames
    taken = {
        json.dumps(dict(c), sort_keys=True): (m["StageX-um"], m["StageY-um"], m["StageZ-um"])
        for c, m in stored
    }
    for coords, x, y, z, _, _ in expected:
        here = taken[json.dumps(coords, sort_keys=True)]
        assert here[:2] == pytest.approx((x, y))
        assert here[2] == pytest.approx(z if z is not None else 0.0)
    if name == "position-properties":
        assert scope["Light"].power == 0.5


def test_relative_offsets_without_a_position_refer_to_the_stage(scope):
    scope["XY"].set_position(1000.0, -700.0)
    scope["Z"].set_position(7.0)
    plan = make_plan({"grid_plan": GRID, "z_plan": {"range": 2, "step": 2}}, scope)
    sequence = useq.MDASequence(grid_plan=GRID, z_plan={"range": 2, "step": 2})
    useq_xyz = [(e.x_pos, e.y_pos, e.z_pos) for e in sequence.iter_events()]
    walk = exengine_walk(plan)
    assert [step[1:4] for step in walk] == [(x + 1000, y - 700, z + 7) for x, y, z in useq_xyz]


def test_the_setup_event_is_applied_first_and_time_points_split(scope):
    fields = {
        "setup": {"exposure": 7, "properties": [("Light", "power", 0.8)]},
        "time_plan": {"interval": 0, "loops": 2},
        "grid_plan": GRID,
    }
    plan = make_plan(fields, scope)
    first = list(plan.first_time_point())
    assert sum(len(e.data_coordinate_iterator) for e in first if isinstance(e, ReadoutData)) == 6
    assert plan.frames_per_time_point == 6 and plan.total_frames == 12
    run(plan)
    assert scope["Light"].power == 0.8
    assert scope["Camera"].exposure == 7.0


def test_the_simulated_autofocus_finds_the_specimens_best_plane(scope):
    autofocus = scope["Autofocus"]
    assert isinstance(autofocus, Autofocus)
    best = autofocus.best_focus()
    for start in (best - 4.0, best + 3.0):
        scope["Z"].set_position(start)
        assert autofocus.run() == pytest.approx(best)
        assert scope["Z"].get_position() == pytest.approx(best)
    autofocus.offset = 2.0
    assert autofocus.run() == pytest.approx(best + 2.0)
    assert autofocus.best_focus() == pytest.approx(best), "the same plane, seen from above it"


def test_autofocus_corrects_the_z_of_each_position(scope):
    """As pymmcore-plus runs it: autofocus at each new position (at the stack's home z), then the
    stack around home plus the z the autofocus moved by."""
    fields = CORPUS["autofocus-per-position"]
    plan = make_plan(fields, scope)
    walk = exengine_walk(plan)
    assert [step[0] for step in walk].count("autofocus") == 2
    focus = {}
    for p, (x, y, z) in enumerate([(0, 0, 1), (200, 0, 2)]):
        scope["XY"].set_position(x, y)
        scope["Z"].set_position(z)
        focus[p] = scope["Autofocus"].best_focus() + 1.5  # the plan's motor offset
    scope["Autofocus"].offset = 0.0
    handler = run(plan)
    for coords in handler.storage.get_coordinates_list():
        metadata = handler.get(coords, return_data=False)
        # the stack of planes -1, 0, +1 around the focus found
        expected = focus[coords["position"]] + coords["z"] - 1.0
        assert metadata["StageZ-um"] == pytest.approx(expected)


def test_autofocus_that_names_no_device_of_several_is_refused(scope):
    SimulatedAutofocus("OtherAutofocus", scope["Camera"].microscope, scope["Z"])
    fields = {**CORPUS["autofocus-per-position"], "autofocus_plan": {"axes": ["p"]}}
    with pytest.raises(PlanError, match=r"No autofocus to run: 2 registered Autofocus devices"):
        make_plan(fields, scope).validate()
    named = {"autofocus_device_name": "OtherAutofocus", "axes": ["p"]}
    make_plan({**fields, "autofocus_plan": named}, scope).validate()


def run_cli(*args):
    command = [
        sys.executable,
        "-c",
        "from napari_exengine.exengine_script import console; console()",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["pymmcore-tiff-sequence", "autofocus-per-time-and-sub-sequence"])
def test_the_cli_runs_useq_files(name, tmp_path):
    fields = dict(CORPUS[name], time_plan={"interval": 0, "loops": 2})
    sequence = useq.MDASequence(**fields)
    path = tmp_path / "mda.yaml"
    path.write_text(sequence.yaml(exclude_unset=True, exclude_defaults=True))
    result = run_cli("acquire", "--file", str(path), "--out", str(tmp_path), "--name", "useq")
    assert result.returncode == 0, result.stderr
    frames = sum(
        1 for e in sequence.iter_events() if not isinstance(e.action, useq.HardwareAutofocus)
    )
    assert f"Done: {frames} of {frames} frames stored" in result.stdout


class RecordingCamera(DemoCamera):
    """The Micro-Manager demo camera, noting where the stage and the filter are at each frame."""

    def __init__(self, scene, shape):
        super().__init__(scene, shape)
        self.frames: list[tuple] = []

    def snap(self, buffer):
        scene = self._scene
        z = scene.z
        if scene.z_sequence:
            z = scene.z_sequence[scene.sequence_index % len(scene.z_sequence)]
        x, y = scene.xy
        self.frames.append((round(x, 6), round(y, 6), round(z, 6), FILTERS[scene.filter]))
        return super().snap(buffer)


def recording_core() -> tuple[Any, RecordingCamera]:
    """A demo core as ``create_demo_core`` makes it, whose camera records each frame's stage."""
    core = create_demo_core(shape=(64, 64))
    scene = _Scene()
    camera = RecordingCamera(scene, (64, 64))
    core.unloadAllDevices()
    for label, device in [
        ("Camera", camera),
        ("Focus", DemoFocus(scene)),
        ("XY", DemoXYStage(scene)),
        ("Filter", DemoFilterWheel(scene)),
    ]:
        core.loadPyDevice(label, device)
    core.initializeAllDevices()
    core.setCameraDevice("Camera")
    core.setFocusDevice("Focus")
    core.setXYStageDevice("XY")
    for name in FILTERS:
        core.defineConfig("Channel", name, "Filter", "Label", name)
    core.setChannelGroup("Channel")
    core.definePixelSizeConfig("Demo")
    core.setPixelSizeUm("Demo", 0.65)
    core.setPixelSizeConfig("Demo")
    core.setAutoShutter(False)  # the demo has no shutter
    return core, camera


#: Corpus sequences on the demo's filters, grids with the demo camera's field of view (64 px of
#: 0.65 µm: pymmcore-plus always puts the camera's in).
MM_FOV = {"fov_width": 41.6, "fov_height": 41.6}
MM_CORPUS = {
    "pymmcore-writers": {**CORPUS["pymmcore-writers"], "time_plan": {"interval": 0, "loops": 2}},
    "pymmcore-ome-zarr": {
        **CORPUS["pymmcore-ome-zarr"],
        "grid_plan": {"rows": 2, "columns": 1, **MM_FOV},
    },
    "useq-position-sub-sequence": {
        **CORPUS["useq-position-sub-sequence"],
        "stage_positions": [
            (10, 20, 0),
            {
                "x": 10,
                "y": 20,
                "z": 50,
                "sequence": {"grid_plan": {"rows": 2, "columns": 3, **MM_FOV}},
            },
        ],
    },
    "useq-sub-sequence-z": CORPUS["useq-sub-sequence-z"],
    "channels-skip": {
        "time_plan": {"interval": 0, "loops": 3},
        "z_plan": {"range": 2, "step": 1},
        "stage_positions": [(0, 0, 1), (1, 1, 2)],
        "channels": [
            {"config": "DAPI", "do_stack": False},
            {"config": "FITC", "z_offset": 5, "exposure": 2},
            {"config": "TRITC", "acquire_every": 2},
        ],
    },
    "grid-from-edges": {
        "grid_plan": {"top": 50, "left": -50, "bottom": -50, "right": 50, **MM_FOV},
        "channels": ["DAPI", "FITC"],
    },
    "grid-width-height": {
        "stage_positions": [(0, 0, 1), (100, -50, 2)],
        "grid_plan": {"width": 80, "height": 60, **MM_FOV},
        "z_plan": {"above": 1, "below": 1, "step": 1},
    },
}


@pytest.mark.parametrize("fields", list(MM_CORPUS.values()), ids=list(MM_CORPUS))
def test_stage_positions_and_order_match_pymmcore_plus_on_micro_manager(fields):
    sequence = useq.MDASequence(**fields)
    theirs, their_camera = recording_core()
    their_indices = []
    theirs.mda.events.frameReady.connect(lambda _, event, __: their_indices.append(event.index))
    theirs.mda.run(sequence)
    ours, our_camera = recording_core()
    devices = load_micromanager(core=ours)
    plan = MultiDPlan(
        MultiDSettings.from_sequence(fields),
        camera=devices["Camera"],
        z_device=devices["Focus"],
        xy_device=devices["XY"],
        channel_group=devices["Channel"],
        channel_property="config",
    )
    run(plan)
    assert our_camera.frames == their_camera.frames
    assert len(their_indices) == plan.total_frames == len(our_camera.frames)
