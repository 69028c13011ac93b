"""One acquisition setup for the Acquisition panel and ``exengine acquire``.

A front end fills an :class:`AcquisitionRequest` (the plan: the multi-D settings or a contributed
plan with its settings; the devices in their roles; processors and where they run; the storage and
where it writes). :func:`check_acquisition` checks all of it before anything moves or is created
and returns a :class:`CheckedAcquisition`: what will happen (frames, bytes, duration, the
processors' notes), which the panel shows as its estimate. Its :meth:`~CheckedAcquisition.create`
then makes the storage, the data handler and the :class:`~exengine.acquisition.Acquisition`, with
the summary metadata and the plan's shape told to the storage before the first frame. The front
ends only render ``Acquisition.status()``.

No Qt here: the command line uses it too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from exengine.acquisition import Acquisition, check_setting
from exengine.acquisition_status import format_bytes
from exengine.data import DataHandler, DataProcessor, DataStorage, PlannedData
from exengine.events import MultiDPlan, MultiDSettings
from exengine.plan_helpers import frame_dtype, frame_shape
from exengine.processors import ProcessorChain, fit_to_plan
from exengine.resumed_plan import ResumedPlan
from exengine.storage.store_url import is_store_url, refuse_credentials

from .contributions import (
    DEFAULT_STORAGE,
    ContributionError,
    build_plan,
    build_processor,
    build_storage,
    get_contribution,
)
from .device_sets import DeviceSet, device_state
from .duration_estimate import plan_duration_s

if TYPE_CHECKING:
    from .resume_setup import ResumableDataset

__all__ = [
    "AcquisitionRequest",
    "CheckedAcquisition",
    "ContributedPlan",
    "ProcessorChoice",
    "SetupError",
    "check_acquisition",
]


class SetupError(ValueError):
    """A setting of the request that cannot work: one line naming the value and what is valid."""


@dataclass(frozen=True)
class ContributedPlan:
    """A plan contributed through npe2 (``exengine list``), by id, with its settings."""

    id: str
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessorChoice:
    """A contributed processor, by id, with its settings."""

    id: str
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AcquisitionRequest:
    """Everything an acquisition needs, as a front end gives it.

    ``plan`` is the multi-D settings or a contributed plan; ``devices`` the devices in their
    roles; ``processors`` run in order, where ``processing`` says (``"local"``, ``"cluster:N"`` or
    a Dask scheduler address); the storage ``storage`` (an npe2 id, with ``storage_settings``)
    writes ``name`` into ``destination`` (a folder or a store URL). ``exposure_ms`` sets the
    camera's exposure first; ``software`` names the front end in the summary metadata. ``resume``
    continues an interrupted dataset instead of making a new one.
    """

    plan: MultiDSettings | ContributedPlan
    devices: DeviceSet
    destination: str = "."
    name: str = "acquisition"
    storage: str = DEFAULT_STORAGE
    storage_settings: Mapping[str, Any] = field(default_factory=dict)
    processors: tuple[ProcessorChoice, ...] = ()
    processing: str = "local"
    exposure_ms: float | None = None
    software: str = "napari-exengine"
    #: The interrupted dataset to continue (see :mod:`napari_exengine.resume_setup`): the plan
    #: leaves out the frames it holds, and the rest are added to it.
    resume: ResumableDataset | None = None


@dataclass(frozen=True)
class CheckedAcquisition:
    """A request whose every setting was checked, and what it will do."""

    request: AcquisitionRequest
    #: The plan, checked against the devices (made without a data handler).
    plan: Any
    #: Notes on what the processors will do for this plan (a partial average, ...).
    notes: tuple[str, ...]
    #: What the storage and the sinks are told before the first frame.
    planned: PlannedData
    #: Frames planned (``None``: not known in advance).
    total_frames: int | None
    #: Bytes of one frame.
    frame_bytes: int
    #: Seconds the acquisition should take, from the devices' timings (``None``: not known).
    duration_s: float | None
    #: Why the destination may not hold the dataset (``None``: it will, or it cannot be told).
    space_warning: str | None

    @property
    def total_bytes(self) -> int | None:
        """Bytes of all planned frames (``None``: not known in advance)."""
        return None if self.total_frames is None else self.total_frames * self.frame_bytes

    def create(self) -> Acquisition:
        """Make the processors (reaching a Dask scheduler first, if one is chosen), the storage,
        the data handler and the acquisition (not started): the devices' settings are applied, the
        dataset exists once this returns. :class:`SetupError` when the scheduler cannot be reached:
        nothing is created then."""
        from exengine.dask_processing import parse_location, reach_scheduler, run_processor_on

        request = self.request
        processors = _processors(request)
        chain = ProcessorChain(processors) if processors else None
        for processor in processors:
            fit_to_plan(processor, self.planned.axis_sizes, self.planned.frame_shape)
        try:
            reach_scheduler(parse_location(request.processing))
            processing = run_processor_on(chain, request.processing)
        except (OSError, ConnectionError) as e:  # TimeoutError included
            raise SetupError(str(e)) from None
        if request.exposure_ms is not None:
            for camera in _cameras(request):
                camera.exposure = request.exposure_ms
        storage = None
        try:
            if request.resume is not None:
                storage = request.resume.reopen()
            else:
                storage = _storage(request, self.planned.summary_metadata)
            handler = DataHandler(storage, processing)
        except BaseException:
            if processing is not None:
                processing.close()
            if storage is not None:
                storage.finish()
            raise
        plan = _make_plan(request, handler)
        if request.resume is not None:
            handler.skip_stored(request.resume.stored)
            plan = ResumedPlan(plan, request.resume.stored)
        return Acquisition(plan, handler, total_frames=self.total_frames, planned=self.planned)


def check_acquisition(request: AcquisitionRequest) -> CheckedAcquisition:
    """Check every setting of ``request`` against the devices and the contributions, before
    anything moves or is created; raise :class:`SetupError` naming the first bad value."""
    from exengine.dask_processing import parse_location

    camera = _cameras(request)[0]  # the frames' shape and pixel size: the first camera's
    if request.exposure_ms is not None:
        for each in _cameras(request):
            check_setting(each, "exposure", request.exposure_ms)
    if request.resume is None:
        _check_name(request.name)
        _check_destination(request)
    try:
        parse_location(request.processing)
        if request.processing not in ("local", "", None) and not request.processors:
            raise SetupError("Where processors run is set, but there is no processor: add one")
        processors = _processors(request)
        plan = _make_plan(request, None)
        if hasattr(plan, "validate"):
            plan.validate()
        shape = frame_shape(camera)
        dtype = frame_dtype(camera)
        if request.resume is not None:
            plan = _resumed(request.resume, plan, shape, dtype)
        axis_sizes = dict(getattr(plan, "axis_sizes", {}) or {})
        notes = tuple(n for p in processors for n in fit_to_plan(p, axis_sizes, shape))
    except (ContributionError, KeyError) as e:
        raise SetupError(str(e.__cause__ or e).strip("'\"")) from None
    except (ValueError, TypeError) as e:
        if isinstance(e, SetupError):
            raise
        raise SetupError(str(e)) from None
    total = getattr(plan, "total_frames", None)
    height, width = shape or (512, 512)
    frame_bytes = height * width * (2 if dtype is None else dtype.itemsize)
    planned = PlannedData(
        axis_sizes=axis_sizes,
        axis_values=dict(getattr(plan, "axis_values", {}) or {}),
        frame_shape=shape,
        dtype=None if dtype is None else dtype.name,
        pixel_size_um=_pixel_size_um(camera),
        summary_metadata=_summary(request, plan),
    )
    return CheckedAcquisition(
        request=request,
        plan=plan,
        notes=notes,
        planned=planned,
        total_frames=total,
        frame_bytes=frame_bytes,
        duration_s=_duration_s(request, plan, total),
        space_warning=_space_warning(request.destination, total, frame_bytes),
    )


# ------------------------------------------------------------------------------------ helpers
def _resumed(
    dataset: ResumableDataset, plan: Any, shape: tuple[int, ...] | None, dtype: np.dtype | None
) -> ResumedPlan:
    """``plan`` without what ``dataset`` holds; refused when it is complete, when its frames would
    not match the camera's, or when it holds frames the plan does not make."""
    if shape is not None and dataset.frame_shape != shape:
        raise SetupError(
            f"The camera's frames are {shape[1]}x{shape[0]} pixels, the dataset's "
            f"{dataset.frame_shape[1]}x{dataset.frame_shape[0]}: set the camera's ROI and binning "
            "as they were"
        )
    if dtype is not None and dataset.dtype != dtype.name:
        raise SetupError(
            f"The camera gives {dtype.name} frames, the dataset holds {dataset.dtype}: set the "
            "camera's bit depth as it was, or resume with the backend that made the dataset"
        )
    _check_frames_of_plan(dataset, plan)
    resumed = ResumedPlan(plan, dataset.stored)
    if resumed.total_frames == 0:
        raise SetupError(
            f"{dataset.path} is already complete: all {len(dataset.stored):,} frames of its plan "
            "are stored"
        )
    return resumed


