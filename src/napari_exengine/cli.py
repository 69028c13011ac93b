"""The ``exengine`` command: headless acquisition, dataset summaries, and contribution listing.

It lives in the plugin package because ``--storage`` and ``--processor`` use the npe2 contributions
of installed plugins; it never imports napari or Qt.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any, Optional, TextIO

from exengine import ExecutionEngine
from exengine.acquisition import Acquisition
from exengine.base_classes import DataProducing
from exengine.data import DataHandler
from exengine.events import multi_d_acquisition_events
from exengine.processors import ProcessorChain

from .contributions import DEFAULT_STORAGE, ContributionError, build_processor, build_storage, list_contributions
from .device_sets import BACKENDS, load_device_set


class UsageError(Exception):
    """Bad arguments: reported in one line with exit status 2."""


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
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise UsageError(f"{path!r} must hold a mapping of settings")
    if {"time_plan", "z_plan", "stage_positions", "axis_order", "grid_plan"} & set(data) or (
            data.get("channels") and isinstance(data["channels"][0], dict)):
        return from_useq(data)
    return data


def from_useq(data: dict[str, Any]) -> dict[str, Any]:
    """Translate a useq-schema MDASequence (as a dict) into ``exengine acquire`` settings; fields that cannot
    be represented (``grid_plan``, ``do_stack``, ``acquire_every``, ...) are refused by name."""
    from .useq_sequences import sequence_to_event_arguments

    try:
        kwargs = sequence_to_event_arguments(data)
    except ModuleNotFoundError as e:
        if e.name != "useq":
            raise
        raise UsageError("Reading MDASequence files needs useq-schema: pip install useq-schema") from None
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


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = load_acquisition_file(args.file) if args.file else {}
    for key in ("time", "interval", "z", "channels", "exposures", "exposure", "positions", "labels", "order",
                "sequence", "storage", "out", "name", "backend", "mm_config", "processor"):
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    return settings


def build_acquisition(settings: dict[str, Any]) -> tuple[Acquisition, Any]:
    """Devices, storage, processors and events for ``settings``; returns the acquisition and its storage."""
    try:
        roles = load_device_set(settings.get("backend", "simulated"), settings.get("mm_config"))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if settings.get("exposure") is not None:
        roles.camera.exposure = float(settings["exposure"])
    kwargs: dict[str, Any] = {"order": settings.get("order", "tpcz"), "camera": roles.camera, "z_device": roles.z,
                              "xy_device": roles.xy}
    if settings.get("time") is not None:
        kwargs["num_time_points"] = int(settings["time"])
        interval = settings.get("interval", 0)
        kwargs["time_interval_s"] = interval if isinstance(interval, list) else float(interval)
    if settings.get("z") is not None:
        z = settings["z"]
        start, stop, step = _z_range(z) if isinstance(z, str) else (z["start"], z["stop"], z["step"])
        kwargs.update(z_start=start, z_end=stop, z_step=step)
    channels = settings.get("channels")
    if channels:
        kwargs["channels"] = channels.split(",") if isinstance(channels, str) else list(channels)
        kwargs["channel_group"], kwargs["channel_property"] = roles.channel, roles.channel_property
        exposures = settings.get("exposures")
        if exposures is not None:
            kwargs["channel_exposures_ms"] = _floats(exposures, "--exposures") if isinstance(exposures, str) \
                else [float(e) for e in exposures]
    positions = settings.get("positions")
    if positions:
        positions = _positions(positions) if isinstance(positions, str) else [list(p) for p in positions]
        kwargs["xyz_positions" if len(positions[0]) == 3 else "xy_positions"] = positions
        labels = settings.get("labels")
        if labels:
            kwargs["position_labels"] = labels.split(",") if isinstance(labels, str) else list(labels)
    if settings.get("sequence"):
        kwargs["sequence"] = settings["sequence"]
    processors = []
    for spec in settings.get("processor") or []:
        identifier, params = _processor_spec(spec) if isinstance(spec, str) else (spec["id"], spec.get("params", {}))
        processors.append(build_processor(identifier, **params))
    try:  # before the dataset folder is made: bad arguments leave nothing behind
        events = multi_d_acquisition_events(**kwargs)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    out = os.path.abspath(settings.get("out") or os.getcwd())
    summary = {"Software": "exengine acquire", "Settings": {k: v for k, v in settings.items()
                                                            if isinstance(v, (str, int, float, list))}}
    if kwargs.get("z_step"):  # Micro-Manager's key: readers (ours too) scale z by it
        summary["z-step_um"] = abs(float(kwargs["z_step"]))
    storage = build_storage(settings.get("storage") or DEFAULT_STORAGE, out, settings.get("name") or "acquisition",
                            summary)
    handler = DataHandler(storage, ProcessorChain(processors) if processors else None)
    for event in events:
        if isinstance(event, DataProducing):
            event.data_handler = handler
    return Acquisition(events, handler), storage


class Progress:
    """A progress bar on a terminal; otherwise one summary line every ``every`` frames."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.tty = stream.isatty()
        self.every = max(self.total // 10, 1)
        self._last_line = -1
        self._started = time.monotonic()

    def update(self, done: int, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = done / elapsed
        left = (self.total - done) / rate if rate > 0 else float("nan")
        text = f"{done}/{self.total} frames, {rate:.1f} frames/s, {_duration(left)} left"
        if self.tty:
            filled = int(30 * done / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text}  ")
            if final:
                self.stream.write("\n")
            self.stream.flush()
        elif final or done // self.every > self._last_line:
            self._last_line = done // self.every
            self.stream.write(text + "\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def run_acquire(args: argparse.Namespace, stream: TextIO) -> int:
    acquisition, storage = build_acquisition(_settings(args))
    interrupts = []

    def on_interrupt(signum: int, frame: Any) -> None:
        interrupts.append(signum)
        if len(interrupts) == 1:
            acquisition.stop()
            stream.write("\nStopping after the frame in hand (Ctrl-C again to abort)...\n")
        else:
            acquisition.abort()
            stream.write("\nAborting...\n")
        stream.flush()

    signal.signal(signal.SIGINT, on_interrupt)  # main() restores the previous handler once all is saved
    progress = Progress(acquisition.total_frames, stream)
    acquisition.start()
    while acquisition.is_running():
        progress.update(acquisition.frames_done)
        time.sleep(0.1)
    try:
        acquisition.await_completion()
    finally:
        progress.update(acquisition.frames_done, final=True)
    where = getattr(storage, "path", "memory")
    if interrupts:
        stream.write(f"Interrupted: {acquisition.frames_done} frames stored in {where}\n")
        return 130
    stream.write(f"Done: {acquisition.frames_done} frames stored in {where}\n")
    return 0


def run_info(args: argparse.Namespace, stream: TextIO) -> int:
    from exengine.storage.ndtiff_reader import NDTiffReader

    try:
        reader = NDTiffReader(args.path)
    except ValueError as e:
        raise UsageError(str(e)) from None
    entries = reader.entries
    if not entries:
        stream.write(f"{reader.path}: no frames\n")
        return 0
    first = reader.first_entry()
    size = sum(os.path.getsize(os.path.join(folder, f)) for folder, _, files in os.walk(reader.path) for f in files)
    stream.write(f"Dataset: {reader.path}\n")
    stream.write(f"NDTiff version: {reader.version}{' (multi-resolution)' if reader.multiresolution else ''}\n")
    stream.write(f"Frames: {len(entries)}\n")
    stream.write(f"Frame: {' x '.join(map(str, first.shape))} {first.dtype}{' RGB' if first.rgb else ''}\n")
    pixel, z_step = reader.pixel_size_um(), reader.z_step_um()
    if pixel or z_step:
        stream.write(f"Pixel size: {f'{pixel:g} µm' if pixel else 'not recorded'}; "
                     f"z step: {f'{z_step:g} µm' if z_step else 'not recorded'}\n")
    stream.write("Axes:\n")
    for axis, values in reader.axes.items():
        shown = ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")
        stream.write(f"  {axis}: {len(values)} ({shown})\n")
    stream.write(f"Size on disk: {size / 1024**2:.1f} MB\n")
    coordinates = reader.coordinates()
    stamps = [_timestamp(reader.read_metadata(c)) for c in (coordinates[0], coordinates[-1])]
    if all(s is not None for s in stamps):
        stream.write(f"First/last timestamps: {stamps[0]} / {stamps[1]}\n")
    return 0


def _timestamp(metadata: dict[str, Any]) -> Optional[str]:
    for key in ("ReceivedTime", "TimeReceivedByCore", "Time", "ElapsedTime-ms"):
        if key in metadata:
            value = metadata[key]
            return f"{value} ms" if key == "ElapsedTime-ms" else str(value)
    return None


def run_list(args: argparse.Namespace, stream: TextIO) -> int:
    for contribution in list_contributions():
        state = "" if contribution.available else f"  [unavailable: {contribution.error}]"
        line = f"{contribution.kind:9} {contribution.id:55} {contribution.title} ({contribution.plugin}){state}"
        stream.write(line + "\n")
    return 0


def parser() -> argparse.ArgumentParser:
    """The ``exengine`` argument parser."""
    from exengine import __version__

    main = argparse.ArgumentParser(prog="exengine", description="Headless acquisition with ExEngine.")
    main.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = main.add_subparsers(dest="command", required=True)
    acquire = commands.add_parser(
        "acquire", help="run a multi-dimensional acquisition and save it",
        description="Run a time/position/channel/z acquisition (simulated devices by default) and save every "
                    "frame. Ctrl-C stops cleanly (frames so far are stored); a second Ctrl-C aborts.")
    acquire.add_argument("--time", type=int, help="number of time points")
    acquire.add_argument("--interval", type=float, help="seconds between time points (default 0)")
    acquire.add_argument("--z", help="z range START:STOP:STEP in µm, STOP included (e.g. 0:10:2)")
    acquire.add_argument("--channels", help="comma-separated channel names (e.g. DAPI,FITC)")
    acquire.add_argument("--exposures", help="comma-separated exposure per channel in ms")
    acquire.add_argument("--exposure", type=float, help="camera exposure in ms")
    acquire.add_argument("--positions", help="xy(z) positions 'X,Y;X,Y' or 'X,Y,Z;X,Y,Z' in µm")
    acquire.add_argument("--labels", help="comma-separated position labels")
    acquire.add_argument("--order", help="axis order, outermost first (default tpcz)")
    acquire.add_argument("--sequence", help="inner axes to run as hardware sequences (e.g. z)")
    acquire.add_argument("--file", help="YAML/JSON file with these settings, or a useq-schema MDASequence file")
    acquire.add_argument("--backend", choices=BACKENDS,
                         help="device backend (default simulated): micromanager (pymmcore-plus; its demo devices "
                              "unless --mm-config) or microscope (python-microscope simulators)")
    acquire.add_argument("--mm-config", dest="mm_config",
                         help="Micro-Manager configuration file (with --backend micromanager and a Micro-Manager "
                              "installation pymmcore-plus can find)")
    acquire.add_argument("--storage", help=f"storage backend id (default {DEFAULT_STORAGE}; see 'exengine list')")
    acquire.add_argument("--processor", action="append",
                         help="processor id with optional settings ID:key=value,... (repeatable; see 'exengine list')")
    acquire.add_argument("--out", help="output directory (default: current directory)")
    acquire.add_argument("--name", help="dataset name (default 'acquisition'; a number is appended)")
    info = commands.add_parser("info", help="summarise an NDTiff dataset")
    info.add_argument("path", help="dataset folder or its NDTiff.index")
    commands.add_parser("list", help="list the processor and storage contributions of installed plugins")
    return main


def main(argv: Optional[list[str]] = None, stream: TextIO = sys.stdout, restore_signals: bool = True) -> int:
    """Run the ``exengine`` command with ``argv``; returns the exit status.

    ``restore_signals=False`` keeps the Ctrl-C handler of ``acquire`` installed after it returns (the
    console script exits right after, so a late Ctrl-C cannot interrupt the clean exit).
    """
    args = parser().parse_args(argv)
    handlers = {"acquire": run_acquire, "info": run_info, "list": run_list}
    previous_sigint = signal.getsignal(signal.SIGINT)
    try:
        return handlers[args.command](args, stream)
    except (UsageError, ContributionError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        sys.stderr.write(f"exengine: error: {message}\n")
        return 2
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # everything is saved: a late Ctrl-C must not abort the exit
    sys.exit(status)
