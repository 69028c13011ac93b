"""sCMOS frames at a camera's pace: the camera's rate kept, frames lost, the newest frame's delay
on screen, memory, and the storage path against a raw sequential write.

Three parts, each interleaving its configurations run by run (medians):

1. **Camera-paced.** Our simulated camera (which drops frames, and counts them, when its 1 GB
   sequence buffer is full) runs one hardware-timed time-lapse on its own clock; frames go through
   a ``DataHandler`` into NDTiff in RAM (``/dev/shm``), and once into OME-Zarr. Headless, and shown
   in a napari viewer on a 1280x720 screen by the layer sink, made as the acquisition panel makes
   it. Per configuration: the achieved / requested rate (the camera's N frames' time over the time
   from the camera's start until every frame is stored; targets below; the setup before the camera
   starts, the plan's first events and arming, is shown on its own), frames dropped (must be 0), the
   delay from the frame's arrival in the handler to the first repaint of the canvas after the
   refresh that showed it, for the newest frame of each refresh (median, p95 <= 150 ms), the GUI
   thread's CPU share, and the process's memory (RSS at start, peak, end). The runs follow one
   another in this process: run each in a fresh process instead (``--one``, a ``Paced`` as JSON)
   and its start-up leaves the memory the last run freed idle long enough for the machine to hand
   it back to its host (module docstring): warm-up writes then ran at 220-320 MB/s, not 3 GB/s.
2. **Storage path vs a raw sequential write.** 2048x2048 uint16 frames written as fast as they can
   be (at least 9 runs, each path first in turn): ``DataHandler`` into NDTiff, and into OME-Zarr,
   against a loop of ``os.write`` of the same bytes into one file; each ends with ``fsync`` of every
   file written, and is timed to then. In RAM (tmpfs) and on the disk (where the page cache and the
   device decide). Target >= 0.9x.
3. **The peer.** napari-micromanager's MDA (pymmcore-plus's runner, ``UniMMCore`` with a pure-Python
   2048x2048 camera whose snap sleeps the exposure) shown live in napari through its main window vs
   the same MDA with no viewer, at the same sizes and exposures as part 1; each side's
   shown / headless frames/s. Needs napari-micromanager in its own environment (see
   ``bench_napari.py``; ``NMM_PYTHON``), else skipped with the reason printed.

Memory on this machine: the virtual machine's kernel reports the pages it frees to its host (free
page reporting), by default at once (``min_free_ms`` 0 in ``/sys/module/page_reporting``), and the
host hands memory back slowly: writing 16 GB into tmpfs just after the page cache was dropped ran
at 3 GB/s for the first 4 GB and at 115-140 MB/s after (2026-12-05), while a write into memory the
machine holds runs at 2.8-3.2 GB/s. Any long run at sCMOS rates needs that much memory (tmpfs, or
the page cache in front of a disk), so at 100 frames/s of 2048x2048 (840 MB/s) the machine, not the
software, would set the pace. An acquisition PC keeps its RAM. So, where the setting is there and
writable (as root), the script keeps freed pages for five minutes before they are reported
(``min_free_ms`` 300000) while it runs, and puts the setting back at the end (``--machine-as-is``
leaves it); it says which at its start. And before each timed run (ours and each reference) it
writes and deletes a quarter more bytes than the run will store, plus 2 GB, in ``/dev/shm``, so
that the run writes into memory the machine holds; the first of those writes shows the cold figure.

Run: ``xvfb-run -a -s "-screen 0 1280x720x24" python bench_scmos.py`` (``--runs N``, ``--quick``
for fewer frames, ``--skip-peer``, ``--machine-as-is``). Part 1 needs about 9 GB of free RAM in
``/dev/shm``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from _common import scratch_dir
from bench_napari import Peer, _percentile, _rss_mb, _timed_sink_class

MB = 1024**2
_WARMED: list[float] = []  # MB/s of each warm-up write


#: When this virtual machine's kernel reports a freed page to its host (module docstring).
PAGE_REPORTING = "/sys/module/page_reporting/parameters/min_free_ms"
KEEP_FREED_MS = 300_000  # the most this kernel takes


@contextlib.contextmanager
def freed_memory_kept(leave: bool) -> Iterator[str]:
    """Keep freed pages for ``KEEP_FREED_MS`` before the kernel reports them to the host, unless
    ``leave`` or the setting is missing or read-only; put it back on exit. Yields what was done."""
    try:
        with open(PAGE_REPORTING) as file:
            before = file.read().strip()
    except OSError:
        yield "no free page reporting setting here: the machine as it is"
        return
    if leave:
        yield f"freed pages reported to the host after {before} ms, as the machine is (as asked)"
        return
    try:
        with open(PAGE_REPORTING, "w") as file:
            file.write(str(KEEP_FREED_MS))
    except OSError as error:
        yield f"freed pages reported after {before} ms; could not change it ({error})"
        return
    terminated = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        yield (
            f"freed pages reported to the host after {KEEP_FREED_MS} ms for this run "
            f"(the machine's setting, {before} ms, is put back at the end, or on SIGTERM)"
        )
    finally:
        with open(PAGE_REPORTING, "w") as file:
            file.write(before)
        signal.signal(signal.SIGTERM, terminated)


def warm(root: str, nbytes: int) -> None:
    """Write and delete a quarter more than ``nbytes``, plus 2 GB (the camera's buffers and the
    frames in flight), in ``root`` so that the next run writes into memory the machine holds
    (module docstring); notes the write's MB/s in ``_WARMED``."""
    chunk = np.zeros(64 * MB, np.uint8)
    chunks = (nbytes * 5 // 4 + 2 * 1024 * MB) // chunk.nbytes
    path = os.path.join(root, "warm.bin")
    start = time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for _ in range(chunks):
            os.write(fd, chunk)
    finally:
        os.close(fd)
    _WARMED.append(chunks * 64 / (time.monotonic() - start))
    os.remove(path)


@dataclass(frozen=True)
class Paced:
    """One camera-paced configuration: ``cameras`` cameras of ``side`` x ``side`` at ``rate``
    frames/s each, ``frames`` frames from each, shown or not, and the rate ratio it must reach,
    stored with ``storage`` (``"NDTiff"`` or ``"OME-Zarr"``)."""

    side: int
    rate: float
    frames: int
    shown: bool
    target: float
    cameras: int = 1
    storage: str = "NDTiff"

    @property
    def nbytes(self) -> int:
        """The bytes the run stores."""
        return self.side * self.side * 2 * self.frames * self.cameras

    @property
    def label(self) -> str:
        cameras = f"{self.cameras} cameras of " if self.cameras > 1 else ""
        where = "shown" if self.shown else "headless"
        into = ", OME-Zarr" if self.storage != "NDTiff" else ""
        return f"{cameras}{self.side}x{self.side} at {self.rate:.0f} f/s, {where}{into}"

    @property
    def reference(self) -> Paced:
        """The configuration of its raw reference (``run_raw_paced``)."""
        return replace(self, shown=False, target=0.0, storage="raw")


PACED = (
    Paced(2048, 100, 1000, False, 0.99),
    Paced(2048, 100, 1000, False, 0.99, storage="OME-Zarr"),
    Paced(2048, 50, 500, True, 0.98),
    Paced(2048, 100, 1000, True, 0.95),
    Paced(3200, 30, 300, True, 0.98),
    Paced(2048, 50, 500, False, 0.98, cameras=2),
)
STORAGE_FRAMES = 200  # 1.7 GB of 2048x2048 uint16 a run
#: Runs of the storage part at least: a write into fresh memory here runs at one of two speeds about
#: 10% apart, run by run, whatever writes (the raw loop too, also from the main thread).
STORAGE_RUNS = 9
PEER = ((2048, 50, 500), (2048, 100, 1000))  # side, frames/s, frames


# ------------------------------------------------------------------------------------------ part 1
class _Repaints(list):
    """Times of the canvas's repaints (vispy's draw event), appended while connected."""

    def __init__(self, viewer: Any) -> None:
        super().__init__()
        self._draw = viewer.window._qt_viewer.canvas._scene_canvas.events.draw
        self._draw.connect(self._note)

    def _note(self, _event: Any) -> None:
        self.append(time.monotonic())

    def disconnect(self) -> None:
        self._draw.disconnect(self._note)


def _newest_sink_class() -> type:
    """The benchmarks' timed sink, also noting the newest frame of each refresh and when it was
    put into the handler, if the refresh put it on screen (the sliders at it); else it counts it in
    ``off_screen``."""
    timed = _timed_sink_class()

    class NewestSink(timed):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.arrived_at: dict = {}
            self.newest: list[tuple[float, float]] = []  # (arrival, end of the refresh)
            self.off_screen = 0
            super().__init__(*args, **kwargs)
            self.handler.add_listener(self._arrived)

        def _arrived(self, stage: str, coords: Any) -> None:
            if stage == "acquired":
                self.arrived_at[frozenset(coords.items())] = time.monotonic()

        def refresh(self) -> None:
            with self._pending_lock:  # the last to arrive (frames may be stored out of order)
                pending = list(self._pending)
                arrivals = {self.arrived_at.get(frozenset(c.items()), 0.0): c for c in pending}
            super().refresh()
            arrived = max(arrivals, default=0.0)
            if not arrived:
                return
            newest = arrivals[arrived]
            labels, step = list(self.viewer.dims.axis_labels), self.viewer.dims.current_step
            if all(step[labels.index(a)] == v for a, v in newest.items() if a in labels):
                self.newest.append((arrived, time.monotonic()))
            else:
                self.off_screen += 1

    return NewestSink


_CAMERAS: dict[str, Any] = {}  # by name: devices are registered once


def _cameras(config: Paced, microscope: Any) -> list[Any]:
    from exengine.devices.simulated_camera import SimulatedCamera

    cameras = []
    for i in range(config.cameras):
        name = f"sCMOS {config.side} {i}"
        if name not in _CAMERAS:
            _CAMERAS[name] = SimulatedCamera(name, microscope, config.side, config.side)
        cameras.append(_CAMERAS[name])
    for camera in cameras:
        camera.exposure = 1000.0 / config.rate
    return cameras


def _started(cameras: list[Any]) -> float:
    """When the first of ``cameras`` started capturing (its clock's start): the camera's rate is
    timed from there; what comes before (the plan's first events, arming) is its setup."""
    return min(camera._clock.start for camera in cameras)


def _storage(backend: str, folder: str, name: str, pixel_size_um: float) -> Any:
    """A new dataset ``name`` in ``folder``: ``backend`` ``"NDTiff"`` or ``"OME-Zarr"``."""
    from exengine.storage import NDTiffStorage, OMEZarrStorage

    if backend == "NDTiff":
        return NDTiffStorage(folder, name)
    return OMEZarrStorage(folder, name, pixel_size_um=pixel_size_um)


def run_raw_paced(config: Paced, root: str, microscope: Any) -> dict[str, Any]:
    """The reference for ``config``: each camera's frames popped by a thread of its own and
    written with ``os.write`` into one file, with no engine, handler or storage format."""
    cameras = _cameras(config, microscope)
    paths = [os.path.join(root, f"raw{i}.bin") for i in range(len(cameras))]

    def drain(camera: Any, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            while True:
                data, _ = camera.pop_data(timeout=0.2)
                if data is None and camera.is_stopped():  # every frame arrived (or was dropped)
                    data, _ = camera.pop_data(timeout=0)
                    if data is None:
                        break
                if data is not None:
                    os.write(fd, memoryview(data).cast("B"))
        finally:
            os.close(fd)

    for camera in cameras:
        camera.arm(config.frames)
    threads = [
        threading.Thread(target=drain, args=pair) for pair in zip(cameras, paths, strict=True)
    ]
    for thread in threads:
        thread.start()
    start = time.monotonic()
    for camera in cameras:
        camera.start()
    for thread in threads:
        thread.join()
    end = time.monotonic()
    for camera in cameras:
        camera.stop()
    dropped = sum(camera.frames_dropped for camera in cameras)
    for path in paths:
        os.remove(path)
    started = _started(cameras)
    return {
        "ratio": (config.frames / config.rate) / (end - started),
        "setup_ms": (started - start) * 1000,
        "dropped": dropped,
        "stored": config.frames * len(cameras) - dropped,
        "planned": config.frames * len(cameras),
    }


def run_paced(config: Paced, root: str, viewer: Any | None, microscope: Any) -> dict[str, Any]:
    """One camera-paced acquisition of ``config``."""
    from qtpy.QtWidgets import QApplication

    from exengine.acquisition import Acquisition
    from exengine.data import DataHandler, PlannedData
    from exengine.events.multi_d_events import multi_d_acquisition_plan
    from napari_exengine.layer_sink import defer_layers_for

    cameras = _cameras(config, microscope)
    storage = _storage(config.storage, root, "scmos", cameras[0].pixel_size_um)
    handler = DataHandler(storage)
    plan = multi_d_acquisition_plan(
        num_time_points=config.frames,
        sequence="t",
        camera=cameras if config.cameras > 1 else cameras[0],
        data_handler=handler,
    )
    app = QApplication.instance()
    repaints = _Repaints(viewer) if config.shown else None
    rss_start = peak = _rss_mb()
    planned = PlannedData(  # as the acquisition panel tells its sink and the storage
        axis_sizes=dict(plan.axis_sizes),
        axis_values=dict(plan.axis_values),
        frame_shape=(config.side, config.side),
        dtype="uint16",
        pixel_size_um=cameras[0].pixel_size_um,
    )
    sink = None
    if config.shown:
        sink = _newest_sink_class()(
            viewer,
            handler,
            name="sCMOS",
            planned=planned,
            defer_layers=defer_layers_for(plan.total_frames),
        )
    acquisition = Acquisition(plan, handler, total_frames=plan.total_frames, planned=planned)
    gui_cpu = time.thread_time()
    start = time.monotonic()
    acquisition.start()
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
    end = time.monotonic()
    finisher.join()
    gui_cpu = time.thread_time() - gui_cpu
    frames = config.frames * config.cameras
    started = _started(cameras)
    result: dict[str, Any] = {
        "ratio": (config.frames / config.rate) / (end - started),
        "setup_ms": (started - start) * 1000,
        "stored": len(storage.get_coordinates_list()),
        "planned": frames,
        "dropped": sum(camera.frames_dropped for camera in cameras),
        "rss_start": rss_start,
        "rss_peak": max(peak, _rss_mb()),
        "rss_end": _rss_mb(),
    }
    if sink is not None and repaints is not None:
        sink.close()
        app.processEvents()
        repaints.disconnect()
        delays = []
        for arrived, refreshed in sink.newest:
            painted = next((t for t in repaints if t >= refreshed), None)
            if painted is not None:
                delays.append((painted - arrived) * 1000)
        result.update(
            delay_med=statistics.median(delays) if delays else float("nan"),
            delay_p95=_percentile(delays, 0.95) if delays else float("nan"),
            refreshes=len(sink.newest) / (end - start),
            off_screen=sink.off_screen,
            gui_share=gui_cpu / (end - start),
        )
        viewer.layers.clear()
    storage.close()
    shutil.rmtree(storage.path, ignore_errors=True)
    return result


# ------------------------------------------------------------------------------------------ part 2
def _fsync_tree(path: str) -> None:
    for folder, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _frames_2048() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 4000, (2048, 2048), dtype=np.uint16) for _ in range(4)]


