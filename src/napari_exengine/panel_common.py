"""What both dock panels use: device lookups, worker-thread calls, and settings forms of
contributions.

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

from exengine import ExecutionEngine
from exengine.devices.simulated import create_simulated_devices
from exengine.kernel.device import Device

from .contributions import Contribution


class _DeviceEvents:
    """Tells the panels that devices were added (so the acquisition panel offers them)."""

    changed = Signal()


DEVICE_EVENTS = _DeviceEvents()


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
        widget = mw.create_widget(value=default, annotation=annotation, name=parameter.name)
        if default is None and isinstance(widget, mw.LineEdit):
            widget.value = ""  # empty: use the factory's default
        form.append(widget)
    return form


def form_values(form: mw.Container) -> dict[str, Any]:
    """The settings of a form; empty text fields mean "not given" (the factory default)."""
    return {w.name: w.value for w in form if not (isinstance(w.value, str) and w.value == "")}
