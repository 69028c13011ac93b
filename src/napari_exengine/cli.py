"""The ``exengine`` command: headless acquisition, dataset summaries, and contribution listing.

It lives in the plugin package because ``--storage`` and ``--processor`` use the npe2 contributions
of installed plugins; it never imports napari or Qt.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from typing import Any, TextIO

from exengine import ExecutionEngine
from exengine.acquisition import Acquisition, PlanError, check_setting, dry_run
from exengine.data import DataHandler
from exengine.events import MultiDPlan, multi_d_acquisition_plan
from exengine.events.multi_d_events import finite_number
from exengine.plans import frame_shape
from exengine.processors import ProcessorChain, fit_to_plan

from .contributions import (
    DEFAULT_PLAN,
    DEFAULT_STORAGE,
    ContributionError,
    build_plan,
    build_processor,
    build_storage,
    list_contributions,
)
from .device_sets import BACKENDS, load_device_set


class UsageError(Exception):
    """Bad arguments: reported in one line with exit status 2."""


class AcquisitionFailed(RuntimeError):
    """The acquisition failed while running: reported in one line with exit status 1."""


def _z_range(text: str) -> tuple[float, float, float]:
    parts = text.split(":")
    if len(parts) != 3:
        raise UsageError(f"--z takes START:STOP:STEP (e.g. 0:10:2), got {text!r}")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"--z takes numbers START:STOP:STEP, got {text!r}") from None
    return start, stop, step


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option} takes comma-separated numbers, got {text!r}") from None


def _positions(text: str) -> list[list[float]]:
    positions = [_floats(p, "--positions") for p in text.split(";") if p.strip()]
    if not positions or len({len(p) for p in positions}) != 1 or len(positions[0]) not in (2, 3):
        raise UsageError(f"--positions takes 'X,Y;X,Y' or 'X,Y,Z;X,Y,Z', got {text!r}")
    return positions


def _processor_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``ID`` or ``ID:key=value,key=value`` (values parsed as JSON when possible)."""
    identifier, _, rest = text.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"--processor settings are key=value, got {item!r} in {text!r}")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return identifier, params


