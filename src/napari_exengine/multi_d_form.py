"""The multi-D form of the Acquisition panel: time points, z range, channels (with exposures),
positions (x, y and an optional z, each visited, updated from the stage or removed) and the axis
order, read as and filled from the one settings model (:class:`~exengine.events.MultiDSettings`);
useq-schema files load into it and save from it.

A loaded sequence with fields the form cannot show (a grid, autofocus, sub-sequences...) is kept as
loaded: the form shows what it can, one line names the rest, and the loaded settings are the plan
(run, estimated and saved as loaded) until a setting of the form is edited; any edit drops them,
and the line says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import useq
from magicgui import widgets as mw
from qtpy.QtCore import QObject
from qtpy.QtWidgets import QWidget

from exengine.events import MultiDSettings
from exengine.events.multi_d_events import check_runnable

from .panel_common import show_as_error, wrapping
from .stage_controls import (
    EngineCalls,
    FocusWatcher,
    Stages,
    buttons_row,
    columns,
    position_of,
    registered_stages,
    shown,
)

__all__ = ["MultiDForm"]

#: The position list's column headers, in the order of each row's fields.
POSITION_COLUMNS = ("label", "x (µm)", "y (µm)", "z (µm)")
#: How the selected position's row is marked.
SELECTED_ROW_STYLE = "#selected_position { border-left: 3px solid palette(highlight); }"


class MultiDForm(mw.Container):
    """Time points (or until stopped) and interval, an optional z range, channels of the channel
    device with optional exposures, positions (x, y and an optional z) and the axis order.

    ``camera_exposure()`` gives the exposure new per-channel boxes start at; ``changed_settings``
    is called whenever a setting changes (the panel's estimate follows); ``stage_devices()`` gives
    the XY stage and focus drive that *Go to* moves and *Update from current* reads (by default
    the first registered ones).

    A loaded sequence the form cannot show in full is :attr:`loaded`: it is the form's settings
    until a setting is edited, and :attr:`loaded_line` names what the form does not show.
    """

    def __init__(
        self,
        channel_names: list[str],
        camera_exposure: Callable[[], float | None],
        changed_settings: Callable[..., Any],
        stage_devices: Stages = registered_stages,
    ) -> None:
        self._camera_exposure = camera_exposure
        self._changed = changed_settings
        self.stage_devices = stage_devices
        #: The loaded settings the form cannot show in full (the plan until the form is edited).
        self.loaded: MultiDSettings | None = None
        self._loaded_extras = ""  # what the form does not show, and where it was loaded from
        self._filling = False
        self.time_points = mw.SpinBox(value=1, min=1, max=1_000_000_000, label="time points")
        self.until_stopped = mw.CheckBox(value=False, text="until stopped")
        self.interval_s = mw.FloatSpinBox(value=0.0, min=0.0, max=86400.0, label="interval (s)")
        self.use_z = mw.CheckBox(value=False, text="z stack")
        self.z_start = mw.FloatSpinBox(value=-4.0, min=-5000, max=5000, label="z start (µm)")
        self.z_stop = mw.FloatSpinBox(value=4.0, min=-5000, max=5000, label="z stop (µm)")
        self.z_step = mw.FloatSpinBox(value=2.0, min=0.01, max=1000, label="z step (µm)")
        self.channels = mw.Select(choices=channel_names, value=channel_names[:1], label="channels")
        self.per_channel_exposure = mw.CheckBox(value=False, text="exposure per channel")
        self.exposure_rows = mw.Container(labels=True, visible=False)
        self.exposure_rows.margins = (0, 0, 0, 0)
        self._exposure_boxes: dict[str, mw.FloatSpinBox] = {}
        self._make_position_list()
        self.order = mw.LineEdit(value="tpcz", label="axis order")
        self.sequenced = mw.LineEdit(
            value="",
            label="camera sequence",
            tooltip="inner axes the camera runs through as one hardware-timed sequence, at its own "
            "pace (e.g. t: back-to-back time points; z, c: with triggerable devices)",
        )
        self.loaded_line = wrapping(mw.Label(value="", visible=False))
        self.load_sequence_button = mw.PushButton(text="Load sequence…")
        self.save_sequence_button = mw.PushButton(text="Save sequence…")
        files = mw.Container(
            widgets=[self.load_sequence_button, self.save_sequence_button],
            layout="horizontal",
            labels=False,
        )
        super().__init__(widgets=[*self.settings_widgets, self.loaded_line, files])
        self.margins = (0, 0, 0, 0)
        self.use_z.changed.connect(self.show_z_range)
        self.until_stopped.changed.connect(self.show_time_points)
        self.channels.changed.connect(self._show_exposures)
        self.per_channel_exposure.changed.connect(self._show_exposures)
        buttons = (self.position_actions, self.position_buttons)  # their clicks edit nothing
        for widget in self.settings_widgets:
            if (
                hasattr(widget, "changed")
                and not isinstance(widget, mw.PushButton)
                and not any(widget is b for b in buttons)
            ):
                widget.changed.connect(self._edited)
        self._connect_position_list()
        self.show_z_range()

    @property
    def settings_widgets(self) -> list[mw.Widget]:
        """The widgets that hold the settings (disabled while an acquisition runs)."""
        return [
            self.time_points,
            self.until_stopped,
            self.interval_s,
            self.use_z,
            self.z_start,
            self.z_stop,
            self.z_step,
            self.channels,
            self.per_channel_exposure,
            self.exposure_rows,
            self.positions_label,
            self.position_header,
            self.position_rows,
            self.position_actions,
            self.position_message,
            self.position_buttons,
            self.order,
            self.sequenced,
        ]

    # ------------------------------------------------------------------------------ settings
    def settings(self, channel_device: Any) -> MultiDSettings:
        """The settings the form describes (``channel_device`` selects the channels), or the
        :attr:`loaded` ones while the form is not edited. Raises ``ValueError`` naming a setting
        that cannot work."""
        if self.loaded is not None:
            return self.loaded
        order = self.order.value.strip().lower()
        for axis in "tpcz":  # axes without values may be left out of the form's order
            if axis not in order:
                order += axis
        channels = list(self.channels.value)
        entries = self._position_entries()
        labels = [label for label, _ in entries]
        if "" in labels or len(set(labels)) < len(labels):
            raise ValueError(f"position labels must be unique and not empty, got {labels}")
        settings = MultiDSettings.from_event_arguments(
            math.inf if self.until_stopped.value else self.time_points.value,
            self.interval_s.value,
            *self._z_range() if self.use_z.value else (None, None, None),
            channel_group=channel_device if channels else None,
            channels=channels or None,
            channel_exposures_ms=self.exposures() if channels else None,
            xy_positions=[xy for _, xy in entries] or None,
            position_labels=labels or None,
            order=order,
            sequence=self.sequenced.value.strip().lower() or None,
        )
        return self._with_zs(settings)

    def show_settings(self, settings: MultiDSettings, source: str = "the file") -> None:
        """Fill the form from ``settings`` (loaded from ``source``). Fields the form cannot show
        (:func:`form_extras`) are kept: ``settings`` is then :attr:`loaded`, the plan until a
        setting is edited, and :attr:`loaded_line` names them. What cannot run and channels the
        channel device does not have are refused by name (``ValueError``), changing nothing."""
        check_runnable(settings.sequence)
        unknown = [c for c in settings.channel_names if c not in self.channels.choices]
        if unknown:
            raise ValueError(f"channels {unknown} are not among {list(self.channels.choices)}")
        extras = ", ".join(form_extras(settings))
        self._filling = True
        try:
            self._fill(settings)
        finally:
            self._filling = False
        self.loaded = settings if extras else None
        self._loaded_extras = f"{extras} from {source}"
        self.loaded_line.value = (
            f"{extras} run as loaded from {source}; edit them in the file (editing the form "
            "drops them)"
            if extras
            else ""
        )
        self.loaded_line.visible = bool(extras)
        self.show_time_points()
        self._changed()

    def _fill(self, settings: MultiDSettings) -> None:
        """Show in the widgets what they can hold of ``settings``."""
        interval = settings.time_interval_s
        self.until_stopped.value = settings.until_stopped
        self.time_points.value = settings.time_points or 1
        self.interval_s.value = interval[0] if isinstance(interval, list) else interval
        z_range = settings.z_range()
        self.use_z.value = z_range is not None
        if z_range is not None:
            self.z_start.value, self.z_stop.value = z_range[0], z_range[1]
            self.z_step.value = abs(z_range[2])
        self.channels.value = settings.channel_names
        exposures = settings.channel_exposures_ms
        self.per_channel_exposure.value = bool(exposures)
        for channel, exposure in zip(settings.channel_names, exposures or [], strict=False):
            self._exposure_boxes[channel].value = exposure
        self._clear_positions()
        positions = list(settings.sequence.stage_positions)
        if all(p.x is not None and p.y is not None for p in positions):
            for label, position in zip(settings.position_labels, positions, strict=True):
                self.add_position_at(position.x, position.y, str(label), position.z)
        else:  # a position without x or y has no row: the count says what runs
            self.positions_label.value = f"{len(positions)} positions, as loaded"
        self.order.value = "".join(settings.axis_order) or "tpcz"
        self.sequenced.value = settings.hardware_sequenced

    def _edited(self, *_: Any) -> None:
        """A setting changed: an edit drops the :attr:`loaded` settings (the line says so), then
        the panel follows."""
        if self._filling:
            return
        if self.loaded is not None:
            self.loaded = None
            self.loaded_line.value = (
                f"{self._loaded_extras} dropped: the form was edited and runs as shown (load the "
                "file again to run them)"
            )
            self.positions_label.value = self._positions_text()
            self.show_time_points()
        self._changed()

    def load(self, path: str | Path) -> None:
        """Fill the form from a useq-schema ``MDASequence`` file (YAML or JSON); fields the form
        cannot show run as loaded until the form is edited (see :meth:`show_settings`)."""
        self.show_settings(MultiDSettings.load(path), source=Path(path).name)

    def save(self, path: str | Path, channel_device: Any) -> Path:
        """Save the form's settings (the :attr:`loaded` ones, with all their fields, while the
        form is not edited) as a useq-schema ``MDASequence`` file."""
        return self.settings(channel_device).save(path)

    def set_channel_names(self, names: list[str]) -> None:
        """Offer the channels of another channel device (the first one selected)."""
        self.channels.choices = names
        self.channels.value = names[:1]

    # ------------------------------------------------------------------------------- time, z
    def _z_range(self) -> tuple[float, float, float]:
        """Start, stop and step (µm), the step signed to go from start to stop: top to bottom as
        well as bottom to top."""
        start, stop, step = self.z_start.value, self.z_stop.value, self.z_step.value
        return start, stop, step if stop >= start else -step

    def show_time_points(self, *_: Any) -> None:
        """While the form can be edited, "until stopped" is offered unless loaded settings run
        (their plan cannot run until stopped), and the number of time points can be edited unless
        "until stopped" is on."""
        editable = self.interval_s.enabled
        self.until_stopped.enabled = editable and self.loaded is None
        self.time_points.enabled = editable and not self.until_stopped.value

    def show_z_range(self, *_: Any) -> None:
        """The z range can be edited while "z stack" is on (and nothing runs)."""
        editable = self.use_z.value and self.use_z.enabled
        for widget in (self.z_start, self.z_stop, self.z_step):
            widget.enabled = editable

    # ---------------------------------------------------------------------------- exposures
    def _show_exposures(self, *_: Any) -> None:
        """One exposure box per selected channel while "exposure per channel" is on (a channel
        keeps its value while it stays selected; new ones start at the camera's exposure)."""
        kept = {channel: box.value for channel, box in self._exposure_boxes.items()}
        self.exposure_rows.clear()
        self._exposure_boxes = {}
        if self.per_channel_exposure.value:
            current = self._camera_exposure()
            default = float(current) if isinstance(current, (int, float)) and current else 10.0
            for channel in self.channels.value:
                box = mw.FloatSpinBox(
                    value=kept.get(channel, default),
                    min=0.001,
                    max=3_600_000.0,
                    step=1.0,
                    label=f"{channel} exposure (ms)",
                )
                box.changed.connect(self._edited)
                self.exposure_rows.append(box)
                self._exposure_boxes[channel] = box
        self.exposure_rows.visible = bool(self._exposure_boxes)
        self._edited()

    def exposures(self) -> list[float] | None:
        """The exposure (ms) of each selected channel, or None to keep the camera's exposure."""
        if not self.per_channel_exposure.value:
            return None
        return [self._exposure_boxes[channel].value for channel in self.channels.value]

    # ---------------------------------------------------------------------------- positions
    def _make_position_list(self) -> None:
        """Headed rows of label, x, y and z; Go to, Update from current and Remove act on the
        selected row (the one last clicked into, or last added); what went wrong is said in red."""
        self.positions_label = mw.Label(value="current position only", label="positions")
        self.position_header = columns(
            [mw.Label(value=text) for text in POSITION_COLUMNS], visible=False
        )
        self.position_rows = mw.Container(labels=False, visible=False)
        self.position_rows.margins = (0, 0, 0, 0)
        self.go_to_position = mw.PushButton(
            text="Go to", tooltip="move the XY stage (and the focus, when z is given) there"
        )
        self.update_position = mw.PushButton(
            text="Update", tooltip="set x, y and z to where the stage and focus are now"
        )
        self.remove_position = mw.PushButton(text="Remove", tooltip="remove the selected position")
        self.position_actions = buttons_row(
            self.go_to_position, self.update_position, self.remove_position
        )
        self.position_actions.visible = False
        self.position_message = wrapping(mw.Label(value="", visible=False))
        self.add_position = mw.PushButton(text="Add current position")
        self.clear_positions = mw.PushButton(text="Clear positions")
        self.position_buttons = buttons_row(self.add_position, self.clear_positions)
        self._selected: mw.Container | None = None
        self._current_z_wanted = 0  # "Add current position" clicks whose row has not come yet

    def _connect_position_list(self) -> None:
        self._selector = FocusWatcher(self.native, self.select_row_of)
        self._calls = EngineCalls(self.native)
        # before the panel's own handler, which reads the XY stage and adds the row
        self.add_position.clicked.connect(self._adding_current_position)
        self.clear_positions.clicked.connect(self._clear_positions)
        self.go_to_position.clicked.connect(self.go_to_selected)
        self.update_position.clicked.connect(self.update_selected)
        self.remove_position.clicked.connect(self.remove_selected)

    def add_position_at(
        self, x: float, y: float, label: str | None = None, z: float | None = None
    ) -> mw.Container:
        """Append a position (µm; no z: the focus stays where it is) with its label (``Pos<n>``
        by default) and select it. A row added by *Add current position* gets the focus drive's
        z."""
        z_field = mw.LineEdit(
            value="" if z is None else um_text(z),
            tooltip="z (µm); empty: the focus stays where it is (a z stack's range replaces it)",
        )
        row = columns(
            [
                mw.LineEdit(value=label or self._free_label(), tooltip="label (the position axis)"),
                mw.FloatSpinBox(value=float(x), min=-1e6, max=1e6, step=1.0, tooltip="x (µm)"),
                mw.FloatSpinBox(value=float(y), min=-1e6, max=1e6, step=1.0, tooltip="y (µm)"),
                z_field,
            ]
        )
        for widget in row:
            widget.changed.connect(self._edited)
            for native in (widget.native, *widget.native.findChildren(QWidget)):
                native.installEventFilter(self._selector)
        self.position_rows.append(row)
        self.select_position(len(self.position_rows) - 1)
        if z is None and self._current_z_wanted:
            self._current_z_wanted -= 1
            self._read_current(row, with_xy=False)
        self._show_positions()
        return row

    @property
    def xy_positions(self) -> list[tuple[float, float]]:
        """The xy positions (µm) the acquisition visits, in order; empty for the current
        position only."""
        return [xy for _, xy in self._position_entries()]

    @property
    def position_zs(self) -> list[float | None]:
        """Each position's z (µm), ``None`` where the focus stays; a ``ValueError`` names a row
        whose z is not a number of µm."""
        zs: list[float | None] = []
        for row in self.position_rows:
            label, text = row[0].value.strip(), row[3].value.strip()  # type: ignore[index]
            try:
                z = float(text) if text else None
            except ValueError:
                z = math.nan
            if z is not None and not math.isfinite(z):
                raise ValueError(f"position {label}: z {text!r} is not a number of µm")
            zs.append(z)
        return zs

    def _free_label(self) -> str:
        used = {label for label, _ in self._position_entries()}
        return next(f"Pos{n}" for n in range(len(used) + 1) if f"Pos{n}" not in used)

    def _position_entries(self) -> list[tuple[str, tuple[float, float]]]:
        entries = []
        for row in self.position_rows:
            label, x, y, _ = list(row)  # type: ignore[call-overload]
            entries.append((label.value.strip(), (float(x.value), float(y.value))))
        return entries

    def _with_zs(self, settings: MultiDSettings) -> MultiDSettings:
        """``settings`` whose positions have the rows' z (none without one)."""
        zs = self.position_zs
        if all(z is None for z in zs):
            return settings
        seq = settings.sequence
        positions = [
            useq.Position(x=p.x, y=p.y, z=z, name=p.name)
            for p, z in zip(seq.stage_positions, zs, strict=True)
        ]
        return MultiDSettings(
            sequence=seq.replace(stage_positions=positions),
            until_stopped=settings.until_stopped,
            hardware_sequenced=settings.hardware_sequenced,
        )

    # ------------------------------------------------------------------ the selected position
    def select_position(self, index: int) -> None:
        """Select the position in row ``index`` (what Go to, Update and Remove act on)."""
        self._selected = self.position_rows[index]  # type: ignore[assignment]
        for row in self.position_rows:
            selected = row is self._selected
            row.native.setObjectName("selected_position" if selected else "")
            row.native.setStyleSheet(SELECTED_ROW_STYLE if selected else "")

    def select_row_of(self, widget: QObject) -> None:
        """Select the row holding ``widget`` (one of its fields got the focus)."""
        for index, row in enumerate(self.position_rows):
            if widget is row.native or row.native.isAncestorOf(widget):  # type: ignore[arg-type]
                if row is not self._selected:
                    self.select_position(index)
                return

    @property
    def selected_index(self) -> int | None:
        """The row of the selected position, or None without positions."""
        rows = list(self.position_rows)
        return next((i for i, row in enumerate(rows) if row is self._selected), None)

    def go_to_selected(self, *_: Any) -> None:
        """Move the XY stage to the selected position, and the focus drive to its z when it has
        one; off the GUI thread, ahead of queued events."""
        index = self.selected_index
        if index is None:
            return
        try:
            z = self.position_zs[index]
        except ValueError as e:
            self.say(str(e), error=True)
            return
        label, (x, y) = self._position_entries()[index]
        xy_device, z_device = self.stage_devices()
        axes, values = (("x", "y"), (x, y)) if z is None else (("x", "y", "z"), (x, y, z))
        where = f"{label} ({shown(axes, values)})"
        if xy_device is None or (z is not None and z_device is None):
            missing = "an XY stage" if xy_device is None else "a focus drive"
            self.say(f"Cannot go to {where}: there is no {missing}", error=True)
            return

        def move() -> None:
            xy_device.set_position(x, y)
            if z is not None:
                z_device.set_position(z)

        self.say(f"going to {where}…")
        self._calls.call(
            move,
            lambda _: self.say(f"at {where}"),
            lambda e: self.say(f"Could not go to {where}: {e}", error=True),
        )

    def update_selected(self, *_: Any) -> None:
        """Set the selected position's x, y and z to where the stage and focus are now."""
        if self._selected is not None:
            self._read_current(self._selected, with_xy=True)

    def _read_current(self, row: mw.Container, with_xy: bool) -> None:
        """Read the stage (``with_xy``) and the focus drive off the GUI thread into ``row``."""
        xy_device, z_device = self.stage_devices()
        if with_xy and xy_device is None:
            self.say("Cannot update the position: no XY stage is registered", error=True)
            return

        def read() -> tuple[tuple[float, ...], tuple[float, ...]]:
            xy = position_of(xy_device) if with_xy else ()
            return xy, position_of(z_device) if z_device is not None else ()

        def show(position: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
            if not any(row is r for r in self.position_rows):
                return  # removed meanwhile
            xy, z = position
            if xy:
                row[1].value, row[2].value = xy  # type: ignore[index]
            if z:
                row[3].value = um_text(z[0])  # type: ignore[index]
            self.say("")

        self._calls.call(read, show, lambda e: self.say(f"Reading the stage failed: {e}", True))

    def _adding_current_position(self, *_: Any) -> None:
        self._current_z_wanted += 1

    def remove_selected(self, *_: Any) -> None:
        """Remove the selected position; the one after it (or the last) is selected next."""
        index = self.selected_index
        if index is None:
            return
        self.position_rows.remove(self.position_rows[index])
        self._selected = None
        if len(self.position_rows):
            self.select_position(min(index, len(self.position_rows) - 1))
        self._show_positions()

    def say(self, message: str, error: bool = False) -> None:
        """Show ``message`` under the positions (an ``error`` in red); empty hides it."""
        self.position_message.value = message
        self.position_message.visible = bool(message)
        show_as_error(self.position_message, error)

    def _clear_positions(self, *_: Any) -> None:
        self.position_rows.clear()
        self._selected = None
        self._show_positions()

    def _show_positions(self) -> None:
        shown_rows = bool(len(self.position_rows))
        for widget in (self.position_header, self.position_rows, self.position_actions):
            widget.visible = shown_rows
        self.positions_label.value = self._positions_text()
        self._edited()

    def _positions_text(self) -> str:
        count = len(self.position_rows)
        return f"{count} position{'' if count == 1 else 's'}" if count else "current position only"


def um_text(value: float) -> str:
    """A position in µm as a z field shows it (to 0.1 nm)."""
    return repr(round(float(value), 4))


def form_extras(settings: MultiDSettings) -> list[str]:
    """The fields of ``settings`` that change what runs and that the form cannot show, by name
    (empty when it shows them all)."""
    seq = settings.sequence
    extras = [
        name for name in ("grid_plan", "autofocus_plan", "setup") if getattr(seq, name) is not None
    ]
    if isinstance(settings.time_interval_s, list):
        extras.append("time_plan (unequal intervals)")
    if settings.z_is_relative:
        extras.append("z_plan (relative)")
    for field, default in (("do_stack", True), ("acquire_every", 1), ("z_offset", 0.0)):
        if any(getattr(channel, field) != default for channel in seq.channels):
            extras.append(f"channels' {field}")
    positions = list(seq.stage_positions)
    if isinstance(seq.stage_positions, useq.WellPlatePlan):
        extras.append("stage_positions (a well plate)")
    named = {
        "positions without x or y": lambda p: p.x is None or p.y is None,
        "positions' sub-sequences": lambda p: p.sequence is not None,
        "positions' properties": lambda p: bool(getattr(p, "properties", None)),
    }
    extras += [name for name, has in named.items() if any(has(p) for p in positions)]
    return extras