def _check_frames_of_plan(dataset: ResumableDataset, plan: Any) -> None:
    """Refuse a dataset holding frames its rebuilt multi-D plan does not make (other axes, channels
    or positions, indices past the plan's): continuing would mix two plans. (Other plans need not
    say all their axes.)"""
    if not isinstance(plan, MultiDPlan):
        return
    sizes, values = plan.axis_sizes, plan.axis_values
    for coords in dataset.stored:
        for axis, value in coords.items():
            if axis not in sizes:
                fits = False
            elif isinstance(value, str):
                fits = axis not in values or value in values[axis]
            else:
                size = sizes[axis]
                fits = size is None or 0 <= value < size
            if not fits:
                raise SetupError(
                    f"{dataset.path} holds a frame at {dict(coords)}, which its plan does not make "
                    f"(its axes: {', '.join(sizes)}): it cannot resume"
                )


def _make_plan(request: AcquisitionRequest, handler: DataHandler | None) -> Any:
    roles = request.devices.plan_arguments()
    if isinstance(request.plan, MultiDSettings):
        return MultiDPlan(request.plan, **roles, data_handler=handler)
    return build_plan(request.plan.id, **request.plan.settings, **roles, data_handler=handler)


def _cameras(request: AcquisitionRequest) -> list[Any]:
    """The camera, or the cameras that capture together."""
    return request.devices.cameras