def load_acquisition_file(path: str) -> dict[str, Any]:
    """Settings from a YAML/JSON acquisition file, or a useq-schema ``MDASequence`` file."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise UsageError(f"Cannot read {path!r}: {e.strerror}") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(
                f"{path!r} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
            ) from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = (
                f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            )
            raise UsageError(
                f"{path!r} is not valid YAML: {getattr(e, 'problem', None) or e}{where}"
            ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path!r} must hold a mapping of settings")
    if {"time_plan", "z_plan", "stage_positions", "axis_order", "grid_plan"} & set(data) or (
        data.get("channels") and isinstance(data["channels"][0], dict)
    ):
        return from_useq(data)
    return data


def from_useq(data: dict[str, Any]) -> dict[str, Any]:
    """Translate a useq-schema MDASequence (as a dict) into ``exengine acquire`` settings; fields
    that cannot be represented (``grid_plan``, ``do_stack``, ``acquire_every``, ...) are refused by
    name."""
    from .useq_sequences import sequence_to_event_arguments

    try:
        kwargs = sequence_to_event_arguments(data)
    except ModuleNotFoundError as e:
        if e.name != "useq":
            raise
        raise UsageError(
            "Reading MDASequence files needs useq-schema: pip install useq-schema"
        ) from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    settings: dict[str, Any] = {"order": kwargs["order"]}
    if "num_time_points" in kwargs:
        settings["time"] = kwargs["num_time_points"]
        settings["interval"] = kwargs["time_interval_s"]
    if "z_start" in kwargs:
        settings["z"] = f"{kwargs['z_start']!r}:{kwargs['z_end']!r}:{kwargs['z_step']!r}"
    if "channels" in kwargs:
        settings["channels"] = kwargs["channels"]
        if "channel_exposures_ms" in kwargs:
            settings["exposures"] = kwargs["channel_exposures_ms"]
    positions = kwargs.get("xyz_positions") or kwargs.get("xy_positions")
    if positions:
        settings["positions"] = positions
        if "position_labels" in kwargs:
            settings["labels"] = kwargs["position_labels"]
    return settings


#: Settings of ``exengine acquire`` (options and acquisition-file keys).
SETTINGS = (
    "time",
    "interval",
    "until_stopped",
    "z",
    "channels",
    "exposures",
    "exposure",
    "positions",
    "labels",
    "order",
    "sequence",
    "storage",
    "out",
    "name",
    "backend",
    "mm_config",
    "processor",
    "processing",
    "plan",
    "plan_settings",
)
#: The settings that describe a multi-D plan (refused beside another ``--plan``).
MULTI_D_SETTINGS = (
    "time",
    "interval",
    "until_stopped",
    "z",
    "channels",
    "exposures",
    "positions",
    "labels",
    "order",
    "sequence",
)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = load_acquisition_file(args.file) if args.file else {}
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise UsageError(
            f"{args.file!r}: unknown setting {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(SETTINGS)}"
        )
    for key in SETTINGS:
        value = getattr(args, key, None)
        if value is not None and value is not False and value != []:
            settings[key] = value
    return settings


def _whole(settings: dict[str, Any], key: str) -> int:
    value = settings[key]
    try:
        number = int(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise UsageError(f"{key} must be a whole number of at least 1, got {value!r}")
    return number


def _number(value: Any, key: str) -> float:
    try:
        return finite_number(value, key)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _names(value: Any, key: str) -> list[Any]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise UsageError(f"{key} takes a comma-separated list, got {value!r}")
    return [item.strip() if isinstance(item, str) else item for item in items]


def _multi_d_arguments(settings: dict[str, Any], roles: Any) -> dict[str, Any]:
    """``multi_d_acquisition_plan`` arguments for the multi-D ``settings``."""
    kwargs: dict[str, Any] = {
        "order": settings.get("order", "tpcz"),
        "camera": roles.camera,
        "z_device": roles.z,
        "xy_device": roles.xy,
    }
    if not isinstance(kwargs["order"], str):
        raise UsageError(f"order must be a string like 'tpcz', got {kwargs['order']!r}")
    if settings.get("until_stopped"):
        if settings.get("time") is not None:
            raise UsageError(
                "Give either a number of time points (--time) or --until-stopped, not both"
            )
        kwargs["num_time_points"] = math.inf
    elif settings.get("time") is not None:
        kwargs["num_time_points"] = _whole(settings, "time")
    if settings.get("interval") is not None:
        interval = settings["interval"]
        kwargs["time_interval_s"] = (
            [_number(v, "interval") for v in interval]
            if isinstance(interval, list)
            else _number(interval, "interval")
        )
    if settings.get("z") is not None:
        z = settings["z"]
        if isinstance(z, str):
            start, stop, step = _z_range(z)
        elif isinstance(z, dict):
            missing = [k for k in ("start", "stop", "step") if k not in z]
            if missing or set(z) - {"start", "stop", "step"}:
                raise UsageError(
                    f"z takes start, stop and step (µm), got {z!r}"
                    + (f"; missing {', '.join(missing)}" if missing else "")
                )
            start, stop, step = (_number(z[k], f"z {k}") for k in ("start", "stop", "step"))
        else:
            raise UsageError(
                f"z takes START:STOP:STEP or a mapping of start, stop, step; got {z!r}"
            )
        kwargs.update(z_start=start, z_end=stop, z_step=step)
    if settings.get("channels") is not None:
        kwargs["channels"] = _names(settings["channels"], "channels")
        kwargs["channel_group"], kwargs["channel_property"] = roles.channel, roles.channel_property
    exposures = settings.get("exposures")
    if exposures is not None:
        kwargs["channel_exposures_ms"] = (
            _floats(exposures, "--exposures")
            if isinstance(exposures, str)
            else [_number(e, "exposures") for e in _names(exposures, "exposures")]
        )
    positions = settings.get("positions")
    if positions is not None:
        positions = (
            _positions(positions)
            if isinstance(positions, str)
            else [[_number(v, "positions") for v in p] for p in _names(positions, "positions")]
        )
        kwargs["xyz_positions" if len(positions[0]) == 3 else "xy_positions"] = positions
    if settings.get("labels") is not None:
        kwargs["position_labels"] = _names(settings["labels"], "labels")
    if settings.get("sequence"):
        kwargs["sequence"] = settings["sequence"]
    return kwargs


def _plan_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``--plan`` settings: ``key=value`` words (values parsed as JSON when possible) or a file's
    mapping."""
    given = settings.get("plan_settings") or {}
    if isinstance(given, dict):
        return dict(given)
    parsed: dict[str, Any] = {}
    for item in given:
        key, eq, value = str(item).partition("=")
        if not eq or not key.strip():
            raise UsageError(f"plan settings are key=value, got {item!r}")
        try:
            parsed[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.strip()] = value
    return parsed


