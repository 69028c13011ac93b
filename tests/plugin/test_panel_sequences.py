"""useq-schema sequences loaded into the Acquisition panel in a real viewer: fields the multi-D form
cannot show (a grid, autofocus) run as loaded, estimated and saved as loaded, the form saying so,
until a setting of the form is edited (which drops them, saying so); plain sequences fill the form
as before."""

from __future__ import annotations

import pytest
import useq

from exengine.storage.ndtiff_reader import NDTiffReader
from panel_helpers import run_panel

pytestmark = pytest.mark.gui

GRID_AND_AUTOFOCUS = {
    "time_plan": {"interval": 0, "loops": 2},
    "stage_positions": [{"x": 0, "y": 0, "name": "A"}, {"x": 100, "y": 50, "name": "B"}],
    "channels": ["DAPI", "FITC"],
    "grid_plan": {"rows": 2, "columns": 2},
    "autofocus_plan": {"autofocus_device_name": "Autofocus", "axes": ["p"]},
}
LINE = (
    "grid_plan, autofocus_plan run as loaded from mda.yaml; edit them in the file (editing the "
    "form drops them)"
)


def panel_for(viewer):
    from napari_exengine.acquisition_panel import AcquisitionPanel

    return AcquisitionPanel(viewer)


def write(path, fields) -> useq.MDASequence:
    sequence = useq.MDASequence(**fields)
    if path.suffix == ".json":
        path.write_text(sequence.model_dump_json(exclude_unset=True, exclude_defaults=True))
    else:
        path.write_text(sequence.yaml(exclude_unset=True, exclude_defaults=True))
    return sequence


def useq_coordinates(sequence: useq.MDASequence) -> list[dict]:
    """The coordinates of the frames useq-schema's own iteration takes, in order (tiles at their
    row and column)."""
    tiles = list(sequence.grid_plan.iter_grid_positions()) if sequence.grid_plan else []
    frames = []
    for event in sequence.iter_events():
        if event.action.type != "acquire_image":
            continue  # a hardware autofocus takes no frame
        coords = {"time": event.index["t"], "position": event.pos_name}
        if "g" in event.index:
            tile = tiles[event.index["g"]]
            coords |= {"row": tile.grid_row, "column": tile.grid_col}
        frames.append({**coords, "channel": event.channel.config})
    return frames


def test_a_grid_and_autofocus_run_as_loaded_the_form_saying_so(gui_viewer, scope, qtbot, tmp_path):
    sequence = write(tmp_path / "mda.yaml", GRID_AND_AUTOFOCUS)
    expected = useq_coordinates(sequence)
    assert len(expected) == 2 * 2 * 4 * 2
    panel = panel_for(gui_viewer)
    panel.load_sequence(str(tmp_path / "mda.yaml"))
    form = panel.multi_d
    assert form.loaded is not None and form.loaded.sequence == sequence
    assert form.loaded_line.value == LINE and not form.loaded_line.native.isHidden()
    assert (form.time_points.value, form.channels.value) == (2, ["DAPI", "FITC"])
    assert form.positions_label.value == "2 positions" and form._position_entries() == [
        ("A", (0.0, 0.0)),
        ("B", (100.0, 50.0)),
    ]
    assert not form.until_stopped.enabled and form.time_points.enabled
    checked = panel.update_estimate()
    assert checked is not None and checked.total_frames == len(expected)
    assert panel.run_control.estimate.value.startswith(f"{len(expected)} frames")
    saved = panel.save_sequence(str(tmp_path / "saved.yaml"))
    assert useq.MDASequence.from_file(saved) == sequence
    panel.storage.directory.value = tmp_path
    acquisition = panel.run()
    assert acquisition is not None
    qtbot.waitUntil(lambda: panel.run_control.run_button.enabled, timeout=60000)
    assert acquisition.status().error is None
    stored = NDTiffReader(acquisition.data_handler.storage.path).coordinates()
    assert [dict(c) for c in stored] == expected
    assert not form.until_stopped.enabled, "still the loaded sequence after the run"
    assert form.loaded is not None and form.loaded_line.value == LINE


def test_editing_the_form_drops_what_it_cannot_show(gui_viewer, scope, qtbot, tmp_path):
    write(tmp_path / "mda.yaml", GRID_AND_AUTOFOCUS)
    panel = panel_for(gui_viewer)
    panel.load_sequence(str(tmp_path / "mda.yaml"))
    form = panel.multi_d
    form.time_points.value = 3
    qtbot.waitUntil(lambda: form.loaded is None, timeout=5000)
    assert form.loaded_line.value == (
        "grid_plan, autofocus_plan from mda.yaml dropped: the form was edited and runs as shown "
        "(load the file again to run them)"
    )
    assert not form.loaded_line.native.isHidden() and form.until_stopped.enabled
    qtbot.waitUntil(
        lambda: panel.run_control.estimate.value.startswith(f"{3 * 2 * 2} frames"), timeout=5000
    )
    saved = useq.MDASequence.from_file(panel.save_sequence(str(tmp_path / "edited.yaml")))
    assert saved.grid_plan is None and saved.autofocus_plan is None
    assert {axis: n for axis, n in saved.sizes.items() if n} == {"t": 3, "p": 2, "c": 2}
    panel.load_sequence(str(tmp_path / "mda.yaml"))  # loading again runs them again
    assert form.loaded is not None and form.loaded_line.value == LINE
    form.add_position_at(5.0, 5.0)  # so does any edit
    assert form.loaded is None and "dropped" in form.loaded_line.value


