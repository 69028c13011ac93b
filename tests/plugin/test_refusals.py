"""Refused settings of the multi-D form, in a real viewer: the reason, in plain words with units,
is said in red under the widget of the setting at fault (as well as in the estimate line) and goes
away once the setting is fixed."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


def shown_refusals(form) -> dict[str, str]:
    """The refusal lines the form shows, by the widget they are under."""
    return {name: line.value for name, line in form.refusals.items() if line.visible}


def line_follows(form, widget_name: str) -> bool:
    """The refusal line of ``widget_name`` is laid out right under that widget."""
    widgets = list(form)
    line = form.refusals[widget_name]
    index = next(i for i, w in enumerate(widgets) if w is getattr(form, widget_name))
    return widgets[index + 1] is line


@pytest.fixture
def panel(gui_viewer, scope, qtbot):
    from napari_exengine.widgets import AcquisitionPanel

    panel = AcquisitionPanel(gui_viewer)
    qtbot.addWidget(panel)
    panel.show()
    return panel


@pytest.mark.parametrize(
    ("edit", "under", "words"),
    [
        (lambda f: setattr(f.order, "value", "tq"), "order", "The axis order lists each of t"),
        (lambda f: setattr(f.sequenced, "value", "x"), "sequenced", "Hardware-triggered axes"),
        (
            lambda f: [
                setattr(getattr(f, name), "value", value)
                for name, value in (("order", "pczt"), ("sequenced", "t"), ("interval_s", 2.0))
            ],
            "interval_s",
            "the time interval must be 0 s, not 2.0 s",
        ),
    ],
    ids=["order", "camera sequence", "interval"],
)
def test_a_refused_setting_is_said_in_red_under_its_widget(panel, edit, under, words):
    from napari_exengine.panel_common import ERROR_COLOUR

    form = panel.multi_d
    assert shown_refusals(form) == {}
    edit(form)
    line = form.refusals[under]
    assert list(shown_refusals(form)) == [under] and words in line.value
    assert line_follows(form, under) and not line.native.isHidden()
    assert ERROR_COLOUR in line.native.styleSheet()
    assert panel.run_control.estimate.value == f"invalid: {line.value}"
    assert not panel.run_control.run_button.enabled
    form.order.value, form.sequenced.value, form.interval_s.value = "tpcz", "", 0.0
    assert shown_refusals(form) == {} and line.native.isHidden()
    assert panel.run_control.run_button.enabled


def test_refused_positions_are_said_under_the_position_list(panel):
    form = panel.multi_d
    row = form.add_position_at(1.0, 2.0, "A", z=4.0)
    form.add_position_at(3.0, 4.0, "B")
    row[3].value = "4 um"
    assert shown_refusals(form) == {
        "position_rows": "The z of position A must be a number of µm, got '4 um'"
    }
    assert line_follows(form, "position_rows")
    row[3].value = ""
    assert shown_refusals(form) == {}
    row[0].value = "B"
    assert shown_refusals(form) == {
        "position_rows": "Each position needs a label of its own; the labels are ['B', 'B']"
    }
    row[0].value = "A"
    assert shown_refusals(form) == {} and panel.run_control.run_button.enabled


def test_a_contributed_plan_shows_no_refusal_in_the_hidden_form(panel):
    form = panel.multi_d
    form.order.value = "tq"
    assert list(shown_refusals(form)) == ["order"]
    panel.plan_choice.value = "napari-exengine.plan.grid_scan"
    assert shown_refusals(form) == {}
