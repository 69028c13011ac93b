"""The ``exengine`` command: headless acquisition, dataset summaries, and contribution listing.

It lives in the plugin package because ``--storage`` and ``--processor`` use the npe2 contributions
of installed plugins; it never imports napari or Qt. ``acquire`` reads its settings through
:mod:`napari_exengine.cli_settings` and runs them through the same acquisition setup as the panel
(:mod:`napari_exengine.acquisition_setup`), rendering ``Acquisition.status()``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Any, TextIO

from exengine import ExecutionEngine
from exengine.acquisition import Acquisition, PlanError
from exengine.acquisition_status import AcquisitionStatus, FinishReason, RunState

from .acquisition_setup import SetupError, check_acquisition
from .cli_settings import UsageError, request_from
from .contributions import DEFAULT_PLAN, DEFAULT_STORAGE, ContributionError, list_contributions
from .device_sets import BACKENDS
from .exengine_script import INTERRUPTED

#: Exit status after SIGTERM (128 + 15): stopped as by Ctrl-C, everything acquired stored.
TERMINATED = 143
#: Exit status of an acquisition that ran to its end but whose cameras dropped frames (their
#: buffers were full): every frame kept is stored, and the summary says which are missing.
DROPPED = 3


class AcquisitionFailed(RuntimeError):
    """The acquisition failed while running: reported in one line with exit status 1."""


class Progress:
    """A progress bar on a terminal; otherwise one line every tenth of the plan (every 10 s when it
    is open-ended). Each renders the acquisition's status."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last_step = -1

    def update(self, status: AcquisitionStatus) -> None:
        planned = status.frames_planned
        text = status.summary()
        if self.tty:
            bar = ""
            if planned:
                filled = min(int(30 * status.frames_acquired / planned), 30)
                bar = f"[{'#' * filled}{'.' * (30 - filled)}] "
            self.stream.write(f"\r{bar}{text}  ")
            self.stream.flush()
            return
        if not status.frames_acquired:
            return
        step = (
            int(status.elapsed_s // 10) if not planned else status.frames_acquired * 10 // planned
        )
        if step > self._last_step:
            self._last_step = step
            self.stream.write(text + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run_acquire(args: argparse.Namespace, stream: TextIO) -> int:
    checked = check_acquisition(request_from(args))
    if checked.space_warning:
        raise UsageError(checked.space_warning)
    for note in checked.notes:
        stream.write(f"note: {note}\n")
    if checked.request.resume is not None:
        from .resume_setup import resuming

        stream.write(resuming(checked) + "\n")
    acquisition = checked.create()
    where = getattr(acquisition.data_handler.storage, "path", "memory")
    interrupts: list[int] = []
    on_interrupt = _on_interrupt(acquisition, interrupts, stream, where)
    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_interrupt)  # as Ctrl-C: stop, store everything, finish
    progress = Progress(stream)
    acquisition.start()
    _follow(acquisition, progress, interrupts, stream)
    try:
        acquisition.await_completion()
    except Exception as e:  # failed while running (a device, the plan, the storage)
        what = str(e) if isinstance(e, PlanError) else f"{type(e).__name__}: {e}"
        raise AcquisitionFailed(
            f"{what} ({acquisition.frames_stored} frames stored in {where})"
        ) from e
    finally:
        progress.finish()
    status = acquisition.status()
    summary = status.summary()
    stream.write(f"{summary[:1].upper()}{summary[1:]} in {where}\n")
    if signal.SIGTERM in interrupts:
        return TERMINATED
    if status.finish_reason is not FinishReason.DONE:
        return INTERRUPTED
    return DROPPED if status.frames_dropped else 0


class _OncePerKind(logging.Handler):
    """The engine's log records on stderr, each kind once, in one line: a lost store or cluster
    fails every frame in flight the same way, and the last line (``exengine: ...``) says what
    came of it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._seen: set[Any] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg in self._seen:
            return
        self._seen.add(record.msg)
        sys.stderr.write(f"{_one_line(record.getMessage())}\n")


def _follow(
    acquisition: Acquisition, progress: Progress, interrupts: list[int], stream: TextIO
) -> None:
    """Render the status until the storage holds everything (or failed); while only storing
    lags, say how much is left and how to give up on it."""
    storing_since = None
    said = 0.0
    while True:
        status = acquisition.status()
        if status.is_finished or status.error is not None:
            return
        if status.state is not RunState.STORING:
            progress.update(status)
            time.sleep(0.1)
            continue
        now = time.monotonic()
        storing_since = storing_since or now
        handler = acquisition.data_handler
        in_flight = handler.bytes_in_flight / 1e6 if handler is not None else 0.0
        if now - storing_since > 0.5 and not said:
            again = "again " if interrupts else ""
            stream.write(
                f"Storing the {in_flight:.0f} MB of frames still in memory (Ctrl-C {again}to "
                "give up on them)...\n"
            )
            said = now
        elif said and now - said >= 1.0:
            stream.write(f"  {status.frames_stored} frames stored, {in_flight:.0f} MB to go\n")
            said = now
        stream.flush()
        time.sleep(0.02)


def _on_interrupt(
    acquisition: Acquisition, interrupts: list[int], stream: TextIO, where: str
) -> Any:
    """Ctrl-C (or SIGTERM) stops after the frame in hand, a second aborts, a third gives up on
    frames not yet stored."""

    def on_interrupt(signum: int, frame: Any) -> None:
        interrupts.append(signum)
        if len(interrupts) == 1:
            acquisition.stop()
            why = "Terminated: s" if signum == signal.SIGTERM else "S"
            stream.write(f"\n{why}topping after the frame in hand (Ctrl-C again to abort)...\n")
        elif len(interrupts) == 2:
            acquisition.abort()
            stream.write(
                "\nAborting: storing the frames already acquired (Ctrl-C again to give up on "
                "them)...\n"
            )
        else:
            status = acquisition.status()
            lost = status.frames_acquired - status.frames_stored
            stream.write(
                f"\nGave up: {lost} acquired frames were not stored; {status.frames_stored} are "
                f"in {where}\n"
            )
            stream.flush()
            os._exit(INTERRUPTED)
        stream.flush()

    return on_interrupt


def run_info(args: argparse.Namespace, stream: TextIO) -> int:
    from exengine.storage.dataset_info import summarise_dataset
    from exengine.storage.store_url import refuse_credentials

    try:
        refuse_credentials(args.path)
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
    _acquire_options(acquire)
    info = commands.add_parser(
        "info", help="summarise an NDTiff, OME-Zarr or OME-TIFF dataset (a folder, URL or file)"
    )
    info.add_argument(
        "path",
        help="dataset folder, its NDTiff.index, an OME-Zarr store URL (s3://...) or a .ome.tif",
    )
    commands.add_parser(
        "list", help="list the plans, processors and storage backends of installed plugins"
    )
    return main


def _acquire_options(acquire: argparse.ArgumentParser) -> None:
    """The options of ``exengine acquire``."""
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
    acquire.add_argument(
        "--camera",
        help="the camera, or comma-separated cameras that capture together (e.g. Camera,Camera2: "
        "the simulated microscope offers a second camera; each frame gets a camera coordinate)",
    )
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
    acquire.add_argument(
        "--resume",
        metavar="DATASET",
        help="continue an interrupted acquisition (a stop, a crash, a power cut) in its NDTiff "
        "or OME-Zarr dataset: its own plan and devices, from the first frame not stored, "
        "appending to it (see docs/resume.rst)",
    )
    acquire.add_argument("plan_settings", nargs="*", metavar="KEY=VALUE", help="settings of --plan")


def main(
    argv: list[str] | None = None, stream: TextIO = sys.stdout, restore_signals: bool = True
) -> int:
    """Run the ``exengine`` command with ``argv``; returns the exit status.

    ``restore_signals=False`` keeps the Ctrl-C handler of ``acquire`` installed after it returns
    (the console script exits right after, so a late Ctrl-C cannot interrupt the clean exit).
    """
    args = parser().parse_args(argv)
    handlers = {"acquire": run_acquire, "info": run_info, "list": run_list}
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    log = _OncePerKind()
    logging.getLogger("exengine").addHandler(log)
    try:
        return handlers[args.command](args, stream)
    except (UsageError, SetupError, ContributionError, PlanError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        sys.stderr.write(f"exengine: error: {_one_line(message)}\n")
        return 2
    except AcquisitionFailed as e:
        sys.stderr.write(f"exengine: failed: {_one_line(e)}\n")
        return 1
    except Exception as e:
        sys.stderr.write(f"exengine: failed: {_one_line(f'{type(e).__name__}: {e}')}\n")
        return 1
    finally:
        logging.getLogger("exengine").removeHandler(log)
        engine = ExecutionEngine._instance
        if engine is not None and args.command == "acquire":
            engine.shutdown()
        if restore_signals:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


#: The longest reason printed: a reason names the bad value, never echoes a whole file.
MAX_REASON = 500


def _one_line(reason: object) -> str:
    """``reason`` on one line, at most ``MAX_REASON`` characters."""
    text = " ".join(str(reason).split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
