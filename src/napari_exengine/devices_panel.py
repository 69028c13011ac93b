"""The Devices dock panel: every registered device's properties as controls, plus Snap and Live.

Device calls run on worker threads; napari objects are touched only on the GUI thread.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import time
from typing import Any

import numpy as np
from magicgui import widgets as mw
from napari.qt.threading import create_worker, thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QGroupBox, QVBoxLayout, QWidget

from exengine import ExecutionEngine
from exengine.device_types import Detector
from exengine.events import (
    ReadoutData,
    StartCapture,
    StartContinuousCapture,
    StopCapture,
)
from exengine.kernel.device import Device

from .device_sets import load_device_set
from .layer_sink import pixel_size_um
from .panel_common import (
    DEVICE_EVENTS,
    DockPanel,
    devices_of,
    displayed,
    ensure_devices,
    prioritized,
    run_in_thread,
    setting_label,
    show_as_error,
    wrapping,
)

#: Properties of the demo devices that exist for tests, not for users: the panel leaves them out.
TEST_HOOKS = frozenset({"fail_next_frames"})
#: Live's frame rate is the camera's frames over the last this many seconds (all frames, not only
#: those shown: Live shows at most 30 a second).
LIVE_RATE_WINDOW_S = 1.0


def property_widget(device: Device, prop: str) -> mw.Widget:
    """A magicgui control for ``device.prop`` built from its value and the device's property
    metadata."""
    value = getattr(device, prop)
    allowed = device.get_allowed_property_values(prop)
    low, high = device.get_property_limits(prop)
    options: dict[str, Any] = {"name": prop, "label": setting_label(prop)}
    if allowed is not None:
        widget: mw.Widget = mw.ComboBox(choices=list(allowed), value=value, **options)
    elif isinstance(value, bool):
        widget = mw.CheckBox(value=value, **options)
    elif isinstance(value, int):
        widget = mw.SpinBox(
            value=value,
            min=int(low) if low is not None else -(2**31),
            max=int(high) if high is not None else 2**31 - 1,
            **options,
        )
    elif isinstance(value, float):
        widget = mw.FloatSpinBox(
            value=value,
            min=low if low is not None else -1e12,
            max=high if high is not None else 1e12,
            step=0.1,
            **options,
        )
    else:
        widget = mw.LineEdit(value=repr(value) if not isinstance(value, str) else value, **options)
    widget.enabled = not device.is_property_read_only(prop)
    return widget


class DevicesPanel(DockPanel):
    """Every registered device's properties as controls, plus Snap and Live."""

    height_hint = 320

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.devices = ensure_devices()
        self.controls: dict[tuple[str, str], mw.Widget] = {}
        self._literal_props: set[tuple[str, str]] = set()
        layout = QVBoxLayout(self)
        self.backend = mw.ComboBox(
            choices=[
                ("Micro-Manager demo devices (pymmcore-plus)", "micromanager"),
                ("Micro-Manager configuration file", "micromanager-config"),
                ("python-microscope simulators", "microscope"),
            ],
            label="add",
        )
        self.mm_config = mw.FileEdit(mode="r", filter="*.cfg", label="configuration")
        self.load_button = mw.PushButton(text="Load devices")
        self.load_button.clicked.connect(self.load_devices)
        loader = mw.Container(widgets=[self.backend, self.mm_config, self.load_button])
        self._device_area = QWidget()
        self._device_layout = QVBoxLayout(self._device_area)
        self._device_layout.addWidget(loader.native)
        scroll = self.scrolled(self._device_area)
        # room for a device's first properties while fitting a 720 px screen with the acquisition
        # panel below
        scroll.setMinimumHeight(160)
        layout.addWidget(scroll)
        self._add_device_boxes(self.devices)
        self.camera_choice = mw.ComboBox(label="camera", choices=lambda _: devices_of(Detector))
        self.snap_button = mw.PushButton(text="Snap")
        self.live_button = mw.PushButton(text="Live")
        self.status = wrapping(mw.Label(value=""))
        buttons = mw.Container(
            widgets=[self.camera_choice, self.snap_button, self.live_button],
            layout="horizontal",
        )
        layout.addWidget(buttons.native)
        layout.addWidget(self.status.native)
        self.snap_button.clicked.connect(self.snap)
        self.live_button.clicked.connect(self.toggle_live)
        self._live_worker: Any = None
        self._loaded = 0
        self._setting: set[tuple[str, str]] = set()
        self._reading = False
        self._refresh_timer = QTimer(self)  # a child: it goes with the panel
        self._refresh_timer.setInterval(1000)
        self._refresh_timer.timeout.connect(self.refresh)
        self._refresh_timer.start()

    @property
    def camera(self) -> Detector | None:
        """The camera used by Snap and Live."""
        return self.camera_choice.value

    def load_devices(self) -> Any:
        """Load the chosen device backend on a worker thread and add its devices to the panel."""
        backend = self.backend.value
        config = str(self.mm_config.value) if backend == "micromanager-config" else None
        if backend == "micromanager-config" and (not config or config == "."):
            self._fail("Choose a Micro-Manager configuration file first")
            return None
        self._loaded += 1
        prefix = {"micromanager": "mm", "micromanager-config": "mm", "microscope": "pm"}[backend]
        prefix = f"{prefix}{self._loaded}_"

        def load() -> dict[str, Device]:
            return load_device_set(
                "micromanager" if config or backend == "micromanager" else backend,
                config,
                prefix=prefix,
            ).devices

        def loaded(devices: dict[str, Device]) -> None:
            self._add_device_boxes(devices)
            self.devices.update(devices)
            self.camera_choice.reset_choices()
            self.status.value = f"Loaded {len(devices)} devices: {', '.join(devices)}"
            show_as_error(self.status, False)
            DEVICE_EVENTS.changed.emit()

        worker = create_worker(load, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(loaded)
        worker.errored.connect(lambda e: self._fail(f"Loading devices failed: {e}"))
        worker.start()
        return worker

    def _fail(self, message: str) -> None:
        self.status.value = message
        show_as_error(self.status, True)
        show_error(message)

    def _add_device_boxes(self, devices: dict[str, Device]) -> None:
        for name, device in devices.items():
            box = QGroupBox(name)
            box_layout = QVBoxLayout(box)
            container = mw.Container(labels=True)
            for prop in device.get_property_names():
                if prop in TEST_HOOKS:
                    continue
                try:
                    widget = property_widget(device, prop)
                except Exception as e:  # one unreadable property must not break the panel
                    widget = wrapping(
                        mw.Label(name=prop, label=setting_label(prop), value=f"unavailable: {e}")
                    )
                else:
                    widget.changed.connect(lambda v, d=device, p=prop: self.set_property(d, p, v))
                    if isinstance(widget, mw.LineEdit) and not isinstance(
                        getattr(device, prop), str
                    ):
                        self._literal_props.add((name, prop))
                self.controls[(name, prop)] = widget
                container.append(widget)
            box_layout.addWidget(container.native)
            self._device_layout.addWidget(box)

    def set_property(self, device: Device, prop: str, value: Any) -> None:
        """Set ``device.prop`` on a worker thread; on failure show the error and restore the
        control."""
        if (device.name, prop) in self._literal_props:
            with contextlib.suppress(ValueError, SyntaxError):
                value = ast.literal_eval(value)

        def apply() -> Any:
            return prioritized(lambda: (setattr(device, prop, value), getattr(device, prop))[1])

        key = (device.name, prop)
        self._setting.add(key)
        worker = create_worker(apply, _start_thread=False, _ignore_errors=True)
        worker.errored.connect(lambda e: self._property_failed(device, prop, e))
        worker.finished.connect(lambda: self._setting.discard(key))
        worker.start()

    def _property_failed(self, device: Device, prop: str, error: Exception) -> None:
        self._fail(f"{device.name}.{prop}: {error}")
        run_in_thread(lambda: getattr(device, prop), lambda v: self._show_value(device, prop, v))

    def _show_value(self, device: Device, prop: str, value: Any) -> None:
        widget = self.controls[(device.name, prop)]
        with widget.changed.blocked():
            widget.value = displayed(widget, value)

    def refresh(self) -> Any:
        """Re-read every property on a worker thread and show values that changed elsewhere (a
        script, another panel). Runs every second by itself; a read still in flight is not
        doubled."""
        if self._reading:
            return None
        keys = [k for k, w in self.controls.items() if not isinstance(w, mw.Label)]

        def read_all() -> dict[tuple[str, str], Any]:
            values = {}
            for name, prop in keys:
                # a device that cannot answer keeps its last value
                with contextlib.suppress(Exception):
                    values[(name, prop)] = getattr(self.devices[name], prop)
            return values

        def read() -> dict[tuple[str, str], Any]:
            return prioritized(read_all)

        def show(values: dict[tuple[str, str], Any]) -> None:
            try:
                for (name, prop), value in values.items():
                    widget = self.controls[(name, prop)]
                    if (name, prop) not in self._setting and widget.value != displayed(
                        widget, value
                    ):
                        self._show_value(self.devices[name], prop, value)
            except (
                RuntimeError
            ):  # the panel was closed while the values were read: nothing to show them in
                return

        self._reading = True
        worker = create_worker(read, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(show)
        worker.finished.connect(lambda: setattr(self, "_reading", False))
        worker.start()
        return worker

    def snap(self) -> Any:
        """Capture one frame into the ``Snap`` layer."""
        camera = self.camera
        if camera is None:
            show_error("No camera (Detector) is registered")
            return None

        def acquire() -> tuple[np.ndarray, Any]:
            engine = ExecutionEngine.get_instance()
            engine.submit(StartCapture(num_images=1, detector=camera))
            future = engine.submit(ReadoutData(detector=camera, num_images=1))
            return future.await_data({"image": 0}, return_metadata=True, timeout=30)  # type: ignore[union-attr]

        return run_in_thread(acquire, lambda snapped: self._show("Snap", *snapped), what="Snap")

    def _show(self, name: str, frame: np.ndarray, metadata: Any) -> None:
        """Show ``frame`` in layer ``name`` at the physical scale of acquisitions' layers; a frame
        from another camera gets its own contrast."""
        pixel = pixel_size_um(metadata)
        camera = getattr(self.camera, "name", None)
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = frame
            if tuple(layer.scale) != (pixel, pixel):
                layer.scale = (pixel, pixel)
            if layer.metadata.get("camera") != camera:
                layer.reset_contrast_limits()
        else:
            layer = self.viewer.add_image(frame, name=name, scale=(pixel, pixel))
        layer.metadata["camera"] = camera

    def toggle_live(self) -> None:
        """Start or stop continuous capture into the ``Live`` layer."""
        if self._live_worker is not None:
            self._live_worker.quit()
            return
        camera = self.camera
        if camera is None:
            show_error("No camera (Detector) is registered")
            return

        @thread_worker(ignore_errors=True)
        def live() -> Any:
            engine = ExecutionEngine.get_instance()
            engine.submit(StartContinuousCapture(detector=camera)).await_execution(10)  # type: ignore[union-attr]
            last = 0.0
            arrivals: collections.deque[float] = collections.deque()
            while True:
                frame, metadata = camera.pop_data(timeout=0.05)
                now = time.monotonic()
                if frame is not None:
                    arrivals.append(now)
                while arrivals and now - arrivals[0] > LIVE_RATE_WINDOW_S:
                    arrivals.popleft()
                if frame is not None and now - last > 1 / 30:
                    last = now
                    yield frame, metadata, len(arrivals) / LIVE_RATE_WINDOW_S
                else:
                    yield None

        worker = live()
        worker.yielded.connect(lambda shown: shown is not None and self._show_live(*shown))
        worker.errored.connect(lambda e: show_error(f"Live failed: {e}"))
        worker.finished.connect(self._live_ended)
        self._live_worker = worker
        self.live_button.text = "Stop live"
        worker.start()

    def _show_live(self, frame: np.ndarray, metadata: Any, rate: float) -> None:
        self._show("Live", frame, metadata)
        self.status.value = f"Live: {rate:.1f} frames/s from {getattr(self.camera, 'name', '?')}"
        show_as_error(self.status, False)

    def _live_ended(self) -> None:
        camera = self.camera

        def stop() -> None:
            ExecutionEngine.get_instance().submit(StopCapture(detector=camera)).await_execution(10)  # type: ignore[union-attr]

        def stopped(_: Any = None) -> None:
            self._live_worker = None
            self.live_button.text = "Live"

        run_in_thread(stop, stopped, what="Stopping live")
