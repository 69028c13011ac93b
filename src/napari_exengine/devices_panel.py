"""The Devices dock panel: every registered device's properties as controls, stage and focus
controls for every positioner (:mod:`.stage_controls`), plus Snap and Live.

Device calls run on worker threads or the engine's executor threads; napari objects are touched
only on the GUI thread. Load devices and Snap clicked during a run say that they wait for it.
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
from qtpy.QtGui import QCloseEvent, QShowEvent
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
from exengine.kernel.ex_future import ExecutionFuture

from .device_sets import load_device_set
from .layer_axes import frame_corner_um, pixel_size_um, stage_xy_um
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
from .stage_controls import EngineCalls, PositionerControls, axes_of

#: Properties of the demo devices that exist for tests, not for users: the panel leaves them out.
TEST_HOOKS = frozenset({"fail_next_frames"})
#: Live's frame rate is the camera's frames over the last this many seconds (all frames, not only
#: those shown: Live shows at most 30 a second).
LIVE_RATE_WINDOW_S = 1.0
#: How long Snap or Load devices waits for the engine before looking whether a run holds it (s).
WAIT_NOTICE_S = 0.3


def waits_for_a_run(queued: ExecutionFuture, engine: ExecutionEngine) -> bool:
    """True when ``queued`` is held behind a running acquisition: after :data:`WAIT_NOTICE_S` it
    has not run, while a prioritized call (run between an acquisition's steps) has. Call it from a
    worker thread."""
    try:
        queued.await_execution(WAIT_NOTICE_S)
        return False
    except TimeoutError:
        pass
    except Exception:  # it ran and failed: its own waiter reports that
        return False
    try:
        engine.submit(lambda: None, prioritize=True).await_execution(WAIT_NOTICE_S)  # type: ignore[union-attr]
    except TimeoutError:  # one long step holds the engine, not a run between its steps
        return False
    return not queued.is_execution_complete()


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
    """Every registered device's properties as controls, stage and focus controls for every
    positioner (:attr:`stages`, by device name), plus Snap and Live."""

    height_hint = 320

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.devices = ensure_devices()
        self.controls: dict[tuple[str, str], mw.Widget] = {}
        self.stages: dict[str, PositionerControls] = {}
        self._calls = EngineCalls(self)  # a child: its timer goes with the panel
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
        self._snapping = False
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

        def load() -> Any:
            # after any running acquisition: the new boxes read the devices on the GUI thread,
            # which must not wait for a run
            engine = ExecutionEngine.get_instance()
            queued = engine.submit(lambda: None)
            if waits_for_a_run(queued, engine):  # type: ignore[arg-type]
                yield "Loading devices waits for the running acquisition to end…"
            queued.await_execution()  # type: ignore[union-attr]
            return load_device_set(
                "micromanager" if config or backend == "micromanager" else backend,
                config,
                prefix=prefix,
            ).devices

        def loaded(devices: dict[str, Device]) -> None:
            self._add_device_boxes(devices)
            self.devices.update(devices)
            self.camera_choice.reset_choices()
            self.report(f"Loaded {len(devices)} devices: {', '.join(devices)}")
            DEVICE_EVENTS.changed.emit()

        self.report("Loading devices…")
        worker = create_worker(load, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self.report)
        worker.returned.connect(loaded)
        worker.errored.connect(lambda e: self._fail(f"Loading devices failed: {e}"))
        worker.start()
        return worker

    def _fail(self, message: str) -> None:
        self.report(message, error=True)
        show_error(message)

    def report(self, message: str, error: bool = False) -> None:
        """Show ``message`` in the status line, an ``error`` in red."""
        self.status.value = message
        show_as_error(self.status, error)

    def _add_device_boxes(self, devices: dict[str, Device]) -> None:
        for name, device in devices.items():
            box = QGroupBox(name)
            box_layout = QVBoxLayout(box)
            container = mw.Container(labels=True)
            axes = axes_of(device)
            for prop in device.get_property_names():
                # a positioner's position is in its stage controls
                if prop in TEST_HOOKS or (axes and prop == "position"):
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
            if len(container):  # an XY stage may have no properties, only its stage controls
                box_layout.addWidget(container.native)
            if axes:
                self.stages[name] = PositionerControls(device, self._calls)
                box_layout.addWidget(self.stages[name].native)
                self.stages[name].refresh()
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

    def refresh(self) -> None:
        """Re-read every property and every positioner's position on the executor, and show values
        that changed elsewhere (a script, another panel, a run). Runs every second by itself, until
        the panel closes or the engine it was made with is shut down (its devices are gone); a read
        still in flight is not doubled."""
        for stage in self.stages.values():
            stage.refresh()
        if not self._reading:
            self._read_properties()
        if self._calls.closed:
            self.stop_reading()

    def _read_properties(self) -> None:
        keys = [k for k, w in self.controls.items() if not isinstance(w, mw.Label)]
        devices = dict(self.devices)

        def read_all() -> dict[tuple[str, str], Any]:
            values = {}
            for name, prop in keys:
                # a device that cannot answer keeps its last value
                with contextlib.suppress(Exception):
                    values[(name, prop)] = getattr(devices[name], prop)
            return values

        def show(values: dict[tuple[str, str], Any]) -> None:
            self._reading = False
            for (name, prop), value in values.items():
                widget = self.controls[(name, prop)]
                if (name, prop) not in self._setting and widget.value != displayed(widget, value):
                    self._show_value(devices[name], prop, value)

        self._reading = True
        self._calls.call(read_all, show, lambda _: setattr(self, "_reading", False))

    def stop_reading(self) -> None:
        """Stop re-reading the devices (the calls in flight are dropped)."""
        self._refresh_timer.stop()
        self._calls.stop()
        self._reading = False

    def closeEvent(self, event: QCloseEvent) -> None:
        """A closed panel reads no device."""
        self.stop_reading()
        super().closeEvent(event)

    def showEvent(self, event: QShowEvent) -> None:
        """Shown again after closing: reading resumes (unless the engine was shut down)."""
        if not self._calls.closed and not self._refresh_timer.isActive():
            self._refresh_timer.start()
        super().showEvent(event)

    def snap(self) -> Any:
        """Capture one frame into the ``Snap`` layer (a camera that drives several, such as
        Micro-Manager's Multi Camera, fills ``Snap <camera>`` for each); while a run holds the
        engine, the status says that Snap waits for it (one Snap at a time)."""
        camera = self.camera
        if camera is None:
            show_error("No camera (Detector) is registered")
            return None
        if self._snapping:
            self.report("Snap: the last Snap is not done yet (it waits for the engine)")
            return None

        def acquire() -> Any:
            engine = ExecutionEngine.get_instance()
            count = len(camera.cameras())
            started = engine.submit(StartCapture(num_images=1, detector=camera))
            future = engine.submit(ReadoutData(detector=camera, num_images=count))
            if waits_for_a_run(started, engine):  # type: ignore[arg-type]
                yield "Snap waits for the running acquisition to end…"
                started.await_execution()  # type: ignore[union-attr]
            return [
                future.await_data({"image": i}, return_metadata=True, timeout=30)  # type: ignore[union-attr]
                for i in range(count)
            ]

        def snapped(frames: list[tuple[np.ndarray, Any]]) -> None:
            self._snapping = False
            if self.status.value.startswith("Snap"):
                self.report("")
            for frame, metadata in frames:
                self._show(_layer_name("Snap", metadata, len(frames) > 1), frame, metadata)

        def failed(error: BaseException) -> None:
            self._snapping = False
            self._fail(f"Snap failed: {error}")

        self._snapping = True
        worker = create_worker(acquire, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self.report)
        worker.returned.connect(snapped)
        worker.errored.connect(failed)
        worker.start()
        return worker

    def _show(self, name: str, frame: np.ndarray, metadata: Any) -> None:
        """Show ``frame`` in layer ``name`` where acquisitions' layers show it: the pixel size as
        scale, centred on the stage position the metadata records (at the origin without one); a
        frame from another camera gets its own contrast."""
        pixel = pixel_size_um(metadata)
        stage = stage_xy_um(metadata)
        corner = (0.0, 0.0) if stage is None else frame_corner_um(stage, frame.shape, pixel)
        camera = (metadata.get("Camera") if isinstance(metadata, dict) else None) or getattr(
            self.camera, "name", None
        )
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = frame
            if tuple(layer.scale) != (pixel, pixel):
                layer.scale = (pixel, pixel)
            if tuple(layer.translate) != corner:
                layer.translate = corner
            if layer.metadata.get("camera") != camera:
                layer.reset_contrast_limits()
        else:
            layer = self.viewer.add_image(frame, name=name, scale=(pixel, pixel), translate=corner)
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

        try:
            count = len(camera.cameras())  # frames per exposure
        except ValueError as e:  # a Multi Camera without its cameras
            self._fail(f"Live failed: {e}")
            return
        several = count > 1

        @thread_worker(ignore_errors=True)
        def live() -> Any:
            engine = ExecutionEngine.get_instance()
            engine.submit(StartContinuousCapture(detector=camera)).await_execution(10)  # type: ignore[union-attr]
            last: dict[str, float] = {}  # when each layer was last shown
            arrivals: collections.deque[float] = collections.deque()
            while True:
                frame, metadata = camera.pop_data(timeout=0.05)
                now = time.monotonic()
                if frame is not None:
                    arrivals.append(now)
                while arrivals and now - arrivals[0] > LIVE_RATE_WINDOW_S:
                    arrivals.popleft()
                name = _layer_name("Live", metadata, several)
                if frame is not None and now - last.get(name, 0.0) > 1 / 30:
                    last[name] = now
                    yield name, frame, metadata, len(arrivals) / LIVE_RATE_WINDOW_S / count
                else:
                    yield None

        worker = live()
        worker.yielded.connect(lambda shown: shown is not None and self._show_live(*shown))
        worker.errored.connect(lambda e: show_error(f"Live failed: {e}"))
        worker.finished.connect(self._live_ended)
        self._live_worker = worker
        self.live_button.text = "Stop live"
        worker.start()

    def _show_live(self, name: str, frame: np.ndarray, metadata: Any, rate: float) -> None:
        self._show(name, frame, metadata)
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


def _layer_name(kind: str, metadata: Any, several: bool) -> str:
    """The layer Snap or Live (``kind``) shows a frame in: ``kind``, followed by the frame's camera
    when the chosen camera drives several."""
    camera = metadata.get("Camera") if several and isinstance(metadata, dict) else None
    return f"{kind} {camera}" if camera else kind
