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

from exengine.events import MultiDSettings
from exengine.events.multi_d_arguments import SettingError
from exengine.events.multi_d_events import check_runnable

from .panel_common import show_as_error, wrapping
from .position_list import PositionList
from .stage_controls import Stages, registered_stages

__all__ = ["MultiDForm"]

#: The form's widgets holding the settings, in order (disabled while an acquisition runs).
SETTINGS_WIDGETS = (
    "time_points",
    "until_stopped",
    "interval_s",
    "use_z",
    "z_start",
    "z_stop",
    "z_step",
    "channels",
    "per_channel_exposure",
    "exposure_rows",
    "positions_label",
    "position_header",
    "position_rows",
    "position_actions",
    "position_message",
    "position_buttons",
    "order",
    "sequenced",
)
#: The widget under which a refused setting (a ``SettingError``'s ``setting``) is said in red.
REFUSED_UNDER = {
    "num_time_points": "time_points",
    "time_interval_s": "interval_s",
    "z_start": "z_start",
    "z_end": "z_stop",
    "z_step": "z_step",
    "channel_group": "channels",
    "channels": "channels",
    "channel_exposures_ms": "exposure_rows",
    "xy_positions": "position_rows",
    "xyz_positions": "position_rows",
    "position_labels": "position_rows",
    "order": "order",
    "sequence": "sequenced",
}


class MultiDForm(PositionList, mw.Container):
    """Time points (or until stopped) and interval, an optional z range, channels of the channel
    device with optional exposures, positions (x, y and an optional z) and the axis order.

    ``camera_exposure()`` gives the exposure new per-channel boxes start at; ``changed_settings``
    is called whenever a setting changes (the panel's estimate follows); ``stage_devices()`` gives
    the XY stage and focus drive that *Go to* moves and *Add current position* and *Update* read
    (by default the first registered ones).

    A loaded sequence the form cannot show in full is :attr:`loaded`: it is the form's settings
    until a setting is edited, and :attr:`loaded_line` names what the form does not show.
    :meth:`show_refusal` says why a setting is refused under its widget (:attr:`refusals`).
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
        #: The red line under each widget saying why its setting is refused (hidden when it is not).
        self.refusals = {
            name: wrapping(mw.Label(value="", visible=False))
            for name in dict.fromkeys(REFUSED_UNDER.values())
        }
        for line in self.refusals.values():
            show_as_error(line, True)
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
                and not isinstance(widget, (mw.PushButton, mw.Label))
                and not any(widget is b for b in buttons)
            ):
                widget.changed.connect(self._edited)
        self._connect_position_list()
        self.show_z_range()

    @property
    def settings_widgets(self) -> list[mw.Widget]:
        """The widgets that hold the settings (disabled while an acquisition runs), each followed
        by its line saying why it is refused, if it has one."""
        widgets = []
        for name in SETTINGS_WIDGETS:
            widgets.append(getattr(self, name))
            if name in self.refusals:
                widgets.append(self.refusals[name])
        return widgets

    def show_refusal(self, error: Exception | None) -> mw.Label | None:
        """Say ``error`` in red under the widget of the setting it names (a ``SettingError``'s
        ``setting``) and hide the other lines (all of them for ``None`` or another error); returns
        the line showing it, if any."""
        under = REFUSED_UNDER.get(getattr(error, "setting", None) or "")
        for name, line in self.refusals.items():
            line.value = str(error) if name == under else ""
            line.visible = name == under
        return self.refusals.get(under or "")

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
            raise SettingError(
                "position_labels",
                f"Each position needs a label of its own; the labels are {labels}",
            )
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
            raise ValueError(
                f"The channel device has no channel {', '.join(map(repr, unknown))}; its channels "
                f"are {', '.join(map(repr, self.channels.choices))}"
            )
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