def write_raw(root: str, frames: list[np.ndarray]) -> float:
    """MB/s of ``os.write`` of ``STORAGE_FRAMES`` frames into one file, then ``fsync``."""
    path = os.path.join(root, "raw.bin")
    os.sync()  # each run starts with nothing of the others' left to write back
    start = time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for i in range(STORAGE_FRAMES):
            os.write(fd, memoryview(frames[i % len(frames)]).cast("B"))
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.monotonic() - start
    os.remove(path)
    return STORAGE_FRAMES * frames[0].nbytes / MB / seconds


def write_handler(root: str, frames: list[np.ndarray], backend: str) -> float:
    """MB/s of ``STORAGE_FRAMES`` frames put into a ``DataHandler`` storing them with
    ``backend``, then ``fsync`` of every file it wrote. The handler is told the plan first, as an
    acquisition tells it (OME-Zarr then makes its arrays at their size instead of growing them)."""
    from exengine.data import DataHandler, PlannedData

    folder = tempfile.mkdtemp(dir=root)
    os.sync()  # each run starts with nothing of the others' left to write back
    start = time.monotonic()
    storage = _storage(backend, folder, "path", 0.65)
    handler = DataHandler(storage)
    shape, dtype = frames[0].shape, frames[0].dtype.name
    handler.prepare(
        PlannedData({"time": STORAGE_FRAMES}, frame_shape=shape, dtype=dtype, pixel_size_um=0.65)
    )
    for i in range(STORAGE_FRAMES):
        handler.put({"time": i}, frames[i % len(frames)], {})
    handler.finish()
    handler.await_completion(600)
    storage.close()
    _fsync_tree(folder)
    seconds = time.monotonic() - start
    shutil.rmtree(folder, ignore_errors=True)
    return STORAGE_FRAMES * frames[0].nbytes / MB / seconds


