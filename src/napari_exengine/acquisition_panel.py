"""The Acquisition dock panel: devices in their roles, a plan (the multi-D form or a contributed
plan's settings), storage and processors; Run, Pause/Resume, Stop and Abort with progress; frames
shown live through the layer sink.

It is made of forms (:mod:`~napari_exengine.multi_d_form`, :mod:`~napari_exengine.storage_form`,
:mod:`~napari_exengine.processors_form`, :mod:`~napari_exengine.run_control`). It fills an
:class:`~napari_exengine.acquisition_setup.AcquisitionRequest`, which the same setup as the command
line checks and turns into an acquisition, and it only renders ``Acquisition.status()``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from magicgui import widgets as mw
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout

from exengine import ExecutionEngine
from exengine.acquisition import Acquisition, PlanError
from exengine.device_types import Detector, DoubleAxisPositioner, SingleAxisPositioner
from exengine.kernel.device import Device

from .acquisition_setup import (
    AcquisitionRequest,
    CheckedAcquisition,
    ContributedPlan,
    SetupError,
    check_acquisition,
)
from .contributions import DEFAULT_PLAN, list_contributions
from .device_sets import DeviceSet
from .device_watch import DeviceWatch
from .field_of_view import FieldOfView
from .grid_region import GRID_SCAN, GridRegion
from .layer_sink import LayerSink, defer_layers_for
from .multi_d_form import MultiDForm
from .panel_common import (
    DEVICE_EVENTS,
    DockPanel,
    channel_property,
    devices_of,
    ensure_devices,
    form_values,
    settings_form,
    show_as_error,
    wrapping,
)
from .processors_form import ProcessorsForm
from .run_control import RunControl
from .storage_form import StorageForm

#: How often the acquisition panel shows progress. Every repaint of the window holds the GIL for
#: milliseconds (napari's main window handles its events in Python): at 100 ms, a full-speed
#: acquisition ran about 10% slower than at 250 ms.
PROGRESS_INTERVAL_MS = 250


class AcquisitionPanel(DockPanel):
    """Configures an acquisition (by default a time / position / channel / z one), runs it and
    shows its status."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        ensure_devices()
        self._make_device_choices()
        contributions = list_contributions()
        self.plans = {c.id: c for c in contributions if c.kind == "plan" and c.available}
        self.plan_choice = mw.ComboBox(
            choices=[(c.title, c.id) for c in self.plans.values()],
            value=DEFAULT_PLAN if DEFAULT_PLAN in self.plans else None,
            label="plan",
        )
        self.plan_form = mw.Container(labels=True, visible=False)
        self.grid_region = GridRegion(napari_viewer, self._stage_and_camera, self.plan_form, self)
        self.multi_d = MultiDForm(
            self._channel_names(),
            self._camera_exposure,
            self.update_estimate,
            stage_devices=lambda: (self.xy_choice.value, self.z_choice.value),
        )
        self.storage = StorageForm(
            {c.id: c for c in contributions if c.kind == "storage" and c.available},
            self.update_estimate,
        )
        self.processors = ProcessorsForm(
            {c.id: c for c in contributions if c.kind == "processor" and c.available},
            self.update_estimate,
        )
        unavailable = [c for c in contributions if not c.available]
        self.unavailable = wrapping(
            mw.Label(
                value="; ".join(f"{c.title} ({c.plugin}): {c.error}" for c in unavailable),
                label="unavailable",
                visible=bool(unavailable),
            )
        )
        self.split_channels = mw.CheckBox(value=True, text="one layer per channel")
        self.run_control = RunControl()
        wrapping(self.run_control.estimate)
        wrapping(self.run_control.status)
        form = mw.Container(
            widgets=[
                *self.device_choices,
                self.plan_choice,
                self.plan_form,
                self.grid_region,
                self.multi_d,
                self.storage,
                self.split_channels,
                self.processors,
                self.unavailable,
            ]
        )
        layout = QVBoxLayout(self)
        layout.addWidget(self.scrolled(form.native))
        layout.addWidget(self.run_control.native)  # below the settings: always in view
        self.acquisition: Acquisition | None = None
        self.sink: LayerSink | None = None
        self._connect()
        self._timer = QTimer(self)  # a child: it goes with the panel
        self._timer.setInterval(PROGRESS_INTERVAL_MS)
        self._timer.timeout.connect(self._poll)
        self.field_of_view = FieldOfView(napari_viewer, self._stage_and_camera, self._running, self)
        self.destroyed.connect(self.field_of_view.close)
        # the estimate follows changes made elsewhere (the Devices panel, a script)
        self.device_watch = DeviceWatch(
            lambda: self.cameras,
            _camera_settings,
            self.update_estimate,
            lambda: self._running() or not self._shown_with_devices(self.cameras),
            self,
        )
        self.destroyed.connect(self.device_watch.close)
        self.update_estimate()

    def _make_device_choices(self) -> None:
        """The devices in their roles: cameras, channel device, z and xy stages."""
        self.camera_choice = mw.Select(
            label="cameras",
            choices=lambda _: devices_of(Detector),
            tooltip="the camera; several capture together (each frame gets a camera coordinate)",
        )
        self.camera_choice.native.setMaximumHeight(64)
        self.camera_choice.value = self.camera_choice.choices[:1]
        self.z_choice = mw.ComboBox(
            label="z device", choices=lambda _: devices_of(SingleAxisPositioner)
        )
        self.xy_choice = mw.ComboBox(
            label="xy device", choices=lambda _: devices_of(DoubleAxisPositioner)
        )
        self.channel_choice = mw.ComboBox(
            label="channel device",
            choices=lambda _: [
                (name, d)
                for name, d in ExecutionEngine.get_devices().items()
                if channel_property(d)
            ],
        )
        self.device_choices = [
            self.camera_choice,
            self.channel_choice,
            self.z_choice,
            self.xy_choice,
        ]

    def _connect(self) -> None:
        for widget in [*self.device_choices, self.plan_choice, self.split_channels]:
            widget.changed.connect(self.update_estimate)
        self.channel_choice.changed.connect(self._show_channel_names)
        DEVICE_EVENTS.changed.connect(self.refresh_devices)
        self.plan_choice.changed.connect(self._show_plan_form)
        self.multi_d.load_sequence_button.clicked.connect(self._choose_sequence_to_load)
        self.multi_d.save_sequence_button.clicked.connect(self._choose_sequence_file_to_save)
        self.run_control.run_button.clicked.connect(self.run)
        self.run_control.resume_dataset_button.clicked.connect(self._choose_dataset_to_resume)
        self.run_control.pause_button.clicked.connect(self.toggle_pause)
        self.run_control.stop_button.clicked.connect(self.stop)
        self.run_control.abort_button.clicked.connect(self.abort)

    # ------------------------------------------------------------------------------ devices
    @property
    def camera(self) -> Detector | None:
        """The (first) camera the acquisition uses."""
        cameras = self.cameras
        return cameras[0] if cameras else None

    @property
    def cameras(self) -> list[Detector]:
        """The cameras the acquisition uses; several capture together."""
        return list(self.camera_choice.value or [])

    @property
    def channel_device(self) -> Device | None:
        """The device that selects the channel."""
        return self.channel_choice.value

    def devices(self) -> DeviceSet:
        """The devices in their roles, as chosen."""
        channel = self.channel_device
        cameras = self.cameras
        return DeviceSet(
            devices=ExecutionEngine.get_devices(),
            camera=cameras if len(cameras) > 1 else self.camera,
            z=self.z_choice.value,
            xy=self.xy_choice.value,
            channel=channel,
            channel_property=(channel_property(channel) if channel is not None else None)
            or "channel",
        )

    def _camera_exposure(self) -> float | None:
        exposure = getattr(self.camera, "exposure", None)
        return float(exposure) if isinstance(exposure, (int, float)) else None

    def _channel_names(self) -> list[Any]:
        device = self.channel_device
        prop = channel_property(device) if device is not None else None
        return list(device.get_allowed_property_values(prop) or []) if prop else []

    def _show_channel_names(self, *_: Any) -> None:
        self.multi_d.set_channel_names(self._channel_names())

    def _shown_with_devices(self, devices: list[Any]) -> bool:
        """The panel is shown and ``devices`` are registered with the engine: a panel left over
        from an engine that was shut down reads no devices (their thread is gone: a read would wait
        for ever)."""
        if not self.isVisible():
            return False
        registered = ExecutionEngine.get_devices().values()
        return all(any(d is r for r in registered) for d in devices)

    def _stage_and_camera(self) -> tuple[Any, Any]:
        """The XY stage and camera whose field of view is outlined (``None`` when the panel is
        not shown or they are not registered)."""
        stage, camera = self.xy_choice.value, self.camera
        if not self._shown_with_devices([d for d in (stage, camera) if d is not None]):
            return None, None
        return stage, camera

    def refresh_devices(self) -> None:
        """Offer devices registered since the panel opened (keeps the current choices); after the
        run, while one goes on (listing channel devices asks each device, as the estimate does).
        """
        if self._running():
            return
        for choice in self.device_choices:
            choice.reset_choices()
        if not self.camera_choice.value and self.camera_choice.choices:
            self.camera_choice.value = self.camera_choice.choices[:1]
        self.update_estimate()

    # --------------------------------------------------------------------------------- plan
    @property
    def is_multi_d(self) -> bool:
        """True when the plan is the multi-D form (the default), not a contributed plan."""
        return self.plan_choice.value in (DEFAULT_PLAN, None)

    def _show_plan_form(self, *_: Any) -> None:
        """The multi-D form for the default plan; a contributed plan's settings form otherwise."""
        self.plan_form.clear()
        if not self.is_multi_d:
            for widget in settings_form(self.plans[self.plan_choice.value]):
                widget.changed.connect(self.update_estimate)
                self.plan_form.append(widget)
        self.plan_form.visible = len(self.plan_form) > 0
        self.grid_region.visible = self.plan_choice.value == GRID_SCAN
        self.multi_d.visible = self.is_multi_d
        self.update_estimate()

    def request(self) -> AcquisitionRequest:
        """The acquisition the panel's settings describe. Raises ``ValueError`` naming a setting
        the multi-D form cannot take."""
        devices = self.devices()
        if self.is_multi_d:
            plan: Any = self.multi_d.settings(devices.channel)
        else:
            plan = ContributedPlan(self.plan_choice.value, form_values(self.plan_form))
        processors = self.processors.choices()
        return AcquisitionRequest(
            plan=plan,
            devices=devices,
            destination=self.storage.destination(),
            name=self.storage.dataset(),
            storage=self.storage.storage_id,
            storage_settings=self.storage.settings(),
            processors=processors,
            processing=self.processors.location() if processors else "local",
        )

    def update_estimate(self, *_: Any) -> CheckedAcquisition | None:
        """Check the settings as Run will; show what the plan will take (frames, size, duration,
        the processors' notes) or why it cannot run (also under the multi-D form's setting at
        fault), and enable Run only when it can. Returns the
        checked acquisition, or None when the settings are invalid. Not while a run goes on:
        checking reads the devices, whose thread the run keeps busy (the GUI would wait for it);
        the run's end checks again."""
        if self._running():
            return None
        try:
            checked = check_acquisition(self.request())
        except ValueError as e:
            self.run_control.show_invalid(str(e))
            show_as_error(self.run_control.estimate, True)
            self.multi_d.show_refusal(e if self.is_multi_d else None)
            return None
        self.multi_d.show_refusal(None)
        self.run_control.show_estimate(checked)
        show_as_error(self.run_control.estimate, False)
        self.run_control.run_button.enabled = not self._running()
        return checked

    # ------------------------------------------------------------------------- sequence files
    def load_sequence(self, path: str) -> None:
        """Set the multi-D form from a useq-schema ``MDASequence`` file (YAML or JSON, as
        pymmcore-widgets writes). Fields the form cannot show (a grid, autofocus...) run as loaded,
        the form saying so, until the form is edited; what cannot run is refused by name, and
        nothing is changed then."""
        try:
            self.multi_d.load(path)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        self.plan_choice.value = DEFAULT_PLAN
        self.update_estimate()

    def save_sequence(self, path: str) -> Path:
        """Save the multi-D form (or the sequence loaded, with every field, while the form is not
        edited) as a useq-schema ``MDASequence`` file (``.yaml``/``.yml`` or ``.json``)."""
        return self.multi_d.save(path, self.channel_device)

    def _choose_sequence_to_load(self) -> None:
        self._with_sequence_file("r", "Load an MDASequence", self.load_sequence, "load")

    def _choose_sequence_file_to_save(self) -> None:
        self._with_sequence_file("w", "Save as an MDASequence", self.save_sequence, "save")

    def _with_sequence_file(self, mode: str, title: str, action: Any, verb: str) -> None:
        """Ask for a YAML/JSON file, then ``action(path)``; a refusal is shown, not raised."""
        from magicgui.widgets import request_values

        options = {"mode": mode, "filter": "*.yaml *.yml *.json"}
        values = request_values(path={"annotation": Path, "options": options}, title=title)
        if values:
            try:
                action(str(values["path"]))
            except (ValueError, OSError) as e:
                self._fail(f"Cannot {verb} the sequence: {e}")

    # ---------------------------------------------------------------------------------- run
    def run(self) -> Acquisition | None:
        """Start the acquisition the settings describe (checked again first)."""
        if self._running():
            return None
        checked = self.update_estimate()
        if checked is None:
            self._fail(f"Cannot run: {self.run_control.estimate.value}")
            return None
        return self._start(checked)

    def resume_dataset(self, path: str) -> Acquisition | None:
        """Continue the interrupted dataset at ``path`` (NDTiff or OME-Zarr folder) with its own
        plan and devices, from the first frame not stored (see docs/resume.rst); a refusal is
        shown, not raised."""
        from .resume_setup import open_resumable, resume_request, resuming

        if self._running():
            return None
        try:
            checked = check_acquisition(resume_request(open_resumable(path)))
        except (SetupError, ValueError, OSError) as e:
            self._fail(f"Cannot resume {path}: {e}")
            return None
        acquisition = self._start(checked)
        if acquisition is not None:
            show_info(resuming(checked))
        return acquisition

    def _choose_dataset_to_resume(self) -> None:
        """Ask for the dataset folder, starting from the selected layer's dataset if it was
        reopened from one."""
        from magicgui.widgets import request_values

        layer = self.viewer.layers.selection.active
        metadata = getattr(layer, "metadata", None)
        start = metadata.get("path") if isinstance(metadata, dict) else None
        options = {"mode": "d", **({"value": start} if start else {})}
        values = request_values(
            path={"annotation": Path, "options": options}, title="Resume an interrupted dataset"
        )
        if values:
            self.resume_dataset(str(values["path"]))

    def _start(self, checked: CheckedAcquisition) -> Acquisition | None:
        """Create the checked acquisition, show its frames as they come, and start it."""
        try:
            acquisition = checked.create()
        except (SetupError, ValueError, OSError, ImportError) as e:
            self._fail(f"Cannot create the acquisition: {e}")
            return None
        handler = acquisition.data_handler
        assert handler is not None
        storage = handler.storage
        self.acquisition = acquisition
        self.sink = LayerSink(
            self.viewer,
            handler,
            name=_dataset_label(storage) or self.storage.dataset(),
            split_channels=self.split_channels.value,
            planned=checked.planned,
            defer_layers=defer_layers_for(acquisition.total_frames),
        )
        self._set_running(True)
        self.run_control.show_status(acquisition.status())
        show_as_error(self.run_control.status, False)
        try:
            acquisition.start()
        except PlanError as e:
            self.sink.close()
            handler.finish()
            self._set_running(False)
            self._fail(str(e))
            return None
        self._timer.start()
        return acquisition

    def _running(self) -> bool:
        return self.acquisition is not None and self.acquisition.is_running()

    def toggle_pause(self) -> None:
        """Pause before the next event (the frame in hand is finished), or resume."""
        acquisition = self.acquisition
        if acquisition is None or not acquisition.is_running():
            return
        if acquisition.is_paused:
            acquisition.resume()
        else:
            acquisition.pause()
        self.run_control.show_status(acquisition.status())

    def stop(self) -> None:
        """Stop after the frame in hand (also while paused); everything acquired is stored."""
        if self.acquisition is not None:
            self.acquisition.stop()
            self.run_control.status.value = "stopping"

    def abort(self) -> None:
        """Abort at once; everything already acquired is still stored."""
        if self.acquisition is not None:
            self.acquisition.abort()
            self.run_control.status.value = "aborting"

    def _set_running(self, running: bool) -> None:
        settings = [
            *self.device_choices,
            self.plan_choice,
            self.plan_form,
            self.grid_region,
            *self.multi_d.settings_widgets,
            self.multi_d.load_sequence_button,
            self.multi_d.save_sequence_button,
            self.storage,
            self.split_channels,
            self.processors,
        ]
        for widget in settings:
            widget.enabled = not running
        self.multi_d.show_z_range()
        self.multi_d.show_time_points()
        self.run_control.set_running(running)

    def _poll(self) -> None:
        acquisition = self.acquisition
        if acquisition is None:
            return
        status = acquisition.status()
        self.run_control.show_status(status)
        if not status.is_finished:
            return
        self._timer.stop()
        if self.sink is not None:
            self.sink.close()
        self._set_running(False)
        self.refresh_devices()
        self.run_control.show_status(status)
        where = getattr(acquisition.data_handler.storage, "path", "memory")
        if status.error is not None:
            self._fail(status.summary())
        else:
            self.run_control.status.value = f"{status.summary()} in {where}"
            show_info(self.run_control.status.value)

    def _fail(self, message: str) -> None:
        self.run_control.status.value = message
        show_as_error(self.run_control.status, True)
        show_error(message)


def _camera_settings(camera: Any) -> tuple[Any, ...]:
    """What of a camera the estimate depends on: its roi, binning, exposure and bit depth."""
    return tuple(
        getattr(camera, name, None) for name in ("roi", "binning", "exposure", "bit_depth")
    )


def _dataset_label(storage: Any) -> str:
    """The name of the folder a storage writes to (``acquisition_2`` of
    ``acquisition_2.ome.zarr``), which names the layers as the reader names them when the dataset
    is reopened; empty when in memory."""
    path = getattr(storage, "path", None)
    if not isinstance(path, str):
        return ""
    label = os.path.basename(os.path.normpath(path))
    for suffix in (".ome.zarr", ".zarr"):
        label = label.removesuffix(suffix)
    return label
