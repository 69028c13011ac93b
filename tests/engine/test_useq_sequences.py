"""The one settings model (``MultiDSettings``, a useq-schema ``MDASequence``): the multi-D plan made
from it visits what useq-schema's own iteration visits, for every kind of field; ExEngine's
``multi_d_acquisition_events`` arguments map onto it exactly; saved files load back to the same
settings; and what the plan cannot run is refused by name. Grids, sub-sequences, autofocus and
channels that skip frames: test_useq_corpus.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
import useq
import yaml

from exengine.events import MultiDPlan, MultiDSettings, multi_d_acquisition_events
from exengine.events.detector_events import ReadoutData
from exengine.events.misc_events import SetTimeEvent
from exengine.events.positioner_events import SetPosition1DEvent, SetPosition2DEvent
from exengine.events.property_events import SetPropertiesEvent

AXIS_NAMES = {"t": "time", "p": "position", "c": "channel", "z": "z"}

SEQUENCES = {
    "time-interval-loops": {"time_plan": {"interval": 1.5, "loops": 4}},
    "time-duration-loops": {"time_plan": {"duration": 6, "loops": 4}},
    "time-interval-duration": {"time_plan": {"interval": 0.5, "duration": 2}},
    "time-one-point": {"time_plan": {"interval": 3, "loops": 1}},
    "time-multi-phase": {"time_plan": [{"interval": 1, "loops": 3}, {"interval": 5, "loops": 3}]},
    "z-range-around": {"z_plan": {"range": 4, "step": 1}},
    "z-range-around-down": {"z_plan": {"range": 3, "step": 0.5, "go_up": False}},
    "z-top-bottom": {"z_plan": {"top": 12, "bottom": 4, "step": 2}},
    "z-top-bottom-down": {"z_plan": {"top": 3, "bottom": -3, "step": 3, "go_up": False}},
    "z-above-below": {"z_plan": {"above": 3, "below": 1, "step": 1}},
    "z-relative-positions": {"z_plan": {"relative": [-0.6, -0.3, 0.0, 0.3]}},
    "z-absolute-positions": {"z_plan": {"absolute": [10, 12, 14]}},
    "z-relative-uneven": {"z_plan": {"relative": [0, 1, 3]}},
    "z-absolute-repeated": {"z_plan": {"absolute": [2, 2]}},
    "z-single-plane": {"z_plan": {"range": 0, "step": 1}},
    "channels": {"channels": ["DAPI", "FITC", "TRITC"]},
    "channels-exposures": {
        "channels": [{"config": "DAPI", "exposure": 5}, {"config": "FITC", "exposure": 20}]
    },
    "channels-some-exposures": {"channels": [{"config": "DAPI", "exposure": 5}, "FITC"]},
    "positions-some-z": {"stage_positions": [(0, 0, 1), (1, 1)]},
    "positions-some-names": {"stage_positions": [{"x": 0, "y": 0, "name": "A"}, (1, 1)]},
    "channels-group": {
        "channels": [{"config": "DAPI", "group": "Filters"}, {"config": "Cy5", "group": "Filters"}]
    },
    "positions-xy": {"stage_positions": [(0, 0), (100, 50), (-20, 30)]},
    "positions-names": {
        "stage_positions": [{"x": 0, "y": 0, "name": "left"}, {"x": 90, "y": 5, "name": "right"}]
    },
    "positions-xyz-relative-z": {
        "stage_positions": [(0, 0, 10), (50, 50, 20)],
        "z_plan": {"above": 2, "below": 2, "step": 2},
    },
    "positions-xyz-absolute-z": {
        "stage_positions": [(0, 0, 10), (50, 50, 20)],
        "z_plan": {"top": 4, "bottom": 0, "step": 2},
    },
    "positions-xy-relative-z": {
        "stage_positions": [(0, 0), (50, 50)],
        "z_plan": {"range": 2, "step": 1},
    },
    "axis-order-tpzc": {
        "axis_order": "tpzc",
        "time_plan": {"interval": 0, "loops": 2},
        "channels": ["DAPI", "FITC"],
        "z_plan": {"range": 2, "step": 2},
    },
    "axis-order-ptcz": {
        "axis_order": "ptcz",
        "time_plan": {"interval": 0, "loops": 2},
        "stage_positions": [(0, 0), (1, 1)],
        "channels": ["DAPI"],
    },
    "everything": {
        "axis_order": "tpcz",
        "time_plan": {"interval": 2, "loops": 3},
        "stage_positions": [
            {"x": 0, "y": 0, "z": 1, "name": "A"},
            {"x": 9, "y": 9, "z": 2, "name": "B"},
        ],
        "channels": [{"config": "DAPI", "exposure": 10}, {"config": "FITC", "exposure": 30}],
        "z_plan": {"range": 4, "step": 2},
    },
}


def useq_frames(sequence: useq.MDASequence) -> list[tuple]:
    """What useq-schema's own iteration acquires: coordinates, stage x/y/z, channel, exposure, start
    time. What an event leaves unset (``None``) stays as the event before set it, as on a real
    stage and camera; unnamed positions among named ones are ``Pos<index>``."""
    frames = []
    last = {"x": None, "y": None, "z": None, "exposure": None}
    named = any(p.name is not None for p in sequence.stage_positions)
    for event in sequence.iter_events():
        for key, value in zip(
            last, (event.x_pos, event.y_pos, event.z_pos, event.exposure), strict=True
        ):
            if value is not None:
                last[key] = value
        coords = {}
        for axis, index in event.index.items():
            value = index
            if axis == "p" and (event.pos_name is not None or named):
                value = event.pos_name or f"Pos{index}"
            elif axis == "c":
                value = event.channel.config
            coords[AXIS_NAMES[axis]] = value
        frames.append(
            (
                coords,
                last["x"],
                last["y"],
                _round(last["z"]),
                event.channel.config if event.channel else None,
                last["exposure"],
                event.min_start_time or 0.0,
            )
        )
    return frames


def roles(scope) -> dict:
    """The simulated microscope's devices in their roles."""
    return {
        "camera": scope["Camera"],
        "z_device": scope["Z"],
        "xy_device": scope["XY"],
        "channel_group": scope["Channel"],
    }


