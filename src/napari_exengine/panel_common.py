"""What both dock panels use: a panel that fits a small screen, device lookups, worker-thread
calls, and settings forms of contributions.

Device calls run on worker threads (never on the GUI thread, which must not wait for the engine).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

from magicgui import widgets as mw
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from psygnal import Signal
from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import QComboBox, QFrame, QScrollArea, QSizePolicy, QWidget

from exengine import ExecutionEngine
from exengine.devices.simulated import create_simulated_devices
from exengine.kernel.device import Device

from .contributions import Contribution


class _DeviceEvents:
    """Tells the panels that devices were added (so the acquisition panel offers them)."""

    changed = Signal()


DEVICE_EVENTS = _DeviceEvents()

#: The widest a dock panel asks to be (px): beside napari's layer list, the canvas keeps more than
#: 40% of a window 1280 px wide. The user can still widen the dock.
PANEL_WIDTH = 400

#: The characters a choice box is sized for; longer choices are elided (the list shows them whole).
CHOICE_CHARACTERS = 12


class DockPanel(QWidget):
    """A dock panel that fits a 1280x720 screen: its settings scroll (:meth:`scrolled`), it asks
    for at most :data:`PANEL_WIDTH`, and choice boxes elide rather than widen the dock, also in
    forms added later (long texts: :func:`wrapping`)."""

    #: The height the panel asks for at most (px), leaving room to a panel docked below it.
    height_hint = 10_000

    def scrolled(self, content: QWidget) -> QScrollArea:
        """``content`` in a vertical scroll area, for the panel's layout."""
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        scroll.setWidget(content)
        content.installEventFilter(self)
        return scroll

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        return QSize(min(hint.width(), PANEL_WIDTH), min(hint.height(), self.height_hint))

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.LayoutRequest:
            fit_width(self)
        return super().event(event)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.LayoutRequest and isinstance(watched, QWidget):
            fit_width(watched)
        return super().eventFilter(watched, event)


def fit_width(widget: QWidget) -> None:
    """Let ``widget``'s choice boxes narrow: they elide a long choice (their list shows it
    whole)."""
    for box in widget.findChildren(QComboBox):
        if box.minimumWidth() == 0:
            box.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            box.setMinimumContentsLength(CHOICE_CHARACTERS)
            # its minimum size hint keeps the longest choice's width
            box.setMinimumWidth(min(box.sizeHint().width(), box.minimumSizeHint().width()))


def wrapping(label: mw.Label) -> mw.Label:
    """``label``, made to wrap its text to the panel's width, in as many lines as it needs where
    there is room, at least one (a word wider than the panel is clipped); returns it."""
    native = label.native
    native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
    native.setWordWrap(True)
    native.setMinimumSize(1, native.fontMetrics().height())
    return label


#: Units that end setting and property names (``pixel_size_um``), as labels show them.
UNITS = {
    **{unit: unit for unit in ("nm", "mm", "ms", "s")},
    **{"um": "µm", "us": "µs", "hz": "Hz", "mb": "MB", "gb": "GB"},
}

#: The colour of texts that say why something cannot work (readable on napari's themes).
ERROR_COLOUR = "#f0524f"


def setting_label(name: str) -> str:
    """The label of a setting or property named ``name``: words, with a unit in parentheses
    (``pixel_size_um``: "pixel size (µm)")."""
    *words, last = name.split("_")
    if words and last.lower() in UNITS:
        return f"{' '.join(words)} ({UNITS[last.lower()]})"
    return " ".join([*words, last])


def show_as_error(label: mw.Label, error: bool) -> None:
    """Show ``label``'s text in :data:`ERROR_COLOUR` (``error``) or in the theme's colour."""
    label.native.setStyleSheet(f"color: {ERROR_COLOUR};" if error else "")


def ensure_devices(cameras: int = 1) -> dict[str, Device]:
    """The registered devices; the simulated microscope (with ``cameras`` cameras) when none are
    registered."""
    devices = ExecutionEngine.get_devices()
    if not devices:
        devices = create_simulated_devices(cameras=cameras)
    return devices


def prioritized(func: Callable[[], Any]) -> Any:
    """Run ``func`` on the main executor thread ahead of queued events (and between the steps of a
    running acquisition), waiting for its result. Call it from a worker thread, never the GUI
    thread."""
    return ExecutionEngine.get_instance().submit(func, prioritize=True).await_execution()  # type: ignore[union-attr]


def devices_of(kind: type) -> list[tuple[str, Device]]:
    return [(name, d) for name, d in ExecutionEngine.get_devices().items() if isinstance(d, kind)]


def channel_property(device: Device) -> str | None:
    """The property that selects a channel on ``device`` ("channel" or a Micro-Manager group's
    "config")."""
    for prop in ("channel", "config"):
        try:
            if device.get_allowed_property_values(prop):
                return prop
        except Exception:  # a device that cannot answer is not a channel device
            return None
    return None


def run_in_thread(
    func: Callable[[], Any], on_done: Callable[[Any], None] | None = None, what: str = "Device call"
) -> Any:
    worker = create_worker(func, _start_thread=False, _ignore_errors=True)
    if on_done is not None:
        worker.returned.connect(on_done)
    worker.errored.connect(lambda e: show_error(f"{what} failed: {e}"))
    worker.start()
    return worker


def displayed(widget: mw.Widget, value: Any) -> Any:
    """``value`` as ``widget`` shows it (text fields show non-text values as Python literals)."""
    return value if not isinstance(widget, mw.LineEdit) or isinstance(value, str) else repr(value)


def settings_form(contribution: Contribution) -> mw.Container:
    """A magicgui form for a contribution's factory settings (typed parameters with their
    defaults)."""
    factory = contribution.settings_callable()
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # unresolvable annotations: fall back to the defaults' types
        hints = {}
    form = mw.Container(labels=True)
    for parameter in contribution.parameters():
        default = None if parameter.default is parameter.empty else parameter.default
        annotation = hints.get(parameter.name, type(default) if default is not None else str)
        widget = mw.create_widget(
            value=default,
            annotation=annotation,
            name=parameter.name,
            label=setting_label(parameter.name),
        )
        if default is None and isinstance(widget, mw.LineEdit):
            widget.value = ""  # empty: use the factory's default
        form.append(widget)
    return form


def form_values(form: mw.Container) -> dict[str, Any]:
    """The settings of a form; empty text fields mean "not given" (the factory default)."""
    return {w.name: w.value for w in form if not (isinstance(w.value, str) and w.value == "")}