def test_a_plain_sequence_fills_the_form_as_before(gui_viewer, scope, tmp_path):
    plain = {
        "time_plan": {"interval": 1.5, "loops": 3},
        "stage_positions": [{"x": 1, "y": 2, "name": "A"}],
        "channels": [{"config": "DAPI", "exposure": 5}, {"config": "FITC", "exposure": 7}],
        "z_plan": {"top": 2, "bottom": -2, "step": 1},
        "axis_order": "tpcz",
    }
    write(tmp_path / "mda.yaml", GRID_AND_AUTOFOCUS)
    sequence = write(tmp_path / "plain.json", plain)
    panel = panel_for(gui_viewer)
    panel.load_sequence(str(tmp_path / "mda.yaml"))
    panel.load_sequence(str(tmp_path / "plain.json"))
    form = panel.multi_d
    assert form.loaded is None and form.loaded_line.native.isHidden()
    assert form.until_stopped.enabled
    assert (form.time_points.value, form.interval_s.value) == (3, 1.5)
    assert (form.z_start.value, form.z_stop.value, form.z_step.value) == (-2.0, 2.0, 1.0)
    assert form.exposures() == [5.0, 7.0] and form._position_entries() == [("A", (1.0, 2.0))]
    settings = form.settings(panel.channel_device)
    assert settings.sequence.sizes == sequence.sizes
    assert panel.update_estimate().total_frames == len(list(sequence.iter_events())) == 30


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (
            {
                "channels": [{"config": "DAPI", "do_stack": False}],
                "z_plan": {"range": 2, "step": 1},
            },
            "do_stack",
        ),
        (
            {"stage_positions": [{"x": 1, "sequence": {"grid_plan": {"rows": 2, "columns": 1}}}]},
            "x or y",
        ),
    ],
)
def test_other_fields_the_form_cannot_show_are_named(gui_viewer, scope, tmp_path, fields, named):
    sequence = write(tmp_path / "other.yaml", fields)
    panel = panel_for(gui_viewer)
    panel.load_sequence(str(tmp_path / "other.yaml"))
    assert named in panel.multi_d.loaded_line.value
    assert panel.multi_d.loaded.sequence == sequence
    frames = [e for e in sequence.iter_events() if e.action.type == "acquire_image"]
    assert panel.update_estimate().total_frames == len(frames)


def test_positions_with_z_load_in_the_form_keep_their_z_and_run_there(
    gui_viewer, scope, qtbot, tmp_path
):
    """useq positions with z fill the position list (no longer run "as loaded"); the form's
    settings keep each z (a position without one leaves the focus where it is), save with it, and
    the run moves the focus there."""
    fields = {
        "stage_positions": [
            {"x": 10, "y": 20, "z": 3.5, "name": "A"},
            {"x": -5, "y": 0, "name": "B"},
            {"x": 0, "y": 7, "z": -12.25, "name": "C"},
        ],
        "channels": ["DAPI"],
        "axis_order": "pc",
    }
    sequence = write(tmp_path / "xyz.yaml", fields)
    panel = panel_for(gui_viewer)
    panel.load_sequence(str(tmp_path / "xyz.yaml"))
    form = panel.multi_d
    assert form.loaded is None and form.loaded_line.native.isHidden()
    assert [label.value for label in form.position_header] == [
        "label",
        "x (µm)",
        "y (µm)",
        "z (µm)",
    ]
    assert [[w.value for w in row] for row in form.position_rows] == [
        ["A", 10.0, 20.0, "3.5"],
        ["B", -5.0, 0.0, ""],
        ["C", 0.0, 7.0, "-12.25"],
    ]
    settings = form.settings(panel.channel_device)
    assert [(p.x, p.y, p.z) for p in settings.sequence.stage_positions] == [
        (10.0, 20.0, 3.5),
        (-5.0, 0.0, None),
        (0.0, 7.0, -12.25),
    ]
    saved = useq.MDASequence.from_file(panel.save_sequence(str(tmp_path / "saved.yaml")))
    assert saved.stage_positions == sequence.stage_positions
    scope["Z"].set_position(1.0)
    panel.storage.backend.value = "napari-exengine.storage.ndram"
    acquisition = run_panel(panel, qtbot)
    storage = acquisition.data_handler.storage
    stage = {c["position"]: storage.get_metadata(c) for c in storage.get_coordinates_list()}
    assert [
        (stage[label]["StageX-um"], stage[label]["StageY-um"], stage[label]["StageZ-um"])
        for label in "ABC"
    ] == [
        (10.0, 20.0, 3.5),
        (-5.0, 0.0, 3.5),  # B has no z: the focus stays where A left it
        (0.0, 7.0, -12.25),
    ]


def test_a_z_that_is_not_a_number_is_said_in_plain_words(gui_viewer, scope):
    from napari_exengine.panel_common import ERROR_COLOUR

    panel = panel_for(gui_viewer)
    row = panel.multi_d.add_position_at(1.0, 2.0, "A", z=4.0)
    row[3].value = "4 um"
    assert panel.run_control.estimate.value.endswith(
        "The z of position A must be a number of µm, got '4 um'"
    )
    assert ERROR_COLOUR in panel.run_control.estimate.native.styleSheet()
    assert not panel.run_control.run_button.enabled
    row[3].value = ""
    assert panel.run_control.run_button.enabled