def plan_frames(settings: MultiDSettings, scope) -> list[tuple]:
    """What the multi-D plan of ``settings`` acquires."""
    return exengine_frames(MultiDPlan(settings, **roles(scope)))


def exengine_frames(events) -> list[tuple]:
    """What ``events`` acquire, walking them as the engine runs them: coordinates, stage x/y/z,
    channel, exposure, start time."""
    state = {"x": None, "y": None, "z": None, "channel": None, "exposure": None, "time": 0.0}
    frames = []
    for event in events:
        if isinstance(event, SetTimeEvent):
            state["time"] = event.min_start_time or 0.0
        elif isinstance(event, SetPosition2DEvent):
            state["x"], state["y"] = event.position
        elif isinstance(event, SetPosition1DEvent):
            state["z"] = event.position
        elif isinstance(event, SetPropertiesEvent):
            for _, prop, value in event.devices_prop_names_values:
                state["exposure" if prop == "exposure" else "channel"] = value
        elif isinstance(event, ReadoutData):
            for coords in event.data_coordinate_iterator:
                frames.append(
                    (
                        dict(coords),
                        state["x"],
                        state["y"],
                        _round(state["z"]),
                        state["channel"],
                        state["exposure"],
                        pytest.approx(state["time"], abs=1e-6),
                    )
                )
    return frames


def _round(z):
    return None if z is None else round(z, 6) + 0.0


@pytest.mark.parametrize("fields", list(SEQUENCES.values()), ids=list(SEQUENCES))
def test_the_plan_visits_what_useq_iterates(fields, scope):
    sequence = useq.MDASequence(**fields)
    assert plan_frames(MultiDSettings.from_sequence(sequence), scope) == useq_frames(sequence)
    assert plan_frames(MultiDSettings.from_sequence(fields), scope) == useq_frames(sequence)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize("fields", list(SEQUENCES.values()), ids=list(SEQUENCES))
def test_saved_settings_load_back_the_same(fields, suffix, scope, tmp_path):
    settings = MultiDSettings.from_sequence(fields)
    path = settings.save(tmp_path / f"mda{suffix}")
    text = path.read_text()
    assert isinstance(json.loads(text) if suffix == ".json" else yaml.safe_load(text), dict)
    # how pymmcore-widgets opens it: useq-schema validates it
    assert useq.MDASequence.from_file(path) == settings.sequence
    assert MultiDSettings.load(path) == settings


def test_files_as_pymmcore_widgets_writes_them_load(tmp_path, scope):
    sequence = useq.MDASequence(
        **SEQUENCES["everything"], metadata={"pymmcore_widgets": {"version": "0.9"}}
    )
    (tmp_path / "a.yaml").write_text(sequence.yaml(exclude_unset=True, exclude_defaults=True))
    (tmp_path / "a.json").write_text(
        sequence.model_dump_json(exclude_unset=True, exclude_defaults=True)
    )
    expected = useq_frames(sequence)
    for name in ("a.yaml", "a.json"):
        assert plan_frames(MultiDSettings.load(tmp_path / name), scope) == expected


