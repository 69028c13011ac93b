"""Stage and focus under the user's hand: a positioner's current position, a typed target with Go,
and jog steps of a chosen size, for XY and Z alike (the Devices panel shows one per positioner).

Device calls run on the engine's main executor thread ahead of queued events (between the steps of
a running acquisition) through :class:`EngineCalls`: the GUI thread only submits them and checks,
on a timer, whether they are done; it never waits for a device and no worker thread is held.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui import widgets as mw
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import QSizePolicy

from exengine import ExecutionEngine
from exengine.device_types import DoubleAxisPositioner, SingleAxisPositioner
from exengine.kernel.device import Device
from exengine.kernel.ex_future import ExecutionFuture

from .panel_common import show_as_error, wrapping

#: The jog step sizes offered (µm); the second is the default.
STEPS_UM = (0.1, 1.0, 10.0, 100.0, 1000.0)
#: The widest a jog button is (px): the controls keep within the panel's width.
JOG_BUTTON_WIDTH = 32
#: How often the GUI thread looks whether submitted device calls are done (ms).
CHECK_MS = 50

Done = Callable[[Any], None]
Failed = Callable[[BaseException], None]
#: Gives the XY stage and the focus drive (``None`` for one that is missing).
Stages = Callable[[], tuple[Any, Any]]


def axes_of(device: Device) -> tuple[str, ...]:
    """The axes ``device`` moves along: ``("x", "y")``, ``("z",)``, or none (not a positioner)."""
    if isinstance(device, DoubleAxisPositioner):
        return ("x", "y")
    if isinstance(device, SingleAxisPositioner):
        return ("z",)
    return ()


def position_of(device: Device) -> tuple[float, ...]:
    """``device``'s position, one value per axis (µm). Call it on an executor thread."""
    return tuple(float(v) for v in np.ravel(device.get_position()))


def registered_stages() -> tuple[Any, Any]:
    """The first registered XY stage and focus drive (``None`` for one that is missing)."""
    devices = ExecutionEngine.get_devices().values()
    xy = next((d for d in devices if isinstance(d, DoubleAxisPositioner)), None)
    z = next((d for d in devices if isinstance(d, SingleAxisPositioner)), None)
    return xy, z


def columns(widgets: list[mw.Widget], visible: bool = True) -> mw.Container:
    """``widgets`` side by side in equal columns (a header and its rows line up)."""
    row = mw.Container(widgets=widgets, layout="horizontal", labels=False, visible=visible)
    row.margins = (0, 0, 0, 0)
    row.native.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)  # can be marked
    layout = row.native.layout()
    for index, widget in enumerate(widgets):
        widget.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout.setStretch(index, 1)
    return row


def buttons_row(*buttons: mw.PushButton) -> mw.Container:
    """``buttons`` side by side."""
    row = mw.Container(widgets=list(buttons), layout="horizontal", labels=False)
    row.margins = (0, 0, 0, 0)
    return row


class FocusWatcher(QObject):
    """An event filter calling ``on_focus(widget)`` when a widget it watches gets the keyboard
    focus; it holds ``on_focus`` weakly (it keeps nothing alive)."""

    def __init__(self, parent: QObject, on_focus: Callable[[QObject], None]) -> None:
        super().__init__(parent)
        self._on_focus = weakref.WeakMethod(on_focus)  # type: ignore[arg-type]

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        on_focus = self._on_focus()
        if on_focus is not None and event.type() == QEvent.Type.FocusIn:
            on_focus(watched)
        return False


def shown(axes: tuple[str, ...], position: tuple[float, ...]) -> str:
    """A position in words: ``x 1.50 µm, y -2.00 µm``."""
    return ", ".join(f"{a} {v:.2f} µm" for a, v in zip(axes, position, strict=True))


class EngineCalls(QObject):
    """Runs callables on the main executor thread of the engine live when it was made, ahead of
    queued events, and hands each result (or exception) to its callback on the GUI thread. Once
    that engine is shut down (its devices are gone), calls fail at once with a ``RuntimeError``.
    A child of ``parent``: its timer stops with it, and :meth:`stop` drops the calls in flight."""

    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        self.engine = ExecutionEngine.get_instance()
        #: True once a call found the engine shut down: no more calls are made.
        self.closed = False
        self._pending: list[tuple[ExecutionFuture, Done, Failed]] = []
        self._timer = QTimer(self)
        self._timer.setInterval(CHECK_MS)
        self._timer.timeout.connect(self._check)

    def call(self, func: Callable[[], Any], done: Done, failed: Failed) -> None:
        """Submit ``func``; ``done(result)`` or ``failed(exception)`` follows on the GUI thread."""
        if self.closed:
            return
        try:
            future = self.engine.submit(func, prioritize=True)
        except RuntimeError as e:  # the engine was shut down
            self.closed = True
            failed(e)
            return
        self._pending.append((future, done, failed))  # type: ignore[arg-type]
        self._timer.start()

    def stop(self) -> None:
        """Forget the calls in flight (their callbacks never come) and stop checking."""
        self._timer.stop()
        self._pending = []

    def _check(self) -> None:
        entries, self._pending = self._pending, []
        for entry in entries:
            future, done, failed = entry
            if not future.is_execution_complete():
                self._pending.append(entry)
                continue
            try:
                result = future.await_execution(0)
            except Exception as e:  # the device's own words, shown beside its control
                failed(e)
            else:
                done(result)
        if not self._pending:
            self._timer.stop()