def _processors(request: AcquisitionRequest) -> list[DataProcessor]:
    return [build_processor(choice.id, **choice.settings) for choice in request.processors]


#: The longest dataset name: with the number and suffix a storage adds (``_12.ome.zarr``) it stays
#: well within the 255 bytes a file name may have.
MAX_NAME_LENGTH = 120


def _check_name(name: Any) -> None:
    """A dataset name is one plain folder name, whatever the storage (a plugin's too): not empty,
    no folder separators or ``..``, no surrounding spaces, at most ``MAX_NAME_LENGTH`` bytes
    (UTF-8)."""
    if not isinstance(name, str) or not name.strip():
        raise SetupError(f"The dataset needs a name, got {name!r}")
    if name != name.strip():
        raise SetupError(f"The dataset name {name!r} starts or ends with a space; remove it")
    if any(c in name for c in "/\\\0") or name in (".", ".."):
        raise SetupError(
            f"The dataset name {name!r} must be a plain folder name, without '/', '\\' or '..'"
        )
    if len(name.encode()) > MAX_NAME_LENGTH:
        raise SetupError(
            f"The dataset name is {len(name.encode())} bytes long; use at most {MAX_NAME_LENGTH}"
        )


def _check_destination(request: AcquisitionRequest) -> None:
    """A store URL goes to a storage that writes to store URLs, and carries no credentials (they
    would be echoed in messages and sent to the server as part of the path)."""
    destination = request.destination
    if not is_store_url(destination):
        return
    try:
        refuse_credentials(destination)
    except ValueError as e:
        raise SetupError(str(e)) from None
    storage = get_contribution(request.storage, "storage")
    if not getattr(storage.factory(), "accepts_store_urls", False):
        raise SetupError(
            f"The {storage.title} storage writes to a local folder, and {destination!r} is a "
            "store URL: choose the OME-Zarr storage, or give a folder"
        )