def _check_free_space(
    out: str, frames: int | None, camera: Any, shape: tuple[int, int] | None
) -> None:
    """Refuse a plan whose frames would not fit in the free space at ``out`` (a local folder)."""
    if frames is None or shape is None or "://" in out:
        return
    bytes_per_pixel = 1 if int(getattr(camera, "bit_depth", 16) or 16) <= 8 else 2
    needed = frames * shape[0] * shape[1] * bytes_per_pixel
    existing = out
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise UsageError(
            f"The plan's {frames:,} frames of {shape[1]}x{shape[0]} need about {needed / 1e9:,.1f} "
            f"GB; {existing} has {free / 1e9:,.1f} GB free"
        )


def build_acquisition(settings: dict[str, Any]) -> tuple[Acquisition, Any, list[str]]:
    """Devices, plan, processors and storage for ``settings``, every setting checked before anything
    moves or is created; returns the acquisition, its storage and notes on what the processors will
    do."""
    backend = settings.get("backend", "simulated")
    mm_config = settings.get("mm_config")
    if mm_config is not None and not (isinstance(mm_config, str) and mm_config.strip()):
        raise UsageError(
            f"--mm-config needs the path of a Micro-Manager configuration file, got {mm_config!r}"
        )
    try:
        roles = load_device_set(backend, mm_config)
    except ValueError as e:
        raise UsageError(str(e)) from None
    exposure = None
    if settings.get("exposure") is not None:
        exposure = _number(settings["exposure"], "exposure")
        check_setting(roles.camera, "exposure", exposure)
    specs = settings.get("processor") or []
    processors = []
    for spec in [specs] if isinstance(specs, (str, dict)) else specs:
        if isinstance(spec, str):
            identifier, params = _processor_spec(spec)
        elif isinstance(spec, dict) and "id" in spec:
            identifier, params = spec["id"], spec.get("params", {})
        else:
            raise UsageError(
                "processor takes 'ID:key=value,...' or a mapping with 'id' and 'params', got "
                f"{spec!r}"
            )
        try:
            processors.append(build_processor(identifier, **params))
        except ContributionError as e:
            raise UsageError(str(e.__cause__ or e)) from None
    where = settings.get("processing")
    if where is not None:
        from exengine.dask_processing import parse_location

        try:
            parse_location(where)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if not processors:
            raise UsageError("--processing says where processors run; add one with --processor")
    plan_id = settings.get("plan") or DEFAULT_PLAN
    devices = {
        "camera": roles.camera,
        "z_device": roles.z,
        "xy_device": roles.xy,
        "channel_group": roles.channel,
        "channel_property": roles.channel_property,
    }
    if plan_id == DEFAULT_PLAN and not settings.get("plan_settings"):
        kwargs = _multi_d_arguments(settings, roles)

        def make(handler: DataHandler | None) -> Any:
            return multi_d_acquisition_plan(**kwargs, data_handler=handler)
    else:
        given = [k for k in MULTI_D_SETTINGS if settings.get(k) is not None and k != "order"]
        if given:
            raise UsageError(
                f"--plan {plan_id} takes its own settings (key=value); "
                f"{', '.join(given)} belong to the multi-D plan"
            )
        plan_settings = _plan_settings(settings)

        def make(handler: DataHandler | None) -> Any:
            return build_plan(plan_id, **plan_settings, **devices, data_handler=handler)

    try:  # checked before the dataset exists: a typo leaves nothing behind
        plan = dry_run(make)
        shape = frame_shape(roles.camera)
        axes = getattr(plan, "axis_sizes", {})
        notes = [note for processor in processors for note in fit_to_plan(processor, axes, shape)]
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    out = (
        os.path.abspath(settings.get("out") or os.getcwd())
        if "://" not in str(settings.get("out", ""))
        else settings["out"]
    )
    _check_free_space(out, getattr(plan, "total_frames", None), roles.camera, shape)
    if exposure is not None:  # every setting is checked: the devices may now be set
        roles.camera.exposure = exposure
    summary = {
        "Software": "exengine acquire",
        "Settings": {k: v for k, v in settings.items() if isinstance(v, (str, int, float, list))},
    }
    if settings.get("z") is not None and isinstance(
        plan, MultiDPlan
    ):  # Micro-Manager's key: readers scale z by it
        summary["z-step_um"] = abs(float(kwargs["z_step"]))
    storage = build_storage(
        settings.get("storage") or DEFAULT_STORAGE,
        out,
        settings.get("name") or "acquisition",
        summary,
    )
    handler = DataHandler(storage, _processor_where(processors, where))
    return Acquisition(make(handler), handler), storage, notes