def _warn_of_leftovers(root: str) -> None:
    """Say when ``root`` (tmpfs: RAM) already holds files, such as the scratch folders of killed
    runs: this run has that much less memory (6.5 GB of them made 100 f/s fall to 0.6-0.75)."""
    held = sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(root)
        for name in names
        if os.path.isfile(os.path.join(folder, name))
    )
    if held > 256 * MB:
        print(f"Warning: {root} already holds {held / 1024**3:.1f} GB; delete what no run uses")


# ------------------------------------------------------------------------------------------ report
def _med(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def report_paced(
    results: dict[Paced, list[dict[str, Any]]], raw: dict[Paced, list[dict[str, Any]]]
) -> None:
    print("\n1. Camera-paced, in RAM, into NDTiff unless said; medians of interleaved runs")
    print(
        f"{'configuration':46} {'rate':>6} {'target':>7} {'dropped':>8} {'stored':>10} "
        f"{'setup ms':>8} {'newest ms':>14} {'GUI':>5} {'RSS MB start/peak/end':>22}"
    )
    for config, rows in results.items():
        stored = f"{min(r['stored'] for r in rows)}/{rows[0]['planned']}"
        delay = (
            f"{_med(rows, 'delay_med'):.0f} p95 {_med(rows, 'delay_p95'):.0f}"
            if config.shown
            else "-"
        )
        gui = f"{_med(rows, 'gui_share'):.0%}" if config.shown else "-"
        rss = "/".join(f"{_med(rows, k):.0f}" for k in ("rss_start", "rss_peak", "rss_end"))
        print(
            f"{config.label:46} {_med(rows, 'ratio'):6.3f} {config.target:7.2f} "
            f"{max(r['dropped'] for r in rows):8d} {stored:>10} {_med(rows, 'setup_ms'):8.0f} "
            f"{delay:>14} {gui:>5} {rss:>22}"
        )
        print(f"{'  each run, in order':46} " + " ".join(f"{r['ratio']:.3f}" for r in rows))
        if any(r.get("off_screen") for r in rows):
            print(
                f"{'  refreshes whose newest frame was not shown':46} "
                + " ".join(str(r["off_screen"]) for r in rows)
            )
        reference = raw.pop(config.reference, None)
        if reference:
            stored = f"{min(r['stored'] for r in reference)}/{reference[0]['planned']}"
            print(
                f"{'  reference: os.write of each frame at that pace':46} "
                f"{_med(reference, 'ratio'):6.3f} {'':7} "
                f"{max(r['dropped'] for r in reference):8d} {stored:>10} "
                f"{_med(reference, 'setup_ms'):8.0f}"
            )
            print(
                f"{'  reference, each run':46} " + " ".join(f"{r['ratio']:.3f}" for r in reference)
            )
    print(
        "rate: the camera's N frames' time / the time from its start to every frame stored (1.0: "
        "the camera's pace); setup: from the acquisition's start to the camera's; dropped: the "
        "most over the runs; stored: the fewest; newest: arrival of each refresh's newest frame "
        "to the repaint that shows it (the sliders at it); reference: each camera's frames "
        "popped by a thread and written into one file in the same folder, no engine"
    )


def report_storage(results: dict[tuple[str, str], list[float]]) -> None:
    print(
        f"\n2. Storage path vs a raw sequential write, {STORAGE_FRAMES} frames of 2048x2048 uint16 "
        "(fsync included); medians"
    )
    print(f"{'where':6} {'path':10} {'MB/s':>8} {'raw MB/s':>9} {'ratio':>6}")
    for (where, backend), rows in results.items():
        if backend == "raw":
            continue
        raws = results[(where, "raw")]
        raw, ours = statistics.median(raws), statistics.median(rows)
        each = " ".join(f"{o / r:.2f}" for o, r in zip(rows, raws, strict=False))
        print(f"{where:6} {backend:10} {ours:8.0f} {raw:9.0f} {ours / raw:6.2f}   each run: {each}")


def report_peer(results: dict[tuple[int, float, int], dict[str, list[dict[str, Any]]]]) -> None:
    print("\n3. napari-micromanager at the same sizes and rates (shown / headless frames/s)")
    for (side, rate, frames), rows in results.items():
        shown, headless = _med(rows["shown"], "fps"), _med(rows["headless"], "fps")
        written = min(r["written"] for r in rows["shown"])
        print(
            f"{side}x{side} at {rate:.0f} f/s requested, {frames} frames: shown {shown:.1f} f/s, "
            f"headless {headless:.1f} f/s, ratio {shown / headless:.2f}; frames in its layer "
            f"{written}/{frames}"
        )


# -------------------------------------------------------------------------------------------- main
def run_one(config: Paced) -> dict[str, Any]:
    """One run of ``config`` (or of its raw reference) in a fresh process (``--one``), after an
    unmeasured warm-up run when shown and a warm-up write."""
    from exengine import ExecutionEngine
    from exengine.devices.simulated_specimen import SimulatedMicroscope

    microscope = SimulatedMicroscope()
    ram = scratch_dir()
    viewer = None
    try:
        if config.shown:
            import napari

            viewer = napari.Viewer(show=True)
            run_paced(Paced(512, 100, 100, True, 0), ram, viewer, microscope)
        warm(ram, config.nbytes)
        if config.storage == "raw":
            result = run_raw_paced(config, ram, microscope)
        else:
            result = run_paced(config, ram, viewer, microscope)
        result["warmed"] = _WARMED[-1]
        return result
    finally:
        shutil.rmtree(ram, ignore_errors=True)
        if viewer is not None:
            viewer.close()
        ExecutionEngine.get_instance().shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs (default 3)")
    parser.add_argument("--quick", action="store_true", help="a fifth of the frames")
    parser.add_argument(
        "--peer-python",
        default=os.environ.get("NMM_PYTHON", sys.executable),
        help="Python with napari-micromanager installed (default: $NMM_PYTHON, else this one)",
    )
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument(
        "--machine-as-is",
        action="store_true",
        help="leave the kernel's free page reporting as it is (module docstring)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a Paced as JSON: run_one, in a child
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be 1 or more, not {args.runs}")
    with freed_memory_kept(args.machine_as_is) as memory:
        if args.one:
            print("RESULT " + json.dumps(run_one(Paced(**json.loads(args.one)))), flush=True)
        else:
            print(f"Memory: {memory}", flush=True)
            run_all(args)


def run_all(args: argparse.Namespace) -> None:
    """The three parts, interleaved as the module docstring says, and their report."""
    scale = 5 if args.quick else 1

    import napari

    from exengine import ExecutionEngine
    from exengine.devices.simulated_specimen import SimulatedMicroscope

    configs = [replace(c, frames=c.frames // scale) for c in PACED]
    viewer = napari.Viewer(show=True)
    microscope = SimulatedMicroscope()
    ram, disk = scratch_dir(), scratch_dir(ram=False)
    paced: dict[Paced, list[dict[str, Any]]] = {c: [] for c in configs}
    storage: dict[tuple[str, str], list[float]] = {
        (where, path): [] for where in ("RAM", "disk") for path in ("raw", "NDTiff", "OME-Zarr")
    }
    peer_runs = [(side, rate, frames // scale) for side, rate, frames in PEER]
    peer_results = {key: {"shown": [], "headless": []} for key in peer_runs}
    load_start = os.getloadavg()
    _warn_of_leftovers("/dev/shm")
    try:
        run_paced(Paced(512, 100, 100, True, 0), ram, viewer, microscope)  # warm-up, unmeasured
        raw: dict[Paced, list[dict[str, Any]]] = {c.reference: [] for c in configs}
        for _ in range(args.runs):
            for config in configs + list(raw):
                warm(ram, config.nbytes)
                if config.storage == "raw":
                    raw[config].append(run_raw_paced(config, ram, microscope))
                else:
                    paced[config].append(run_paced(config, ram, viewer, microscope))
        frames = _frames_2048()
        paths = ("raw", "NDTiff", "OME-Zarr")
        for run in range(max(args.runs, STORAGE_RUNS)):
            for where, root in (("RAM", ram), ("disk", disk)):
                for path in paths[run % 3 :] + paths[: run % 3]:  # each goes first in turn
                    warm(ram, STORAGE_FRAMES * frames[0].nbytes)
                    written = (
                        write_raw(root, frames)
                        if path == "raw"
                        else write_handler(root, frames, path)
                    )
                    storage[(where, path)].append(written)
        del frames
        peer = None if args.skip_peer else Peer(args.peer_python)
        if peer is not None and peer.error is None:
            try:
                for _ in range(args.runs):
                    for side, rate, count in peer_runs:
                        command = f"{count} {side} {1000.0 / rate}"
                        rows = peer_results[(side, rate, count)]
                        rows["headless"].append(peer.run(f"headless {command}"))
                        rows["shown"].append(peer.run(f"viewer {command}"))
            finally:
                peer.close()
    finally:
        shutil.rmtree(ram, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)
        viewer.close()
        ExecutionEngine.get_instance().shutdown()
    print(
        f"\nMemory: the first warm-up write (fresh memory) ran at {_WARMED[0]:.0f} MB/s; the "
        f"median warm-up at {statistics.median(_WARMED):.0f} MB/s"
    )
    report_paced(paced, raw)
    report_storage(storage)
    if peer is None:
        print("\n3. The peer: skipped (--skip-peer)")
    elif peer.error is not None:
        print(f"\n3. The peer: skipped: {peer.error}")
    else:
        report_peer(peer_results)
        print(f"   versions: {peer.versions}")
    end = " ".join(f"{load:.2f}" for load in os.getloadavg())
    print(
        f"\nLoad average at the start {' '.join(f'{x:.2f}' for x in load_start)}, at the end {end} "
        "(2 cores; other work on the machine lowers every figure)."
    )


if __name__ == "__main__":
    main()