EVENT_ARGUMENTS = {
    "absolute-z-xy-labels": {
        "num_time_points": 3,
        "time_interval_s": 1.5,
        "z_start": -4.0,
        "z_end": 4.0,
        "z_step": 2.0,
        "channels": ["DAPI", "FITC"],
        "channel_exposures_ms": [10.0, 25.0],
        "xy_positions": [[0.0, 0.0], [120.0, -40.0]],
        "position_labels": ["Pos0", "Pos1"],
        "order": "tpcz",
    },
    "descending-z-uneven-range": {"z_start": 5.0, "z_end": 0.0, "z_step": -2.0, "order": "tpcz"},
    "relative-z-xyz": {
        "xyz_positions": [[0.0, 0.0, 3.0], [5.0, 5.0, 7.0]],
        "z_start": -1.0,
        "z_end": 3.0,
        "z_step": 1.0,
        "order": "pz",
    },
    "relative-z-off-centre": {
        "xyz_positions": [[0.0, 0.0, 3.0]],
        "z_start": 1.0,
        "z_end": 3.0,
        "z_step": 1.0,
        "order": "pz",
    },
    "interval-per-time-point": {
        "num_time_points": 4,
        "time_interval_s": [1.0, 1.0, 3.0, 3.0],
        "order": "t",
    },
    "default-labels": {"xy_positions": [[0, 0], [5, 5]], "position_labels": [0, 1]},
}


@pytest.mark.parametrize("kwargs", list(EVENT_ARGUMENTS.values()), ids=list(EVENT_ARGUMENTS))
def test_exengine_arguments_map_exactly_onto_the_model(kwargs, scope, tmp_path):
    group = {"channel_group": "Channel"} if kwargs.get("channels") else {}
    settings = MultiDSettings.from_event_arguments(**kwargs, **group)
    events = multi_d_acquisition_events(**kwargs, **{**roles(scope), **group})
    assert exengine_frames(events) == plan_frames(settings, scope) == useq_frames(settings.sequence)
    loaded = MultiDSettings.load(settings.save(tmp_path / "settings"))  # no suffix: YAML
    assert (tmp_path / "settings.yaml").is_file()
    assert loaded == settings


def test_z_ranges_become_the_plans_pymmcore_widgets_knows():
    def z_plan(**kwargs):
        return MultiDSettings.from_event_arguments(**kwargs).sequence.z_plan

    assert isinstance(z_plan(z_start=0, z_end=4, z_step=1), useq.ZTopBottom)
    relative = {"xyz_positions": [[0, 0, 0]], "z_step": 1}
    assert isinstance(z_plan(**relative, z_start=-2, z_end=2), useq.ZRangeAround)
    assert isinstance(z_plan(**relative, z_start=-1, z_end=3), useq.ZAboveBelow)
    assert isinstance(z_plan(**relative, z_start=1, z_end=3), useq.ZRelativePositions)
    settings = MultiDSettings.from_event_arguments(channels=["DAPI"], channel_group="Filters")
    assert settings.sequence.channels[0].group == "Filters"


def test_relative_z_without_a_position_z_refers_to_the_z_stage(scope):
    scope["Z"].position = 10.0
    settings = MultiDSettings.from_sequence(
        {"z_plan": {"range": 2, "step": 1}, "stage_positions": [(0, 0, 5), (1, 1)]}
    )
    z = [frame[3] for frame in plan_frames(settings, scope)]
    assert z == [4.0, 5.0, 6.0, 9.0, 10.0, 11.0]
    absolute = MultiDSettings.from_sequence({"z_plan": {"top": 2, "bottom": 0, "step": 1}})
    assert [frame[3] for frame in plan_frames(absolute, scope)] == [0.0, 1.0, 2.0]


