"""The position list of the multi-D form: headed rows of label, x, y and an optional z (µm), each
visited (*Go to*), updated from the stage (*Update*) or removed, and *Add current position*.

The XY stage and focus drive are the ones ``stage_devices()`` gives (the Acquisition panel's
choices). They are read and moved on the engine's main executor thread ahead of queued events
(:class:`~napari_exengine.stage_controls.EngineCalls`): the GUI thread never waits for them, also
during a run.
"""

from __future__ import annotations

import math
from typing import Any

import useq
from magicgui import widgets as mw
from qtpy.QtCore import QObject
from qtpy.QtWidgets import QWidget

from exengine.events.multi_d_arguments import SettingError
from exengine.events.multi_d_settings import MultiDSettings

from .panel_common import show_as_error, wrapping
from .stage_controls import (
    EngineCalls,
    FocusWatcher,
    Stages,
    buttons_row,
    columns,
    position_of,
    shown,
)

__all__ = ["PositionList", "um_text"]

#: The position list's column headers, in the order of each row's fields.
POSITION_COLUMNS = ("label", "x (µm)", "y (µm)", "z (µm)")
#: How the selected position's row is marked.
SELECTED_ROW_STYLE = "#selected_position { border-left: 3px solid palette(highlight); }"


class PositionList:
    """The position list's widgets and actions, mixed into the multi-D form (a magicgui
    container with ``stage_devices`` and an ``_edited`` method called on every change)."""

    stage_devices: Stages
    native: QWidget

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

    def _connect_position_list(self) -> None:
        self._selector = FocusWatcher(self.native, self.select_row_of)
        self._calls = EngineCalls(self.native)
        self.add_position.clicked.connect(self.add_current_position)
        self.clear_positions.clicked.connect(self._clear_positions)
        self.go_to_position.clicked.connect(self.go_to_selected)
        self.update_position.clicked.connect(self.update_selected)
        self.remove_position.clicked.connect(self.remove_selected)

    def add_position_at(
        self, x: float, y: float, label: str | None = None, z: float | None = None
    ) -> mw.Container:
        """Append a position (µm; no z: the focus stays where it is) with its label (``Pos<n>``
        by default) and select it."""
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
        self._show_positions()
        return row

    @property
    def xy_positions(self) -> list[tuple[float, float]]:
        """The xy positions (µm) the acquisition visits, in order; empty for the current
        position only."""
        return [xy for _, xy in self._position_entries()]

    @property
    def position_zs(self) -> list[float | None]:
        """Each position's z (µm), ``None`` where the focus stays; a ``SettingError`` names a row
        whose z is not a number of µm."""
        zs: list[float | None] = []
        for row in self.position_rows:
            label, text = row[0].value.strip(), row[3].value.strip()  # type: ignore[index]
            try:
                z = float(text) if text else None
            except ValueError:
                z = math.nan
            if z is not None and not math.isfinite(z):
                raise SettingError(
                    "xyz_positions",
                    f"The z of position {label} must be a number of µm, got {text!r}",
                )
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
            missing = "XY stage" if xy_device is None else "focus drive"
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

    def add_current_position(self, *_: Any) -> None:
        """Add a position where the XY stage is now, with the focus drive's z (no z without a
        focus drive)."""
        self._read_stages(None)

    def update_selected(self, *_: Any) -> None:
        """Set the selected position's x, y and z to where the stage and focus are now."""
        if self._selected is not None:
            self._read_stages(self._selected)

    def _read_stages(self, row: mw.Container | None) -> None:
        """Read the XY stage and the focus drive (between a run's steps, never waiting on the GUI
        thread) into ``row``, or into a new row when ``row`` is ``None``."""
        xy_device, z_device = self.stage_devices()
        if xy_device is None:
            self.say("Cannot read the position: there is no XY stage", error=True)
            return

        def read() -> tuple[tuple[float, ...], tuple[float, ...]]:
            return position_of(xy_device), position_of(z_device) if z_device is not None else ()

        def show(position: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
            (x, y), z = position
            if row is None:
                self.add_position_at(x, y, z=z[0] if z else None)
            elif any(row is r for r in self.position_rows):  # not removed meanwhile
                row[1].value, row[2].value = x, y  # type: ignore[index]
                if z:
                    row[3].value = um_text(z[0])  # type: ignore[index]
            self.say("")

        self._calls.call(read, show, lambda e: self.say(f"Reading the stage failed: {e}", True))

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