class PositionerControls(mw.Container):
    """A positioner's current position, a target field per axis with Go (or Enter), and -/+ jog
    buttons per axis moving by the chosen step; what went wrong is shown in red below them."""

    def __init__(self, device: Device, calls: EngineCalls) -> None:
        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self.device = device
        self.axes = axes_of(device)
        self._calls = calls
        self._reading = False
        self.position = wrapping(mw.Label(value="position: reading…"))
        self.targets: list[mw.LineEdit] = []
        self.jog_buttons: dict[tuple[str, int], mw.PushButton] = {}
        self.append(self.position)
        for axis in self.axes:
            self.append(self._axis_row(axis))
        self.step = mw.ComboBox(
            choices=[(f"{step:g} µm", step) for step in STEPS_UM], value=STEPS_UM[1]
        )
        self.go_button = mw.PushButton(text="Go", tooltip="move to the typed target")
        self.go_button.clicked.connect(self.go)
        row = mw.Container(
            widgets=[mw.Label(value="jog step"), self.step, self.go_button],
            layout="horizontal",
            labels=False,
        )
        row.margins = (0, 0, 0, 0)
        self.append(row)
        self.message = wrapping(mw.Label(value="", visible=False))
        self.append(self.message)

    def _axis_row(self, axis: str) -> mw.Container:
        target = mw.LineEdit(tooltip=f"target {axis} (µm); empty: {axis} stays where it is")
        target.native.setPlaceholderText(f"target {axis}")
        target.native.returnPressed.connect(self.go)
        self.targets.append(target)
        row = [mw.Label(value=f"{axis} (µm)"), target]
        for sign, text in ((-1, "\N{MINUS SIGN}"), (1, "+")):
            button = mw.PushButton(text=text, tooltip=f"move {axis} by {text} the step")
            button.native.setMaximumWidth(JOG_BUTTON_WIDTH)
            button.clicked.connect(lambda _=None, a=axis, s=sign: self.jog(a, s))
            self.jog_buttons[(axis, sign)] = button
            row.append(button)
        container = mw.Container(widgets=row, layout="horizontal", labels=False)
        container.margins = (0, 0, 0, 0)
        return container

    # --------------------------------------------------------------------------- showing
    def show_position(self, position: tuple[float, ...]) -> None:
        """Show ``position`` (one value per axis, µm) as the current position."""
        self.position.value = f"at {shown(self.axes, position)}"

    def say(self, message: str, error: bool = False) -> None:
        """Show ``message`` below the controls (an ``error`` in red); empty hides it."""
        self.message.value = message
        self.message.visible = bool(message)
        show_as_error(self.message, error)

    def refresh(self) -> None:
        """Read the position again (not while a read is in flight) and show it."""
        if self._reading:
            return
        self._reading = True
        device = self.device
        self._calls.call(lambda: position_of(device), self._read, self._unread)

    def _read(self, position: tuple[float, ...]) -> None:
        self._reading = False
        self.show_position(position)

    def _unread(self, error: BaseException) -> None:
        self._reading = False
        self.position.value = f"position unknown: {error}"

    # ---------------------------------------------------------------------------- moving
    def go(self, *_: Any) -> bool:
        """Move to the typed target (an empty field keeps its axis); False when a field is not a
        number of µm (said in red, nothing moves)."""
        target: list[float | None] = []
        for axis, field in zip(self.axes, self.targets, strict=True):
            text = field.value.strip()
            try:
                value = float(text) if text else None
            except ValueError:
                value = math.nan
            if value is not None and not math.isfinite(value):
                self.say(f"target {axis}: {text!r} is not a number of µm", error=True)
                return False
            target.append(value)
        if all(t is None for t in target):
            self.say("type a target in µm first", error=True)
            return False
        self._move(
            lambda here: tuple(h if t is None else t for h, t in zip(here, target, strict=True))
        )
        return True

    def jog(self, axis: str, sign: int) -> None:
        """Move along ``axis`` by the chosen step, in the direction of ``sign`` (-1 or 1)."""
        step = sign * float(self.step.value)
        self._move(
            lambda here: tuple(h + step * (a == axis) for a, h in zip(self.axes, here, strict=True))
        )

    def _move(self, where: Callable[[tuple[float, ...]], tuple[float, ...]]) -> None:
        """Move to ``where(current position)`` on the executor; show the position reached, or why
        the device refused (the target in µm and the device's words)."""
        device, axes = self.device, self.axes
        wanted: list[tuple[float, ...]] = []

        def move() -> tuple[float, ...]:
            wanted.append(where(position_of(device)))
            device.set_position(*wanted[0])
            return position_of(device)

        def failed(error: BaseException) -> None:
            to = f" to {shown(axes, wanted[0])}" if wanted else ""
            self.say(f"{device.name} did not move{to}: {error}", error=True)

        def moved(position: tuple[float, ...]) -> None:
            self.show_position(position)
            self.say("")

        self.say("moving…")
        self._calls.call(move, moved, failed)
