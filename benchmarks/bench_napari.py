"""Acquisition with napari showing it, against the same acquisition with no viewer, and against the
peer.

Three parts, each interleaving its configurations run by run (medians), 512x512 uint16 frames stored
as NDTiff in RAM (``/dev/shm``):

1. **Full speed, against napari-micromanager.** 1,000 frames (time 50 x channel 2 x z 10), then
   5,000 (time 250), at zero exposure from our simulated camera, with our layer sink on a visible
   viewer vs no viewer; and, in the same run, napari-micromanager's MDA (pymmcore-plus's runner on
   ``UniMMCore`` with a pure-Python 512x512 zero-exposure camera:
   ``exengine.backends.micromanager_demo``) shown live in napari through its main window vs the same
   MDA on a core with no viewer (``core.run_mda``). Each side's ratio is frames/s shown / frames/s
   headless; the ratio of ratios is ours / the peer's (target >= 4). Shown runs are timed from Run
   (before any layer is made; ours makes them as its panel does: first for plans this short, while
   the acquisition runs for long ones) until every frame is stored (ours) or written into the
   layer's array (the peer's), and again from the acquisition's start (ours) and from when its layer
   exists (the peer's); headless runs from the start to the last frame. Ours is also run with
   channels as an axis (one layer, as the peer shows), and with its layers made and shown but never
   updated: the bound of any display made this way. Our 1,000 frames take a quarter of a second
   headless, so making the layers (about 0.14 s of napari's) weighs on that ratio; the peer's costs
   are per frame, so its ratio hardly changes with the length. Headless runs, ours and the peer's,
   keep the objects that exist before them out of the garbage collector's full collections
   (``gc.freeze``, as our sink does while it follows an acquisition): in a process holding a napari
   viewer such a collection takes 70-110 ms, which a script without napari does not pay and which
   made the reference erratic.
2. **Camera-paced.** The camera delivers 500 frames/s (one hardware-timed sequence of 3,000 frames);
   with the viewer showing it: the achieved / requested rate (target >= 0.98), frames lost (must be
   0), the delay from stored to shown (median, p95, max; target <= 100 ms), and how far storage fell
   behind the camera's clock; the same headless for reference.
3. **Long run.** 10,000 frames (time 500 x channel 2 x z 10) at full speed from the lazy
   ``multi_d_acquisition_plan``, the layer sink given no plan (sliders grow as frames arrive):
   frames/s vs headless, RSS at start, peak and end, every frame stored.

Run: ``xvfb-run -a python bench_napari.py`` (``--runs N`` for part 1's run counts, ``--skip-peer``).

The peer runs in its own process, so that it gets the zarr it declares: napari-micromanager 0.3.1
requires ``zarr<3`` and this project ``zarr>=3`` (installing it here would downgrade zarr and break
our OME-Zarr storage; its layer writes under zarr 3 take ~5.4 ms a frame instead of ~0.7 ms).
Install
it in a virtual environment that sees this one's packages, and point the script at that Python::

    python -m venv --system-site-packages /opt/nmm-env
    /opt/nmm-env/bin/pip install napari-micromanager==0.3.1
    NMM_PYTHON=/opt/nmm-env/bin/python xvfb-run -a python bench_napari.py   # or --peer-python PATH

Without it (``NMM_PYTHON`` unset: this Python is tried) the peer is skipped with the reason printed.
napari-micromanager keeps its display data in zarr arrays in a temporary folder; the script puts
that folder in RAM too. Its MDA pauses until its layers exist, so its time includes making them, as
ours does.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from _common import scratch_dir

if TYPE_CHECKING:
    from exengine.data import PlannedData

CHANNELS, Z = ("DAPI", "FITC"), 10
#: Part 1's lengths (time points) and runs of each: 1,000 frames, and 5,000 (a second of our
#: acquisition)
FULL_LENGTHS = {50: 5, 250: 3}
PACED_RATE = 500.0
PACED_FRAMES = 3000
PACED_RUNS = 3
LONG_T = 500
LONG_FRAMES = LONG_T * len(CHANNELS) * Z
LONG_RUNS = 3
SHAPE = (512, 512)


def _frames(time_points: int) -> int:
    return time_points * len(CHANNELS) * Z


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ------------------------------------------------------------------------------------------- ours
def _delete_later_now(app: Any) -> None:
    """Delete the widgets of removed layers (napari's ``deleteLater``), as an event loop's next turn
    would: ``processEvents`` leaves them be, and each acquisition's layer controls would make the
    next layers slower to create (4-5 ms more per acquisition of 2 layers)."""
    from qtpy.QtCore import QEvent

    app.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def _planned_data(events: list[Any], pixel_size: float) -> PlannedData:
    """What a list of events will store, as the acquisition panel tells its sink."""
    from exengine.data import PlannedData
    from exengine.events.detector_events import ReadoutData

    values: dict[str, dict[Any, None]] = {}
    for event in events:
        if isinstance(event, ReadoutData):
            for coords in event.data_coordinate_iterator:
                for axis, value in coords.items():
                    values.setdefault(axis, {})[value] = None
    return PlannedData(
        axis_sizes={axis: len(found) for axis, found in values.items()},
        axis_values={a: tuple(v) for a, v in values.items() if any(isinstance(x, str) for x in v)},
        frame_shape=SHAPE,
        pixel_size_um=pixel_size,
    )


def _timed_sink_class(redraw: bool = True) -> type:
    """``redraw=False``: the layers are made and shown, but never updated (what any display costs at
    least)."""
    from napari_exengine.layer_sink import LayerSink

    class TimedSink(LayerSink):
        """A LayerSink that records when each frame was stored and when a refresh showed it."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.stored_at: dict = {}
            self.shown_at: dict = {}
            self.refresh_times: list[float] = []
            self.refresh_cpu: list[float] = []
            self.layers_s = 0.0
            super().__init__(*args, **kwargs)
            self.handler.add_listener(self._stamp)

        def _stamp(self, stage: str, coords: Any) -> None:
            if stage == "stored":
                self.stored_at[frozenset(coords.items())] = time.monotonic()

        def _prepare_layers(self) -> None:
            start, making = time.monotonic(), self._unprepared is not None
            super()._prepare_layers()
            if making:
                self.layers_s = time.monotonic() - start

        def refresh(self) -> None:
            if not redraw:
                self._prepare_layers()
                return
            with self._pending_lock:
                pending = list(self._pending)
            cpu = time.thread_time()
            super().refresh()
            if pending:
                self.refresh_cpu.append(time.thread_time() - cpu)
                now = time.monotonic()
                self.refresh_times.append(now)
                for coords in pending:
                    self.shown_at[frozenset(coords.items())] = now

    return TimedSink


def run_ours(
    root: str,
    make_events: Callable[[Any], Any],
    frames: int,
    viewer: Any = None,
    planned: bool = True,
    pixel_size: float = 1.0,
    rate: float | None = None,
    split_channels: bool = True,
    redraw: bool = True,
) -> dict[str, Any]:
    """One acquisition of ``make_events(handler)``; with ``viewer``, shown there by a (timed) layer
    sink, given the planned coordinates and frame shape as the acquisition panel does when
    ``planned``."""
    from qtpy.QtWidgets import QApplication

    from exengine.acquisition import Acquisition
    from exengine.data import DataHandler
    from exengine.storage import NDTiffStorage
    from napari_exengine.layer_sink import defer_layers_for

    storage = NDTiffStorage(root, "napari")
    handler = DataHandler(storage)
    events = make_events(handler)
    stored: list[float] = []
    finished: list[float] = []

    def listen(stage: str, _coords: Any) -> None:
        if stage == "stored":
            stored.append(time.monotonic())
        elif stage == "finished":
            finished.append(time.monotonic())

    handler.add_listener(listen)
    app = QApplication.instance()
    # as a script with no napari would: no full collections of napari's objects (module doc)
    if viewer is None:
        gc.freeze()
    rss_start = peak = _rss_mb()
    run_at = time.monotonic()  # "Run": the sink and its layers are made within the measured time
    sink = None
    if viewer is not None:
        kwargs: dict[str, Any] = {}
        # as the acquisition panel's Run (short plans: the layers first, then the acquisition)
        if planned:
            kwargs = {
                "planned": _planned_data(events, pixel_size),
                "defer_layers": defer_layers_for(frames),
            }
        sink = _timed_sink_class(redraw)(
            viewer, handler, name="bench", scale={}, split_channels=split_channels, **kwargs
        )
    acquisition = Acquisition(events, handler)
    gui_cpu = time.thread_time()
    start = time.monotonic()
    acquisition.start()
    # The acquisition ends by itself (as the panel's does); the GUI thread only processes its
    # events.
    finisher = threading.Thread(target=acquisition.await_completion, args=(600,))
    finisher.start()
    next_sample = 0.0
    while not handler.is_finished():
        if sink is not None:
            app.processEvents()
            time.sleep(0.002)
        else:
            time.sleep(0.005)
        now = time.monotonic()
        if now >= next_sample:
            peak, next_sample = max(peak, _rss_mb()), now + 0.05
    finisher.join()
    if viewer is None:
        gc.unfreeze()
    gui_cpu = time.thread_time() - gui_cpu
    end = finished[0]
    result: dict[str, Any] = {
        "fps_run": frames / (end - run_at),
        "fps_start": frames / (end - start),
        "sink_ms": (start - run_at) * 1000,
        "stored": len(storage.get_coordinates_list()),
        "rss_start": rss_start,
        "rss_end": _rss_mb(),
        "in_flight_peak": handler.peak_bytes_in_flight / 1e6,
    }
    result["rss_peak"] = max(peak, result["rss_end"])
    # how far storage fell behind the camera's clock (taken from the earliest-stored frame)
    if rate:
        lags = [t - i / rate for i, t in enumerate(stored)]
        result["lag_max_ms"] = (max(lags) - min(lags)) * 1000
    if sink is not None:
        sink.close()
        app.processEvents()
        delays = [
            sink.shown_at[k] - sink.stored_at[k] for k in sink.shown_at if k in sink.stored_at
        ]
        result.update(
            refresh_rate=len(sink.refresh_times) / (end - start),
            shown=len(sink.shown_at),
            layers_ms=sink.layers_s * 1000,
            gui_cpu_ms_per_refresh=gui_cpu * 1000 / max(len(sink.refresh_times), 1),
            gui_cpu_share=gui_cpu / (end - start),
        )
        if delays:  # frames were shown (not with redraw=False)
            result.update(
                delay_med=statistics.median(delays) * 1000,
                delay_p95=_percentile(delays, 0.95) * 1000,
                delay_max=max(delays) * 1000,
                refresh_cpu_ms=statistics.median(sink.refresh_cpu) * 1000,
                refresh_cpu_max_ms=max(sink.refresh_cpu) * 1000,
            )
        viewer.layers.clear()
        _delete_later_now(app)
    storage.close()
    shutil.rmtree(storage.path, ignore_errors=True)
    return result


# ------------------------------------------------------------------------------------------- peer
PEER_HELP = (
    "python -m venv --system-site-packages /opt/nmm-env && "
    "/opt/nmm-env/bin/pip install napari-micromanager==0.3.1, then run with "
    "NMM_PYTHON=/opt/nmm-env/bin/python (or --peer-python)"
)


def _say(**message: Any) -> None:
    print("PEER " + json.dumps(message), flush=True)


def peer_child() -> None:
    """The peer's side, in its own process: answers 'headless', 'viewer' and 'quit' on stdin."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    try:
        import napari
        import napari_micromanager
        import pymmcore_plus
        import useq
        import zarr
        from napari_micromanager import MainWindow

        from exengine.backends.micromanager_demo import DemoCamera, create_demo_core
    except ImportError as e:
        _say(
            error=f"napari-micromanager cannot be imported by {sys.executable}: {e!r}. To install "
            f"it: {PEER_HELP}"
        )
        return
    if int(zarr.__version__.split(".")[0]) >= 3:
        _say(
            error=f"napari-micromanager {napari_micromanager.__version__} requires zarr<3 but "
            f"{sys.executable} has zarr {zarr.__version__} (its layer writes would be ~7x slower "
            f"than it is built for). Install it in its own environment: {PEER_HELP}"
        )
        return
    from qtpy.QtWidgets import QApplication

    logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)
    tmp_root = scratch_dir()
    tempfile.tempdir = tmp_root  # its layers' zarr arrays go to RAM, as our NDTiff storage does
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    # Cores made with the Qt application running use Qt signals, as in napari.
    shown_core, headless_core = create_demo_core(), create_demo_core()
    for core in (shown_core, headless_core):
        core.setExposure(0)
    window = MainWindow(viewer, mmcore=shown_core)
    viewer.window.add_dock_widget(window, name="Micro-Manager", area="top")
    for _ in range(50):
        app.processEvents()
        time.sleep(0.01)

    def sequence(time_points: int) -> useq.MDASequence:
        return useq.MDASequence(
            time_plan={"interval": 0, "loops": time_points},
            channels=[{"config": c, "group": "Channel"} for c in CHANNELS],
            z_plan={"range": Z - 1, "step": 1},
            axis_order="tcz",
        )

    handler = window._core_link._mda_handler
    layers_made: list[float] = []
    viewer.layers.events.inserted.connect(lambda _event: layers_made.append(time.monotonic()))
    _say(
        ready=True,
        versions={
            "napari-micromanager": napari_micromanager.__version__,
            "pymmcore-plus": pymmcore_plus.__version__,
            "zarr": zarr.__version__,
            "napari": napari.__version__,
            "core": type(shown_core).__name__,
        },
    )
    try:
        # "<headless|viewer> <time points>", or "<headless|viewer> <frames> <side> <exposure ms>":
        # a time-lapse of side x side frames from a camera of that size (bench_scmos.py)
        for line in sys.stdin:
            command, *arguments = line.split()
            if command == "quit":
                break
            if len(arguments) == 1:
                time_points, frames = int(arguments[0]), _frames(int(arguments[0]))
                plan, camera, exposure = sequence(time_points), "Camera", 0.0
            else:
                frames, side, exposure = int(arguments[0]), int(arguments[1]), float(arguments[2])
                plan = useq.MDASequence(time_plan={"interval": 0, "loops": frames})
                camera = f"Camera{side}"
                for core in (shown_core, headless_core):
                    if camera not in core.getLoadedDevices():
                        core.loadPyDevice(camera, DemoCamera(shape=(side, side)))
                        core.initializeDevice(camera)
            for core in (shown_core, headless_core):
                core.setCameraDevice(camera)
                core.setExposure(exposure)
            if command == "headless":
                gc.freeze()  # as ours: no full collections of napari's objects in the reference
                start = time.monotonic()
                headless_core.run_mda(plan).join()
                gc.unfreeze()
                _say(fps=frames / (time.monotonic() - start))
            elif command == "viewer":
                layers_made.clear()
                start = time.monotonic()
                thread = shown_core.run_mda(plan)
                runner_end = None
                while thread.is_alive() or handler._mda_running or handler._deck:
                    app.processEvents()
                    time.sleep(0.002)
                    if runner_end is None and not thread.is_alive():
                        runner_end = time.monotonic()
                end = time.monotonic()
                written = sum(z.nchunks_initialized for z, _ in handler._tmp_arrays.values())
                viewer.layers.clear()
                _delete_later_now(app)
                for z, tmp in handler._tmp_arrays.values():
                    z.store.close()
                    tmp.cleanup()
                handler._tmp_arrays.clear()
                _say(
                    fps=frames / (end - start),
                    fps_runner=frames / ((runner_end or end) - start),
                    fps_after_layers=frames / (end - max(layers_made, default=start)),
                    written=written,
                    layers_ms=(max(layers_made, default=start) - start) * 1000,
                )
    finally:
        viewer.close()
        shutil.rmtree(tmp_root, ignore_errors=True)


class Peer:
    """The parent's handle on the peer process."""

    def __init__(self, python: str) -> None:
        self.error: str | None = None
        self.versions: dict[str, str] = {}
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - the peer's stderr, read if it fails
        try:
            self.proc: subprocess.Popen | None = subprocess.Popen(
                [python, os.path.abspath(__file__), "--peer-child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                text=True,
                cwd=os.path.dirname(os.path.abspath(__file__)),
            )
        except OSError as e:
            self.proc, self.error = (
                None,
                f"cannot start {python}: {e}. To install the peer: {PEER_HELP}",
            )
            return
        message = self._read()
        if "error" in message:
            self.error = message["error"]
            self.close()
        else:
            self.versions = message["versions"]

    def _read(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("PEER "):
                return json.loads(line[5:])
        code = self.proc.wait()
        self._log.seek(0)
        tail = " | ".join(self._log.read().strip().splitlines()[-5:])
        return {"error": f"the peer process ended (exit code {code}): {tail}"}

    def run(self, command: str) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        message = self._read()
        if "error" in message:
            raise RuntimeError(message["error"])
        return message

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs",
        type=int,
        help="interleaved runs of each length of the full-speed part "
        f"(default: {', '.join(f'{n} of {_frames(t):,} frames' for t, n in FULL_LENGTHS.items())})",
    )
    parser.add_argument(
        "--peer-python",
        default=os.environ.get("NMM_PYTHON", sys.executable),
        help="Python with napari-micromanager installed (default: $NMM_PYTHON, else this one)",
    )
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()
    if args.runs is not None and args.runs < 1:
        parser.error(f"--runs must be 1 or more, not {args.runs}")

    import napari

    from exengine import ExecutionEngine
    from exengine.devices.simulated import create_simulated_devices
    from exengine.events import multi_d_acquisition_events
    from exengine.events.multi_d_events import multi_d_acquisition_plan

    devices = create_simulated_devices()
    camera = devices["Camera"]
    camera.exposure = 0.0
    pixel = camera.pixel_size_um
    viewer = napari.Viewer(show=True)
    peer = None if args.skip_peer else Peer(args.peer_python)
    root = scratch_dir()

    def full(time_points: int) -> Callable[[Any], Any]:
        def events(handler: Any) -> Any:
            return multi_d_acquisition_events(
                num_time_points=time_points,
                z_start=0,
                z_end=Z - 1,
                z_step=1,
                channel_group="Channel",
                channels=list(CHANNELS),
                data_handler=handler,
            )

        return events

    def paced(handler: Any) -> Any:
        return multi_d_acquisition_plan(
            num_time_points=PACED_FRAMES, sequence="t", data_handler=handler
        )

    def long(handler: Any) -> Any:
        return multi_d_acquisition_plan(
            num_time_points=LONG_T,
            z_start=0,
            z_end=Z - 1,
            z_step=1,
            channel_group="Channel",
            channels=list(CHANNELS),
            data_handler=handler,
        )

    full_results: dict[int, dict[str, list[dict[str, Any]]]] = {
        t: {
            k: []
            for k in (
                "ours_headless",
                "ours_shown",
                "ours_one_layer",
                "ours_no_redraw",
                "peer_headless",
                "peer_shown",
            )
        }
        for t in FULL_LENGTHS
    }
    results: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("paced_headless", "paced_shown", "long_headless", "long_shown")
    }
    peer_error = None if peer is None else peer.error
    script_start, load_start = time.monotonic(), os.getloadavg()
    try:
        camera.frame_rate_limit = 100000.0
        # One unmeasured run of each (the first layers, shaders and caches are made once
        # per process).
        warm = min(FULL_LENGTHS)
        run_ours(root, full(warm), _frames(warm))
        run_ours(root, full(warm), _frames(warm), viewer, pixel_size=pixel)
        if peer is not None and peer_error is None:
            try:
                peer.run(f"headless {warm}")
                peer.run(f"viewer {warm}")
            except RuntimeError as e:
                peer_error = str(e)
        for time_points, runs in FULL_LENGTHS.items():
            rows, events, frames = (
                full_results[time_points],
                full(time_points),
                _frames(time_points),
            )
            for _ in range(args.runs or runs):
                rows["ours_headless"].append(run_ours(root, events, frames))
                rows["ours_shown"].append(run_ours(root, events, frames, viewer, pixel_size=pixel))
                rows["ours_one_layer"].append(
                    run_ours(root, events, frames, viewer, pixel_size=pixel, split_channels=False)
                )
                rows["ours_no_redraw"].append(
                    run_ours(root, events, frames, viewer, pixel_size=pixel, redraw=False)
                )
                if peer is not None and peer_error is None:
                    try:
                        rows["peer_headless"].append(peer.run(f"headless {time_points}"))
                        rows["peer_shown"].append(peer.run(f"viewer {time_points}"))
                    except RuntimeError as e:
                        peer_error = str(e)
        if peer is not None:
            peer.close()
        camera.frame_rate_limit = PACED_RATE
        for _ in range(PACED_RUNS):
            results["paced_headless"].append(run_ours(root, paced, PACED_FRAMES, rate=PACED_RATE))
            results["paced_shown"].append(
                run_ours(root, paced, PACED_FRAMES, viewer, pixel_size=pixel, rate=PACED_RATE)
            )
        camera.frame_rate_limit = 100000.0
        for _ in range(LONG_RUNS):
            results["long_headless"].append(run_ours(root, long, LONG_FRAMES))
            results["long_shown"].append(run_ours(root, long, LONG_FRAMES, viewer, planned=False))
    finally:
        if peer is not None:
            peer.close()
        shutil.rmtree(root, ignore_errors=True)
        viewer.close()
        ExecutionEngine.get_instance().shutdown()
    for time_points, rows in full_results.items():
        report_full(time_points, rows, peer, peer_error)
    report(results, time.monotonic() - script_start)
    end = " ".join(f"{load:.2f}" for load in os.getloadavg())
    print(
        f"Load average (1, 5, 15 min) at the start {load_start[0]:.2f} {load_start[1]:.2f} "
        f"{load_start[2]:.2f}, at the end {end} (2 cores; other work on the machine lowers every "
        "figure)."
    )


def _med(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _span(runs: list[dict[str, Any]], key: str, fmt: str = "{:.0f}") -> str:
    values = [r[key] for r in runs]
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def _display(rows: list[dict[str, Any]]) -> str:
    return (
        f"display refreshes/s {_med(rows, 'refresh_rate'):.1f}; GUI thread busy "
        f"{_med(rows, 'gui_cpu_share'):.0%} of the time, "
        f"{_med(rows, 'gui_cpu_ms_per_refresh'):.0f} ms CPU per refresh "
        f"({_med(rows, 'refresh_cpu_ms'):.0f} ms in the sink's refresh, the rest painting and "
        "napari's events)"
    )


def report_full(
    time_points: int,
    results: dict[str, list[dict[str, Any]]],
    peer: Peer | None,
    peer_error: str | None,
) -> None:
    """Part 1 at one length."""
    ours_h, ours_s = results["ours_headless"], results["ours_shown"]
    print(
        f"\n1. Full speed: {_frames(time_points):,} frames (t{time_points} x c{len(CHANNELS)} x "
        f"z{Z}, {SHAPE[0]}x{SHAPE[1]} uint16, zero exposure); median of {len(ours_s)} interleaved "
        "runs"
    )
    print(
        f"{'path':58} {'shown f/s':>10} {'headless f/s':>13} {'ratio':>7} {'ratios over runs':>17}"
    )
    ours_ratio = _med(ours_s, "fps_run") / _med(ours_h, "fps_run")
    ours_ratios = sorted(s["fps_run"] / h["fps_run"] for s, h in zip(ours_s, ours_h, strict=True))
    print(
        f"{'ExEngine + layer sink, NDTiff in RAM (timed from Run)':58} "
        f"{_med(ours_s, 'fps_run'):10.0f} "
        f"{_med(ours_h, 'fps_run'):13.0f} {ours_ratio:7.2f} "
        f"{ours_ratios[0]:8.2f}-{ours_ratios[-1]:.2f}"
    )
    start_ratio = _med(ours_s, "fps_start") / _med(ours_h, "fps_start")
    print(
        f"{'  the same, timed from the acquisition start':58} {_med(ours_s, 'fps_start'):10.0f} "
        f"{_med(ours_h, 'fps_start'):13.0f} {start_ratio:7.2f}"
    )
    one = results["ours_one_layer"]
    one_ratio = _med(one, "fps_run") / _med(ours_h, "fps_run")
    one_ratios = sorted(s["fps_run"] / h["fps_run"] for s, h in zip(one, ours_h, strict=True))
    print(
        f"{'  channels as an axis: one layer, as the peer shows them':58} "
        f"{_med(one, 'fps_run'):10.0f} "
        f"{_med(ours_h, 'fps_run'):13.0f} {one_ratio:7.2f} "
        f"{one_ratios[0]:8.2f}-{one_ratios[-1]:.2f}"
    )
    bound = results["ours_no_redraw"]
    bound_ratio = _med(bound, "fps_run") / _med(ours_h, "fps_run")
    print(
        f"{'  bound: layers made and shown, never updated':58} {_med(bound, 'fps_run'):10.0f} "
        f"{_med(ours_h, 'fps_run'):13.0f} {bound_ratio:7.2f}"
    )
    if results["peer_shown"]:
        peer_h, peer_s = results["peer_headless"], results["peer_shown"]
        peer_ratio = _med(peer_s, "fps") / _med(peer_h, "fps")
        peer_ratios = sorted(s["fps"] / h["fps"] for s, h in zip(peer_s, peer_h, strict=True))
        label = (
            f"napari-micromanager {peer.versions.get('napari-micromanager')} MDA, UniMMCore"
            if peer
            else "peer"
        )
        print(
            f"{label:58} {_med(peer_s, 'fps'):10.0f} {_med(peer_h, 'fps'):13.0f} {peer_ratio:7.2f} "
            f"{peer_ratios[0]:8.2f}-{peer_ratios[-1]:.2f}"
        )
        print(
            f"{'  its runner alone (before the layer writes end)':58} "
            f"{_med(peer_s, 'fps_runner'):10.0f}"
        )
        after_ratio = _med(peer_s, "fps_after_layers") / _med(peer_h, "fps")
        print(
            f"{'  timed from its layer made (as ours from the start)':58} "
            f"{_med(peer_s, 'fps_after_layers'):10.0f} "
            f"{_med(peer_h, 'fps'):13.0f} {after_ratio:7.2f}"
        )
        print(
            f"{'ratio of ratios, ours / peer (target >= 4)':58} {'':10} {'':13} "
            f"{ours_ratio / peer_ratio:7.2f}"
        )
        print(
            f"{'  with ours showing channels as an axis (one layer)':58} {'':10} {'':13} "
            f"{one_ratio / peer_ratio:7.2f}"
        )
        print(
            f"{'  the bound (no display updates) / peer':58} {'':10} {'':13} "
            f"{bound_ratio / peer_ratio:7.2f}"
        )
        print(
            f"{'  ours from its start, the peer from its layer made':58} {'':10} {'':13} "
            f"{start_ratio / after_ratio:7.2f}"
        )
        print(
            f"   peer: {peer.versions if peer else ''}; frames written into its layers per run: "
            f"{sorted({r['written'] for r in peer_s})}; making its layer "
            f"{_med(peer_s, 'layers_ms'):.0f} ms"
        )
    else:
        print(f"napari-micromanager: skipped — {peer_error or 'not requested (--skip-peer)'}")
    print(
        f"   ours: delay stored -> shown median {_med(ours_s, 'delay_med'):.0f} ms, p95 "
        f"{_med(ours_s, 'delay_p95'):.0f} ms; from Run to the acquisition's start "
        f"{_med(ours_s, 'sink_ms'):.0f} ms, "
        f"making the layers {_med(ours_s, 'layers_ms'):.0f} ms (one layer: "
        f"{_med(one, 'layers_ms'):.0f} ms); "
        f"frames in flight at most {_med(ours_s, 'in_flight_peak'):.0f} MB "
        f"(headless {_med(ours_h, 'in_flight_peak'):.0f} MB); frames stored per run "
        f"{sorted({r['stored'] for r in ours_s + ours_h + one})}"
    )
    print(f"   ours: {_display(ours_s)}")


def report(results: dict[str, list[dict[str, Any]]], seconds: float) -> None:
    """Parts 2 and 3."""
    paced_h, paced_s = results["paced_headless"], results["paced_shown"]
    print(
        f"\n2. Camera-paced: {PACED_FRAMES:,} frames at {PACED_RATE:.0f} frames/s requested (one "
        f"hardware-timed sequence); median of {PACED_RUNS} interleaved runs"
    )
    print(
        f"{'':34} {'achieved/requested':>19} {'lost':>5} {'delay med':>10} {'p95':>6} {'max':>6} "
        f"{'storage lag max':>16}"
    )
    for name, rows in (("shown in napari (target >= 0.98)", paced_s), ("headless", paced_h)):
        achieved = _med(rows, "fps_start") / PACED_RATE
        lost = max(PACED_FRAMES - r["stored"] for r in rows)
        delays = (
            f"{_med(rows, 'delay_med'):7.0f} ms {_med(rows, 'delay_p95'):3.0f} ms "
            f"{_med(rows, 'delay_max'):3.0f} ms"
            if "delay_med" in rows[0]
            else f"{'-':>10} {'-':>6} {'-':>6}"
        )
        print(
            f"{name:34} {achieved:13.3f} ({_span(rows, 'fps_start', '{:.1f}')}) {lost:3d} {delays} "
            f"{_med(rows, 'lag_max_ms'):13.0f} ms"
        )
    print(
        "   shown / headless achieved rate: "
        f"{_med(paced_s, 'fps_start') / _med(paced_h, 'fps_start'):.3f}; "
        "delay target: every frame within 100 ms (worst p95 "
        f"{max(r['delay_p95'] for r in paced_s):.0f} ms, "
        f"worst max {max(r['delay_max'] for r in paced_s):.0f} ms)"
    )
    print(f"   {_display(paced_s)}")

    long_h, long_s = results["long_headless"], results["long_shown"]
    print(
        f"\n3. Long run: {LONG_FRAMES:,} frames (t{LONG_T} x c{len(CHANNELS)} x z{Z}) at full "
        f"speed, lazy plan, sink without a plan; median of {LONG_RUNS} interleaved runs"
    )
    print(
        f"{'':22} {'frames/s':>9} {'ratio':>6} {'stored':>13} {'RSS start':>10} {'peak':>8} "
        f"{'end':>8} {'in flight peak':>15} {'delay med/p95':>14}"
    )
    for name, rows in (("shown in napari", long_s), ("headless", long_h)):
        ratio = _med(rows, "fps_run") / _med(long_h, "fps_run")
        stored = f"{min(r['stored'] for r in rows):,}/{LONG_FRAMES:,}"
        delay = (
            f"{_med(rows, 'delay_med'):6.0f}/{_med(rows, 'delay_p95'):.0f} ms"
            if "delay_med" in rows[0]
            else "-"
        )
        print(
            f"{name:22} {_med(rows, 'fps_run'):9.0f} {ratio:6.2f} {stored:>13} "
            f"{_med(rows, 'rss_start'):7.0f} MB {_med(rows, 'rss_peak'):5.0f} MB "
            f"{_med(rows, 'rss_end'):5.0f} MB "
            f"{_med(rows, 'in_flight_peak'):12.0f} MB {delay:>14}"
        )
    print(f"   {_display(long_s)}; the slowest refresh {_med(long_s, 'refresh_cpu_max_ms'):.0f} ms")
    print(
        "   RSS (start/peak/end) and frames in flight in the DataHandler at most, MB, of each "
        "shown run: "
        + "; ".join(
            f"{r['rss_start']:.0f}/{r['rss_peak']:.0f}/{r['rss_end']:.0f} "
            f"({r['in_flight_peak']:.0f})"
            for r in long_s
        )
    )
    print(f"\nTotal {seconds:.0f} s.")


if __name__ == "__main__":
    if "--peer-child" in sys.argv:
        peer_child()
    else:
        main()
