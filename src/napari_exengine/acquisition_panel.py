"""The Acquisition dock panel: a plan (the multi-D form or a contributed plan), storage and
processors; Run, Pause/Resume, Stop and Abort with progress; frames shown live through the layer
sink.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from magicgui import widgets as mw
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from exengine import ExecutionEngine
from exengine.acquisition import Acquisition, PlanError, dry_run
from exengine.data import DataHandler, DataHandlerError
from exengine.device_types import Detector, DoubleAxisPositioner, SingleAxisPositioner
from exengine.events import UNTIL_STOPPED, MultiDPlan, ReadoutData, multi_d_acquisition_plan
from exengine.kernel.device import Device
from exengine.plans import frame_shape
from exengine.processors import ProcessorChain, fit_to_plan

from .contributions import (
    DEFAULT_PLAN,
    DEFAULT_STORAGE,
    Contribution,
    ContributionError,
    list_contributions,
)
from .layer_sink import LayerSink, defer_layers_for
from .panel_common import (
    DEVICE_EVENTS,
    channel_property,
    devices_of,
    ensure_devices,
    form_values,
    run_in_thread,
    settings_form,
)

#: How often the acquisition panel shows progress. Every repaint of the window holds the GIL for
#: milliseconds (napari's main window handles its events in Python): at 100 ms, a full-speed
#: acquisition ran about 10% slower than at 250 ms.
PROGRESS_INTERVAL_MS = 250


class AcquisitionPanel(QWidget):
    """Configures a time / position / channel / z acquisition, runs it and shows progress."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        ensure_devices()
        self.camera_choice = mw.ComboBox(label="camera", choices=lambda _: devices_of(Detector))
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
        channel_names = self._channel_names()
        contributions = list_contributions()
        self.plans = {c.id: c for c in contributions if c.kind == "plan" and c.available}
        self.plan_choice = mw.ComboBox(
            choices=[(c.title, c.id) for c in self.plans.values()],
            value=DEFAULT_PLAN if DEFAULT_PLAN in self.plans else None,
            label="plan",
        )
        self.plan_form = mw.Container(labels=True, visible=False)
        self.time_points = mw.SpinBox(value=1, min=1, max=1_000_000_000, label="time points")
        self.until_stopped = mw.CheckBox(value=False, text="until stopped")
        self.interval_s = mw.FloatSpinBox(value=0.0, min=0.0, max=86400.0, label="interval (s)")
        self.use_z = mw.CheckBox(value=False, text="z stack")
        self.z_start = mw.FloatSpinBox(value=-4.0, min=-5000, max=5000, label="z start (µm)")
        self.z_stop = mw.FloatSpinBox(value=4.0, min=-5000, max=5000, label="z stop (µm)")
        self.z_step = mw.FloatSpinBox(value=2.0, min=0.01, max=1000, label="z step (µm)")
        self.channels = mw.Select(choices=channel_names, value=channel_names[:1], label="channels")
        self.per_channel_exposure = mw.CheckBox(value=False, text="exposure per channel")
        self.exposure_rows = mw.Container(labels=True)
        self.exposure_rows.margins = (0, 0, 0, 0)
        self.exposure_rows.visible = False
        self._exposure_boxes: dict[str, mw.FloatSpinBox] = {}
        self.positions_label = mw.Label(value="current position only", label="xy positions")
        self.position_rows = mw.Container(labels=False)
        self.position_rows.margins = (0, 0, 0, 0)
        self.position_rows.visible = False
        self.add_position = mw.PushButton(text="Add current position")
        self.clear_positions = mw.PushButton(text="Clear positions")
        self.order = mw.LineEdit(value="tpcz", label="axis order")
        self.load_sequence_button = mw.PushButton(text="Load sequence…")
        self.save_sequence_button = mw.PushButton(text="Save sequence…")
        self.storages = {c.id: c for c in contributions if c.kind == "storage" and c.available}
        self.processors = {c.id: c for c in contributions if c.kind == "processor" and c.available}
        unavailable = [c for c in contributions if not c.available]
        self.storage = mw.ComboBox(
            choices=[(c.title, c.id) for c in self.storages.values()],
            value=DEFAULT_STORAGE if DEFAULT_STORAGE in self.storages else None,
            label="storage",
        )
        self.storage_form = mw.Container(labels=True)
        self.processor_choice = mw.ComboBox(
            choices=[(f"{c.title} ({c.plugin})", c.id) for c in self.processors.values()],
            label="processor",
        )
        self.add_processor_button = mw.PushButton(text="Add processor")
        self.processor_chain = mw.Container(labels=False, visible=False)
        self.processor_forms: list[tuple[Contribution, mw.Container, mw.Container]] = []
        self.processing = mw.ComboBox(
            choices=["this machine", "a local cluster", "a Dask scheduler"],
            value="this machine",
            label="processors run on",
        )
        self.cluster_workers = mw.SpinBox(value=2, min=1, max=256, label="workers", visible=False)
        self.scheduler_address = mw.LineEdit(
            value="tcp://127.0.0.1:8786", label="scheduler", visible=False
        )
        self.unavailable = mw.Label(
            value="; ".join(f"{c.title} ({c.plugin}): {c.error}" for c in unavailable),
            label="unavailable",
            visible=bool(unavailable),
        )
        self.directory = mw.FileEdit(mode="d", value=default_data_directory(), label="directory")
        self.dataset_name = mw.LineEdit(value="acquisition", label="name")
        self.split_channels = mw.CheckBox(value=True, text="one layer per channel")
        self.estimate = mw.Label(value="", label="estimate")
        self.run_button = mw.PushButton(text="Run")
        self.pause_button = mw.PushButton(text="Pause", enabled=False)
        self.stop_button = mw.PushButton(text="Stop", enabled=False)
        self.abort_button = mw.PushButton(text="Abort", enabled=False)
        self.progress = mw.ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = mw.Label(value="")
        self.device_choices = [
            self.camera_choice,
            self.channel_choice,
            self.z_choice,
            self.xy_choice,
        ]
        self.multi_d_settings = [
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
            self.position_rows,
            self.add_position,
            self.clear_positions,
            self.order,
        ]
        self.multi_d_form = mw.Container(
            widgets=[
                *self.multi_d_settings,
                mw.Container(
                    widgets=[self.load_sequence_button, self.save_sequence_button],
                    layout="horizontal",
                    labels=False,
                ),
            ]
        )
        self.multi_d_form.margins = (0, 0, 0, 0)
        self.settings = [
            *self.device_choices,
            self.plan_choice,
            self.plan_form,
            *self.multi_d_settings,
            self.load_sequence_button,
            self.save_sequence_button,
            self.storage,
            self.storage_form,
            self.directory,
            self.dataset_name,
            self.split_channels,
            self.processor_choice,
            self.add_processor_button,
            self.processor_chain,
            self.processing,
            self.cluster_workers,
            self.scheduler_address,
        ]
        form = mw.Container(
            widgets=[
                *self.device_choices,
                self.plan_choice,
                self.plan_form,
                self.multi_d_form,
                self.storage,
                self.storage_form,
                self.directory,
                self.dataset_name,
                self.split_channels,
                self.processor_choice,
                self.add_processor_button,
                self.processor_chain,
                self.processing,
                self.cluster_workers,
                self.scheduler_address,
                self.unavailable,
                self.estimate,
                mw.Container(
                    widgets=[
                        self.run_button,
                        self.pause_button,
                        self.stop_button,
                        self.abort_button,
                    ],
                    layout="horizontal",
                ),
                self.progress,
                self.status,
            ]
        )
        layout = QVBoxLayout(self)
        layout.addWidget(form.native)
        self.acquisition: Acquisition | None = None
        self.sink: LayerSink | None = None
        self.storage_object: Any = None
        self.use_z.changed.connect(self._show_z_range)
        self._show_z_range()
        # before the estimate: the exposure boxes follow the selected channels first
        self.channels.changed.connect(self._show_exposures)
        self.per_channel_exposure.changed.connect(self._show_exposures)
        for widget in self.settings:
            if hasattr(widget, "changed") and not isinstance(widget, mw.PushButton):
                widget.changed.connect(self.update_estimate)
        self.channel_choice.changed.connect(self._show_channel_names)
        DEVICE_EVENTS.changed.connect(self.refresh_devices)
        self.storage.changed.connect(self._show_storage_settings)
        self.add_processor_button.clicked.connect(
            lambda: self.add_processor(self.processor_choice.value)
        )
        self._show_storage_settings()
        self.add_position.clicked.connect(self._add_current_position)
        self.clear_positions.clicked.connect(self._clear_positions)
        self.plan_choice.changed.connect(self._show_plan_form)
        self.until_stopped.changed.connect(self._show_time_points)
        self.processing.changed.connect(self._show_processing)
        self.load_sequence_button.clicked.connect(self._choose_sequence_to_load)
        self.save_sequence_button.clicked.connect(self._choose_sequence_file_to_save)
        self.run_button.clicked.connect(self.run)
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button.clicked.connect(self.stop)
        self.abort_button.clicked.connect(self.abort)
        self._timer = QTimer(self)  # a child: it goes with the panel
        self._timer.setInterval(PROGRESS_INTERVAL_MS)
        self._timer.timeout.connect(self._poll)
        self.update_estimate()

    # --------------------------------------------------------------- settings
    @property
    def camera(self) -> Detector | None:
        """The camera the acquisition uses."""
        return self.camera_choice.value

    @property
    def channel_device(self) -> Device | None:
        """The device that selects the channel."""
        return self.channel_choice.value

    def _channel_names(self) -> list[Any]:
        device = self.channel_device
        prop = channel_property(device) if device is not None else None
        return list(device.get_allowed_property_values(prop) or []) if prop else []

    def _show_channel_names(self, *_: Any) -> None:
        names = self._channel_names()
        self.channels.choices = names
        self.channels.value = names[:1]

    def refresh_devices(self) -> None:
        """Offer devices registered since the panel opened (keeps the current choices)."""
        for choice in self.device_choices:
            choice.reset_choices()
        self.update_estimate()

    def _show_storage_settings(self, *_: Any) -> None:
        self.storage_form.clear()
        contribution = self.storages.get(self.storage.value)
        if contribution is not None:
            self.storage_form.extend(list(settings_form(contribution)))
        self.storage_form.visible = len(self.storage_form) > 0

    def add_processor(self, contribution_id: str) -> mw.Container:
        """Append a contributed processor (with its settings form) to the processing chain."""
        contribution = self.processors[contribution_id]
        form = settings_form(contribution)
        remove = mw.PushButton(text="Remove")
        box = mw.Container(
            widgets=[
                mw.Label(value=f"{len(self.processor_forms) + 1}. {contribution.title}"),
                form,
                remove,
            ],
            labels=False,
        )
        entry = (contribution, form, box)
        self.processor_forms.append(entry)
        self.processor_chain.append(box)
        self.processor_chain.visible = True
        remove.clicked.connect(lambda: self._remove_processor(entry))
        for widget in form:
            widget.changed.connect(self.update_estimate)
        self.update_estimate()
        return form

    def _remove_processor(self, entry: tuple[Contribution, mw.Container, mw.Container]) -> None:
        self.processor_forms.remove(entry)
        self.processor_chain.remove(entry[2])
        self.processor_chain.visible = bool(self.processor_forms)
        self.update_estimate()

    def _add_current_position(self) -> None:
        xy = self.xy_choice.value
        if xy is None:
            show_error("No XY stage is registered")
            return

        run_in_thread(
            xy.get_position,
            lambda position: self.add_position_at(*position[:2]),
            what="Reading the XY stage",
        )

    def add_position_at(self, x: float, y: float, label: str | None = None) -> mw.Container:
        """Append an xy position (µm) with its label (``Pos<n>`` by default); each row is editable
        and has its own Remove button."""
        row = mw.Container(
            layout="horizontal",
            labels=False,
            widgets=[
                mw.LineEdit(
                    value=label or self._free_label(),
                    tooltip="position label (the position axis value)",
                ),
                mw.FloatSpinBox(value=float(x), min=-1e6, max=1e6, step=1.0, tooltip="x (µm)"),
                mw.FloatSpinBox(value=float(y), min=-1e6, max=1e6, step=1.0, tooltip="y (µm)"),
                mw.PushButton(text="Remove"),
            ],
        )
        row.margins = (0, 0, 0, 0)
        for widget in list(row)[:3]:
            widget.changed.connect(self.update_estimate)
        list(row)[3].clicked.connect(lambda: self._remove_position(row))
        self.position_rows.append(row)
        self._show_positions()
        return row

    def _free_label(self) -> str:
        used = {label for label, _ in self._position_entries()}
        return next(f"Pos{n}" for n in range(len(used) + 1) if f"Pos{n}" not in used)

    def _position_entries(self) -> list[tuple[str, tuple[float, float]]]:
        entries = []
        for row in self.position_rows:
            label, x, y, _ = list(row)  # type: ignore[call-overload]
            entries.append((label.value.strip(), (float(x.value), float(y.value))))
        return entries

    @property
    def xy_positions(self) -> list[tuple[float, float]]:
        """The xy positions (µm) the acquisition visits, in order; empty for the current position
        only."""
        return [xy for _, xy in self._position_entries()]

    def _remove_position(self, row: mw.Container) -> None:
        self.position_rows.remove(row)
        self._show_positions()

    def _clear_positions(self) -> None:
        self.position_rows.clear()
        self._show_positions()

    def _show_positions(self) -> None:
        count = len(self.position_rows)
        self.position_rows.visible = bool(count)
        self.positions_label.value = (
            f"{count} position{'' if count == 1 else 's'}" if count else "current position only"
        )
        self.update_estimate()

    def _show_exposures(self, *_: Any) -> None:
        """One exposure box per selected channel while "exposure per channel" is on (a channel keeps
        its value while it stays selected; new ones start at the camera's exposure)."""
        kept = {channel: box.value for channel, box in self._exposure_boxes.items()}
        self.exposure_rows.clear()
        self._exposure_boxes = {}
        if self.per_channel_exposure.value:
            current = getattr(self.camera, "exposure", None)
            default = float(current) if isinstance(current, (int, float)) else 10.0
            for channel in self.channels.value:
                box = mw.FloatSpinBox(
                    value=kept.get(channel, default),
                    min=0.0,
                    max=3_600_000.0,
                    step=1.0,
                    label=f"{channel} exposure (ms)",
                )
                box.changed.connect(self.update_estimate)
                self.exposure_rows.append(box)
                self._exposure_boxes[channel] = box
        self.exposure_rows.visible = bool(self._exposure_boxes)
        self.update_estimate()

    def exposures(self) -> list[float] | None:
        """The exposure (ms) of each selected channel, or None to keep the camera's exposure."""
        if not self.per_channel_exposure.value:
            return None
        return [self._exposure_boxes[channel].value for channel in self.channels.value]

    def event_arguments(self) -> dict[str, Any]:
        """The ``multi_d_acquisition_events`` arguments the panel's settings describe."""
        channels = list(self.channels.value)
        order = self.order.value.strip().lower()
        kwargs: dict[str, Any] = {
            "num_time_points": UNTIL_STOPPED
            if self.until_stopped.value
            else self.time_points.value,
            "time_interval_s": self.interval_s.value,
            "camera": self.camera,
            "order": order,
            "z_device": self.z_choice.value,
            "xy_device": self.xy_choice.value,
        }
        if self.use_z.value:
            kwargs.update(
                z_start=self.z_start.value, z_end=self.z_stop.value, z_step=self.z_step.value
            )
        if channels:
            kwargs.update(
                channel_group=self.channel_device,
                channel_property=channel_property(self.channel_device),
                channels=channels,
                channel_exposures_ms=self.exposures(),
            )
        entries = self._position_entries()
        if entries:
            labels = [label for label, _ in entries]
            if "" in labels or len(set(labels)) < len(labels):
                raise ValueError(f"position labels must be unique and not empty, got {labels}")
            kwargs.update(xy_positions=[xy for _, xy in entries], position_labels=labels)
        for axis in "tpcz":
            if axis not in order:
                order += axis
        kwargs["order"] = order
        return kwargs

    @property
    def is_multi_d(self) -> bool:
        """True when the plan is the multi-D form (the default), not a contributed plan."""
        return self.plan_choice.value in (DEFAULT_PLAN, None)

    def make_plan(self, data_handler: DataHandler) -> Any:
        """The plan the settings describe, lazily making events for ``data_handler``."""
        if self.is_multi_d:
            return multi_d_acquisition_plan(data_handler=data_handler, **self.event_arguments())
        devices = {
            "camera": self.camera,
            "z_device": self.z_choice.value,
            "xy_device": self.xy_choice.value,
            "channel_group": self.channel_device,
            "channel_property": channel_property(self.channel_device)
            if self.channel_device
            else None,
        }
        return self.plans[self.plan_choice.value].build(
            **form_values(self.plan_form), **devices, data_handler=data_handler
        )

    def update_estimate(self, *_: Any) -> int | None:
        """Check the plan against the devices (as Run will); show the frame count, size and
        duration, or the reason the settings are invalid, and enable Run only when they are valid.
        Returns the frame count (0 when not known in advance), or None when the settings are
        invalid."""
        try:
            plan = dry_run(self.make_plan)
            notes = self._make_processor(plan)[1]
        except (ValueError, TypeError, ContributionError) as e:
            self.estimate.value = f"invalid: {e}"
            self.run_button.enabled = False
            return None
        frames = getattr(plan, "total_frames", None)
        if frames is None:
            self.estimate.value = (
                "until stopped"
                if self.is_multi_d and self.until_stopped.value
                else "frames not known in advance (the plan decides as it runs)"
            )
        else:
            height, width = self._frame_shape()
            per_frame = self._frame_time()
            exposures = self.exposures() if self.is_multi_d else None
            if exposures:
                per_frame = max(per_frame, sum(exposures) / len(exposures) / 1000.0)
            duration = frames * per_frame
            if self.is_multi_d:
                duration = max(
                    duration, (self.time_points.value - 1) * self.interval_s.value + per_frame
                )
            self.estimate.value = (
                f"{_frames_text(frames)}, {_human_bytes(frames * height * width * 2)}, "
                f"~{_human_time(duration)}"
            )
        if notes:
            self.estimate.value += "; " + "; ".join(notes)
        self.run_button.enabled = self.acquisition is None or not self.acquisition.is_running()
        return frames or 0

    def _frame_shape(self) -> tuple[int, int]:
        planned = self._planned_frame()
        return planned["frame_shape"] if planned is not None else (512, 512)

    def _planned_frame(self) -> dict[str, Any] | None:
        """The camera's frame shape, dtype and pixel size (µm), when it says (a ``roi`` and
        ``binning``, a ``bit_depth``, a ``pixel_size_um``), as ``LayerSink`` arguments."""
        shape = frame_shape(self.camera)
        if shape is None:
            return None
        binning = getattr(self.camera, "binning", 1) or 1
        dtype = np.uint8 if getattr(self.camera, "bit_depth", 16) == 8 else np.uint16
        pixel = getattr(self.camera, "pixel_size_um", None)
        planned: dict[str, Any] = {"frame_shape": shape, "dtype": dtype}
        if isinstance(pixel, (int, float)) and pixel > 0:
            planned["pixel_size"] = float(pixel) * binning
        return planned

    def _frame_time(self) -> float:
        interval = getattr(self.camera, "frame_interval_s", None)
        return float(interval()) if callable(interval) else 0.01

    # ------------------------------------------------------------------- run
    def _make_storage(self) -> Any:
        arguments = (
            self.event_arguments()
            if self.is_multi_d
            else {"plan": self.plan_choice.value, **form_values(self.plan_form)}
        )
        summary: dict[str, Any] = {
            "Software": "napari-exengine",
            "Settings": {
                k: v for k, v in arguments.items() if isinstance(v, (int, float, str, list))
            },
        }
        if arguments.get("z_step"):  # Micro-Manager's key: readers (ours too) scale z by it
            summary["z-step_um"] = abs(float(arguments["z_step"]))
        contribution = self.storages[self.storage.value]
        return contribution.build(
            directory=self.destination(),
            name=self.dataset_name.value or "acquisition",
            summary_metadata=summary,
            **form_values(self.storage_form),
        )

    def destination(self) -> str:
        """Where datasets go: the folder, or a store URL typed into it (``s3://bucket/prefix``)."""
        typed = str(self.directory.line_edit.value).strip()
        return typed if "://" in typed else str(self.directory.value)

    def _make_processor(self, plan: Any) -> tuple[ProcessorChain | None, list[str]]:
        """The processors as one chain, each fitted to ``plan`` (settings left to the plan, e.g. a
        projection's z planes, taken from it); with notes on what they will do (e.g. a partial
        average). Raises ``ValueError`` when a setting cannot fit the plan."""
        if not self.processor_forms:
            return None, []
        processors = [c.build(**form_values(form)) for c, form, _ in self.processor_forms]
        planned = self._planned_frame()
        shape = planned["frame_shape"] if planned is not None else None
        axes = getattr(plan, "axis_sizes", {})
        notes = [note for processor in processors for note in fit_to_plan(processor, axes, shape)]
        return ProcessorChain(processors), notes

    def processing_location(self) -> str:
        """Where processors run, as ``exengine.dask_processing.parse_location`` reads it."""
        if self.processing.value == "a local cluster":
            return f"cluster:{self.cluster_workers.value}"
        if self.processing.value == "a Dask scheduler":
            return self.scheduler_address.value.strip()
        return "local"

    def _show_processing(self, *_: Any) -> None:
        self.cluster_workers.visible = self.processing.value == "a local cluster"
        self.scheduler_address.visible = self.processing.value == "a Dask scheduler"

    def _show_plan_form(self, *_: Any) -> None:
        """The multi-D form for the default plan; a contributed plan's settings form otherwise."""
        self.plan_form.clear()
        if not self.is_multi_d:
            for widget in settings_form(self.plans[self.plan_choice.value]):
                widget.changed.connect(self.update_estimate)
                self.plan_form.append(widget)
        self.plan_form.visible = len(self.plan_form) > 0
        self.multi_d_form.visible = self.is_multi_d
        self.update_estimate()

    def _show_time_points(self, *_: Any) -> None:
        self.time_points.enabled = not self.until_stopped.value and self.until_stopped.enabled

    def load_sequence(self, path: str) -> None:
        """Set the multi-D form from a useq-schema ``MDASequence`` file (YAML or JSON, as
        pymmcore-widgets writes); a field the form cannot show is refused by name, and nothing is
        changed then."""
        from .useq_sequences import load_sequence

        z = self.z_choice.value
        kwargs = load_sequence(path, current_z=z.get_position() if z is not None else 0.0)
        if isinstance(kwargs.get("time_interval_s"), list):
            raise ValueError(
                f"{path}: the time plan has unequal intervals; the panel has one interval"
            )
        if kwargs.get("xyz_positions"):
            raise ValueError(
                f"{path}: the positions have a z each; the panel's positions are x, y only"
            )
        self.plan_choice.value = DEFAULT_PLAN
        self.until_stopped.value = False
        self.time_points.value = kwargs.get("num_time_points", 1)
        self.interval_s.value = kwargs.get("time_interval_s", 0.0)
        self.use_z.value = "z_start" in kwargs
        if "z_start" in kwargs:
            self.z_start.value, self.z_stop.value, self.z_step.value = (
                kwargs["z_start"],
                kwargs["z_end"],
                abs(kwargs["z_step"]),
            )
        channels = kwargs.get("channels") or []
        unknown = [c for c in channels if c not in self.channels.choices]
        if unknown:
            raise ValueError(
                f"{path}: channels {unknown} are not among {list(self.channels.choices)}"
            )
        self.channels.value = channels
        exposures = kwargs.get("channel_exposures_ms")
        self.per_channel_exposure.value = bool(exposures)
        for channel, exposure in zip(channels, exposures or [], strict=False):
            self._exposure_boxes[channel].value = exposure
        self._clear_positions()
        labels = kwargs.get("position_labels") or []
        for i, xy in enumerate(kwargs.get("xy_positions") or []):
            self.add_position_at(xy[0], xy[1], str(labels[i]) if i < len(labels) else None)
        self.order.value = kwargs.get("order", "tpcz")
        self.update_estimate()

    def save_sequence(self, path: str) -> None:
        """Save the multi-D form as a useq-schema ``MDASequence`` file (``.yaml``/``.yml`` or
        ``.json``)."""
        from .useq_sequences import save_sequence

        if self.until_stopped.value:
            raise ValueError(
                "A time-lapse until stopped has no MDASequence equivalent; set a number of time "
                "points"
            )
        save_sequence(self.event_arguments(), path)

    def _choose_sequence_to_load(self) -> None:
        self._with_sequence_file("r", "Load an MDASequence", self.load_sequence, "load")

    def _choose_sequence_file_to_save(self) -> None:
        self._with_sequence_file("w", "Save as an MDASequence", self.save_sequence, "save")

    def _with_sequence_file(self, mode: str, title: str, action: Any, verb: str) -> None:
        """Ask for a YAML/JSON file, then ``action(path)``; a refusal is shown, not raised."""
        from magicgui.widgets import request_values

        values = request_values(
            path={"annotation": Path, "options": {"mode": mode, "filter": "*.yaml *.yml *.json"}},
            title=title,
        )
        if values:
            try:
                action(str(values["path"]))
            except (ValueError, OSError, ImportError) as e:
                self._fail(f"Cannot {verb} the sequence: {e}")

    def run(self) -> Acquisition | None:
        """Start the acquisition described by the settings (the plan is checked again first)."""
        if self.acquisition is not None and self.acquisition.is_running():
            return None
        if self.update_estimate() is None:
            self._fail(f"Cannot run: {self.estimate.value}")
            return None
        try:
            from exengine.dask_processing import run_processor_on

            chain, _ = self._make_processor(dry_run(self.make_plan))
            processor = run_processor_on(chain, self.processing_location())
        except (ContributionError, ValueError, ImportError) as e:
            self._fail(f"Cannot create the processors: {e}")
            return None
        try:
            storage = self._make_storage()
        except Exception as e:  # shown to the user
            self._fail(f"Cannot create the storage: {e}")
            return None
        handler = DataHandler(storage, processor)
        plan = self.make_plan(handler)
        expected, sizes = [], {}
        if isinstance(
            plan, MultiDPlan
        ):  # sliders sized at once from one time point and the number of them
            expected = [
                c
                for e in plan.first_time_point()
                if isinstance(e, ReadoutData)
                for c in e.data_coordinate_iterator
            ]
            sizes = {
                axis: size for axis, size in plan.axis_sizes.items() if axis == "time" and size
            }
        scale = {"z": self.z_step.value} if self.is_multi_d and self.use_z.value else {}
        name = _dataset_label(storage) or self.dataset_name.value or "Acquisition"
        self.storage_object = storage
        self.acquisition = Acquisition(plan, handler)
        self.sink = LayerSink(
            self.viewer,
            handler,
            name=name,
            split_channels=self.split_channels.value,
            scale=scale,
            expected=expected,
            axis_sizes=sizes,
            defer_layers=defer_layers_for(self.acquisition.total_frames),
            **(self._planned_frame() or {}),
        )
        self.progress.max = self.acquisition.total_frames or 0  # 0: a busy bar for open-ended plans
        self.progress.value = 0
        self._set_running(True)
        self.status.value = "running"
        try:
            self.acquisition.start()
        except PlanError as e:
            self.sink.close()
            handler.finish()
            self._set_running(False)
            self._fail(str(e))
            return None
        self._timer.start()
        return self.acquisition

    def toggle_pause(self) -> None:
        """Pause before the next event (the frame in hand is finished), or resume."""
        acquisition = self.acquisition
        if acquisition is None or not acquisition.is_running():
            return
        if acquisition.is_paused:
            acquisition.resume()
            self.pause_button.text = "Pause"
            self.status.value = "running"
        else:
            acquisition.pause()
            self.pause_button.text = "Resume"
            self.status.value = f"paused: {acquisition.frames_done} frames stored"

    def stop(self) -> None:
        """Stop after the frame in hand (also while paused); everything acquired is stored."""
        if self.acquisition is not None:
            self.acquisition.stop()
            self.status.value = "stopping"

    def abort(self) -> None:
        """Abort at once; everything already acquired is still stored."""
        if self.acquisition is not None:
            self.acquisition.abort()
            self.status.value = "aborting"

    def _set_running(self, running: bool) -> None:
        for widget in self.settings:
            widget.enabled = not running
        self._show_z_range()
        self._show_time_points()
        self.run_button.enabled = not running
        self.pause_button.enabled = running
        self.pause_button.text = "Pause"
        self.stop_button.enabled = running
        self.abort_button.enabled = running

    def _show_z_range(self, *_: Any) -> None:
        """The z range can be edited while "z stack" is on (and nothing runs)."""
        editable = self.use_z.value and self.use_z.enabled
        for widget in (self.z_start, self.z_stop, self.z_step):
            widget.enabled = editable

    def _poll(self) -> None:
        acquisition = self.acquisition
        if acquisition is None:
            return
        done = acquisition.frames_done
        self.progress.value = min(done, self.progress.max) if self.progress.max else 0
        handler = acquisition.data_handler
        if handler is not None and handler.error is not None and acquisition.is_running():
            acquisition.abort()
        if acquisition.is_running():
            if acquisition.is_paused:
                self.status.value = f"paused: {done} frames stored"
            elif acquisition.total_frames is None:
                rate = acquisition.frames_per_s()
                self.status.value = (
                    f"{_frames_text(done)}"
                    + (f", {rate:.1f} frames/s" if rate else "")
                    + f", {_human_time(acquisition.elapsed_s())} elapsed"
                )
            else:
                left = acquisition.time_left_s()
                self.status.value = f"{done}/{acquisition.total_frames} frames" + (
                    f", {_human_time(left)} left" if left is not None else ""
                )
            return
        if handler is not None:
            with contextlib.suppress(DataHandlerError):  # reported by _finished
                handler.finish()
            if not handler.is_finished():
                return
        self._timer.stop()
        self._finished()

    def _finished(self) -> None:
        acquisition = self.acquisition
        assert acquisition is not None
        error = None
        try:
            acquisition.await_completion(timeout=5)
        except Exception as e:  # shown to the user
            error = e
        if self.sink is not None:
            self.sink.close()
        self._set_running(False)
        self.update_estimate()
        self.progress.max = max(self.progress.max, acquisition.frames_done, 1)
        self.progress.value = acquisition.frames_done
        where = getattr(self.storage_object, "path", "memory")
        if error is not None:
            self._fail(f"Acquisition failed after {acquisition.frames_done} stored frames: {error}")
        else:
            self.status.value = f"done: {acquisition.frames_done} frames stored in {where}"
            show_info(self.status.value)

    def _fail(self, message: str) -> None:
        self.status.value = message
        show_error(message)


def _dataset_label(storage: Any) -> str:
    """The name of the folder a storage writes to (``acquisition_2`` of ``acquisition_2.ome.zarr``),
    which names the layers as the reader names them when the dataset is reopened; empty when in
    memory."""
    path = getattr(storage, "path", None)
    if not isinstance(path, str):
        return ""
    label = os.path.basename(os.path.normpath(path))
    for suffix in (".ome.zarr", ".zarr"):
        label = label.removesuffix(suffix)
    return label


def default_data_directory() -> str:
    """Where the acquisition panel saves datasets unless told otherwise: ``$EXENGINE_DATA_DIR``,
    else ``~/exengine-data`` (not the temporary folder, which the system may empty)."""
    return os.environ.get("EXENGINE_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), "exengine-data"
    )


def _frames_text(count: int) -> str:
    return f"{count} frame{'' if count == 1 else 's'}"


def _human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _human_time(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours >= 48:
        days, hours = divmod(hours, 24)
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