def _processor_where(processors: list[Any], where: Any) -> Any:
    """The processors as one chain, on this machine or on the Dask cluster ``where`` says."""
    if not processors:
        return None
    from exengine.dask_processing import run_processor_on

    return run_processor_on(ProcessorChain(processors), where)


class Progress:
    """A progress bar on a terminal; otherwise one summary line every ``every`` frames (every 10 s
    when the plan is open-ended: then frames, frames/s and the time elapsed, with no time left)."""

    def __init__(self, total: int | None, stream: TextIO) -> None:
        self.total = None if total is None else max(total, 1)
        self.stream = stream
        self.tty = stream.isatty()
        self.every = max(self.total // 10, 1) if self.total else None
        self._last_line = -1
        self._started = time.monotonic()

    def update(self, done: int, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = done / elapsed
        if self.total is None:
            text = f"{done} frames, {rate:.1f} frames/s, {_duration(elapsed)} elapsed"
            step = int(elapsed // 10)
        else:
            left = (self.total - done) / rate if rate > 0 else float("nan")
            text = f"{done}/{self.total} frames, {rate:.1f} frames/s, {_duration(left)} left"
            step = done // self.every  # type: ignore[operator]
        if self.tty:
            filled = 0 if self.total is None else int(30 * done / self.total)
            bar = "" if self.total is None else f"[{'#' * filled}{'.' * (30 - filled)}] "
            self.stream.write(f"\r{bar}{text}  ")
            if final:
                self.stream.write("\n")
            self.stream.flush()
        elif final or step > self._last_line:
            self._last_line = step
            self.stream.write(text + "\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def _stored_within(handler: DataHandler, seconds: float) -> bool:
    """True once ``handler`` has stored everything (or failed) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not handler.is_finished() and handler.error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return handler.is_finished() or handler.error is not None


def run_acquire(args: argparse.Namespace, stream: TextIO) -> int:
    acquisition, storage, notes = build_acquisition(_settings(args))
    handler = acquisition.data_handler
    for note in notes:
        stream.write(f"note: {note}\n")
    interrupts = []

    def on_interrupt(signum: int, frame: Any) -> None:
        interrupts.append(signum)
        if len(interrupts) == 1:
            acquisition.stop()
            stream.write("\nStopping after the frame in hand (Ctrl-C again to abort)...\n")
        elif len(interrupts) == 2:
            acquisition.abort()
            stream.write(
                "\nAborting: storing the frames already acquired (Ctrl-C again to give up on "
                "them)...\n"
            )
        else:
            lost = handler.frames_accepted - handler.frames_stored
            stream.write(
                f"\nGave up: {lost} acquired frames were not stored; "
                f"{handler.frames_stored} are in {getattr(storage, 'path', 'memory')}\n"
            )
            stream.flush()
            os._exit(130)
        stream.flush()

    signal.signal(
        signal.SIGINT, on_interrupt
    )  # main() restores the previous handler once all is saved
    progress = Progress(acquisition.total_frames, stream)
    acquisition.start()
    while acquisition.is_running():
        progress.update(acquisition.frames_acquired)
        time.sleep(0.1)
    if handler.error is None:
        handler.finish()
        if not _stored_within(
            handler, 0.5
        ):  # storage lags behind: show the drain and how to give up on it
            stream.write(
                f"Storing the {handler.bytes_in_flight / 1e6:.0f} MB of frames still in memory "
                f"(Ctrl-C {'again ' if interrupts else ''}to give up on them)...\n"
            )
            while not _stored_within(handler, 1.0):
                stream.write(
                    f"  {handler.frames_stored} frames stored, {handler.bytes_in_flight / 1e6:.0f} "
                    "MB to go\n"
                )
                stream.flush()
    try:
        acquisition.await_completion()
    except (
        Exception
    ) as e:  # failed while running (a device, the plan, the storage): not a usage error
        what = str(e) if isinstance(e, PlanError) else f"{type(e).__name__}: {e}"
        raise AcquisitionFailed(
            f"{what} ({acquisition.frames_done} frames stored in "
            f"{getattr(storage, 'path', 'memory')})"
        ) from e
    finally:
        progress.update(acquisition.frames_acquired, final=True)
    where = getattr(storage, "path", "memory")
    if interrupts:
        stream.write(f"Interrupted: {acquisition.frames_done} frames stored in {where}\n")
        return 130
    stream.write(f"Done: {acquisition.frames_done} frames stored in {where}\n")
    return 0


def run_info(args: argparse.Namespace, stream: TextIO) -> int:
    from exengine.storage.dataset_info import summarise_dataset

    try:
        summary = summarise_dataset(args.path)
    except ValueError as e:
        raise UsageError(str(e)) from None
    stream.write(summary.text())
    return 0


def run_list(args: argparse.Namespace, stream: TextIO) -> int:
    for contribution in list_contributions():
        state = "" if contribution.available else f"  [unavailable: {contribution.error}]"
        line = (
            f"{contribution.kind:9} {contribution.id:55} {contribution.title} "
            f"({contribution.plugin}){state}"
        )
        stream.write(line + "\n")
    return 0


def parser() -> argparse.ArgumentParser:
    """The ``exengine`` argument parser."""
    from exengine import __version__

    main = argparse.ArgumentParser(
        prog="exengine", description="Headless acquisition with ExEngine."
    )
    main.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = main.add_subparsers(dest="command", required=True)
    acquire = commands.add_parser(
        "acquire",
        help="run a multi-dimensional acquisition and save it",
        description="Run a time/position/channel/z acquisition (simulated devices by default) and "
        "save every frame. Ctrl-C stops cleanly (frames so far are stored); a second Ctrl-C "
        "aborts.",
    )
    acquire.add_argument("--time", type=int, help="number of time points")
    acquire.add_argument(
        "--until-stopped",
        dest="until_stopped",
        action="store_true",
        help="time points until stopped (Ctrl-C), instead of --time",
    )
    acquire.add_argument("--interval", type=float, help="seconds between time points (default 0)")
    acquire.add_argument("--z", help="z range START:STOP:STEP in µm, STOP included (e.g. 0:10:2)")
    acquire.add_argument("--channels", help="comma-separated channel names (e.g. DAPI,FITC)")
    acquire.add_argument("--exposures", help="comma-separated exposure per channel in ms")
    acquire.add_argument("--exposure", type=float, help="camera exposure in ms")
    acquire.add_argument("--positions", help="xy(z) positions 'X,Y;X,Y' or 'X,Y,Z;X,Y,Z' in µm")
    acquire.add_argument("--labels", help="comma-separated position labels")
    acquire.add_argument("--order", help="axis order, outermost first (default tpcz)")
    acquire.add_argument("--sequence", help="inner axes to run as hardware sequences (e.g. z)")
    acquire.add_argument(
        "--file", help="YAML/JSON file with these settings, or a useq-schema MDASequence file"
    )
    acquire.add_argument(
        "--backend",
        choices=BACKENDS,
        help="device backend (default simulated): micromanager (pymmcore-plus; its demo devices "
        "unless --mm-config) or microscope (python-microscope simulators)",
    )
    acquire.add_argument(
        "--mm-config",
        dest="mm_config",
        help="Micro-Manager configuration file (with --backend micromanager and a Micro-Manager "
        "installation pymmcore-plus can find)",
    )
    acquire.add_argument(
        "--storage", help=f"storage backend id (default {DEFAULT_STORAGE}; see 'exengine list')"
    )
    acquire.add_argument(
        "--processor",
        action="append",
        help="processor id with optional settings ID:key=value,... (repeatable; see 'exengine "
        "list')",
    )
    acquire.add_argument(
        "--processing",
        help="where processors run: 'local' (this machine, the default), "
        "'cluster:N' (a local Dask cluster of N worker processes) or a Dask "
        "scheduler address such as tcp://10.0.0.5:8786",
    )
    acquire.add_argument("--out", help="output directory (default: current directory)")
    acquire.add_argument(
        "--name", help="dataset name (default 'acquisition'; a number is appended)"
    )
    acquire.add_argument(
        "--plan",
        help=f"plan id (default {DEFAULT_PLAN}: the options above; see 'exengine list'), "
        f"with its settings as KEY=VALUE words",
    )
    acquire.add_argument("plan_settings", nargs="*", metavar="KEY=VALUE", help="settings of --plan")
    info = commands.add_parser(
        "info", help="summarise an NDTiff or OME-Zarr dataset (a folder or a store URL)"
    )
    info.add_argument(
        "path", help="dataset folder, its NDTiff.index, or an OME-Zarr store URL (s3://...)"
    )
    commands.add_parser(
        "list", help="list the plans, processors and storage backends of installed plugins"
    )
    return main


def main(
    argv: list[str] | None = None, stream: TextIO = sys.stdout, restore_signals: bool = True
) -> int:
    """Run the ``exengine`` command with ``argv``; returns the exit status.

    ``restore_signals=False`` keeps the Ctrl-C handler of ``acquire`` installed after it returns
    (the console script exits right after, so a late Ctrl-C cannot interrupt the clean exit).
    """
    args = parser().parse_args(argv)
    handlers = {"acquire": run_acquire, "info": run_info, "list": run_list}
    previous_sigint = signal.getsignal(signal.SIGINT)
    try:
        return handlers[args.command](args, stream)
    except (UsageError, ContributionError, PlanError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        sys.stderr.write(f"exengine: error: {message}\n")
        return 2
    except AcquisitionFailed as e:
        sys.stderr.write(f"exengine: failed: {e}\n")
        return 1
    except Exception as e:
        sys.stderr.write(f"exengine: failed: {type(e).__name__}: {e}\n")
        return 1
    finally:
        engine = ExecutionEngine._instance
        if engine is not None and args.command == "acquire":
            engine.shutdown()
        if restore_signals:
            signal.signal(signal.SIGINT, previous_sigint)


def console() -> None:
    """Console-script wrapper that exits with :func:`main`'s status."""
    status = main(restore_signals=False)
    signal.signal(
        signal.SIGINT, signal.SIG_IGN
    )  # everything is saved: a late Ctrl-C must not abort the exit
    sys.exit(status)