def _storage(request: AcquisitionRequest, summary: Mapping[str, Any]) -> DataStorage:
    return build_storage(
        request.storage,
        request.destination,
        request.name,
        dict(summary),
        **request.storage_settings,
    )


def _summary(request: AcquisitionRequest, plan: Any) -> dict[str, Any]:
    """The dataset's summary metadata: the front end, the plan's settings, the devices' roles,
    and the z step and time interval under Micro-Manager's keys (readers, ours too, scale z and
    time by them)."""
    summary: dict[str, Any] = {"Software": request.software, "Backend": request.devices.backend}
    if request.devices.mm_config:
        summary["MMConfig"] = request.devices.mm_config
    if isinstance(request.plan, MultiDSettings):
        summary["Plan"] = {"id": "multi_d", "settings": request.plan.as_json()}
        z_range = request.plan.z_range()
        if z_range is not None and z_range[2]:
            summary["z-step_um"] = abs(z_range[2])
        interval = request.plan.time_interval_s
        if not isinstance(interval, list) and interval > 0:  # Micro-Manager's key, as readers take
            summary["Interval_ms"] = interval * 1000.0
    else:
        settings = {k: v for k, v in request.plan.settings.items() if _is_json(v)}
        summary["Plan"] = {"id": request.plan.id, "settings": settings}
        left_out = sorted(set(request.plan.settings) - set(settings))
        if left_out:  # resuming needs every setting: it is refused then
            summary["Plan"]["left_out"] = left_out
    summary["Devices"] = {
        role: [getattr(d, "name", d) for d in device]
        if isinstance(device, list)
        else getattr(device, "name", device)
        for role, device in request.devices.plan_arguments().items()
        if device is not None
    }
    state = summary["DeviceState"] = device_state(request.devices)
    if request.exposure_ms is not None:  # set once the acquisition is created
        for camera in state.get("cameras", {}).values():
            camera["exposure"] = request.exposure_ms
    if request.processors:
        summary["Processors"] = [
            {"id": p.id, "settings": {k: v for k, v in p.settings.items() if _is_json(v)}}
            for p in request.processors
        ]
    return summary


def _is_json(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, list, type(None)))


def _pixel_size_um(camera: Any) -> float | None:
    pixel = getattr(camera, "pixel_size_um", None)
    if not isinstance(pixel, (int, float)) or pixel <= 0:
        return None
    return float(pixel) * (getattr(camera, "binning", 1) or 1)


def _duration_s(request: AcquisitionRequest, plan: Any, total: int | None) -> float | None:
    """Seconds the plan should take, from the devices' timings (see :mod:`.duration_estimate`);
    ``None`` when the number of frames is not known."""
    if total is None:
        return None
    devices = request.devices
    roles = {"xy": devices.xy, "z": devices.z, "channel": devices.channel}
    return plan_duration_s(plan, request.plan, _cameras(request), roles, total)


def _space_warning(destination: str, total: int | None, frame_bytes: int) -> str | None:
    """A reason the folder at ``destination`` will not hold ``total`` frames (``None`` when it
    will, when the count is not known, or for a store URL)."""
    if total is None or "://" in destination:
        return None
    needed = total * frame_bytes
    existing = os.path.abspath(destination)
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    if needed <= free:
        return None
    return (
        f"The plan's {total:,} frames need about {format_bytes(needed)}; {existing} has "
        f"{format_bytes(free)} free"
    )