def test_unnamed_positions_among_named_ones_get_labels():
    settings = MultiDSettings.from_sequence(
        {"stage_positions": [{"x": 0, "y": 0, "name": "A"}, (1, 1)]}
    )
    assert settings.position_labels == ["A", "Pos1"]


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"channels": [{"config": "DAPI", "camera": "Camera2"}]}, "channels[0].camera='Camera2'"),
        (
            {"channels": [{"config": "DAPI", "group": "A"}, {"config": "FITC", "group": "B"}]},
            "config groups ['A', 'B']",
        ),
        (
            {"setup": {"roi": (0, 0, 10, 10)}, "channels": ["DAPI"]},
            "setup sets an slm_image or a roi",
        ),
        (
            {"stage_positions": [{"x": 0, "y": 0, "name": "A"}, {"x": 1, "y": 1, "name": "A"}]},
            "Each stage position name can be used once",
        ),
        (
            {"axis_order": "tpc", "z_plan": {"range": 2, "step": 1}},
            "The axis order 'tpc' leaves out z",
        ),
        ({"time_plan": {"interval": 1, "loops": "many"}}, "Invalid MDASequence: time_plan"),
    ],
)
def test_what_the_plan_cannot_run_is_refused_by_name(fields, named):
    with pytest.raises(ValueError) as info:
        MultiDPlan(MultiDSettings.from_sequence(fields))
    assert named in str(info.value)
    assert "\n" not in str(info.value)


def test_settings_useq_has_no_field_for_are_refused_with_what_needs_its_iteration():
    sequence = {"time_plan": {"interval": 1, "loops": 2}, "grid_plan": {"rows": 2, "columns": 2}}
    with pytest.raises(ValueError, match="until_stopped cannot run with a grid"):
        MultiDPlan(MultiDSettings(sequence=sequence, until_stopped=True))


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"z_start": 0, "z_end": 4, "z_step": 1, "sequence": "z"}, "sequence='z'"),
        ({"num_time_points": math.inf}, "until stopped has no MDASequence"),
    ],
)
def test_settings_useq_cannot_express_are_not_saved(kwargs, named, tmp_path):
    settings = MultiDSettings.from_event_arguments(**kwargs)
    with pytest.raises(ValueError, match=named):
        settings.save(tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (
            {"channels": ["DAPI"], "channel_group": "Channel", "channel_exposures_ms": [0.0]},
            "The exposure of channel 'DAPI' must be above 0 ms",
        ),
        ({"z_start": 0, "z_end": 4}, "A z range needs a start, an end and a step \\(µm\\)"),
    ],
)
def test_arguments_useq_cannot_express_are_refused(kwargs, named):
    with pytest.raises(ValueError, match=named):
        MultiDSettings.from_event_arguments(**kwargs)


def test_save_refuses_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.yaml, \.yml or \.json"):
        MultiDSettings.from_event_arguments(num_time_points=2).save(tmp_path / "x.txt")


def run_cli(*args):
    command = [
        sys.executable,
        "-c",
        "from napari_exengine.exengine_script import console; console()",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_cli_refuses_what_cannot_run_by_name(tmp_path):
    path = tmp_path / "camera.yaml"
    path.write_text(useq.MDASequence(channels=[{"config": "DAPI", "camera": "Camera2"}]).yaml())
    result = run_cli("acquire", "--file", str(path), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "channels[0].camera" in result.stderr and len(result.stderr.strip().splitlines()) == 1, (
        result.stderr
    )
    assert not any(p.is_dir() for p in tmp_path.iterdir()), "nothing was acquired"


def test_cli_runs_a_saved_sequence(tmp_path):
    settings = MultiDSettings.from_event_arguments(
        num_time_points=2,
        z_start=0,
        z_end=2,
        z_step=1,
        channels=["DAPI", "FITC"],
        channel_group="Channel",
        channel_exposures_ms=[1.0, 2.0],
        xy_positions=[[0, 0], [10, 10]],
        position_labels=["A", "B"],
    )
    path = settings.save(tmp_path / "mda.json")
    result = run_cli("acquire", "--file", str(path), "--out", str(tmp_path), "--name", "saved")
    assert result.returncode == 0, result.stderr
    assert "Done: 24 of 24 frames stored" in result.stdout


@pytest.mark.parametrize(
    "text",
    [
        "time_plan: {interval: 0, loops: 1000000000}\ngrid_plan: {rows: 2, columns: 2}\n",
        "stage_positions:\n  - {x: 0, y: 0, sequence: {grid_plan: {rows: 100000, "
        "columns: 100000}}}\n",
    ],
)
def test_huge_sequences_that_useq_iterates_are_refused_at_once(tmp_path, text):
    """Counting such a sequence's frames is a pass of iter_events: a billion would take hours and
    gigabytes (a grid of 10^10 tiles failed with a MemoryError); they are refused before that."""
    path = tmp_path / "huge.yaml"
    path.write_text(text)
    started = time.monotonic()
    result = run_cli("acquire", "--file", str(path), "--out", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "at most 1,000,000" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 20
    assert not any(p.is_dir() for p in tmp_path.iterdir()), "nothing was acquired"
