"""Resume an interrupted acquisition from its dataset, for ``exengine acquire --resume`` and the
panel's Resume.

Every acquisition writes into its dataset's summary metadata what rebuilds it: the plan (``Plan``:
the multi-D settings, or a contributed plan's id and settings), the devices in their roles
(``Devices``), the backend (``Backend``) and the devices' state at the start (``DeviceState``:
stage positions, each camera's exposure, binning and ROI). :func:`open_resumable` reads that and
what is stored; :func:`resume_request` restores the devices' state and makes the same request again,
marked to resume: the acquisition setup then leaves out what is stored
(:class:`~exengine.resumed_plan.ResumedPlan`) and appends the rest to the same dataset.

Refused, with the reason: a dataset that is not ours or holds no plan, a complete one, one made
with processors (what they held, a running projection or average, cannot be rebuilt), one whose
plan settings could not all be written down, a multi-resolution NDTiff.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from exengine.data import DataStorage
from exengine.events import MultiDSettings
from exengine.kernel.data_coords import DataCoordinates
from exengine.storage.dataset_lock import DatasetInUse, check_not_in_use

from .acquisition_setup import (
    AcquisitionRequest,
    CheckedAcquisition,
    ContributedPlan,
    SetupError,
)
from .contributions import DEFAULT_STORAGE
from .device_sets import DeviceSet, load_device_set, restore_device_state

__all__ = ["ResumableDataset", "open_resumable", "resume_request", "resuming"]

#: The storage that resumes OME-Zarr datasets.
OMEZARR_STORAGE = "napari-exengine.storage.omezarr"


@dataclass(frozen=True)
class ResumableDataset:
    """An interrupted dataset: where it is, its summary, and the frames it holds."""

    path: str
    summary: Mapping[str, Any]
    stored: frozenset[DataCoordinates]
    #: The stored frames' shape and dtype name.
    frame_shape: tuple[int, ...]
    dtype: str
    #: An OME-Zarr dataset (else NDTiff).
    omezarr: bool = False

    def reopen(self) -> DataStorage:
        """The dataset's storage, reopened to add frames; the summary says it was resumed."""
        if self.omezarr:
            from exengine.storage.omezarr_resume import resume_omezarr

            storage: Any = resume_omezarr(self.path)
        else:
            from exengine.storage.ndtiff import NDTiffStorage

            storage = NDTiffStorage.resume(self.path)
        resumed = list(self.summary.get("Resumed") or [])
        resumed.append(
            {
                "FramesBefore": len(self.stored),
                "Time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            }
        )
        storage.annotate({"Resumed": resumed})
        return storage


def open_resumable(path: str) -> ResumableDataset:
    """The dataset at ``path`` (an NDTiff folder or its index, an OME-Zarr folder or store URL),
    read to be resumed; raise :class:`SetupError` saying why it cannot be."""
    from exengine.storage.ndtiff_reader import find_dataset_root
    from exengine.storage.store_url import is_store_url, refuse_credentials

    if not isinstance(path, str) or not path.strip():
        raise SetupError("--resume needs the folder of the dataset to continue")
    if is_store_url(path):  # an OME-Zarr dataset in a store: no lock, no folder to check
        try:
            refuse_credentials(path)
        except ValueError as e:
            raise SetupError(str(e)) from None
        return _open_omezarr(path.rstrip("/"))
    if os.path.isfile(os.path.join(path, "zarr.json")):
        dataset = _open_omezarr(path)
    elif find_dataset_root(path) is not None:
        dataset = _open_ndtiff(path)
    else:
        raise SetupError(
            f"{path!r} is not a dataset to resume: an NDTiff folder (with NDTiff.index) or an "
            "OME-Zarr folder (with zarr.json)"
        )
    if not os.access(dataset.path, os.W_OK):
        raise SetupError(f"{dataset.path} cannot be written to (read-only): it cannot resume")
    try:
        check_not_in_use(_write_lock_file(dataset), dataset.path)
    except DatasetInUse as e:
        raise SetupError(str(e)) from None
    return dataset


def _write_lock_file(dataset: ResumableDataset) -> str:
    """The file a writer of ``dataset`` holds locked (checked here before the devices are put
    back; the storage takes the lock when it reopens the dataset)."""
    from exengine.storage.ndtiff_reader import INDEX_NAME
    from exengine.storage.omezarr_reader import RECORDS

    return os.path.join(dataset.path, RECORDS if dataset.omezarr else INDEX_NAME)


def _open_ndtiff(path: str) -> ResumableDataset:
    from exengine.storage.ndtiff_reader import NDTiffReader

    try:
        reader = NDTiffReader(path)
    except (OSError, ValueError) as e:
        raise SetupError(f"Cannot read {path!r}: {e}") from None
    try:
        _check_resumable(reader.path, reader.summary_metadata, bool(reader.entries))
        if reader.multiresolution:
            raise SetupError(f"{reader.path!r} is a multi-resolution dataset: it cannot resume")
        first = reader.first_entry()
        return ResumableDataset(
            path=os.path.abspath(reader.path),
            summary=dict(reader.summary_metadata),
            stored=frozenset(DataCoordinates(dict(key)) for key in reader.entries),
            frame_shape=first.shape,
            dtype=first.dtype.name,
        )
    finally:
        reader.close()


def _open_omezarr(path: str) -> ResumableDataset:
    from exengine.storage.omezarr_reader import OMEZarrDataset

    try:
        dataset = OMEZarrDataset(path)
    except (OSError, ValueError) as e:
        raise SetupError(f"Cannot read {path!r}: {e}") from None
    _check_resumable(dataset.path, dataset.summary_metadata, bool(dataset.records))
    array = dataset.levels[0]
    return ResumableDataset(
        path=dataset.path if "://" in path else os.path.abspath(dataset.path),
        summary=dict(dataset.summary_metadata),
        stored=frozenset(dataset.records),
        frame_shape=tuple(array.shape[-2:]),
        dtype=array.dtype.name,
        omezarr=True,
    )


def _check_resumable(path: str, summary: Mapping[str, Any], any_frame: bool) -> None:
    """Refuse, saying why, a dataset that cannot resume."""
    if not any_frame:
        raise SetupError(
            f"{path} holds no frame yet: there is nothing to continue, start the acquisition again"
        )
    plan = summary.get("Plan")
    if not isinstance(plan, Mapping) or not isinstance(plan.get("id"), str):
        raise SetupError(
            f"{path!r} holds no plan in its summary metadata (it was not acquired by "
            "napari-exengine 0.4 or later): it cannot resume"
        )
    if plan.get("left_out"):
        raise SetupError(
            f"{path!r}: the plan's settings {', '.join(map(str, plan['left_out']))} could not be "
            "written down, so the plan cannot be rebuilt"
        )
    for key, kind in (("Devices", Mapping), ("DeviceState", Mapping), ("Processors", list)):
        if key in summary and not isinstance(summary[key], kind):
            raise SetupError(f"{path!r}: its summary's {key} is damaged ({summary[key]!r:.60})")
    if summary.get("PlanEnded"):
        raise SetupError(f"{path} is already complete: its plan ended by itself")
    if summary.get("Processors"):
        names = ", ".join(
            str(p.get("id") if isinstance(p, Mapping) else p) for p in summary["Processors"]
        )
        raise SetupError(
            f"{path!r} was acquired with processors ({names}); what they held (a projection or an "
            "average in progress) cannot be rebuilt, so it cannot resume"
        )


def resuming(checked: CheckedAcquisition) -> str:
    """What a checked resume will do, in one line: the dataset, the frames stored, those to go,
    and (with a time-lapse) that its intervals restart."""
    dataset = checked.request.resume
    assert dataset is not None, "not a resume"
    count = len(dataset.stored)
    left = "" if checked.total_frames is None else f"; {checked.total_frames:,} to go"
    clock = " (time-lapse intervals restart now)" if "time" in checked.planned.axis_sizes else ""
    return f"Resuming {dataset.path}: {count:,} frame{'s' * (count != 1)} stored{left}{clock}"


def resume_request(
    dataset: ResumableDataset,
    devices: DeviceSet | None = None,
    backend: str | None = None,
    mm_config: str | None = None,
    software: str = "napari-exengine",
) -> AcquisitionRequest:
    """The request that continues ``dataset``: its plan, on ``devices`` (else those of ``backend``,
    by default the one that made the dataset), with the devices' state at the start restored."""
    summary = dataset.summary
    roles = summary.get("Devices") or {}
    if devices is None:
        backend = backend or summary.get("Backend") or "simulated"
        mm_config = mm_config or summary.get("MMConfig")
        camera = roles.get("camera")
        cameras = [str(c) for c in camera] if isinstance(camera, list) else None
        try:
            devices = load_device_set(backend, mm_config, cameras=cameras)
        except ValueError as e:
            raise SetupError(f"Cannot load the {backend} devices to resume: {e}") from None
    try:
        restore_device_state(devices, summary.get("DeviceState") or {})
    except ValueError as e:
        raise SetupError(str(e)) from None
    plan = summary["Plan"]
    settings = plan.get("settings") or {}
    if plan["id"] == "multi_d":
        try:
            rebuilt: MultiDSettings | ContributedPlan = MultiDSettings.model_validate(settings)
        except pydantic.ValidationError as e:
            error = e.errors()[0]
            where = ".".join(map(str, error["loc"]))
            raise SetupError(
                f"The dataset's plan cannot be rebuilt: {where}: {error['msg']}"
            ) from None
    else:
        rebuilt = ContributedPlan(plan["id"], dict(settings))
    return AcquisitionRequest(
        plan=rebuilt,
        devices=devices,
        destination=os.path.dirname(dataset.path),
        name=os.path.basename(dataset.path),
        storage=OMEZARR_STORAGE if dataset.omezarr else DEFAULT_STORAGE,
        software=software,
        resume=dataset,
    )
